import DstackModel
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The ~/.ssh/config settings of a host, resolved by OpenSSH itself (`ssh -G -F FILE ALIAS`) where an `ssh` client
/// is installed, else by the built-in parser with `Include` read from disk.
///
/// Only what the config sets counts as set: the values `ssh -G` prints for settings the config leaves alone are its
/// defaults, told apart by resolving twice with a different sentinel appended after the config (a trailing `Host *`
/// block only supplies what nothing before it set), so that the inventory's `defaults:` still come before them.
public final class SSHConfigLookup: @unchecked Sendable {
    /// The config file read: `$DSTACK_SSH_CONFIG`, else `~/.ssh/config`.
    public let file: String
    /// The name messages use for the file.
    public let displayName: String
    /// The `ssh` client asked, or nil to use the built-in parser.
    public let sshClient: String?
    private let home: String
    private let localUser: String
    private var cache: [String: SSHHostConfig] = [:]
    private var parsed: SSHConfig??
    private let lock = NSLock()

    /// Creates a lookup of `file` (nil: `$DSTACK_SSH_CONFIG`, else `home/.ssh/config`), asking `sshClient` when given.
    public init(file: String, displayName: String? = nil, home: String, localUser: String, sshClient: String?) {
        self.file = file
        self.displayName = displayName ?? file
        self.home = home
        self.localUser = localUser
        self.sshClient = sshClient
    }

    /// The lookup dstack uses: the file from `$DSTACK_SSH_CONFIG` or `home/.ssh/config`, and the `ssh` found in
    /// `$PATH` (none when `$DSTACK_SSH_CONFIG_RESOLVER` is `builtin`).
    public static func standard(environment: [String: String], home: String, localUser: String) -> SSHConfigLookup {
        let explicit = environment["DSTACK_SSH_CONFIG"].flatMap { $0.isEmpty ? nil : $0 }
        let file = explicit.map { expandingTildeIn($0, home: home) } ?? home + "/.ssh/config"
        let client = environment["DSTACK_SSH_CONFIG_RESOLVER"] == "builtin" ? nil : findExecutable("ssh", path: environment["PATH"])
        return SSHConfigLookup(file: file, displayName: explicit ?? "~/.ssh/config", home: home, localUser: localUser,
                               sshClient: client)
    }

    /// Whether the config file exists (without one, every host gets no settings).
    public var exists: Bool { FileManager.default.fileExists(atPath: file) }

    /// The settings the config gives `alias`; errors in the file are `ConfigError`s quoting it.
    public func settings(for alias: String) throws -> SSHHostConfig {
        lock.lock()
        defer { lock.unlock() }
        if let known = cache[alias] { return known }
        let result: SSHHostConfig
        if !exists {
            result = SSHHostConfig()
        } else if let sshClient {
            result = try askOpenSSH(sshClient, alias)
        } else {
            result = try builtIn()?.resolve(host: alias, localUser: localUser) ?? SSHHostConfig()
        }
        cache[alias] = result
        return result
    }

    // MARK: - the built-in parser

    private func builtIn() throws -> SSHConfig? {
        if let parsed { return parsed }
        let text = try? String(contentsOfFile: file, encoding: .utf8)
        let config = try text.map { text throws(ConfigError) in
            try SSHConfig.parse(text: text, displayName: displayName, include: Self.includeReader(home: home))
        }
        parsed = .some(config)
        return config
    }

