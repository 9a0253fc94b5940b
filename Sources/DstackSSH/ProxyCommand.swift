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
    private let process: Process
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
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "exec " + command]
        let childEnd = FileHandle(fileDescriptor: pair.remote, closeOnDealloc: false)
        process.standardInput = childEnd
        process.standardOutput = childEnd
        process.standardError = errorHandle
        do {
            try process.run()
        } catch {
            closeDescriptor(pair.local)
            closeDescriptor(pair.remote)
            try? FileManager.default.removeItem(at: errorFile)
            throw .localIO(path: "/bin/sh", reason: "cannot start the ProxyCommand '\(command)': \(error.localizedDescription)")
        }
        closeDescriptor(pair.remote)
        self.process = process
        self.socket = pair.local
    }

    /// What the command wrote to standard error so far (its last 4 KiB), trimmed; waits up to `grace` for it to
    /// exit first, so that a failing command's last words are in.
    func standardError(grace: Duration = .zero) -> String {
        let deadline = ContinuousClock.now + grace
        while process.isRunning && ContinuousClock.now < deadline { usleep(10_000) }
        let data = (try? Data(contentsOf: errorFile)) ?? Data()
        return String(decoding: data.suffix(4096), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Stops the command (SIGKILL: Foundation's children inherit a mask that blocks SIGTERM) and removes its file.
    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: errorFile)
    }
}
