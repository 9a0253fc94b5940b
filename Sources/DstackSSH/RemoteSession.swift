import Foundation
import Logging

/// How a runner's connection is carried: by libssh2 in this process, or by the system `ssh` client.
public enum SSHTransport: String, Sendable, CaseIterable {
    /// libssh2, linked into dstack (the default).
    case libssh2
    /// The system OpenSSH client: one ControlMaster connection, each command a `ssh -S` child process.
    case openssh
    /// libssh2 first; the system `ssh` client when libssh2 cannot negotiate with the server.
    case auto
}

/// One connection to a server that runs commands (and moves files through them), whichever transport carries it.
///
/// Every method may be called from any task; nothing blocks Swift's cooperative pool (libssh2 runs on the
/// connection's thread, `ssh` children are read and written on threads of their own).
public protocol RemoteSession: AnyObject, Sendable {
    /// The options the connection was opened with.
    var options: SSHOptions { get }
    /// Where the connection's debug messages go.
    var logger: Logger { get }
    /// Whether the connection still works: false once it was lost or closed (then reconnect).
    var isConnected: Bool { get }
    /// Why the connection no longer works, or nil while it does.
    var failure: SSHError? { get }
    /// Disconnects; commands still running fail.
    func close() async
    /// Runs `command` through the remote user's shell, feeding it `stdin`, and collects its output and exit status.
    func exec(_ command: String, stdin: Data?, idleTimeout: Duration??) async throws -> ExecResult
    /// Runs `command` with its stdin read from `input` and its stdout written to `output`, with flat memory.
    func exec(_ command: String, stdinFrom input: FileHandle?, stdoutTo output: FileHandle?, idleTimeout: Duration??) async throws -> ExecResult
    /// Starts `command` with its standard input kept open for more (a long-lived agent shell).
    func startProcess(_ command: String, label: String) -> RemoteProcess
}

extension RemoteSession {
    /// Runs `command` with `stdin` (or none) and the session's idle timeout, collecting its output.
    public func exec(_ command: String, stdin: Data? = nil) async throws -> ExecResult {
        try await exec(command, stdin: stdin, idleTimeout: nil)
    }

    /// Runs `command` streaming between local handles with the session's idle timeout.
    public func exec(_ command: String, stdinFrom input: FileHandle?, stdoutTo output: FileHandle?) async throws -> ExecResult {
        try await exec(command, stdinFrom: input, stdoutTo: output, idleTimeout: nil)
    }
}

extension SSHSession: RemoteSession {}

/// Opening a connection with the transport that `options.transport` names.
public enum RemoteSessions {
    /// Connects over `options.transport`, retrying transient failures with `policy`. With `.auto`, a server that
    /// libssh2 cannot negotiate with (no common key exchange, host key type, cipher or MAC) is reached through the
    /// system `ssh` client instead, and the log says so.
    public static func connect(
        _ options: SSHOptions, retrying policy: RetryPolicy, logger: Logger = Logger(label: "dstack.ssh")
    ) async throws -> any RemoteSession {
        switch options.transport {
        case .libssh2:
            return try await SSHSession.connect(options, retrying: policy, logger: logger)
        case .openssh:
            return try await OpenSSHSession.connect(options, retrying: policy, logger: logger)
        case .auto:
            do {
                return try await SSHSession.connect(options, logger: logger)
            } catch let error as SSHError where error.isNegotiationFailure {
                logger.info("ssh \(options.hostKeyName): \(error); using the system ssh client (transport: auto)")
                return try await OpenSSHSession.connect(options, retrying: policy, logger: logger)
            } catch let error as SSHError where error.isTransient && policy.attempts > 1 {
                logger.info("ssh \(options.hostKeyName): \(error); trying again")
                var rest = policy
                rest.attempts -= 1
                try await Task.sleep(for: policy.initialDelay)
                return try await SSHSession.connect(options, retrying: rest, logger: logger)
            }
        }
    }
}

extension SSHError {
    /// Whether libssh2 and the server could not agree on methods (what `transport: auto` hands to `ssh`): named
    /// when dstack could read the server's lists, a failed handshake where it could not (behind a jump host or a
    /// ProxyCommand, the server's KEXINIT is not read a second time).
    var isNegotiationFailure: Bool {
        switch self {
        case .negotiationFailed, .handshakeFailed: return true
        case let .jumpHostFailed(_, _, error): return error.isNegotiationFailure
        case let .proxyCommandFailed(_, _, _, error): return error.isNegotiationFailure
        default: return false
        }
    }
}
