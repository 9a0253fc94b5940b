/// A hosts inventory as written: defaults and the runners jobs go to, each value located so that later errors can
/// point at it.
///
/// `Inventory.parse` reads one; `resolve(sshConfig:home:localUser:)` merges it with ~/.ssh/config.
public struct Inventory: Sendable, Hashable {
    /// What every runner gets unless it, or ~/.ssh/config for its host, says otherwise.
    public var defaults: InventoryDefaults
    /// The runners, in file order; never empty, names unique.
    public var runners: [RunnerSpec]
    /// The file it was read from, so that errors found later can quote it.
    public var source: SourceFile

    /// Creates an inventory from parts already validated.
    public init(defaults: InventoryDefaults = InventoryDefaults(), runners: [RunnerSpec], source: SourceFile) {
        self.defaults = defaults
        self.runners = runners
        self.source = source
    }

    /// The runner called `name`, if there is one.
    public func runner(named name: String) -> RunnerSpec? {
        runners.first { $0.name.value == name }
    }

    /// A diagnostic pointing at a value of this inventory, quoting its line.
    public func diagnostic<T>(_ located: Located<T>, _ message: String) -> Diagnostic {
        Diagnostic(file: located.file, mark: located.mark, message: message,
                   sourceLine: located.file == source.displayName ? source.line(located.mark.line) : nil)
    }
}

/// The `defaults:` section: settings shared by every runner; nil (or empty) means not written.
public struct InventoryDefaults: Sendable, Hashable {
    /// The login user.
    public var user: Located<String>?
    /// The sshd port.
    public var port: Located<Int>?
    /// Private keys to try after the agent, in order (`identity_file` takes a path or a list of paths).
    public var identityFiles: [Located<String>]?
    /// Where dstack keeps its files on the runner, as written (see `loginRelativePath(_:)`).
    public var workdir: Located<String>?
    /// Jobs at once on a runner.
    public var maxJobs: Located<Int>?
    /// Labels every runner carries.
    public var labels: [Located<String>]
    /// Jump hosts (`proxy_jump:`, OpenSSH's ProxyJump syntax) for runners that neither set one nor get one from
    /// ~/.ssh/config.
    public var proxyJump: Located<String>?
    /// What carries the connection (`transport:`: libssh2, openssh or auto) for runners that do not say.
    public var transport: Located<String>?

    /// Creates defaults; every value is optional.
    public init(user: Located<String>? = nil, port: Located<Int>? = nil, identityFiles: [Located<String>]? = nil,
                workdir: Located<String>? = nil, maxJobs: Located<Int>? = nil, labels: [Located<String>] = []) {
        self.user = user
        self.port = port
        self.identityFiles = identityFiles
        self.workdir = workdir
        self.maxJobs = maxJobs
        self.labels = labels
    }
}

/// One entry of `runners:`, as written; nil means the value was not written.
public struct RunnerSpec: Sendable, Hashable {
    /// The name runs and `dstack runners` show; unique in the inventory.
    public var name: Located<String>
    /// An address, a host name, or a Host alias of ~/.ssh/config.
    public var host: Located<String>
    /// The login user.
    public var user: Located<String>?
    /// The sshd port.
    public var port: Located<Int>?
    /// Private keys to try after the agent, in order.
    public var identityFiles: [Located<String>]?
    /// Where dstack keeps its files on the runner, as written.
    public var workdir: Located<String>?
    /// Jobs at once on this runner.
    public var maxJobs: Located<Int>?
    /// Labels of this runner, added to those of `defaults`.
    public var labels: [Located<String>]
    /// What to believe instead of what probing the runner finds.
    public var resources: ResourceOverride?
    /// Jump hosts (`proxy_jump:`): `[user@]host[:port]`, comma-separated, or `none`.
    public var proxyJump: Located<String>?
    /// What carries the connection (`transport:`): libssh2, openssh or auto.
    public var transport: Located<String>?
    /// Where this runner sees the storage directory (`storage_path:`, a shared mount), if it does.
    public var storagePath: Located<String>?
    /// For a runner of `kind: slurm` (a cluster's login node), its Slurm settings; nil for an SSH runner.
    public var slurm: SlurmSettings?

