import Foundation

/// A local helper process (tar) whose standard input or output is a pipe that a channel streams through.
final class LocalProcess: Sendable {
    private let process: Process
    private let inputPipe: Pipe?
    private let outputPipe: Pipe?
    private let exit: ExitBox

    /// The status and standard error of a finished process.
    struct Exit: Sendable {
        var status: Int32
        var stderr: String
    }

    /// Starts `arguments[0]` (found on PATH) with the rest as its arguments.
    init(arguments: [String], pipeStandardInput: Bool = false, pipeStandardOutput: Bool = false) throws(SSHError) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        inputPipe = pipeStandardInput ? Pipe() : nil
        outputPipe = pipeStandardOutput ? Pipe() : nil
        process.standardInput = inputPipe ?? FileHandle.nullDevice
        process.standardOutput = outputPipe ?? FileHandle.nullDevice
        // Standard error goes to a file, so that a chatty process can never block on a full pipe.
        let errorFile = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-\(UUID().uuidString).stderr")
        guard FileManager.default.createFile(atPath: errorFile.path, contents: nil),
              let errorHandle = try? FileHandle(forWritingTo: errorFile)
        else { throw .localIO(path: errorFile.path, reason: "cannot create a temporary file") }
        defer { try? errorHandle.close() }
        process.standardError = errorHandle
        let exit = ExitBox()
        process.terminationHandler = { process in
            let data = (try? Data(contentsOf: errorFile)) ?? Data()
            try? FileManager.default.removeItem(at: errorFile)
            let stderr = String(decoding: data.prefix(64 * 1024), as: UTF8.self)
            exit.finish(Exit(status: process.terminationStatus, stderr: stderr.trimmingCharacters(in: .whitespacesAndNewlines)))
        }
        self.process = process
        self.exit = exit
        do {
            try process.run()
        } catch {
            try? FileManager.default.removeItem(at: errorFile)
            throw .localIO(path: arguments.first ?? "", reason: "cannot start it: \(error.localizedDescription)")
        }
    }

    /// The process's id.
    var pid: Int32 { process.processIdentifier }

    /// Reports, every quarter second until cancelled, how many more bytes the process has read (its `rchar` in
    /// `/proc/PID/io`; nothing where there is no such file): a `tar -cf -` reads each byte it archives once.
    func watchReads(_ report: @escaping @Sendable (Int64) -> Void) -> Task<Void, Never> {
        let path = "/proc/\(pid)/io"
        return Growth.watch(report) {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8),
                  let line = text.split(separator: "\n").first(where: { $0.hasPrefix("rchar:") }) else { return nil }
            return Int64(line.dropFirst("rchar:".count).trimmingCharacters(in: .whitespaces))
        }
    }

    /// The write end of the process's standard input.
    var standardInput: FileHandle? { inputPipe?.fileHandleForWriting }

    /// The read end of the process's standard output.
    var standardOutput: FileHandle? { outputPipe?.fileHandleForReading }

    /// Closes the write end of standard input, so that the process sees end of file.
    func closeStandardInput() {
        try? inputPipe?.fileHandleForWriting.close()
    }

    /// Stops the process (with SIGKILL: children of Foundation's Process inherit a mask that blocks SIGTERM).
    func terminate() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    /// Waits for the process to exit without blocking a thread.
    func wait() async -> Exit {
        await exit.value()
    }
}

/// The exit of a process, delivered once to any number of waiters.
private final class ExitBox: @unchecked Sendable {
    private let lock = NSLock()
    private var result: LocalProcess.Exit?
    private var waiters: [CheckedContinuation<LocalProcess.Exit, Never>] = []

    func finish(_ value: LocalProcess.Exit) {
        lock.lock()
        result = value
        let pending = waiters
        waiters.removeAll()
        lock.unlock()
        for waiter in pending { waiter.resume(returning: value) }
    }

    func value() async -> LocalProcess.Exit {
        await withCheckedContinuation { continuation in
            lock.lock()
            if let result {
                lock.unlock()
                continuation.resume(returning: result)
            } else {
                waiters.append(continuation)
                lock.unlock()
            }
        }
    }
}
