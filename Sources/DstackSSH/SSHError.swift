/// Everything that can go wrong in DstackSSH, phrased for the person at the terminal.
public enum SSHError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The TCP connection could not be made (refused, unreachable, unknown host name).
    case connectFailed(host: String, port: Int, reason: String)
    /// No TCP connection or SSH handshake completed within the connect timeout.
    case connectTimedOut(host: String, port: Int, seconds: Double)
    /// The SSH handshake (key exchange) failed after the TCP connection was made.
    case handshakeFailed(host: String, port: Int, reason: String)
    /// A jump host on the way to `target` could not be used; `error` says why.
    indirect case jumpHostFailed(jump: String, target: String, error: SSHError)
    /// The connection through a ProxyCommand failed; `stderr` is what the command said.
    indirect case proxyCommandFailed(command: String, target: String, stderr: String, error: SSHError)
    /// Client and server have no algorithm in common for something the key exchange needs: `what` says which,
    /// with both sides' lists; retrying cannot help.
    case negotiationFailed(host: String, port: Int, what: String, hint: String)
    /// The server's host key is not in known_hosts and recording new keys was not allowed.
    case unknownHostKey(host: String, keyType: String, fingerprint: String, knownHostsFile: String)
    /// The server's host key differs from the one known_hosts records for it.
    case hostKeyChanged(host: String, keyType: String, fingerprint: String, knownHostsFile: String, line: Int)
    /// The server's host key is marked @revoked in known_hosts.
    case hostKeyRevoked(host: String, fingerprint: String, knownHostsFile: String, line: Int)
    /// known_hosts trusts a certificate authority for the host and records no key of its own.
    case hostCertificateAuthority(host: String, knownHostsFile: String, line: Int)
    /// A new host key could not be recorded in known_hosts.
    case knownHostsNotWritable(path: String, reason: String)
    /// An identity file is encrypted and no passphrase was supplied.
    case passphraseRequired(identityFile: String)
    /// Every authentication method was tried and refused.
    case authenticationFailed(user: String, host: String, tried: [String], hint: String?)
    /// A libssh2 call failed; `operation` says what was being done.
    case libssh2(operation: String, code: Int32, message: String)
    /// An operation saw no progress for longer than its idle timeout.
    case timedOut(operation: String, seconds: Double)
    /// The connection died (reset, closed by the server, keepalive unanswered).
    case connectionLost(host: String, reason: String)
    /// The session was closed with `close()` before or while the operation ran.
    case sessionClosed(host: String)
    /// The operation's task was cancelled.
    case cancelled
    /// A remote command exited unsuccessfully where success was required.
    case commandFailed(command: String, status: String, stderr: String)
    /// A remote file operation over SFTP failed.
    case remoteFile(path: String, reason: String)
    /// A local file or process operation failed.
    case localIO(path: String, reason: String)
    /// The system `ssh` client (transport: openssh) could not connect; `stderr` is what it said.
    case opensshFailed(target: String, stderr: String, transient: Bool)

    /// The message shown to the user: lowercase, naming what failed and what to do next.
    public var description: String {
        switch self {
        case let .connectFailed(host, port, reason):
            return "cannot connect to \(host) port \(port): \(reason); check that the host is up and sshd listens on that port"
        case let .connectTimedOut(host, port, seconds):
            return "connection to \(host) port \(port) timed out after \(Self.format(seconds)) s; check the address, the port and any firewall in between"
        case let .handshakeFailed(host, port, reason):
            return "ssh handshake with \(host) port \(port) failed: \(reason)"
        case let .jumpHostFailed(jump, target, error):
            return "cannot reach \(target) through jump host \(jump): \(error)"
        case let .proxyCommandFailed(command, target, stderr, error):
            let said = stderr.isEmpty ? "it wrote nothing on stderr" : "its stderr: \(stderr)"
            return "cannot reach \(target) through ProxyCommand '\(command)': \(error) (\(said))"
        case let .negotiationFailed(host, port, what, hint):
            return "ssh handshake with \(host) port \(port) failed: \(what); \(hint)"
        case let .unknownHostKey(host, keyType, fingerprint, file):
            return "the authenticity of host '\(host)' can't be established: its \(keyType) key fingerprint is \(fingerprint) and \(file) has no entry for it; if you trust this fingerprint, rerun with --accept-new-host-keys to record it"
        case let .hostKeyChanged(host, keyType, fingerprint, file, line):
            return "warning: remote host identification has changed for '\(host)'! the server offers \(keyType) key \(fingerprint), but \(file):\(line) records a different key; someone could be eavesdropping on you right now (man-in-the-middle attack), or the host was reinstalled. refusing to connect. if you know why the key changed, delete line \(line) of \(file) and connect again with --accept-new-host-keys"
        case let .hostKeyRevoked(host, fingerprint, file, line):
            return "the host key \(fingerprint) offered by '\(host)' is marked @revoked at \(file):\(line); refusing to connect"
        case let .hostCertificateAuthority(host, file, line):
            return "\(file):\(line) trusts a certificate authority for '\(host)', but dstack's SSH library (libssh2 1.10) cannot check host certificates, so it cannot trust that host by it; refusing to connect. add the host's own key to your known_hosts once you have checked its fingerprint (ssh-keyscan \(host.hasPrefix("[") ? "-p PORT HOST" : host) | ssh-keygen -lf - shows it)"
        case let .knownHostsNotWritable(path, reason):
            return "cannot record the new host key in \(path): \(reason)"
        case let .passphraseRequired(file):
            return "identity file \(file) is encrypted; set DSTACK_SSH_PASSPHRASE to its passphrase, or add the key to ssh-agent with ssh-add"
        case let .authenticationFailed(user, host, tried, hint):
            var text = "authentication as '\(user)' on \(host) failed"
            text += tried.isEmpty ? ": no ssh-agent and no identity file to try; add a key to ssh-agent or set identity_file" : " (tried \(tried.joined(separator: ", ")))"
            if let hint { text += "; \(hint)" }
            return text
        case let .libssh2(operation, code, message):
            return "\(operation) failed: \(message.isEmpty ? "libssh2 error" : message) (libssh2 error \(code))"
        case let .timedOut(operation, seconds):
            return "\(operation) timed out: no data for \(Self.format(seconds)) s"
        case let .connectionLost(host, reason):
            return "connection to \(host) lost: \(reason)"
        case let .sessionClosed(host):
            return "the ssh session to \(host) is closed"
        case .cancelled:
            return "the ssh operation was cancelled"
        case let .commandFailed(command, status, stderr):
            let tail = stderr.split(separator: "\n").suffix(5).joined(separator: "\n")
            return "remote command '\(summarized(command))' \(status)" + (tail.isEmpty ? "" : ":\n\(tail)")
        case let .remoteFile(path, reason):
            return "remote file \(path): \(reason)"
        case let .localIO(path, reason):
            return "\(path): \(reason)"
        case let .opensshFailed(target, stderr, _):
            let hostKey = stderr.contains("Host key verification failed") || stderr.contains("host key is known")
            return "the system ssh client (transport: openssh) could not connect to \(target): \(stderr.isEmpty ? "it exited without saying why" : stderr)"
                + (hostKey ? "; dstack checks host keys strictly against its known_hosts: check the server's fingerprint, then run again with --accept-new-host-keys" : "")
        }
    }

    /// Whether retrying the connection later may succeed (a refused or dropped connection, a timeout).
    public var isTransient: Bool {
        switch self {
        case .connectFailed, .connectTimedOut, .connectionLost, .timedOut: return true
        case .handshakeFailed: return true
        case let .opensshFailed(_, _, transient): return transient
        case let .jumpHostFailed(_, _, error): return error.isTransient
        case let .proxyCommandFailed(_, _, _, error): return error.isTransient
        default: return false
        }
    }

    /// Whether the connection itself failed (so the runner is unreachable for now), rather than a command or a
    /// file: transient failures and a session that was closed under the operation.
    public var isConnectionProblem: Bool {
        if isTransient { return true }
        if case .sessionClosed = self { return true }
        return false
    }

    private static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(format: "%.1f", seconds)
    }
}