    /// Creates a runner entry; only `name` and `host` are required.
    public init(name: Located<String>, host: Located<String>, user: Located<String>? = nil, port: Located<Int>? = nil,
                identityFiles: [Located<String>]? = nil, workdir: Located<String>? = nil, maxJobs: Located<Int>? = nil,
                labels: [Located<String>] = [], resources: ResourceOverride? = nil) {
        self.name = name
        self.host = host
        self.user = user
        self.port = port
        self.identityFiles = identityFiles
        self.workdir = workdir
        self.maxJobs = maxJobs
        self.labels = labels
        self.resources = resources
    }
}

/// A runner's `resources:`: each value given replaces what the probe found; values not given keep the probed ones.
public struct ResourceOverride: Sendable, Hashable {
    /// GPUs (`gpu: 2` or `gpu: {count: 2}`); 0 hides the GPUs the probe found.
    public var gpuCount: Located<Int>?
    /// The GPU model (`gpu: {name: A100}`).
    public var gpuName: Located<String>?
    /// Memory per GPU, in bytes (`gpu: {memory: 40GB}`).
    public var gpuMemory: Located<Int64>?
    /// CPUs.
    public var cpu: Located<Int>?
    /// Memory, in bytes.
    public var memory: Located<Int64>?

    /// Creates an override; every value is optional.
    public init(gpuCount: Located<Int>? = nil, gpuName: Located<String>? = nil, gpuMemory: Located<Int64>? = nil,
                cpu: Located<Int>? = nil, memory: Located<Int64>? = nil) {
        self.gpuCount = gpuCount
        self.gpuName = gpuName
        self.gpuMemory = gpuMemory
        self.cpu = cpu
        self.memory = memory
    }
}

/// A runner with every setting decided: the inventory merged with ~/.ssh/config and the built-in defaults.
public struct ResolvedRunner: Sendable, Hashable {
    /// The runner's name.
    public var name: String
    /// The `host:` value as written (an address or a ~/.ssh/config alias), for messages.
    public var host: Located<String>
    /// The address to connect to (HostName from ~/.ssh/config, else `host`).
    public var hostname: String
    /// The sshd port.
    public var port: Int
    /// The login user.
    public var user: String
    /// Local paths of private keys to try after the agent, in order, expanded; they may not exist.
    public var identityFiles: [String]
    /// Where dstack keeps its files on the runner, as written; `remoteWorkdir` is the path to use remotely.
    public var workdir: String
    /// Jobs at once; nil means the CPU count the probe finds.
    public var maxJobs: Int?
    /// The labels of `defaults` and then the runner's own, without repeats.
    public var labels: [String]
    /// What to believe instead of what probing finds, if anything.
    public var resources: ResourceOverride?
    /// The ProxyJump in effect (the runner's `proxy_jump`, else ~/.ssh/config's, else `defaults`), as written.
    public var proxyJump: String?
    /// The jump hosts, in the order they are reached (the first directly), each resolved like a runner.
    public var jumps: [ResolvedHop] = []
    /// What carries the connection: `libssh2` (the default), `openssh` (the system ssh client) or `auto`.
    public var transport = "libssh2"
    /// The ProxyCommand that ~/.ssh/config sets for this host, which dstack cannot run yet.
    public var proxyCommand: String?
    /// The name of the ssh config the proxy settings came from, for messages.
    var sshConfigName = "~/.ssh/config"
    /// Whether only the identity files' keys are offered, not the agent's others (IdentitiesOnly in ~/.ssh/config).
    public var identitiesOnly = false
    /// The known_hosts file ~/.ssh/config names (its first UserKnownHostsFile), expanded; nil means the default.
    public var knownHostsFile: String?
    /// Seconds the connection may take (ConnectTimeout in ~/.ssh/config); nil means dstack's default.
    public var connectTimeout: Int?
    /// Seconds between keepalives (ServerAliveInterval in ~/.ssh/config); nil means dstack's default.
    public var serverAliveInterval: Int?
    /// Where this runner sees the storage directory (`storage_path:`), if it does.
    public var storagePath: String?
    /// For a runner of `kind: slurm`, its Slurm settings; nil for an SSH runner.
    public var slurm: SlurmSettings?

