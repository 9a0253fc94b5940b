import Foundation
import Testing

/// A bastion and runners that only it reaches, in Linux network namespaces made by scripts/testbed-netns, and a
/// HOME whose known_hosts trusts them all and whose `~/.ssh/config` names them (`bastion`, `r1`, `r2`, …, `d1`, …).
/// Making it needs root; when it cannot be made the initializer throws the script's reason, so the test fails
/// saying why (never skipped).
final class NetnsBed: Sendable {
    /// One sshd of the bed: its name in the script's listing, its address, port and folder.
    struct Server: Sendable {
        let name: String
        let host: String
        let port: Int
        let folder: URL
    }

    let directory: URL
    let servers: [Server]

    /// Starts a bastion, `runners` runners behind it and `deep` runners behind the first runner;
    /// `extraConfigs[k]` is added to the sshd_config of runner k (counting from 1).
    init(runners: Int, deep: Int = 0, extraConfigs: [Int: String] = [:]) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-netns-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for (k, text) in extraConfigs {
            let folder = directory.appendingPathComponent("runners/runner-\(k)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try Data(text.utf8).write(to: folder.appendingPathComponent("extra_config"))
        }
        let start = try Sandbox.run(["bash", Self.script, "start", String(runners), directory.path, String(deep)],
                                    in: Sandbox.repositoryRoot)
        guard start.status == 0 else {
            try? FileManager.default.removeItem(at: directory)
            throw BucketError("the network namespace test bed could not be made (scripts/testbed-netns start): \(start.output)")
        }
        servers = start.stdout.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ").map(String.init)
            return f.count == 4 ? Server(name: f[0], host: f[1], port: Int(f[2])!, folder: URL(fileURLWithPath: f[3])) : nil
        }
        try FileManager.default.createDirectory(at: home.appendingPathComponent(".ssh"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: directory.appendingPathComponent("known_hosts"), to: knownHosts)
        try sshConfig().write(to: home.appendingPathComponent(".ssh/config"), atomically: true, encoding: .utf8)
    }

    static let script = Sandbox.repositoryRoot.appendingPathComponent("scripts/testbed-netns").path

    var home: URL { directory.appendingPathComponent("home") }
    var key: String { directory.appendingPathComponent("client_ed25519").path }
    var knownHosts: URL { home.appendingPathComponent(".ssh/known_hosts") }
    var bastion: Server { servers.first { $0.name == "bastion" }! }
    var runners: [Server] { servers.filter { $0.name.hasPrefix("runner-") } }
    var deep: [Server] { servers.filter { $0.name.hasPrefix("deep-") } }

    /// `Host` aliases for every server: `bastion`, `r1`…, `d1`…, each with the bed's key and user root.
    func sshConfig() -> String {
        var text = ""
        let aliases = [("bastion", bastion)] + runners.enumerated().map { ("r\($0.offset + 1)", $0.element) }
            + deep.enumerated().map { ("d\($0.offset + 1)", $0.element) }
        for (alias, server) in aliases {
            text += "Host \(alias)\n  HostName \(server.host)\n  Port \(server.port)\n  User root\n  IdentityFile \(key)\n\n"
        }
        return text
    }

    /// A hosts inventory: one entry per `(name, server, extra lines)`, each with its own work directory.
    func inventory(_ entries: [(name: String, server: Server, extra: String)], tag: String = UUID().uuidString.prefix(6).description) -> String {
        var text = "defaults:\n  user: root\n  identity_file: \(key)\nrunners:\n"
        for entry in entries {
            text += "  - name: \(entry.name)\n    host: \(entry.server.host)\n    port: \(entry.server.port)\n"
            text += "    workdir: \(directory.path)/work-\(tag)-\(entry.name)\n"
            text += entry.extra.split(separator: "\n").map { "    \($0)\n" }.joined()
        }
        return text
    }

    /// The environment for dstack: HOME with the known_hosts and config, no agent, short connect timeouts.
    var environment: [String: String] {
        ["HOME": home.path, "SSH_AUTH_SOCK": "", "DSTACK_CONNECT_TIMEOUT": "3"]
    }

    /// The sshd log of a server.
    func log(_ server: Server) throws -> String {
        try String(contentsOf: server.folder.appendingPathComponent("sshd.log"), encoding: .utf8)
    }

    /// Kills the bastion's per-connection sshd processes by pid (its listener stays); returns the pids killed.
    func dropBastionSessions() throws -> [String] {
        let drop = try Sandbox.run(["bash", Self.script, "drop", directory.path], in: Sandbox.repositoryRoot)
        return drop.stdout.split(whereSeparator: \.isWhitespace).map(String.init)
    }

    /// Stops every sshd, deletes the namespaces, veths and route, and removes the folder.
    func stop() {
        let stop = try? Sandbox.run(["bash", Self.script, "stop", directory.path], in: Sandbox.repositoryRoot)
        if let stop, stop.status != 0 { Issue.record("scripts/testbed-netns stop failed: \(stop.output)") }
        try? FileManager.default.removeItem(at: directory)
    }
}
