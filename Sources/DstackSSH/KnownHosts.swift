import Crypto
import Foundation

/// The parsed contents of an OpenSSH known_hosts file: plain, hashed and `[host]:port` entries.
struct KnownHosts: Sendable {
    /// One key line of the file.
    struct Entry: Sendable, Equatable {
        /// A marker before the host field.
        enum Marker: Sendable, Equatable { case none, revoked, certAuthority }
        /// The host field: a comma-separated pattern list, or one hashed name.
        enum Hosts: Sendable, Equatable {
            case patterns([String])
            case hashed(salt: [UInt8], hash: [UInt8])
        }

        var marker: Marker
        var hosts: Hosts
        var keyType: String
        var key: [UInt8]
        /// The 1-based line number in the file.
        var line: Int

        /// Whether this entry names `name` (already in lookup form: `host` or `[host]:port`).
        func matches(_ name: String) -> Bool {
            switch hosts {
            case let .hashed(salt, hash):
                let mac = HMAC<Insecure.SHA1>.authenticationCode(for: Array(name.utf8), using: SymmetricKey(data: salt))
                return Array(mac) == hash
            case let .patterns(patterns):
                var positive = false
                for pattern in patterns {
                    if pattern.hasPrefix("!") {
                        if wildcardMatch(String(pattern.dropFirst()).lowercased(), name.lowercased()) { return false }
                    } else if wildcardMatch(pattern.lowercased(), name.lowercased()) {
                        positive = true
                    }
                }
                return positive
            }
        }
    }

    /// The result of checking a server's key.
    enum Verdict: Sendable, Equatable {
        /// An entry at `line` holds exactly this key.
        case known(line: Int)
        /// The host has an entry of the same key type at `line` with a different key.
        case changed(line: Int)
        /// The key is marked @revoked at `line`.
        case revoked(line: Int)
        /// No entry for this host and key type.
        case unknown
    }

    /// The file these entries came from, for messages.
    let path: String
    /// The key lines, in file order; comments, blank and malformed lines are left out.
    let entries: [Entry]

