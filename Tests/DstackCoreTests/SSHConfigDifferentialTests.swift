import DstackCore
import DstackModel
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One config (its main file and included ones, `@DIR@` standing for their directory) and the aliases to resolve.
struct DifferentialCase: Sendable, CustomTestStringConvertible {
    var name: String
    var files: [String: String]
    var aliases: [String]
    var testDescription: String { name }
}

private let cases: [DifferentialCase] = [
    DifferentialCase(name: "first value wins across blocks; a trailing Host * gives defaults", files: ["config": """
        Port 2201
        Host lab
          User first
          Port 2202
        Host lab
          User second
          HostName 10.0.0.5
        Host *
          User everyone
          ConnectTimeout 7
        """], aliases: ["lab", "other"]),
    DifferentialCase(name: "Include with a glob, read in sorted order, inside a Host block", files: [
        "config": "Host gpu*\n  Include @DIR@/conf.d/*.conf\nHost *\n  User dflt\n",
        "conf.d/20-b.conf": "Port 2020\nUser from-b\n",
        "conf.d/10-a.conf": "Port 1010\nHost gpu2\n  HostName gpu2.internal\n",
    ], aliases: ["gpu1", "gpu2", "cpu1"]),
    DifferentialCase(name: "a file included from a block that does not apply is not applied, even its Host lines", files: [
        "config": "Match originalhost a\n  Port 3\n  Include @DIR@/sub\n  Port 9\nHost *\n  User tail\n",
        "sub": "Port 8\nHost *\n  User u1\n",
    ], aliases: ["a", "b"]),
    DifferentialCase(name: "Match host compares the HostName obtained so far", files: ["config": """
        Host short
          HostName node7.cluster.example
        Match host *.cluster.example
          User clusteruser
          Port 2222
        Match host short
          User never
        """], aliases: ["short", "node7.cluster.example", "else"]),
    DifferentialCase(name: "Match originalhost, negated criteria and pattern lists", files: ["config": """
        Host alias1
          HostName real1
        Match originalhost alias1
          Port 2001
        Match !originalhost alias1,alias2
          User not-one-or-two
        Match host real*,!real2
          IdentityFile ~/.ssh/real_key
        """], aliases: ["alias1", "alias2", "real2", "real3"]),
    DifferentialCase(name: "Match user sees the user set so far, else the local user; Match localuser", files: ["config": """
        Host svc
          User deploy
        Match user deploy
          Port 2300
        Match localuser @LOCALUSER@
          ServerAliveInterval 45
        Match user @LOCALUSER@
          IdentitiesOnly yes
        """], aliases: ["svc", "plain"]),
    DifferentialCase(name: "negated Host patterns, several per line, ? wildcards", files: ["config": """
        Host *.lab !gpu3.lab node?
          User labuser
        Host gpu3.lab
          Port 2203
        """], aliases: ["gpu1.lab", "gpu3.lab", "node1", "node12"]),
    DifferentialCase(name: "tokens: HostName %h and %%, IdentityFile kept as written", files: ["config": """
        Host t-*
          HostName %h.example.org
          IdentityFile %d/.ssh/%r@%h
          IdentityFile ~/.ssh/id_%n
        Host pct
          HostName 100%%.example
        """], aliases: ["t-one", "pct"]),
    DifferentialCase(name: "jump chains, ProxyJump none, and the first of ProxyJump/ProxyCommand wins", files: ["config": """
        Host inner
          ProxyJump ml@bastion:2200,login
        Host direct
          ProxyJump none
        Host cmd
          ProxyCommand ssh -W %h:%p gateway
        Host nonecmd
          ProxyCommand none
        Host *
          ProxyJump fallback
          ProxyCommand nc %h %p
        """], aliases: ["inner", "direct", "cmd", "nonecmd", "any"]),
    DifferentialCase(name: "Match final applies in a second pass, after everything else", files: ["config": """
        Match final
          User final-user
          Port 2400
        Host early
          User early-user
        Match final host real-late
          IdentityFile ~/.ssh/late
        Host late
          HostName real-late
        """], aliases: ["early", "late"]),
    DifferentialCase(name: "Match all, Key=value, quotes, IdentitiesOnly, known_hosts files and times", files: ["config": """
        Match all
          IdentitiesOnly=yes
          UserKnownHostsFile ~/.ssh/kh_one "/tmp/kh_two"
          ConnectTimeout 1m
          ServerAliveInterval 20
        Host q
          User "quoted user"
        """], aliases: ["q", "r"]),
    DifferentialCase(name: "nested Includes: an included file's Host block ends with it", files: [
        "config": "Include @DIR@/a\nUser outer\nHost x\n  Port 2500\n",
        "a": "Host y\n  Include @DIR@/b\n",
        "b": "User from-b\nHost x\n  User x-from-b\n",
    ], aliases: ["x", "y", "z"]),
]

