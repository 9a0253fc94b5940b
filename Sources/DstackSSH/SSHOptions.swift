import Foundation

/// Where and how to connect: address, user, keys, host-key policy and timeouts.
public struct SSHOptions: Sendable {
    /// The host name or address to connect to (already resolved from any ~/.ssh/config alias).
    public var host: String
    /// The TCP port of the server's sshd.
    public var port: Int
    /// The user to log in as.
    public var user: String
    /// Private key files to try after the agent, in order (a `.pub` beside each is used when present).
    public var identityFiles: [String]
    /// The passphrase for encrypted identity files (the caller takes it from `$DSTACK_SSH_PASSPHRASE`).
    public var passphrase: String?
    /// The ssh-agent socket to try first; nil means no agent.
    public var agentSocket: String?
    /// The jump hosts (ProxyJump) in the order they are reached: the first directly, each next one, and then this
    /// host, through a `direct-tcpip` channel of the one before. Each hop is a full host with its own user, port,
    /// keys and known_hosts check; their own `jumpHosts` are ignored.
    public var jumpHosts: [SSHOptions] = []
    /// A command whose standard input and output carry the connection instead of TCP (ProxyCommand), run with
    /// `/bin/sh -c`, its `%` tokens already expanded; ignored when `jumpHosts` is not empty.
    public var proxyCommand: String?
    /// What messages call this host when it is a jump host (the name written in ProxyJump); nil uses the address.
    public var label: String?
    /// Whether the agent's keys are offered only when they are one of `identityFiles` (IdentitiesOnly).
    public var identitiesOnly = false
    /// The known_hosts file that host keys are checked against.
    public var knownHostsFile: String
    /// Known-hosts files read after `knownHostsFile`, never written (OpenSSH's `GlobalKnownHostsFile`).
    public var systemKnownHostsFiles: [String] = ["/etc/ssh/ssh_known_hosts"]
    /// Whether an unknown host key is accepted and recorded in `knownHostsFile` (a changed key never is).
    public var acceptNewHostKeys: Bool
    /// The longest time that the TCP connection, handshake and authentication may take together.
    public var connectTimeout: Duration
    /// How long an exec or transfer may see no data before it fails; nil waits forever.
    public var idleTimeout: Duration?
    /// How often a keepalive is sent; after three unanswered intervals the connection counts as lost.
    public var keepaliveInterval: Duration
    /// The most channels (execs, transfers) open at once; more wait their turn (sshd's MaxSessions is 10).
    public var maxChannels: Int
    /// What carries the connection: libssh2, the system `ssh` client, or libssh2 with `ssh` as the fallback.
    public var transport: SSHTransport = .libssh2

    /// Options with the usual defaults: the agent from `$SSH_AUTH_SOCK`, ~/.ssh keys that exist, ~/.ssh/known_hosts.
    public init(
        host: String,
        port: Int = 22,
        user: String? = nil,
        identityFiles: [String]? = nil,
        passphrase: String? = nil,
        agentSocket: String? = ProcessInfo.processInfo.environment["SSH_AUTH_SOCK"],
        knownHostsFile: String = "~/.ssh/known_hosts",
        acceptNewHostKeys: Bool = false,
        connectTimeout: Duration = .seconds(10),
        idleTimeout: Duration? = .seconds(300),
        keepaliveInterval: Duration = .seconds(15),
        maxChannels: Int = 8
    ) {
        self.host = host
        self.port = port
        self.user = user ?? Self.currentUser()
        self.identityFiles = identityFiles ?? Self.defaultIdentityFiles()
        self.passphrase = passphrase
        self.agentSocket = agentSocket.flatMap { $0.isEmpty ? nil : $0 }
        self.knownHostsFile = knownHostsFile
        self.acceptNewHostKeys = acceptNewHostKeys
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
        self.keepaliveInterval = keepaliveInterval
        self.maxChannels = max(1, maxChannels)
    }

    /// The names of the jump hosts, in order (their `label`, else their address).
    public var via: [String] { jumpHosts.map { $0.label ?? $0.hostKeyName } }

    /// How the host appears in known_hosts and in messages: `host` on port 22, `[host]:port` otherwise.
    public var hostKeyName: String { KnownHosts.lookupName(host: host, port: port) }

    /// The login name of the user running this process.
    static func currentUser() -> String {
        if let user = ProcessInfo.processInfo.environment["USER"], !user.isEmpty { return user }
        return NSUserName()
    }

    /// The private keys OpenSSH would try by default, those of them that exist.
    static func defaultIdentityFiles() -> [String] {
        ["~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa"].filter {
            FileManager.default.fileExists(atPath: expandTilde($0))
        }
    }
}

/// The path with a leading `~` replaced by the home directory.
func expandTilde(_ path: String) -> String {
    guard path == "~" || path.hasPrefix("~/") else { return path }
    let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
    return home + path.dropFirst()
}