    /// Creates a resolved runner.
    public init(name: String, host: Located<String>, hostname: String, port: Int, user: String,
                identityFiles: [String], workdir: String, maxJobs: Int? = nil, labels: [String] = [],
                resources: ResourceOverride? = nil, proxyJump: String? = nil, proxyCommand: String? = nil) {
        self.name = name
        self.host = host
        self.hostname = hostname
        self.port = port
        self.user = user
        self.identityFiles = identityFiles
        self.workdir = workdir
        self.maxJobs = maxJobs
        self.labels = labels
        self.resources = resources
        self.proxyJump = proxyJump
        self.proxyCommand = proxyCommand
    }

    /// `workdir` as a path the remote side can use without a shell expanding `~` (see `loginRelativePath(_:)`).
    public var remoteWorkdir: String { loginRelativePath(workdir) }

    /// The ProxyCommand with its tokens (`%h %p %r %n %%`) expanded for this runner, if one carries it.
    public func expandedProxyCommand(home: String, localUser: String) -> String? {
        proxyCommand.map {
            SSHExpansion(alias: host.value, hostName: hostname, remoteUser: user, localUser: localUser, port: port, home: home)
                .expandProxyCommand($0)
        }
    }
}

extension Inventory {
    /// The private keys tried when neither the inventory nor ~/.ssh/config names any, in OpenSSH's order.
    public static let defaultIdentityFiles = ["~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa"]

    /// The values `transport:` may take.
    public static let transports = ["libssh2", "openssh", "auto"]

    /// The workdir of a runner when the inventory names none: `.dstack-runner` in the login directory.
    public static let defaultWorkdir = "~/.dstack-runner"

    /// Decides every runner's settings: the runner's own value, then ~/.ssh/config for its `host`, then `defaults`,
    /// then the built-in default (port 22, `localUser`, the usual keys, `~/.dstack-runner`).
    ///
    /// Identity files get a leading `~` replaced by `home`; those from ~/.ssh/config also get OpenSSH's `%` tokens.
    public func resolve(sshConfig: SSHConfig?, home: String, localUser: String) -> [ResolvedRunner] {
        resolve(sshConfigName: sshConfig?.displayName, home: home, localUser: localUser) { alias in
            sshConfig?.resolve(host: alias, localUser: localUser) ?? SSHHostConfig()
        }
    }

