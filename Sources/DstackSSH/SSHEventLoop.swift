internal import CLibSSH2
import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One SSH connection's dedicated thread: it owns the libssh2 session and runs every libssh2 call for it.
///
/// The rest of the program talks to it through a locked mailbox and a wake-up pipe. The session is non-blocking:
/// each round steps every operation until all would block, then sleeps in `poll()` on the socket in the
/// directions libssh2 reports. libssh2 keeps at most one partly sent packet; while one is pending, only the
/// operation that left it is stepped, because any other send would fail with LIBSSH2_ERROR_BAD_USE.
/// `@unchecked Sendable`: the mailbox is guarded by `lock`; everything else is touched only on the thread.
final class SSHEventLoop: @unchecked Sendable {
    private enum Message {
        case submit(UInt64, any LoopOperation)
        case cancel(UInt64)
        case perform(run: @Sendable () -> Void, reject: @Sendable () -> Void)
        case shutdown(CheckedContinuation<Void, Never>?)
    }

    /// An operation as the loop tracks it: its id, its progress clock and its cleanup state.
    final class Entry {
        let id: UInt64
        let op: any LoopOperation
        var lastProgress: ContinuousClock.Instant
        var cleanupDeadline: ContinuousClock.Instant?
        /// An abort that waits until this operation has resent its half-sent packet.
        var deferredAbort: SSHError?
        init(id: UInt64, op: any LoopOperation, now: ContinuousClock.Instant) {
            self.id = id
            self.op = op
            self.lastProgress = now
        }
    }

    /// Who the loop talks to, for messages.
    let hostName: String
    let logger: Logger
    let clock = ContinuousClock()

    // Guarded by `lock`.
    private let lock = NSLock()
    private var mailbox: [Message] = []
    private var nextID: UInt64 = 0
    private var threadExited = false
    private var failure: SSHError?

    private let wakeRead: Int32
    private let wakeWrite: Int32

    // Loop thread only.
    /// The libssh2 session, once connected; nil before and after.
    private(set) var session: OpaquePointer?
    var socket: Int32 = -1
    /// Bytes libssh2 has read from the socket; the session's abstract pointer, bumped by `dstack_counting_recv`.
    let received: UnsafeMutablePointer<UInt64>
    var running: [Entry] = []
    var waiting: [Entry] = []
    private var cancelledEarly: Set<UInt64> = []
    var owner: Entry?
    private var deathCause: SSHError?
    var pendingDeath: SSHError?
    private var shutDown = false
    private var maxChannels = 8
    var keepaliveInterval: Duration = .seconds(15)
    var nextKeepalive: ContinuousClock.Instant
    var lastReceivedCount: UInt64 = 0
    var lastReceive: ContinuousClock.Instant
    var keepalivesUnanswered = 0

    init(hostName: String, logger: Logger) throws(SSHError) {
        self.hostName = hostName
        self.logger = logger
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else {
            throw .localIO(path: "pipe", reason: errnoDescription(errno))
        }
        wakeRead = fds[0]
        wakeWrite = fds[1]
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        received = .allocate(capacity: 1)
        received.initialize(to: 0)
        nextKeepalive = clock.now
        lastReceive = clock.now
        let thread = Thread { [self] in self.run() }
        thread.name = "dstack-ssh \(hostName)"
        thread.start()
    }

    deinit {
        close(wakeRead)
        close(wakeWrite)
        received.deallocate()
    }

    // MARK: - Mailbox (any thread)

    /// Why the connection is unusable (lost or closed), or nil while it works.
    var connectionFailure: SSHError? {
        lock.lock()
        defer { lock.unlock() }
        return failure ?? (threadExited ? .sessionClosed(host: hostName) : nil)
    }

    /// A fresh operation id, for cancellation.
    func makeID() -> UInt64 {
        lock.lock()
        defer { lock.unlock() }
        nextID += 1
        return nextID
    }

    /// Hands an operation to the loop thread.
    func submit(_ op: any LoopOperation, id: UInt64) {
        post(.submit(id, op))
    }

    /// Makes the loop step every operation again soon (new input was queued for one).
    func wake() {
        post(.perform(run: {}, reject: {}))
    }

    /// Aborts the operation with `id` (or marks it to be aborted when it arrives).
    func cancel(_ id: UInt64) {
        post(.cancel(id))
    }

