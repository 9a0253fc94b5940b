import Foundation
import Testing

/// Real sshd runners on loopback addresses, started by scripts/testbed, and a HOME whose known_hosts trusts them.
final class SSHBed: Sendable {
    let directory: URL
    let runners: [(name: String, host: String, port: Int)]

    /// Starts `count` runners; `extraEnvironment` (`VAR=value` words) is set in the sessions of the runner at
    /// that index.
    /// `loginShells` gives the runner at an index an account of its own whose login shell is that path; a
    /// `bashrc` is that runner's `~/.bashrc`.
    init(_ count: Int, extraEnvironment: [Int: String] = [:], loginShells: [Int: String] = [:],
         bashrc: [Int: String] = [:], logLevels: [Int: String] = [:]) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-bed-\(UUID().uuidString.prefix(8))")
        for (index, level) in logLevels {
            let dir = directory.appendingPathComponent("runner-\(index + 1)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try Data(level.utf8).write(to: dir.appendingPathComponent("log_level"))
        }
        for (index, text) in extraEnvironment {
            let dir = directory.appendingPathComponent("runner-\(index + 1)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try Data(text.utf8).write(to: dir.appendingPathComponent("extra_env"))
        }
        for (index, shell) in loginShells {
            let dir = directory.appendingPathComponent("runner-\(index + 1)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try Data(shell.utf8).write(to: dir.appendingPathComponent("login_shell"))
        }
        for (index, text) in bashrc {
            let dir = directory.appendingPathComponent("runner-\(index + 1)/home")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try Data(text.utf8).write(to: dir.appendingPathComponent(".bashrc"))
        }
        let start = try Sandbox.run(["bash", Sandbox.repositoryRoot.appendingPathComponent("scripts/testbed").path,
                                     "start", String(count), directory.path], in: Sandbox.repositoryRoot)
        guard start.status == 0 else { throw BucketError("scripts/testbed failed: \(start.output)") }
        let listing = try String(contentsOf: directory.appendingPathComponent("runners"), encoding: .utf8)
        runners = listing.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ").map(String.init)
            return f.count == 3 ? (f[0], f[1], Int(f[2])!) : nil
        }
        try FileManager.default.createDirectory(at: home.appendingPathComponent(".ssh"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: directory.appendingPathComponent("known_hosts"),
                                         to: home.appendingPathComponent(".ssh/known_hosts"))
    }

    var home: URL { directory.appendingPathComponent("home") }
    var key: String { directory.appendingPathComponent("client_ed25519").path }
    var knownHosts: URL { home.appendingPathComponent(".ssh/known_hosts") }

    /// A hosts inventory for the runners at `indices`, each with its own work directory; `extra` adds lines to
    /// each runner's entry (indented as runner fields).
    func inventory(_ indices: [Int]? = nil, tag: String = UUID().uuidString.prefix(6).description,
                   extra: [Int: String] = [:], maxJobs: Int? = nil) -> String {
        var text = "defaults:\n  user: root\n  identity_file: \(key)\n"
        if let maxJobs { text += "  max_jobs: \(maxJobs)\n" }
        text += "runners:\n"
        for i in indices ?? Array(runners.indices) {
            let r = runners[i]
            text += "  - name: r\(i + 1)\n    host: \(r.host)\n    port: \(r.port)\n"
            let runnerDir = directory.appendingPathComponent("runner-\(i + 1)")
            if let user = try? String(contentsOf: runnerDir.appendingPathComponent("user"), encoding: .utf8) {
                // An account of its own (another login shell): it works where it may write.
                text += "    user: \(user.trimmingCharacters(in: .whitespacesAndNewlines))\n"
                text += "    workdir: \(runnerDir.path)/work/\(tag)\n"
            } else {
                text += "    workdir: \(directory.path)/work-\(tag)-r\(i + 1)\n"
            }
            if let more = extra[i] { text += more.split(separator: "\n").map { "    \($0)\n" }.joined() }
        }
        return text
    }

    /// The environment for dstack: HOME with the known_hosts, no agent, short connect timeouts.
    var environment: [String: String] {
        ["HOME": home.path, "SSH_AUTH_SOCK": "", "DSTACK_CONNECT_TIMEOUT": "3"]
    }

    func stop() {
        _ = try? Sandbox.run(["bash", Sandbox.repositoryRoot.appendingPathComponent("scripts/testbed").path, "stop", directory.path],
                             in: Sandbox.repositoryRoot)
        try? FileManager.default.removeItem(at: directory)
    }
}
