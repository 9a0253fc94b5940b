import Logging
/// How `SSHSession.connect(_:retrying:)` backs off between attempts.
public struct RetryPolicy: Sendable {
    /// The most connection attempts, the first included.
    public var attempts: Int
    /// The pause after the first failure.
    public var initialDelay: Duration
    /// The longest pause between attempts.
    public var maxDelay: Duration
    /// The factor each pause grows by.
    public var multiplier: Int

    /// A policy of `attempts` tries, pausing `initialDelay`, then twice as long each time up to `maxDelay`.
    public init(attempts: Int = 5, initialDelay: Duration = .milliseconds(500), maxDelay: Duration = .seconds(30), multiplier: Int = 2) {
        self.attempts = max(1, attempts)
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
        self.multiplier = max(1, multiplier)
    }
}

extension RetryPolicy {
    /// Runs `connect` until it succeeds, fails for good, or the attempts run out, pausing with backoff after each
    /// transient failure (refused, timed out, dropped) and logging it for `host`.
    func connecting<T>(_ host: String, logger: Logger, _ connect: () async throws -> T) async throws -> T {
        var delay = initialDelay
        var attempt = 1
        while true {
            do {
                return try await connect()
            } catch let error as SSHError where error.isTransient && attempt < attempts {
                logger.info("ssh \(host): \(error); retrying in \(delay) (attempt \(attempt + 1) of \(attempts))")
                try await Task.sleep(for: delay)
                delay = min(maxDelay, delay * multiplier)
                attempt += 1
            }
        }
    }
}
