import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A connection carried by the system OpenSSH client (`transport: openssh`), for servers that the linked libssh2
/// cannot negotiate with: one ControlMaster `ssh` process holds the connection, and every command is a
/// `ssh -S CONTROL` child multiplexed over it, with its standard input and output on pipes that threads of its own
/// read and write (never the cooperative pool).
///
/// Everything `ssh` reads comes from a config file that dstack writes in a private 0700 folder (with the control
/// socket): the host, user, port, identity files and agent of `options`, its jump hosts as `ProxyJump` hops or its
/// ProxyCommand, and host keys checked strictly (`StrictHostKeyChecking yes`, or `accept-new` with
/// `--accept-new-host-keys`) against dstack's known_hosts, with `BatchMode yes` so nothing is ever asked.
public final class OpenSSHSession: RemoteSession, @unchecked Sendable {
    public let options: SSHOptions
    public let logger: Logger
    /// The private folder holding the config file, the control socket and the master's standard error.
    let folder: String
    let client: String
    private let master: ChildProcess
    private let slots: ChannelSlots
    private let lock = NSLock()
    private var lost: SSHError?
    private var closed = false
    private var children: [Int32: ChildProcess] = [:]

    private init(options: SSHOptions, logger: Logger, folder: String, client: String, master: ChildProcess) {
        self.options = options
        self.logger = logger
        self.folder = folder
        self.client = client
        self.master = master
        self.slots = ChannelSlots(options.maxChannels)
    }

    deinit {
        if !closed {
            master.kill()
            try? FileManager.default.removeItem(atPath: folder)
        }
    }

    /// The alias of the server in the generated config.
    static let target = "dstack-target"

    var configFile: String { folder + "/config" }
    var controlPath: String { folder + "/control" }

    /// Connects like `connect(_:logger:)`, retrying transient failures with backoff.
    public static func connect(
        _ options: SSHOptions, retrying policy: RetryPolicy, logger: Logger = Logger(label: "dstack.ssh")
    ) async throws -> OpenSSHSession {
        try await policy.connecting(options.hostKeyName, logger: logger) { try await connect(options, logger: logger) }
    }

