import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A running ProxyCommand: `/bin/sh -c COMMAND` whose standard input and output are one end of a local socket
/// pair, the other end being the SSH session's socket; its standard error goes to a file, for `-v` and for the
/// error when the connection fails.
final class ProxyCommandProcess: Sendable {
    /// The command as run (tokens already expanded).
    let command: String
    /// The session's end of the socket pair.
    let socket: Int32
    private let process: ChildProcess
    private let errorFile: URL

    /// Starts `command`; the caller owns `socket` from then on.
    init(command: String) throws(SSHError) {
        self.command = command
        let pair = try TunnelOperation.socketPair()
        // The command gets an ordinary blocking stdin/stdout.
        _ = fcntl(pair.remote, F_SETFL, fcntl(pair.remote, F_GETFL) & ~O_NONBLOCK)
        errorFile = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-proxy-\(UUID().uuidString).stderr")
        guard FileManager.default.createFile(atPath: errorFile.path, contents: nil),
              let errorHandle = try? FileHandle(forWritingTo: errorFile) else {
            closeDescriptor(pair.local)
            closeDescriptor(pair.remote)
            throw .localIO(path: errorFile.path, reason: "cannot create a temporary file")
        }
        defer { try? errorHandle.close() }
        // posix_spawn, not Foundation's Process: ssh -W (the usual ProxyCommand) closes the descriptor that
        // Process watches, which stalls every other Process of dstack (see ChildProcess).
        let process: ChildProcess
        do {
            process = try ChildProcess(path: "/bin/sh", arguments: ["-c", "exec " + command], stdin: pair.remote,
                                       stdout: pair.remote, stderr: errorHandle.fileDescriptor)
        } catch {
            closeDescriptor(pair.local)
            closeDescriptor(pair.remote)
            try? FileManager.default.removeItem(at: errorFile)
            throw .localIO(path: "/bin/sh", reason: "cannot start the ProxyCommand '\(command)': \(error)")
        }
        closeDescriptor(pair.remote)
        self.process = process
        self.socket = pair.local
    }

    /// What the command wrote to standard error so far (its last 4 KiB), trimmed; waits up to `grace` for it to
    /// exit first, so that a failing command's last words are in.
    func standardError(grace: Duration = .zero) -> String {
        let deadline = ContinuousClock.now + grace
        while !process.hasExited && ContinuousClock.now < deadline { usleep(10_000) }
        let data = (try? Data(contentsOf: errorFile)) ?? Data()
        return String(decoding: data.suffix(4096), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Stops the command (SIGKILL: Foundation's children inherit a mask that blocks SIGTERM) and removes its file.
    func stop() async {
        process.kill()
        _ = await process.wait()
        try? FileManager.default.removeItem(at: errorFile)
    }
}
