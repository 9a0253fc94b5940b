import Foundation

/// Which output stream of a remote command a chunk came from.
public enum ExecStream: Sendable, Equatable {
    /// The command's standard output.
    case stdout
    /// The command's standard error.
    case stderr
}

/// One event of `SSHSession.execStream`: a chunk of output, or the command's end.
public enum ExecEvent: Sendable, Equatable {
    /// Bytes the command wrote to one of its output streams.
    case output(ExecStream, Data)
    /// The command ended; the result carries its status but no output.
    case exit(ExecResult)
}

/// What a remote command produced and how it ended.
public struct ExecResult: Sendable, Equatable {
    /// Everything the command wrote to standard output (empty when it was streamed elsewhere).
    public var stdout: Data
    /// Everything the command wrote to standard error (empty when it was streamed elsewhere).
    public var stderr: Data
    /// The exit status the server reported (0 when the command died of a signal).
    public var exitStatus: Int32
    /// The name of the signal that killed the command (`TERM`, `KILL`...), if one did.
    public var exitSignal: String?

    /// Creates a result from its parts.
    public init(stdout: Data = Data(), stderr: Data = Data(), exitStatus: Int32, exitSignal: String? = nil) {
        self.stdout = stdout
        self.stderr = stderr
        self.exitStatus = exitStatus
        self.exitSignal = exitSignal
    }

    /// Whether the command exited with status 0 and no signal.
    public var succeeded: Bool { exitStatus == 0 && exitSignal == nil }

    /// Standard output decoded as UTF-8.
    public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }

    /// Standard error decoded as UTF-8.
    public var stderrText: String { String(decoding: stderr, as: UTF8.self) }

    /// How the command ended, in words: `exited with status 2` or `was killed by signal KILL`.
    public var statusDescription: String {
        if let exitSignal { return "was killed by signal \(exitSignal)" }
        return "exited with status \(exitStatus)"
    }

    /// Returns the result when the command succeeded, and throws `SSHError.commandFailed` otherwise.
    @discardableResult
    public func check(_ command: String) throws(SSHError) -> ExecResult {
        guard succeeded else { throw .commandFailed(command: command, status: statusDescription, stderr: stderrText) }
        return self
    }
}
