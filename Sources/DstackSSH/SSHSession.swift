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
    /// Where the connection's debug messages go.
    public let logger: Logger
    private let closed: LockedFlag
    /// The jump host connection this one is carried by, released when this one closes.
    private let jumpLease: JumpLease?
    /// The ProxyCommand carrying this connection, stopped when it closes.
    private let proxy: ProxyCommandProcess?

    private init(options: SSHOptions, loop: SSHEventLoop, fingerprint: String, logger: Logger, jumpLease: JumpLease? = nil,
                 proxy: ProxyCommandProcess? = nil) {
        self.proxy = proxy
        self.options = options
        self.loop = loop
        self.hostKeyFingerprint = fingerprint
        self.logger = logger
        self.closed = LockedFlag()
        self.jumpLease = jumpLease
    }

    deinit {
        if !closed.set() {
            loop.shutdownDetached()
            if let jumpLease { Task { await jumpLease.release() } }
            if let proxy { Task.detached { await proxy.stop() } }
        }
    }

    /// Connects, verifies the host key against known_hosts and authenticates, all within `options.connectTimeout`.
    ///
    /// With `options.jumpHosts`, the connection is carried by a `direct-tcpip` channel of the last jump host's
    /// connection, which is opened first (through the ones before it) and shared with every other session
    /// behind the same jump hosts.
    public static func connect(_ options: SSHOptions, logger: Logger = Logger(label: "dstack.ssh")) async throws -> SSHSession {
        if options.jumpHosts.isEmpty, let command = options.proxyCommand {
            let proxy = try ProxyCommandProcess(command: command)
            do {
                let session = try await connect(options, socket: proxy.socket, lease: nil, proxy: proxy, logger: logger)
                let said = proxy.standardError()
                if !said.isEmpty { logger.debug("ssh \(options.hostKeyName): ProxyCommand stderr: \(said)") }
                return session
            } catch let error as SSHError {
                let said = proxy.standardError(grace: .milliseconds(300))
                await proxy.stop()
                throw SSHError.proxyCommandFailed(command: command, target: options.hostKeyName, stderr: said, error: error)
            }
        }
        guard !options.jumpHosts.isEmpty else { return try await connect(options, socket: nil, lease: nil, logger: logger) }
        let lease = try await JumpPool.shared.lease(options.jumpHosts, target: options.hostKeyName, logger: logger)
        do {
            let fd = try await lease.session.openTunnel(host: options.host, port: options.port)
            return try await connect(options, socket: fd, lease: lease, logger: logger)
        } catch let error as SSHError {
            // The jump host's own connection failing is its failure, not the runner's.
            let jumpFailure = lease.session.failure
            if jumpFailure == nil, case .handshakeFailed = error,
               let named = await explainNegotiation(through: lease.session, options, logger: logger) {
                await lease.release()
                throw named
            }
            await lease.release()
            if let jumpFailure {
                throw SSHError.jumpHostFailed(jump: lease.name, target: options.hostKeyName, error: jumpFailure)
            }
            throw error
        } catch {
            await lease.release()
            throw error
        }
    }

    private static func connect(_ options: SSHOptions, socket: Int32?, lease: JumpLease?, proxy: ProxyCommandProcess? = nil,
                                logger: Logger) async throws -> SSHSession {
        let loop: SSHEventLoop
        do {
            loop = try SSHEventLoop(hostName: options.hostKeyName, logger: logger)
        } catch {
            if let socket { closeDescriptor(socket) }
            throw error
        }
        var connector = SSHConnector(options: options, logger: logger)
        connector.socket = socket
        let ready = connector
        do {
            let fingerprint = try await loop.perform { () throws(SSHError) -> String in try ready.run(on: loop) }
            return SSHSession(options: options, loop: loop, fingerprint: fingerprint, logger: logger, jumpLease: lease, proxy: proxy)
        } catch {
            await loop.shutdown()
            throw error
        }
    }

    /// Opens a `direct-tcpip` channel from the server to `host:port` and returns a local socket carrying it.
    func openTunnel(host: String, port: Int) async throws -> Int32 {
        let pair = try TunnelOperation.socketPair()
        return try await submit { completion in TunnelOperation(host: host, port: port, jumpName: options.label ?? options.hostKeyName, pair: pair, completion: completion) }
    }

    /// Connects like `connect(_:logger:)`, retrying transient failures (refused, timed out, dropped) with backoff.
    public static func connect(
        _ options: SSHOptions, retrying policy: RetryPolicy, logger: Logger = Logger(label: "dstack.ssh")
    ) async throws -> SSHSession {
        try await policy.connecting(options.hostKeyName, logger: logger) { try await connect(options, logger: logger) }
    }

    /// Whether the connection still works: false once it was lost or closed (then reconnect).
    public var isConnected: Bool { loop.connectionFailure == nil }

    /// Why the connection no longer works, or nil while it does.
    public var failure: SSHError? { loop.connectionFailure }

    /// Disconnects and frees the connection; operations still running fail with `SSHError.sessionClosed`.
    public func close() async {
        guard !closed.set() else { return }
        await loop.shutdown()
        await jumpLease?.release()
        if let proxy { await proxy.stop() }
    }

    /// The names of the jump hosts this connection goes through, in order (empty for a direct one).
    public var via: [String] { options.via }

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
        let line = Self.portableLine(for: command, input: input)
        return try await submit { completion in
            ExecOperation(
                command: line, label: command, input: input, output: output, bufferSize: bufferSize,
                idleTimeout: timeout, completion: completion)
        }
    }

    /// The command line sshd hands to the login shell for `command`: one short line that sh, bash, dash, zsh,
    /// tcsh/csh and fish all parse alike, which reads the script itself from the first bytes of standard input
    /// (put there, before the rest of `input`) and runs it with `/bin/sh`. So any login shell works, the login
    /// shell's start-up files still run, and no script text is ever parsed by a shell other than `sh`.
    static func portableLine(for command: String, input: ChannelInput) -> String {
        let (line, script) = portable(command)
        input.prepend(script)
        return line
    }

    /// The portable command line for `command`, and the bytes to send first on its standard input.
    public static func portable(_ command: String) -> (line: String, script: Data) {
        let script = Data(command.utf8)
        // `head -c N` reads exactly N bytes: what follows stays for the script's own commands.
        return ("exec /bin/sh -c 'eval \"$(head -c \(script.count))\"'", script)
    }

    /// Starts `command` (through the portable line, as `exec` does) and keeps its standard input open: `write`
    /// sends more, `closeInput` ends it. Its output arrives on `events`, then `.exit`. Used for a long-lived
    /// agent shell that carries many requests.
    public func startProcess(_ command: String, label: String) -> RemoteProcess {
        let queue = InputQueue()
        let input = ChannelInput(queue: queue)
        let line = Self.portableLine(for: command, input: input)
        let loop = self.loop
        let (events, continuation) = AsyncThrowingStream<ExecEvent, any Error>.makeStream()
        let id = loop.makeID()
        let output = ChannelOutput(stdout: .callback { stream, data in continuation.yield(.output(stream, data)) },
                                   stderr: .callback { stream, data in continuation.yield(.output(stream, data)) })
        let op = ExecOperation(
            command: line, label: label, input: input, output: output, bufferSize: 256 * 1024,
            idleTimeout: nil, completion: { result in
                switch result {
                case .success(let exit):
                    continuation.yield(.exit(exit))
                    continuation.finish()
                case .failure(let error):
                    continuation.finish(throwing: error)
                }
            })
        logger.debug("ssh \(options.hostKeyName): start \(label)")
        loop.submit(op, id: id)
        return RemoteProcess(events: events, queue: queue, wake: { loop.wake() }, cancel: { loop.cancel(id) })
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

/// A remote command whose standard input stays open for more (see `SSHSession.startProcess`).
public final class RemoteProcess: Sendable {
    /// Its output as it arrives, then `.exit`; throws when the channel or connection fails.
    public let events: AsyncThrowingStream<ExecEvent, any Error>
    private let queue: InputQueue
    private let wake: @Sendable () -> Void
    private let cancelOperation: @Sendable () -> Void

    init(events: AsyncThrowingStream<ExecEvent, any Error>, queue: InputQueue, wake: @escaping @Sendable () -> Void,
         cancel: @escaping @Sendable () -> Void) {
        self.events = events
        self.queue = queue
        self.wake = wake
        self.cancelOperation = cancel
    }

    /// Sends `data` to its standard input (queued; the connection's thread sends it).
    public func write(_ data: Data) {
        queue.append(data)
        wake()
    }

    /// Ends its standard input once everything written was sent.
    public func closeInput() {
        queue.close()
        wake()
    }

    /// Closes its channel at once.
    public func cancel() {
        cancelOperation()
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