    /// Parses known_hosts text; lines that do not parse are skipped, as OpenSSH does.
    init(contents: String, path: String) {
        self.path = path
        var entries: [Entry] = []
        var lineNumber = 0
        for rawLine in contents.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            if let entry = Self.parse(line: rawLine, number: lineNumber) { entries.append(entry) }
        }
        self.entries = entries
    }

    /// Reads a known_hosts file; a missing file is an empty one.
    static func load(path: String) throws(SSHError) -> KnownHosts {
        let expanded = expandTilde(path)
        guard FileManager.default.fileExists(atPath: expanded) else { return KnownHosts(contents: "", path: expanded) }
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: expanded))
            return KnownHosts(contents: String(decoding: data, as: UTF8.self), path: expanded)
        } catch {
            throw .localIO(path: expanded, reason: "cannot read known_hosts: \(error.localizedDescription)")
        }
    }

    /// The name OpenSSH looks up: `host` for port 22, `[host]:port` otherwise.
    static func lookupName(host: String, port: Int) -> String {
        port == 22 ? host : "[\(host)]:\(port)"
    }

    /// The entries that name `host` on `port`, in file order.
    func entries(host: String, port: Int) -> [Entry] {
        let name = Self.lookupName(host: host, port: port)
        return entries.filter { $0.marker != .certAuthority && $0.matches(name) }
    }

    /// The key types recorded for `host` on `port`, without duplicates, in file order.
    func keyTypes(host: String, port: Int) -> [String] {
        var seen: [String] = []
        for entry in entries(host: host, port: port) where entry.marker == .none && !seen.contains(entry.keyType) {
            seen.append(entry.keyType)
        }
        return seen
    }

    /// Checks the server's key (type and blob) the way OpenSSH does: a revoked mark wins, then any exact match.
    func verdict(host: String, port: Int, keyType: String, key: [UInt8]) -> Verdict {
        let candidates = entries(host: host, port: port)
        if let revoked = candidates.first(where: { $0.marker == .revoked && $0.key == key }) {
            return .revoked(line: revoked.line)
        }
        let plain = candidates.filter { $0.marker == .none }
        if let match = plain.first(where: { $0.keyType == keyType && $0.key == key }) {
            return .known(line: match.line)
        }
        if let other = plain.first(where: { $0.keyType == keyType }) {
            return .changed(line: other.line)
        }
        return .unknown
    }

    /// The line to append for a newly accepted key, without a newline.
    static func line(host: String, port: Int, keyType: String, key: [UInt8]) -> String {
        "\(lookupName(host: host, port: port)) \(keyType) \(Data(key).base64EncodedString())"
    }

    /// Appends a plain entry for `host` to the file at `path`, creating it (mode 600, folder 700) if needed.
    static func append(host: String, port: Int, keyType: String, key: [UInt8], to path: String) throws(SSHError) {
        let expanded = expandTilde(path)
        let directory = (expanded as NSString).deletingLastPathComponent
        do {
            if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            }
            if !FileManager.default.fileExists(atPath: expanded) {
                guard FileManager.default.createFile(atPath: expanded, contents: nil, attributes: [.posixPermissions: 0o600]) else {
                    throw SSHError.knownHostsNotWritable(path: expanded, reason: "cannot create the file")
                }
            }
            let handle = try FileHandle(forUpdating: URL(fileURLWithPath: expanded))
            defer { try? handle.close() }
            let end = try handle.seekToEnd()
            var text = line(host: host, port: port, keyType: keyType, key: key) + "\n"
            if end > 0 {
                try handle.seek(toOffset: end - 1)
                if let last = try handle.read(upToCount: 1), last != Data("\n".utf8) { text = "\n" + text }
                try handle.seekToEnd()
            }
            try handle.write(contentsOf: Data(text.utf8))
        } catch let error as SSHError {
            throw error
        } catch {
            throw .knownHostsNotWritable(path: expanded, reason: error.localizedDescription)
        }
    }

    /// Parses one line; nil for comments, blank lines and lines that are not key entries.
    static func parse(line rawLine: Substring, number: Int) -> Entry? {
        let line = rawLine.trimmingCharacters(in: .whitespaces)
        if line.isEmpty || line.hasPrefix("#") { return nil }
        var fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        var marker = Entry.Marker.none
        if let first = fields.first, first.hasPrefix("@") {
            switch first {
            case "@revoked": marker = .revoked
            case "@cert-authority": marker = .certAuthority
            default: return nil
            }
            fields.removeFirst()
        }
        guard fields.count >= 3, let key = Data(base64Encoded: fields[2]) else { return nil }
        let hosts: Entry.Hosts
        if fields[0].hasPrefix("|1|") {
            let parts = fields[0].split(separator: "|", omittingEmptySubsequences: false)
            guard parts.count == 4, let salt = Data(base64Encoded: String(parts[2])),
                  let hash = Data(base64Encoded: String(parts[3])) else { return nil }
            hosts = .hashed(salt: Array(salt), hash: Array(hash))
        } else {
            hosts = .patterns(fields[0].split(separator: ",").map(String.init))
        }
        return Entry(marker: marker, hosts: hosts, keyType: fields[1], key: Array(key), line: number)
    }
}

/// OpenSSH-style glob matching where `*` matches any run of characters and `?` any one character.
func wildcardMatch(_ pattern: String, _ text: String) -> Bool {
    let p = Array(pattern), t = Array(text)
    var pi = 0, ti = 0, starP = -1, starT = 0
    while ti < t.count {
        if pi < p.count, p[pi] == "?" || p[pi] == t[ti] {
            pi += 1; ti += 1
        } else if pi < p.count, p[pi] == "*" {
            starP = pi; starT = ti; pi += 1
        } else if starP >= 0 {
            pi = starP + 1; starT += 1; ti = starT
        } else {
            return false
        }
    }
    while pi < p.count, p[pi] == "*" { pi += 1 }
    return pi == p.count
}

/// Facts about an SSH public key blob (the wire format: string type, then type-specific fields).
enum HostKey {
    /// The key type named at the start of the blob, such as `ssh-ed25519`.
    static func type(of blob: [UInt8]) -> String? {
        guard blob.count >= 4 else { return nil }
        let length = Int(blob[0]) << 24 | Int(blob[1]) << 16 | Int(blob[2]) << 8 | Int(blob[3])
        guard length > 0, length <= blob.count - 4 else { return nil }
        return String(decoding: blob[4..<(4 + length)], as: UTF8.self)
    }

    /// The OpenSSH fingerprint: `SHA256:` and the unpadded base64 of the blob's SHA-256.
    static func fingerprint(_ blob: [UInt8]) -> String {
        let digest = Data(SHA256.hash(data: blob)).base64EncodedString()
        return "SHA256:" + digest.replacingOccurrences(of: "=", with: "")
    }
}