/// What a host ends up with, in `ssh -G`'s terms: the values ssh would use, defaults included.
struct Effective: Equatable, CustomStringConvertible {
    var hostname: String
    var user: String
    var port: Int
    var identityFiles: [String]
    var identitiesOnly: Bool
    var proxyJump: String?
    var proxyCommand: String?
    var knownHosts: [String]
    var connectTimeout: Int?
    var serverAliveInterval: Int

    var description: String {
        "host=\(hostname) user=\(user) port=\(port) ids=\(identityFiles) only=\(identitiesOnly) jump=\(proxyJump ?? "-") "
            + "cmd=\(proxyCommand ?? "-") kh=\(knownHosts) ct=\(connectTimeout.map(String.init) ?? "none") sai=\(serverAliveInterval)"
    }

    static let defaultIdentities = ["~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ecdsa_sk", "~/.ssh/id_ed25519",
                                    "~/.ssh/id_ed25519_sk", "~/.ssh/id_xmss", "~/.ssh/id_dsa"]

    init(_ c: SSHHostConfig, alias: String, home: String, localUser: String) {
        hostname = c.hostName ?? alias
        user = c.user ?? localUser
        port = c.port ?? 22
        identityFiles = c.identityFiles.isEmpty ? Self.defaultIdentities : c.identityFiles
        identitiesOnly = c.identitiesOnly ?? false
        proxyJump = c.proxyJump
        proxyCommand = c.proxyCommand
        let files = c.userKnownHostsFiles.isEmpty ? ["~/.ssh/known_hosts", "~/.ssh/known_hosts2"] : c.userKnownHostsFiles
        knownHosts = files.map { $0.hasPrefix("~/") ? home + $0.dropFirst() : $0 }
        connectTimeout = c.connectTimeout.flatMap { $0 > 0 ? $0 : nil }
        serverAliveInterval = c.serverAliveInterval ?? 0
    }

    /// Straight from `ssh -G -F file alias`, parsed here independently of dstack's code.
    init(sshG file: String, alias: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/ssh")
        process.arguments = ["-G", "-F", file, alias]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        var v: [String: [String]] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            v[String(parts[0]), default: []].append(parts.count > 1 ? String(parts[1]) : "")
        }
        hostname = v["hostname"]?.first ?? ""
        user = v["user"]?.first ?? ""
        port = Int(v["port"]?.first ?? "") ?? 0
        identityFiles = v["identityfile"] ?? []
        identitiesOnly = v["identitiesonly"]?.first == "yes"
        proxyJump = v["proxyjump"]?.first
        proxyCommand = v["proxycommand"]?.first
        knownHosts = (v["userknownhostsfile"]?.first ?? "").split(separator: " ").map(String.init)
        connectTimeout = v["connecttimeout"]?.first.flatMap { Int($0) }
        serverAliveInterval = Int(v["serveraliveinterval"]?.first ?? "") ?? -1
    }
}

@Suite("ssh_config resolved as OpenSSH does")
struct SSHConfigDifferentialTests {
    /// OpenSSH expands `~` from the password database, not $HOME; the comparison uses the same.
    static var account: (home: String, user: String) {
        guard let pw = getpwuid(getuid()) else { return ("/", "root") }
        return (String(cString: pw.pointee.pw_dir), String(cString: pw.pointee.pw_name))
    }