    /// Decides every runner's settings as `resolve(sshConfig:home:localUser:)` does, with `lookup` giving the
    /// ~/.ssh/config settings of a host (from `ssh -G` or the built-in parser) and `sshConfigName` naming the file.
    public func resolve(sshConfigName: String?, home: String, localUser: String,
                        lookup: (String) -> SSHHostConfig) -> [ResolvedRunner] {
        runners.map { spec in
            let alias = spec.host.value
            let ssh = lookup(alias)
            let hostname = ssh.hostName ?? alias
            let user = spec.user?.value ?? ssh.user ?? defaults.user?.value ?? localUser
            let port = spec.port?.value ?? ssh.port ?? defaults.port?.value ?? 22
            let expansion = SSHExpansion(alias: alias, hostName: hostname, remoteUser: user, localUser: localUser,
                                         port: port, home: home)
            let identityFiles: [String]
            if let own = spec.identityFiles {
                identityFiles = own.map { expandingTilde($0.value, home: home) }
            } else if !ssh.identityFiles.isEmpty {
                identityFiles = ssh.expandedIdentityFiles(expansion)
            } else if let shared = defaults.identityFiles {
                identityFiles = shared.map { expandingTilde($0.value, home: home) }
            } else {
                identityFiles = Self.defaultIdentityFiles.map { expandingTilde($0, home: home) }
            }
            var labels: [String] = []
            for label in (defaults.labels + spec.labels).map(\.value) where !labels.contains(label) {
                labels.append(label)
            }
            // The runner's own proxy_jump, then ~/.ssh/config's ProxyJump (or ProxyCommand), then defaults'.
            let jumpText: String?
            var proxyCommand = ssh.proxyCommand
            if let own = spec.proxyJump?.value {
                jumpText = own
                proxyCommand = nil
            } else if ssh.proxyJump != nil || ssh.proxyCommand != nil {
                jumpText = ssh.proxyJump
            } else {
                jumpText = defaults.proxyJump?.value
            }
            let chain = jumpText.flatMap { try? JumpHop.parseChain($0).get() } ?? []
            var runner = ResolvedRunner(
                name: spec.name.value, host: spec.host, hostname: hostname, port: port, user: user,
                identityFiles: identityFiles, workdir: spec.workdir?.value ?? defaults.workdir?.value ?? Self.defaultWorkdir,
                maxJobs: spec.maxJobs?.value ?? defaults.maxJobs?.value, labels: labels, resources: spec.resources,
                proxyJump: chain.isEmpty ? nil : jumpText, proxyCommand: chain.isEmpty ? proxyCommand : nil)
            runner.transport = spec.transport?.value ?? defaults.transport?.value ?? "libssh2"
            runner.storagePath = spec.storagePath?.value
            runner.jumps = chain.map { $0.resolve(home: home, localUser: localUser, lookup: lookup) }
            if let sshConfigName { runner.sshConfigName = sshConfigName }
            runner.slurm = spec.slurm
            let expansionForFiles = expansion
            runner.identitiesOnly = ssh.identitiesOnly ?? false
            runner.knownHostsFile = ssh.userKnownHostsFiles.first.map { expansionForFiles.expandPath($0) }
            runner.connectTimeout = ssh.connectTimeout.flatMap { $0 > 0 ? $0 : nil }
            runner.serverAliveInterval = ssh.serverAliveInterval.flatMap { $0 > 0 ? $0 : nil }
            return runner
        }
    }
}

/// One hop of a ProxyJump as written: `[user@]host[:port]` or `ssh://[user@]host[:port]`.
public struct JumpHop: Sendable, Hashable {
    /// The user given before `@`, if any.
    public var user: String?
    /// The host: an address, a host name or a Host alias of ~/.ssh/config.
    public var host: String
    /// The port given after `:`, if any.
    public var port: Int?

    /// Creates a hop.
    public init(user: String? = nil, host: String, port: Int? = nil) {
        self.user = user
        self.host = host
        self.port = port
    }

    /// Why a ProxyJump value cannot be read.
    public struct Problem: Error, Sendable, Hashable {
        /// What is wrong and what to write instead.
        public var message: String
    }

