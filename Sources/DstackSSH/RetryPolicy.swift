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
