import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs short helper programs (git, nvidia-smi, tar) without blocking Swift's cooperative threads.
public enum Subprocess {
    /// The outcome of a finished program.
    public struct Result: Sendable {
        /// Its exit status (or 128 + signal).
        public var status: Int32
        /// What it wrote to standard output.
        public var stdout: Data
        /// What it wrote to standard error.
        public var stderr: Data

        /// Standard output as text.
        public var output: String { String(decoding: stdout, as: UTF8.self) }
        /// Standard error as text, trimmed.
        public var errorText: String { String(decoding: stderr, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
    }

    /// Runs `arguments[0]` (looked up in PATH) with the rest as its arguments, in `directory`, and waits for it.
    ///
    /// Output goes through temporary files, so a program writing megabytes cannot fill a pipe and hang.
    public static func run(_ arguments: [String], in directory: URL? = nil,
                           environment: [String: String]? = nil) async throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = directory }
        if let environment { process.environment = environment }
        let tmp = FileManager.default.temporaryDirectory
        let outURL = tmp.appendingPathComponent("dstack-out-\(UUID().uuidString)")
        let errURL = tmp.appendingPathComponent("dstack-err-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: outURL)
            try? FileManager.default.removeItem(at: errURL)
        }
        let out = try FileHandle(forWritingTo: outURL)
        let err = try FileHandle(forWritingTo: errURL)
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { p in
                let code = p.terminationReason == .uncaughtSignal ? 128 + p.terminationStatus : p.terminationStatus
                continuation.resume(returning: code)
            }
            do { try process.run() } catch {
                process.terminationHandler = nil
                continuation.resume(throwing: error)
            }
        }
        try? out.close()
        try? err.close()
        return Result(status: status, stdout: (try? Data(contentsOf: outURL)) ?? Data(),
                      stderr: (try? Data(contentsOf: errURL)) ?? Data())
    }

    /// Starts `arguments` in a new session (detached from the terminal and its Ctrl-C), returning its pid.
    public static func spawnDetached(_ arguments: [String], environment: [String: String],
                                     stdout: String = "/dev/null") throws -> pid_t {
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        #if os(Linux)
        let setsid: Int16 = 0x80  // POSIX_SPAWN_SETSID, which Glibc's module does not export
        #else
        let setsid = Int16(POSIX_SPAWN_SETSID)
        #endif
        // The child starts with no blocked signals and default handlers: the calling thread may block SIGCHLD
        // (a shell's `wait` would then hang) and the coordinator ignores SIGINT while it handles Ctrl-C itself.
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var all = sigset_t()
        sigfillset(&all)
        sigdelset(&all, SIGKILL)
        sigdelset(&all, SIGSTOP)
        posix_spawnattr_setsigdefault(&attr, &all)
        var flags = setsid | Int16(POSIX_SPAWN_SETSIGMASK) | Int16(POSIX_SPAWN_SETSIGDEF)
        #if canImport(Darwin)
        flags |= Int16(POSIX_SPAWN_CLOEXEC_DEFAULT)
        #endif
        posix_spawnattr_setflags(&attr, flags)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        // Private: a detached coordinator's log holds its jobs' output (issue 16).
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Nothing else is inherited: a detached process holding, say, the write end of the pipe our caller reads
        // would keep that caller waiting (`dstack run -d | cat`) until the whole run ended.
        #if os(Linux)
        closeInheritedDescriptors(&actions)
        #endif

        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, arguments[0], &actions, &attr, argv, envp)
        guard rc == 0 else {
            throw RunnerError.unavailable(runner: "local", reason: "cannot start \(arguments[0]): \(String(cString: strerror(rc)))")
        }
        return pid
    }

    #if os(Linux)
    /// Closes every descriptor above 2 in the child: with glibc's `posix_spawn_file_actions_addclosefrom_np`
    /// where it exists (2.34+; the Glibc module does not export it), else by marking them close-on-exec here.
    private static func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") {
            let closeFrom = unsafeBitCast(symbol, to: CloseFrom.self)
            if closeFrom(&actions, 3) == 0 { return }
        }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
            guard let fd = Int32(name), fd > 2 else { continue }
            let flags = fcntl(fd, F_GETFD)
            if flags >= 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
        }
    }
    #endif
}
