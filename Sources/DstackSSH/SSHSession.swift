import Foundation
import Logging

/// One SSH connection to a server, carrying many channels (execs, transfers) at once.
///
/// Every libssh2 call for the connection runs on the connection's own thread; the async methods here only hand
/// work to that thread and await its answer, so nothing blocks Swift's cooperative pool. Call `close()` when done.
public final class SSHSession: Sendable {
    /// The options the session was opened with.
    public let options: SSHOptions
    /// The server's host key fingerprint, `SHA256:` and unpadded base64, as OpenSSH prints it.
    public let hostKeyFingerprint: String
    let loop: SSHEventLoop
    let logger: Logger
    private let closed: LockedFlag

    private init(options: SSHOptions, loop: SSHEventLoop, fingerprint: String, logger: Logger) {
        self.options = options
        self.loop = loop
        self.hostKeyFingerprint = fingerprint
        self.logger = logger
        self.closed = LockedFlag()
    }

    deinit {
        if !closed.set() {
            loop.shutdownDetached()
        }
    }

    /// Connects, verifies the host key against known_hosts and authenticates, all within `options.connectTimeout`.
    public static func connect(_ options: SSHOptions, logger: Logger = Logger(label: "dstack.ssh")) async throws -> SSHSession {
        let loop = try SSHEventLoop(hostName: options.hostKeyName, logger: logger)
        let connector = SSHConnector(options: options, logger: logger)
        do {
            let fingerprint = try await loop.perform { () throws(SSHError) -> String in try connector.run(on: loop) }
            return SSHSession(options: options, loop: loop, fingerprint: fingerprint, logger: logger)
        } catch {
            await loop.shutdown()
            throw error
        }
    }

    /// Connects like `connect(_:logger:)`, retrying transient failures (refused, timed out, dropped) with backoff.
    public static func connect(
        _ options: SSHOptions, retrying policy: RetryPolicy, logger: Logger = Logger(label: "dstack.ssh")
    ) async throws -> SSHSession {
        var delay = policy.initialDelay
        var attempt = 1
        while true {
            do {
                return try await connect(options, logger: logger)
            } catch let error as SSHError where error.isTransient && attempt < policy.attempts {
                logger.info("ssh \(options.hostKeyName): \(error); retrying in \(delay) (attempt \(attempt + 1) of \(policy.attempts))")
                try await Task.sleep(for: delay)
                delay = min(policy.maxDelay, delay * policy.multiplier)
                attempt += 1
            }
        }
    }

    /// Whether the connection still works: false once it was lost or closed (then reconnect).
    public var isConnected: Bool { loop.connectionFailure == nil }

    /// Disconnects and frees the connection; operations still running fail with `SSHError.sessionClosed`.
    public func close() async {
        guard !closed.set() else { return }
        await loop.shutdown()
    }

    /// Runs `command` through the remote user's shell, feeding it `stdin`, and collects its output and exit status.
    /// `idleTimeout` nil uses `options.idleTimeout`; `.some(nil)` waits forever.
    public func exec(_ command: String, stdin: Data? = nil, idleTimeout: Duration?? = nil) async throws -> ExecResult {
        try await run(
            command, input: stdin.map { ChannelInput(data: $0) } ?? ChannelInput(),
            output: ChannelOutput(stdout: .collect(limit: .max), stderr: .collect(limit: .max)),
            bufferSize: 256 * 1024, idleTimeout: idleTimeout)
    }

    /// Runs `command` and hands each chunk of its output to `onOutput` as it arrives (to follow logs, say);
    /// `onOutput` runs on the session's thread and must return quickly. The result carries no output.
    public func exec(
        _ command: String, stdin: Data? = nil, idleTimeout: Duration?? = nil,
        onOutput: @escaping @Sendable (ExecStream, Data) -> Void
    ) async throws -> ExecResult {
        try await run(
            command, input: stdin.map { ChannelInput(data: $0) } ?? ChannelInput(),
            output: ChannelOutput(stdout: .callback(onOutput), stderr: .callback(onOutput)),
            bufferSize: 256 * 1024, idleTimeout: idleTimeout)
    }

    /// Runs `command` with its stdin read from `input` and its stdout written to `output` (local files or pipes),
    /// streaming with flat memory; stderr is collected (its first MiB) into the result.
    public func exec(
        _ command: String, stdinFrom input: FileHandle?, stdoutTo output: FileHandle?, idleTimeout: Duration?? = nil
    ) async throws -> ExecResult {
        let bufferSize = 1024 * 1024
        return try await run(
            command, input: input.map { ChannelInput(handle: $0, bufferSize: bufferSize) } ?? ChannelInput(),
            output: ChannelOutput(stdout: output.map { .handle($0) } ?? .collect(limit: .max), stderr: .collect(limit: bufferSize)),
            bufferSize: bufferSize, idleTimeout: idleTimeout)
    }

    /// Runs `command` and yields its output chunks, then `.exit` with its status; ending the iteration early
    /// cancels the command's channel (as when one stops following a log).
    public func execStream(
        _ command: String, stdin: Data? = nil, idleTimeout: Duration?? = nil
    ) -> AsyncThrowingStream<ExecEvent, any Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    let result = try await self.exec(command, stdin: stdin, idleTimeout: idleTimeout) { stream, data in
                        continuation.yield(.output(stream, data))
                    }
                    continuation.yield(.exit(result))
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    private func run(
        _ command: String, input: ChannelInput, output: ChannelOutput, bufferSize: Int, idleTimeout: Duration??
    ) async throws -> ExecResult {
        let timeout = idleTimeout ?? options.idleTimeout
        logger.debug("ssh \(options.hostKeyName): exec \(summarized(command))")
        return try await submit { completion in
            ExecOperation(
                command: command, input: input, output: output, bufferSize: bufferSize, idleTimeout: timeout,
                completion: completion)
        }
    }

    /// Hands an operation to the loop and waits for its answer; cancelling the task aborts the operation.
    func submit<T: Sendable>(
        _ make: (@escaping @Sendable (Result<T, SSHError>) -> Void) -> any LoopOperation
    ) async throws -> T {
        let id = loop.makeID()
        let loop = self.loop
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                let op = make { result in continuation.resume(with: result.mapError { $0 }) }
                loop.submit(op, id: id)
            }
        } onCancel: {
            loop.cancel(id)
        }
    }
}

/// A flag that is set once, safely from any thread.
final class LockedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false

    /// Sets the flag and returns whether it was already set.
    func set() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        let was = value
        value = true
        return was
    }
}