    /// Starts the master connection and waits until its control socket is ready (authenticated) or it failed.
    public static func connect(_ options: SSHOptions, logger: Logger = Logger(label: "dstack.ssh")) async throws -> OpenSSHSession {
        let target = options.hostKeyName
        guard let client = findClient() else {
            throw SSHError.opensshFailed(target: target, stderr: "no ssh client found in PATH (install openssh-client, or set transport: libssh2)", transient: false)
        }
        // A short path: the control socket's must fit in a sockaddr_un (about 100 bytes).
        let temporary = NSTemporaryDirectory().hasSuffix("/") ? String(NSTemporaryDirectory().dropLast()) : NSTemporaryDirectory()
        var template = Array((temporary + "/dstack-ssh-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw SSHError.localIO(path: NSTemporaryDirectory(), reason: "cannot create a private folder for ssh: \(errnoDescription(errno))")
        }
        let folder = String(cString: made)
        let config = configText(options, controlPath: folder + "/control")
        do {
            try config.write(toFile: folder + "/config", atomically: true, encoding: .utf8)
        } catch {
            try? FileManager.default.removeItem(atPath: folder)
            throw SSHError.localIO(path: folder + "/config", reason: error.localizedDescription)
        }
        let errorPath = folder + "/master.stderr"
        _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        let errorFD = open(errorPath, O_WRONLY | O_CLOEXEC)
        defer {
            if devNull >= 0 { Posix.close(devNull) }
            if errorFD >= 0 { Posix.close(errorFD) }
        }
        // Weak: the master's exit handler must not keep the session alive (it lives as long as the master).
        let ended = LockedBox(WeakSession())
        let exited = LockedBox<Bool>(false)
        let arguments = ["-F", folder + "/config", "-M", "-S", folder + "/control", "-N", "-T", "-o", "ControlPersist=no", Self.target]
        logger.debug("ssh \(target): starting \(client) \(arguments.joined(separator: " "))")
        let master: ChildProcess
        do {
            master = try ChildProcess(path: client, arguments: arguments, stdin: devNull, stdout: devNull, stderr: errorFD)
        } catch {
            try? FileManager.default.removeItem(atPath: folder)
            throw SSHError.opensshFailed(target: target, stderr: "\(error)", transient: false)
        }
        master.onExit { _ in
            exited.set(true)
            ended.get().value?.masterEnded(Self.tail(of: errorPath))
        }
        // ssh opens the control socket once the connection is authenticated.
        let deadline = ContinuousClock.now + options.connectTimeout + .seconds(5)
        while !FileManager.default.fileExists(atPath: folder + "/control") {
            if exited.get() {
                let said = tail(of: errorPath)
                try? FileManager.default.removeItem(atPath: folder)
                throw SSHError.opensshFailed(target: target, stderr: said, transient: isTransient(said))
            }
            if ContinuousClock.now > deadline {
                master.kill()
                try? FileManager.default.removeItem(atPath: folder)
                throw SSHError.connectTimedOut(host: options.host, port: options.port, seconds: Double(options.connectTimeout.components.seconds) + 5)
            }
            do {
                try await Task.sleep(for: .milliseconds(10))
            } catch {
                master.kill()
                try? FileManager.default.removeItem(atPath: folder)
                throw error
            }
        }
        let session = OpenSSHSession(options: options, logger: logger, folder: folder, client: client, master: master)
        ended.set(WeakSession(value: session))
        if exited.get() { session.masterEnded(tail(of: errorPath)) }
        logger.debug("ssh \(target): connected through the system ssh client (transport: openssh)")
        return session
    }

    /// The `ssh` to run: `$DSTACK_SSH_CLIENT`, else the first `ssh` on PATH.
    static func findClient() -> String? {
        let environment = ProcessInfo.processInfo.environment
        if let client = environment["DSTACK_SSH_CLIENT"], !client.isEmpty { return client }
        for dir in (environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let path = "\(dir)/ssh"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    /// The generated ssh config: the target and each jump host, everything explicit, nothing read from elsewhere.
    static func configText(_ options: SSHOptions, controlPath: String) -> String {
        var text = "# written by dstack for transport: openssh; removed when the connection closes\n"
        let hops = options.jumpHosts.enumerated().map { ("dstack-hop-\($0.offset + 1)", $0.element) }
        for (alias, hop) in hops {
            text += hostBlock(alias, hop, acceptNew: options.acceptNewHostKeys)
        }
        text += hostBlock(target, options, acceptNew: options.acceptNewHostKeys)
        if !hops.isEmpty {
            text += "  ProxyJump \(hops.map(\.0).joined(separator: ","))\n"
        } else if let command = options.proxyCommand {
            // Already expanded by dstack: ssh must not expand its % again.
            text += "  ProxyCommand \(command.replacingOccurrences(of: "%", with: "%%"))\n"
        }
        text += "  ControlPath \(quoted(controlPath))\n"
        text += "  ServerAliveInterval \(max(1, options.keepaliveInterval.components.seconds))\n  ServerAliveCountMax 3\n"
        return text
    }

    private static func hostBlock(_ alias: String, _ o: SSHOptions, acceptNew: Bool) -> String {
        var text = "Host \(alias)\n  HostName \(o.host)\n  Port \(o.port)\n  User \(o.user)\n"
        for file in o.identityFiles { text += "  IdentityFile \(quoted(expandTilde(file)))\n" }
        if o.identitiesOnly { text += "  IdentitiesOnly yes\n" }
        text += "  IdentityAgent \(o.agentSocket.map(quoted) ?? "none")\n"
        text += "  UserKnownHostsFile \(quoted(expandTilde(o.knownHostsFile)))\n"
        text += "  GlobalKnownHostsFile \(o.systemKnownHostsFiles.isEmpty ? "none" : o.systemKnownHostsFiles.map(quoted).joined(separator: " "))\n"
        text += "  StrictHostKeyChecking \(acceptNew ? "accept-new" : "yes")\n"
        text += """
              BatchMode yes
              PasswordAuthentication no
              KbdInteractiveAuthentication no
              CheckHostIP no
              UpdateHostKeys no
              HashKnownHosts no
              ControlMaster no
              ForwardAgent no
              ForwardX11 no
              ClearAllForwardings yes
              RequestTTY no
              EscapeChar none
              LogLevel ERROR

            """
        text += "  ConnectTimeout \(max(1, o.connectTimeout.components.seconds))\n"
        return text
    }

    private static func quoted(_ value: String) -> String { "\"\(value)\"" }

    /// The last lines of a small file (the master's standard error).
    static func tail(of path: String) -> String {
        let data = (try? Data(contentsOf: URL(fileURLWithPath: path))) ?? Data()
        return String(decoding: data.suffix(4096), as: UTF8.self).split(whereSeparator: \.isNewline).suffix(6)
            .joined(separator: "; ").trimmingCharacters(in: .whitespaces)
    }

    /// Whether what ssh said is a failure that may pass (refused, timed out, dropped), as libssh2's are counted.
    static func isTransient(_ said: String) -> Bool {
        ["Connection refused", "timed out", "Connection closed", "Connection reset", "No route to host",
         "Network is unreachable", "kex_exchange_identification"].contains { said.contains($0) }
    }

    private func masterEnded(_ said: String) {
        lock.withLock {
            if lost == nil {
                lost = .connectionLost(host: options.hostKeyName, reason: "the ssh master connection (transport: openssh) ended\(said.isEmpty ? "" : ": \(said)")")
            }
        }
    }

    public var isConnected: Bool { lock.withLock { lost == nil && !closed } }

    public var failure: SSHError? { lock.withLock { lost ?? (closed ? .sessionClosed(host: options.hostKeyName) : nil) } }

    public func close() async {
        let running: [ChildProcess]? = lock.withLock {
            if closed { return nil }
            closed = true
            return Array(children.values)
        }
        guard let running else { return }
        for child in running { child.kill() }
        master.kill()
        _ = await master.wait()
        try? FileManager.default.removeItem(atPath: folder)
    }

    public func exec(_ command: String, stdin: Data? = nil, idleTimeout: Duration?? = nil) async throws -> ExecResult {
        try await run(command, input: .data(stdin ?? Data()), stdout: .collect(.max), stderr: .collect(.max))
    }

    public func exec(
        _ command: String, stdin: Data? = nil, idleTimeout: Duration?? = nil,
        onOutput: @escaping @Sendable (ExecStream, Data) -> Void
    ) async throws -> ExecResult {
        try await run(command, input: .data(stdin ?? Data()), stdout: .callback(onOutput), stderr: .callback(onOutput))
    }

    public func exec(
        _ command: String, stdinFrom input: FileHandle?, stdoutTo output: FileHandle?, idleTimeout: Duration?? = nil
    ) async throws -> ExecResult {
        try await run(command, input: input.map { .handle($0) } ?? .data(Data()),
                      stdout: output.map { .handle($0) } ?? .collect(.max), stderr: .collect(1024 * 1024))
    }

    public func startProcess(_ command: String, label: String) -> RemoteProcess {
        let queue = InputQueue()
        let wakeup = DispatchSemaphore(value: 0)
        let (events, continuation) = AsyncThrowingStream<ExecEvent, any Error>.makeStream()
        let child = LockedBox<ChildProcess?>(nil)
        let task = Task {
            do {
                let result = try await self.run(
                    command, input: .queue(queue, wakeup), stdout: .callback { continuation.yield(.output($0, $1)) },
                    stderr: .callback { continuation.yield(.output($0, $1)) }, started: { child.set($0) })
                continuation.yield(.exit(result))
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        logger.debug("ssh \(options.hostKeyName): start \(label) (transport: openssh)")
        return RemoteProcess(events: events, queue: queue, wake: { wakeup.signal() }, cancel: {
            task.cancel()
            child.get()?.kill()
        })
    }

    /// Runs the portable line of `command` in a `ssh -S` child; its exit status is the command's, except that
    /// status 255 with the master gone (or the multiplexer refusing) is the connection's failure.
    private func run(
        _ command: String, input: OpenSSHChild.Input, stdout: OpenSSHChild.Output, stderr: OpenSSHChild.Output,
        started: @escaping @Sendable (ChildProcess) -> Void = { _ in }
    ) async throws -> ExecResult {
        if let failure { throw failure }
        try await slots.acquire()
        defer { Task { await slots.release() } }
        let (line, script) = SSHSession.portable(command)
        logger.debug("ssh \(options.hostKeyName): exec \(summarized(command)) (transport: openssh)")
        // ProxyCommand=/bin/false: if the control socket is gone, ssh must fail, not open a connection of its own.
        let arguments = ["-F", configFile, "-S", controlPath, "-o", "ControlMaster=no", "-o", "ProxyCommand=/bin/false",
                         "-T", Self.target, line]
        let process = LockedBox<ChildProcess?>(nil)
        let outcome: OpenSSHChild.Outcome = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                do {
                    let child = try OpenSSHChild.start(client: client, arguments: arguments, prefix: script, input: input,
                                                       stdout: stdout, stderr: stderr) { continuation.resume(returning: $0) }
                    process.set(child)
                    lock.withLock { children[child.pid] = child }
                    started(child)
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        } onCancel: {
            process.get()?.kill()
        }
        if let child = process.get() { lock.withLock { _ = children.removeValue(forKey: child.pid) } }
        if case let .queue(queue, wakeup) = input {
            // The child is gone: its writer thread stops waiting for more.
            queue.close()
            wakeup.signal()
        }
        if Task.isCancelled { throw SSHError.cancelled }
        if outcome.status == 255 {
            let said = String(decoding: outcome.stderr.suffix(2048), as: UTF8.self)
            let muxFailed = ["mux_client", "Control socket", "kex_exchange_identification", "Connection closed by UNKNOWN"]
                .contains { said.contains($0) }
            // Give the master's exit a moment to be noticed: a dropped connection ends both at once.
            if !muxFailed && isConnected { try? await Task.sleep(for: .milliseconds(50)) }
            if let failure { throw failure }
            if muxFailed {
                masterEnded(said.trimmingCharacters(in: .whitespacesAndNewlines))
                master.kill()
                throw failure ?? .sessionClosed(host: options.hostKeyName)
            }
        }
        if outcome.signaled { throw lock.withLock { closed } ? SSHError.sessionClosed(host: options.hostKeyName) : SSHError.cancelled }
        return ExecResult(stdout: outcome.stdout, stderr: outcome.stderr, exitStatus: outcome.status)
    }
}

/// One `ssh` child: its standard input written (and its outputs read) on threads of its own.
enum OpenSSHChild {
    /// What the child reads after the portable line's script.
    enum Input: Sendable {
        case data(Data)
        case handle(FileHandle)
        case queue(InputQueue, DispatchSemaphore)
    }

    /// Where one of its outputs goes.
    enum Output: Sendable {
        case collect(Int)
        case handle(FileHandle)
        case callback(@Sendable (ExecStream, Data) -> Void)
    }

    /// How it ended.
    struct Outcome: Sendable {
        var status: Int32
        var signaled: Bool
        var stdout: Data
        var stderr: Data
    }

    /// Starts `client ARGUMENTS`; `done` is called once it exited and its outputs were read to their end.
    static func start(client: String, arguments: [String], prefix: Data, input: Input, stdout: Output, stderr: Output,
                      done: @escaping @Sendable (Outcome) -> Void) throws(SSHError) -> ChildProcess {
        let stdinPipe = try ChildProcess.pipe()
        var readers: [(Int32, ExecStream, Output)] = []
        var childEnds = [stdinPipe.read]
        func target(_ output: Output, _ stream: ExecStream) throws(SSHError) -> Int32 {
            if case let .handle(handle) = output { return handle.fileDescriptor }
            let pipe = try ChildProcess.pipe()
            readers.append((pipe.read, stream, output))
            childEnds.append(pipe.write)
            return pipe.write
        }
        let child: ChildProcess
        do {
            let out = try target(stdout, .stdout)
            let err = try target(stderr, .stderr)
            child = try ChildProcess(path: client, arguments: arguments, stdin: stdinPipe.read, stdout: out, stderr: err)
        } catch {
            for fd in childEnds + readers.map(\.0) + [stdinPipe.write] { Posix.close(fd) }
            throw error
        }
        for fd in childEnds { Posix.close(fd) }
        let group = DispatchGroup()
        let collected = LockedBox<(Data, Data)>((Data(), Data()))
        let ended = LockedBox<ChildProcess.Exit>(.init(status: 0, signal: nil))
        group.enter()
        child.onExit { exit in
            ended.set(exit)
            group.leave()
        }
        for (fd, stream, output) in readers {
            group.enter()
            Thread.detachNewThread {
                Self.read(fd, stream, output, into: collected)
                Posix.close(fd)
                group.leave()
            }
        }
        let sink = stdinPipe.write
        Thread.detachNewThread {
            Self.write(prefix: prefix, input: input, to: sink)
            Posix.close(sink)
        }
        group.notify(queue: .global()) {
            let exit = ended.get()
            let (out, err) = collected.get()
            done(Outcome(status: exit.status, signaled: exit.signal != nil, stdout: out, stderr: err))
        }
        return child
    }

    private static func read(_ fd: Int32, _ stream: ExecStream, _ output: Output, into collected: LockedBox<(Data, Data)>) {
        let size = 256 * 1024
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = Posix.read(fd, buffer, size)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return }
            let bytes = Data(bytes: buffer, count: n)
            switch output {
            case let .collect(limit):
                collected.update { value in
                    if stream == .stdout {
                        value.0.append(bytes.prefix(max(0, limit - value.0.count)))
                    } else {
                        value.1.append(bytes.prefix(max(0, limit - value.1.count)))
                    }
                }
            case let .callback(callback):
                callback(stream, bytes)
            case .handle:
                return
            }
        }
    }

    private static func write(prefix: Data, input: Input, to fd: Int32) {
        #if canImport(Glibc) || canImport(Darwin)
        // A child gone early must fail the write with EPIPE, not kill the process.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        #endif
        func send(_ data: Data) -> Bool {
            data.withUnsafeBytes { Posix.writeAll(fd, $0) == nil }
        }
        guard send(prefix) else { return }
        switch input {
        case let .data(data):
            _ = send(data)
        case let .handle(source):
            let size = 1024 * 1024
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
            defer { buffer.deallocate() }
            while true {
                let n = Posix.read(source.fileDescriptor, buffer, size)
                if n < 0 && errno == EINTR { continue }
                guard n > 0, Posix.writeAll(fd, UnsafeRawBufferPointer(start: buffer, count: n)) == nil else { return }
            }
        case let .queue(queue, wakeup):
            while true {
                let (bytes, closed) = queue.take(upTo: 256 * 1024)
                if !bytes.isEmpty {
                    guard send(bytes) else { return }
                } else if closed {
                    return
                } else {
                    wakeup.wait()
                }
            }
        }
    }
}

/// A session held weakly, for handlers that must not keep it alive.
struct WeakSession: Sendable {
    weak var value: OpenSSHSession?
}

/// At most N commands at once over one master (sshd's MaxSessions is 10); more wait their turn.
actor ChannelSlots {
    private var free: Int
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(_ count: Int) { free = max(1, count) }

    func acquire() async throws {
        if free > 0 {
            free -= 1
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func release() {
        if waiting.isEmpty { free += 1 } else { waiting.removeFirst().resume() }
    }
}

/// A value guarded by a lock, read and written from any thread.
final class LockedBox<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func get() -> Value { lock.withLock { value } }

    func set(_ newValue: Value) { lock.withLock { value = newValue } }

    func update(_ body: (inout Value) -> Void) { lock.withLock { body(&value) } }
}