    /// Reads a ProxyJump value as OpenSSH does: hops separated by commas, each `[user@]host[:port]` (an IPv6
    /// address in brackets) or an `ssh://` URI; `none` is no hops.
    public static func parseChain(_ text: String) -> Result<[JumpHop], Problem> {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed == "none" { return .success([]) }
        var hops: [JumpHop] = []
        for part in trimmed.split(separator: ",", omittingEmptySubsequences: false) {
            var rest = Substring(part.trimmingCharacters(in: .whitespaces))
            if rest.hasPrefix("ssh://") { rest = rest.dropFirst(6) }
            var hop = JumpHop(host: "")
            if let at = rest.lastIndex(of: "@") {
                hop.user = String(rest[..<at])
                rest = rest[rest.index(after: at)...]
                if hop.user?.isEmpty == true { return .failure(Problem(message: "a hop has an empty user before '@'")) }
            }
            if rest.hasPrefix("[") {
                guard let close = rest.firstIndex(of: "]") else { return .failure(Problem(message: "'[' without ']' in '\(part)'")) }
                hop.host = String(rest[rest.index(after: rest.startIndex)..<close])
                rest = rest[rest.index(after: close)...]
                if rest.hasPrefix(":") {
                    guard let port = Int(rest.dropFirst()), (1...65535).contains(port) else {
                        return .failure(Problem(message: "the port in '\(part)' must be a number from 1 to 65535"))
                    }
                    hop.port = port
                } else if !rest.isEmpty {
                    return .failure(Problem(message: "unexpected '\(rest)' after ']' in '\(part)'"))
                }
            } else if let colon = rest.lastIndex(of: ":") {
                hop.host = String(rest[..<colon])
                guard let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) else {
                    return .failure(Problem(message: "the port in '\(part)' must be a number from 1 to 65535"))
                }
                hop.port = port
            } else {
                hop.host = String(rest)
            }
            guard !hop.host.isEmpty, !hop.host.contains(where: { $0 == " " || $0 == "/" }) else {
                return .failure(Problem(message: "'\(part)' is not [user@]host[:port]; separate hops with ','"))
            }
            hops.append(hop)
        }
        return .success(hops)
    }

    /// The hop with its settings decided like a runner's: what the hop says, then ~/.ssh/config for its host
    /// (from `lookup`), then the built-in defaults (the inventory's `defaults` are for runners, not jump hosts).
    public func resolve(home: String, localUser: String, lookup: (String) -> SSHHostConfig) -> ResolvedHop {
        let ssh = lookup(host)
        let hostname = ssh.hostName ?? host
        let user = self.user ?? ssh.user ?? localUser
        let port = self.port ?? ssh.port ?? 22
        let expansion = SSHExpansion(alias: host, hostName: hostname, remoteUser: user, localUser: localUser,
                                     port: port, home: home)
        let files = ssh.identityFiles.isEmpty
            ? Inventory.defaultIdentityFiles.map { expandingTilde($0, home: home) }
            : ssh.expandedIdentityFiles(expansion)
        return ResolvedHop(name: host, hostname: hostname, port: port, user: user, identityFiles: files,
                           identitiesOnly: ssh.identitiesOnly ?? false,
                           knownHostsFile: ssh.userKnownHostsFiles.first.map { expansion.expandPath($0) })
    }
}

/// A jump host with every setting decided.
public struct ResolvedHop: Sendable, Hashable {
    /// The host as written in the ProxyJump (an alias or an address), for messages and `via`.
    public var name: String
    /// The address to connect to.
    public var hostname: String
    /// The sshd port.
    public var port: Int
    /// The login user.
    public var user: String
    /// Private keys to try after the agent, expanded.
    public var identityFiles: [String]
    /// Whether only the identity files' keys are offered.
    public var identitiesOnly: Bool
    /// The known_hosts file ~/.ssh/config names for it, if any.
    public var knownHostsFile: String?

    /// Creates a resolved hop.
    public init(name: String, hostname: String, port: Int, user: String, identityFiles: [String],
                identitiesOnly: Bool = false, knownHostsFile: String? = nil) {
        self.name = name
        self.hostname = hostname
        self.port = port
        self.user = user
        self.identityFiles = identityFiles
        self.identitiesOnly = identitiesOnly
        self.knownHostsFile = knownHostsFile
    }
}

/// A remote path with a leading `~` made relative to the login directory (`~/x` → `x`, `~` → `.`), since remote
/// commands start there and dstack never relies on a remote shell to expand `~`; other paths are returned as given.
public func loginRelativePath(_ path: String) -> String {
    guard path == "~" || path.hasPrefix("~/") else { return path }
    let rest = path.dropFirst().drop { $0 == "/" }
    return rest.isEmpty ? "." : String(rest)
}

/// `path` with a leading `~` or `~/` replaced by `home`; `~user` forms are left alone.
func expandingTilde(_ path: String, home: String) -> String {
    guard path == "~" || path.hasPrefix("~/") else { return path }
    var base = home
    while base.count > 1, base.hasSuffix("/") { base.removeLast() }
    if path == "~" { return base }
    return base == "/" ? "/" + path.dropFirst(2) : base + path.dropFirst()
}
