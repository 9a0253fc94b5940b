import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A child process started with `posix_spawn` and reaped by a thread of its own, for programs that close every
/// descriptor they did not expect: OpenSSH's `ssh` does (`closefrom(3)` at start-up), which closes the socket that
/// Foundation's `Process` watches to learn that a child ended; Foundation then blocks its one monitoring thread in
/// `waitpid` on a child that is still running, and no other `Process` (tar, git) is ever seen to end.
final class ChildProcess: Sendable {
    /// How a child ended.
    struct Exit: Sendable, Equatable {
        /// Its exit status (0 when a signal killed it).
        var status: Int32
        /// The signal that killed it, if one did.
        var signal: Int32?
    }

    /// The child's process id.
    let pid: pid_t
    private let box: ExitSignal

    /// Starts `path` with `arguments` (not counting argv[0], which is `path`), the descriptors `stdin`, `stdout`
    /// and `stderr` as its 0, 1 and 2, this process's environment, no signal blocked and default dispositions.
    init(path: String, arguments: [String], stdin: Int32, stdout: Int32, stderr: Int32) throws(SSHError) {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdin, 0)
        posix_spawn_file_actions_adddup2(&actions, stdout, 1)
        posix_spawn_file_actions_adddup2(&actions, stderr, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = ([path] + arguments).map { strdup($0) }
        defer { argv.forEach { free($0) } }
        var child: pid_t = 0
        var args = argv + [nil]
        let result = posix_spawn(&child, path, &actions, &attributes, &args, environ)
        guard result == 0 else { throw .localIO(path: path, reason: "cannot start it: \(errnoDescription(result))") }
        pid = child
        let box = ExitSignal()
        self.box = box
        let spawned = child
        Thread.detachNewThread {
            var status: Int32 = 0
            while waitpid(spawned, &status, 0) == -1 && errno == EINTR {}
            // WIFEXITED / WEXITSTATUS / WTERMSIG are macros Swift cannot see.
            let signal = status & 0x7f
            box.finish(signal == 0 ? Exit(status: (status >> 8) & 0xff, signal: nil) : Exit(status: 0, signal: signal))
        }
    }

    /// Whether it has ended (and was reaped).
    var hasExited: Bool { box.current != nil }

    /// Calls `handler` once the child ended (at once if it has), on the reaping thread or the caller's.
    func onExit(_ handler: @escaping @Sendable (Exit) -> Void) {
        box.whenDone(handler)
    }

    /// Waits for the child to end without blocking a thread.
    func wait() async -> Exit {
        await withCheckedContinuation { continuation in box.whenDone { continuation.resume(returning: $0) } }
    }

    /// Sends SIGKILL unless it has already ended.
    func kill() {
        if !hasExited { _ = posixKill(pid, SIGKILL) }
    }

    /// A pipe whose two ends close on exec (the child gets its end through `dup2`, which clears the flag).
    static func pipe() throws(SSHError) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        guard posixPipe(&fds) == 0 else { throw .localIO(path: "pipe", reason: errnoDescription(errno)) }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return (fds[0], fds[1])
    }
}

private func posixKill(_ pid: pid_t, _ signal: Int32) -> Int32 {
    #if canImport(Glibc)
    return Glibc.kill(pid, signal)
    #else
    return Darwin.kill(pid, signal)
    #endif
}

private func posixPipe(_ fds: inout [Int32]) -> Int32 {
    #if canImport(Glibc)
    return Glibc.pipe(&fds)
    #else
    return Darwin.pipe(&fds)
    #endif
}

/// A child's exit, delivered once to every handler.
private final class ExitSignal: @unchecked Sendable {
    private let lock = NSLock()
    private var exit: ChildProcess.Exit?
    private var handlers: [@Sendable (ChildProcess.Exit) -> Void] = []

    var current: ChildProcess.Exit? { lock.withLock { exit } }

    func finish(_ value: ChildProcess.Exit) {
        let pending: [@Sendable (ChildProcess.Exit) -> Void] = lock.withLock {
            exit = value
            defer { handlers = [] }
            return handlers
        }
        for handler in pending { handler(value) }
    }

    func whenDone(_ handler: @escaping @Sendable (ChildProcess.Exit) -> Void) {
        let done: ChildProcess.Exit? = lock.withLock {
            if exit == nil { handlers.append(handler) }
            return exit
        }
        if let done { handler(done) }
    }
}