    /// Reads what an `Include` argument names as OpenSSH does for a user config: `~` is the home directory, a
    /// relative path is relative to `~/.ssh`, globs are expanded and sorted, and a pattern matching nothing is fine.
    public static func includeReader(home: String) -> (String) throws(ConfigError) -> [SSHConfig.IncludedFile] {
        { pattern throws(ConfigError) in
            var path = expandingTildeIn(pattern, home: home)
            if !path.hasPrefix("/") { path = home + "/.ssh/" + path }
            var found = glob_t()
            defer { globfree(&found) }
            guard glob(path, 0, nil, &found) == 0 else { return [] }
            var files: [SSHConfig.IncludedFile] = []
            for i in 0..<Int(found.gl_pathc) {
                guard let raw = found.gl_pathv[i] else { continue }
                let name = String(cString: raw)
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: name, isDirectory: &isDirectory), !isDirectory.boolValue else { continue }
                guard let text = try? String(contentsOfFile: name, encoding: .utf8) else {
                    throw ConfigError(message: "cannot read \(name), which ssh config 'Include \(pattern)' names; check its permissions")
                }
                files.append(SSHConfig.IncludedFile(displayName: name, text: text))
            }
            return files
        }
    }

    // MARK: - ssh -G

    private func askOpenSSH(_ client: String, _ alias: String) throws -> SSHHostConfig {
        var first = try runG(client, alias, sentinel: 0, final: false)
        let second: [String: [String]]
        if first["sendenv"]?.contains(Self.secondPassMarker) == true {
            // The config asks for a second pass (Match final, canonicalization): the sentinels go in that pass only,
            // or the first pass would have set them before the config's final blocks are read.
            first = try runG(client, alias, sentinel: 0, final: true)
            second = try runG(client, alias, sentinel: 1, final: true)
        } else {
            second = try runG(client, alias, sentinel: 1, final: false)
        }
        var out = SSHHostConfig()
        func single(_ key: String) -> (String?, String?) { (first[key]?.first, second[key]?.first) }
        // A value that differs between the two runs is a sentinel: the config does not set it.
        func set(_ key: String) -> String? {
            let (a, b) = single(key)
            return a == b ? a : nil
        }
        out.hostName = first["hostname"]?.first.flatMap { $0 == alias.lowercased() ? nil : $0 }
        out.user = set("user")
        out.port = set("port").flatMap(Int.init)
        out.identityFiles = (first["identityfile"] ?? []).filter { $0 != Self.sentinelIdentity }
        out.proxyJump = first["proxyjump"]?.first
        out.proxyCommand = first["proxycommand"]?.first
        out.identitiesOnly = set("identitiesonly").map { $0 == "yes" }
        let knownA = first["userknownhostsfile"]?.first ?? "", knownB = second["userknownhostsfile"]?.first ?? ""
        out.userKnownHostsFiles = knownA == knownB ? knownA.split(separator: " ").map(String.init) : []
        out.connectTimeout = set("connecttimeout").map { Int($0) ?? 0 }
        out.serverAliveInterval = set("serveraliveinterval").flatMap(Int.init)
        return out
    }

    static let sentinelIdentity = "/nonexistent/dstack-unset-identity"
    static let secondPassMarker = "DSTACK_SSH_G_SECOND_PASS"

    /// Runs `ssh -G` on a file that includes the config and then supplies sentinel values; returns each keyword's
    /// values (keywords lowercased, one entry per line; whole rest of line as the value).
    private func runG(_ client: String, _ alias: String, sentinel: Int, final: Bool) throws -> [String: [String]] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-sshG-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let wrapper = dir.appendingPathComponent("config")
        let quoted = "\"" + file.replacingOccurrences(of: "\"", with: "\\\"") + "\""
        let text = """
            Include \(quoted)
            Match canonical
              SendEnv \(Self.secondPassMarker)
            \(final ? "Match final" : "Host *")
              User dstack-unset-\(sentinel)
              Port \(65534 + sentinel)
              IdentitiesOnly \(sentinel == 0 ? "yes" : "no")
              UserKnownHostsFile /nonexistent/dstack-unset-\(sentinel)
              ConnectTimeout \(987_650 + sentinel)
              ServerAliveInterval \(987_650 + sentinel)
              IdentityFile \(Self.sentinelIdentity)

            """
        try text.write(to: wrapper, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: client)
        process.arguments = ["-G", "-F", wrapper.path, "--", alias]
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errors = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let said = errors.split(separator: "\n").filter { !$0.contains("Pseudo-terminal") }
                .map { $0.replacingOccurrences(of: wrapper.path, with: "(dstack's wrapper)") }.joined(separator: "; ")
            throw ConfigError(message: "ssh -G cannot resolve '\(alias)' with \(displayName): \(said); fix the file (ssh \(alias) fails the same way), or set DSTACK_SSH_CONFIG to another one")
        }
        var values: [String: [String]] = [:]
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
            guard let space = line.firstIndex(of: " ") else { continue }
            values[line[..<space].lowercased(), default: []].append(String(line[line.index(after: space)...]))
        }
        return values
    }
}

/// The first executable called `name` in the colon-separated `path` (or the usual places when nil).
func findExecutable(_ name: String, path: String?) -> String? {
    let dirs = (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":").map(String.init)
    return dirs.map { $0 + "/" + name }.first { access($0, X_OK) == 0 }
}

/// `path` with a leading `~` or `~/` replaced by `home`.
func expandingTildeIn(_ path: String, home: String) -> String {
    guard path == "~" || path.hasPrefix("~/") else { return path }
    return home + path.dropFirst()
}