    @Test("the built-in parser, dstack's ssh -G path and ssh -G itself agree", arguments: cases)
    func agree(_ c: DifferentialCase) throws {
        let ssh = "/usr/bin/ssh"
        try #require(FileManager.default.isExecutableFile(atPath: ssh), "this test needs OpenSSH's ssh client at \(ssh)")
        let scratch = try Scratch()
        defer { scratch.remove() }
        let (home, localUser) = Self.account
        for (name, text) in c.files {
            let url = scratch.url.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.replacingOccurrences(of: "@DIR@", with: scratch.url.path)
                .replacingOccurrences(of: "@LOCALUSER@", with: localUser)
                .write(to: url, atomically: true, encoding: .utf8)
        }
        let file = scratch.url.appendingPathComponent("config").path
        let builtIn = SSHConfigLookup(file: file, home: home, localUser: localUser, sshClient: nil)
        let viaSSH = SSHConfigLookup(file: file, home: home, localUser: localUser, sshClient: ssh)
        for alias in c.aliases {
            let parsed = try builtIn.settings(for: alias)
            let asked = try viaSSH.settings(for: alias)
            let openSSH = try Effective(sshG: file, alias: alias)
            let a = Effective(parsed, alias: alias, home: home, localUser: localUser)
            let b = Effective(asked, alias: alias, home: home, localUser: localUser)
            #expect(a == openSSH, "built-in parser, \(alias)")
            #expect(b == openSSH, "ssh -G path, \(alias)")
            // What the config sets (not OpenSSH's defaults) is the same on both paths too: it decides precedence.
            #expect(parsed.user == asked.user && parsed.port == asked.port && parsed.identityFiles == asked.identityFiles,
                    "set values, \(alias): \(parsed) vs \(asked)")
        }
    }

    @Test("values the config does not set are not set on the ssh -G path, so the inventory's defaults come first")
    func unsetStaysUnset() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let file = scratch.url.appendingPathComponent("config")
        try "Host a\n  Port 22\n  User \(Self.account.user)\n".write(to: file, atomically: true, encoding: .utf8)
        let lookup = SSHConfigLookup(file: file.path, home: Self.account.home, localUser: Self.account.user, sshClient: "/usr/bin/ssh")
        #expect(try lookup.settings(for: "b") == SSHHostConfig())
        // Set explicitly to OpenSSH's own defaults: still set.
        #expect(try lookup.settings(for: "a") == SSHHostConfig(user: Self.account.user, port: 22))
    }

    @Test("Include without a leading / is relative to ~/.ssh, a leading ~ is the home directory, and no match is fine")
    func includeRelative() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let home = scratch.url.path
        try FileManager.default.createDirectory(atPath: home + "/.ssh/conf.d", withIntermediateDirectories: true)
        try "Include conf.d/*\nInclude ~/extra\nInclude nothing-here*\n".write(toFile: home + "/.ssh/config", atomically: true, encoding: .utf8)
        try "Host lab\n  Port 2600\n".write(toFile: home + "/.ssh/conf.d/lab", atomically: true, encoding: .utf8)
        try "Host lab\n  User extra\n".write(toFile: home + "/extra", atomically: true, encoding: .utf8)
        let lookup = SSHConfigLookup(file: home + "/.ssh/config", home: home, localUser: "me", sshClient: nil)
        #expect(try lookup.settings(for: "lab") == SSHHostConfig(user: "extra", port: 2600))
    }

    @Test("a config ssh -G refuses is an error naming the file and what ssh said")
    func refused() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let file = scratch.url.appendingPathComponent("config")
        try "Host a\n  Port banana\n".write(to: file, atomically: true, encoding: .utf8)
        let lookup = SSHConfigLookup(file: file.path, displayName: "my-config", home: "/", localUser: "me", sshClient: "/usr/bin/ssh")
        let error = try #require(throws: ConfigError.self) { try lookup.settings(for: "a") }
        #expect("\(error)".contains("ssh -G cannot resolve 'a' with my-config"))
        #expect("\(error)".contains("banana"))
    }
}
