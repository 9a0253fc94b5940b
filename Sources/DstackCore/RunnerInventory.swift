import DstackModel
import DstackRunners
import DstackSSH
import Foundation

/// Finds and reads the hosts inventory, and turns it into SSH runners (and Slurm runners, for `kind: slurm`).
enum RunnerInventory {
    /// The SSH runners of the inventory found from `options` (`--hosts`, `$DSTACK_HOSTS`, `.dstack/hosts.yaml`,
    /// `~/.dstack/hosts.yaml`, first found), or nil when there is none: then jobs run on the local runner.
    static func load(_ options: Workspace.Options, root: URL, home: String, localObjects: URL) throws -> [any Runner]? {
        let env = options.environment
        let url: URL
        if let explicit = options.hosts ?? env["DSTACK_HOSTS"], !explicit.isEmpty {
            url = URL(fileURLWithPath: explicit.hasPrefix("~/") ? home + explicit.dropFirst() : explicit)
            guard FileManager.default.fileExists(atPath: url.path) else {
                throw ConfigError(message: "hosts inventory '\(explicit)' does not exist; check --hosts or $DSTACK_HOSTS (without one, jobs run on this machine)")
            }
        } else if let found = [root.appendingPathComponent(".dstack/hosts.yaml"),
                               URL(fileURLWithPath: home).appendingPathComponent(".dstack/hosts.yaml")]
                    .first(where: { FileManager.default.fileExists(atPath: $0.path) }) {
            url = found
        } else {
            return nil
        }
        guard let text = try? String(contentsOf: url, encoding: .utf8) else {
            throw ConfigError(message: "cannot read the hosts inventory \(url.path)")
        }
        let rootPath = root.path.hasSuffix("/") ? root.path : root.path + "/"
        let display = url.path.hasPrefix(rootPath) ? String(url.path.dropFirst(rootPath.count)) : url.path
        let inventory = try Inventory.parse(SourceFile(displayName: display, text: text))

        let localUser = env["USER"] ?? env["LOGNAME"] ?? NSUserName()
        let lookup = SSHConfigLookup.standard(environment: env, home: home, localUser: localUser)
        let resolved = try resolveThrowing(inventory, lookup: lookup, home: home, localUser: localUser)

        let defaultKnownHosts = env["DSTACK_KNOWN_HOSTS"] ?? "\(home)/.ssh/known_hosts"
        // With an agent running, the key is usually in it: no prompt then (the agent is tried first anyway).
        let agent = !(env["SSH_AUTH_SOCK"] ?? "").isEmpty
        let passphrase = env["DSTACK_SSH_PASSPHRASE"] ?? (agent ? nil : promptForPassphrase(resolved.flatMap(\.identityFiles)))
        return resolved.map { runner in
            var ssh = SSHOptions(host: runner.hostname, port: runner.port, user: runner.user,
                                 identityFiles: runner.identityFiles.filter { FileManager.default.fileExists(atPath: $0) },
                                 passphrase: passphrase, agentSocket: env["SSH_AUTH_SOCK"],
                                 knownHostsFile: env["DSTACK_KNOWN_HOSTS"] ?? runner.knownHostsFile ?? defaultKnownHosts,
                                 acceptNewHostKeys: options.acceptNewHostKeys)
            ssh.identitiesOnly = runner.identitiesOnly
            ssh.transport = SSHTransport(rawValue: runner.transport) ?? .libssh2
            ssh.proxyCommand = runner.expandedProxyCommand(home: home, localUser: localUser)
            // Jump hosts (ProxyJump): each a full host, checked against the same known_hosts unless its config names one.
            ssh.jumpHosts = runner.jumps.map { hop in
                var jump = SSHOptions(host: hop.hostname, port: hop.port, user: hop.user,
                                      identityFiles: hop.identityFiles.filter { FileManager.default.fileExists(atPath: $0) },
                                      passphrase: passphrase, agentSocket: env["SSH_AUTH_SOCK"],
                                      knownHostsFile: env["DSTACK_KNOWN_HOSTS"] ?? hop.knownHostsFile ?? defaultKnownHosts,
                                      acceptNewHostKeys: options.acceptNewHostKeys)
                jump.label = hop.name
                jump.identitiesOnly = hop.identitiesOnly
                jump.connectTimeout = .seconds(Int64(env["DSTACK_CONNECT_TIMEOUT"].flatMap(Int.init) ?? 10))
                return jump
            }
            ssh.connectTimeout = .seconds(Int64(env["DSTACK_CONNECT_TIMEOUT"].flatMap(Int.init) ?? runner.connectTimeout ?? 10))
            if let interval = runner.serverAliveInterval { ssh.keepaliveInterval = .seconds(Int64(interval)) }
            var resources: Resources?
            if let r = runner.resources {
                resources = Resources(gpu: r.gpuCount?.value ?? 0, gpuName: r.gpuName?.value, gpuMemory: r.gpuMemory?.value,
                                      cpu: r.cpu?.value, memory: r.memory?.value)
                if r.gpuCount == nil { resources?.gpu = -1 }  // not overridden
            }
            var config = SSHRunnerConfig(name: runner.name, ssh: ssh, workdir: runner.remoteWorkdir,
                                         maxJobs: runner.maxJobs, labels: runner.labels, resources: resources,
                                         localObjects: localObjects)
            config.storagePath = runner.storagePath
            // How long a runner may stay unreachable before its jobs count as lost (docs/failures.md).
            config.lostTimeout = .milliseconds(Int64((env["DSTACK_LOST_TIMEOUT"].flatMap(Double.init) ?? 60) * 1000))
            // A Slurm cluster's login node: reached the same way, its jobs submitted with sbatch (docs/slurm.md).
            if let slurm = runner.slurm { return SlurmRunner(config, settings: slurm) }
            return SSHRunner(config)
        }
    }

    /// The inventory's runners resolved with `lookup`, whose errors (a config `ssh -G` refuses) come through.
    static func resolveThrowing(_ inventory: Inventory, lookup: SSHConfigLookup, home: String, localUser: String) throws -> [ResolvedRunner] {
        var failure: (any Error)?
        let resolved = inventory.resolve(sshConfigName: lookup.exists ? lookup.displayName : nil, home: home, localUser: localUser) { alias in
            do { return try lookup.settings(for: alias) } catch { failure = failure ?? error; return SSHHostConfig() }
        }
        if let failure { throw failure }
        return resolved
    }

    /// Asks for the passphrase of the first encrypted identity file, once, when standard input is a terminal;
    /// without a terminal (CI, `-d`) `$DSTACK_SSH_PASSPHRASE` is the way, and nil is returned.
    static func promptForPassphrase(_ files: [String]) -> String? {
        guard isatty(STDIN_FILENO) == 1,
              let encrypted = files.first(where: { FileManager.default.fileExists(atPath: $0) && identityFileIsEncrypted($0) }),
              let answer = getpass("Enter passphrase for \(encrypted): ") else { return nil }
        return String(cString: answer)
    }
}