    /// Runs `body` on the loop thread; blocking work is allowed there (it is not the cooperative pool).
    func perform<T: Sendable>(_ body: @escaping @Sendable () throws(SSHError) -> T) async throws(SSHError) -> T {
        let result: Result<T, SSHError> = await withCheckedContinuation { continuation in
            let host = hostName
            let accepted = post(.perform(run: {
                do throws(SSHError) {
                    continuation.resume(returning: .success(try body()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }, reject: {
                continuation.resume(returning: .failure(.sessionClosed(host: host)))
            }))
            if !accepted { continuation.resume(returning: .failure(.sessionClosed(host: host))) }
        }
        return try result.get()
    }

    /// Aborts every operation, disconnects, frees the session and ends the thread; returns when that is done.
    func shutdown() async {
        await withCheckedContinuation { continuation in
            if !post(.shutdown(continuation)) { continuation.resume() }
        }
    }

    /// Like `shutdown()` without waiting, for a session dropped without `close()`.
    func shutdownDetached() {
        post(.shutdown(nil))
    }

    @discardableResult
    private func post(_ message: Message) -> Bool {
        lock.lock()
        if threadExited {
            lock.unlock()
            if case let .submit(_, op) = message { op.abort(.sessionClosed(host: hostName)) }
            return false
        }
        mailbox.append(message)
        lock.unlock()
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
        return true
    }

    // MARK: - Used by operations (loop thread)

    /// Installs the connected session and socket; called by the connect procedure on the loop thread.
    func adopt(session: OpaquePointer, socket: Int32, options: SSHOptions) {
        self.session = session
        self.socket = socket
        maxChannels = options.maxChannels
        keepaliveInterval = max(options.keepaliveInterval, .seconds(1))
        nextKeepalive = clock.now + keepaliveInterval
        lastReceive = clock.now
        lastReceivedCount = received.pointee
    }

    /// Builds the error for a failed libssh2 call; an error that kills the session also marks the loop dead.
    func error(_ code: Int, _ operation: String) -> SSHError {
        let error = LibSSH2.error(session, code, operation)
        if case let .libssh2(_, reported, message) = error, LibSSH2.isFatal(reported) {
            let lost = SSHError.connectionLost(
                host: hostName, reason: "\(LibSSH2.describe(reported)) while \(operation) (\(message))")
            pendingDeath = pendingDeath ?? lost
            return lost
        }
        return error
    }

    /// Whether libssh2 holds a partly sent packet, so that only the same call may be made next.
    var outboundPending: Bool {
        guard let session else { return false }
        return libssh2_session_block_directions(session) & LIBSSH2_SESSION_BLOCK_OUTBOUND != 0
    }

    // MARK: - The loop (loop thread)

    private func run() {
        #if canImport(Glibc) || canImport(Darwin)
        // Writes to a local pipe whose reader died must fail with EPIPE here, not kill the process.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        #endif
        while !shutDown {
            drainMailbox()
            if shutDown { break }
            guard let session, deathCause == nil else {
                sleep(until: nil)
                continue
            }
            let before = received.pointee
            let progressed = stepRound(session)
            if let cause = pendingDeath {
                die(cause)
                continue
            }
            enforceTimeouts()
            keepAlive(session)
            if let cause = pendingDeath {
                die(cause)
                continue
            }
            noteReceived()
            if progressed || received.pointee != before { continue }
            waitForSocket(session)
        }
        finish()
    }

    private func drainMailbox() {
        lock.lock()
        let messages = mailbox
        mailbox.removeAll()
        lock.unlock()
        for message in messages {
            switch message {
            case let .submit(id, op):
                if cancelledEarly.remove(id) != nil {
                    op.abort(.cancelled)
                } else if let cause = deathCause {
                    op.abort(cause)
                } else if session == nil {
                    op.abort(.sessionClosed(host: hostName))
                } else {
                    let entry = Entry(id: id, op: op, now: clock.now)
                    if op.usesChannel { waiting.append(entry) } else { running.append(entry) }
                }
            case let .cancel(id):
                if let entry = (running + waiting).first(where: { $0.id == id }) {
                    abort(entry, .cancelled)
                } else {
                    cancelledEarly.insert(id)
                }
            case let .perform(body, reject):
                if shutDown { reject() } else { body() }
            case let .shutdown(continuation):
                shutDown = true
                if let continuation { shutdownWaiters.append(continuation) }
            }
        }
    }

    private var shutdownWaiters: [CheckedContinuation<Void, Never>] = []

    private func admit() {
        var open = running.count { $0.op.usesChannel }
        while open < maxChannels, !waiting.isEmpty {
            let entry = waiting.removeFirst()
            entry.lastProgress = clock.now
            running.append(entry)
            open += 1
        }
    }

    /// Steps operations once; returns whether any of them moved.
    private func stepRound(_ session: OpaquePointer) -> Bool {
        if let current = owner {
            let result = step(current)
            if !outboundPending || result == .finished {
                owner = nil
                if let error = current.deferredAbort, result != .finished { abort(current, error) }
            }
            return result != .blocked
        }
        admit()
        var progressed = false
        for entry in running {
            let result = step(entry)
            if result != .blocked { progressed = true }
            if pendingDeath != nil { return true }
            if result != .finished, outboundPending {
                owner = entry
                return true
            }
        }
        return progressed
    }

    private func step(_ entry: Entry) -> StepResult {
        let result = entry.op.step(self)
        switch result {
        case .finished:
            running.removeAll { $0 === entry }
        case .progressed:
            entry.lastProgress = clock.now
        case .blocked:
            break
        }
        return result
    }

    func abort(_ entry: Entry, _ error: SSHError) {
        guard entry.cleanupDeadline == nil else { return }
        if owner === entry {
            // Its cleanup would send a different packet, which libssh2 refuses until the pending one is out.
            entry.deferredAbort = entry.deferredAbort ?? error
            return
        }
        entry.op.abort(error)
        entry.cleanupDeadline = clock.now + .seconds(5)
        if waiting.contains(where: { $0 === entry }) {
            // It never started, so it holds nothing to release.
            waiting.removeAll { $0 === entry }
        }
    }

    private func waitForSocket(_ session: OpaquePointer) {
        var events: Int16 = 0
        if owner != nil {
            events = Int16(POLLOUT)
        } else {
            if !running.isEmpty { events |= Int16(POLLIN) }
            if outboundPending { events |= Int16(POLLOUT) }
        }
        var deadline = nextKeepalive
        for entry in running {
            if let cleanup = entry.cleanupDeadline {
                deadline = min(deadline, cleanup)
            } else if let timeout = entry.op.idleTimeout {
                deadline = min(deadline, entry.lastProgress + timeout)
            }
        }
        var fds = [pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0), pollfd(fd: socket, events: events, revents: 0)]
        // Tunnels to sessions behind this jump host also wait on their local sockets.
        let extra = running.compactMap { $0.cleanupDeadline == nil ? $0.op.pollRequest : nil }
        if events == 0 { fds.removeLast() }
        fds += extra.map { pollfd(fd: $0.fd, events: $0.events, revents: 0) }
        let millis = max(0, min(1_000, (deadline - clock.now).milliseconds + 1))
        _ = poll(&fds, nfds_t(fds.count), Int32(millis))
        if fds[0].revents != 0 { drainWakePipe() }
    }

    private func sleep(until deadline: ContinuousClock.Instant?) {
        var fd = pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)
        let millis = deadline.map { Int32(max(0, min(60_000, ($0 - clock.now).milliseconds + 1))) } ?? -1
        _ = poll(&fd, 1, millis)
        drainWakePipe()
    }

    private func drainWakePipe() {
        var buffer = [UInt8](repeating: 0, count: 64)
        while read(wakeRead, &buffer, buffer.count) > 0 {}
    }

    /// The session died: fail every operation and release the connection, keeping the thread to refuse new work.
    private func die(_ cause: SSHError) {
        logger.debug("ssh \(hostName): \(cause)")
        pendingDeath = nil
        deathCause = cause
        lock.lock()
        failure = cause
        lock.unlock()
        for entry in running + waiting where entry.cleanupDeadline == nil { entry.op.abort(cause) }
        running.removeAll()
        waiting.removeAll()
        owner = nil
        releaseSession(disconnect: false)
    }

    private func finish() {
        for entry in running + waiting where entry.cleanupDeadline == nil { entry.op.abort(.sessionClosed(host: hostName)) }
        running.removeAll()
        waiting.removeAll()
        owner = nil
        releaseSession(disconnect: true)
        lock.lock()
        threadExited = true
        let leftovers = mailbox
        mailbox.removeAll()
        lock.unlock()
        for message in leftovers {
            switch message {
            case let .submit(_, op): op.abort(.sessionClosed(host: hostName))
            case let .perform(_, reject): reject()
            case let .shutdown(continuation): continuation?.resume()
            case .cancel: break
            }
        }
        for waiter in shutdownWaiters { waiter.resume() }
        shutdownWaiters.removeAll()
    }

    private func releaseSession(disconnect: Bool) {
        if let session {
            // Blocking with a short timeout: this thread is ours, and nothing else runs on the session any more.
            libssh2_session_set_blocking(session, 1)
            libssh2_session_set_timeout(session, 1_000)
            if disconnect && !outboundPending {
                _ = libssh2_session_disconnect_ex(session, SSH_DISCONNECT_BY_APPLICATION, "closed by dstack", "")
            }
            _ = shutdownSocket(socket)
            _ = libssh2_session_free(session)
            self.session = nil
        }
        if socket >= 0 {
            close(socket)
            socket = -1
        }
    }
}

extension Duration {
    /// The duration in seconds, as a Double.
    var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) / 1e18
    }

    /// The duration in whole milliseconds, rounded down.
    var milliseconds: Int64 {
        let (s, attoseconds) = components
        return s * 1_000 + attoseconds / 1_000_000_000_000_000
    }
}

/// Shuts both directions of a socket, so that libssh2's last sends fail at once instead of waiting.
private func shutdownSocket(_ fd: Int32) -> Int32 {
    #if canImport(Glibc)
    return Glibc.shutdown(fd, Int32(SHUT_RDWR))
    #else
    return Darwin.shutdown(fd, SHUT_RDWR)
    #endif
}
