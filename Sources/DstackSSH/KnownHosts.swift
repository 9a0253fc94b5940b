import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The parsed contents of OpenSSH known_hosts files (the user's, then the system's): plain, hashed and
/// `[host]:port` entries, `@revoked` and `@cert-authority` lines. Host keys are checked the way OpenSSH does.
struct KnownHosts: Sendable {
    /// One key line of a file.
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
        /// The 1-based line number in its file.
        var line: Int
        /// The file it is in.
        var file: String = ""

        /// Whether this entry names `name` (already in lookup form: `host` or `[host]:port`). Host names compare
        /// without regard to case, hashed ones too: OpenSSH hashes the lowercased name.
        func matches(_ name: String) -> Bool {
            let name = name.lowercased()
            switch hosts {
            case let .hashed(salt, hash):
                let mac = HMAC<Insecure.SHA1>.authenticationCode(for: Array(name.utf8), using: SymmetricKey(data: salt))
                return Array(mac) == hash
            case let .patterns(patterns):
                var positive = false
                for pattern in patterns {
                    if pattern.hasPrefix("!") {
                        if wildcardMatch(String(pattern.dropFirst()).lowercased(), name) { return false }
                    } else if wildcardMatch(pattern.lowercased(), name) {
                        positive = true
                    }
                }
                return positive
            }
        }
    }

    /// The result of checking a server's key; each names the file and line that decided it.
    enum Verdict: Sendable, Equatable {
        /// An entry holds exactly this key.
        case known(file: String, line: Int)
        /// The host has entries, and none holds this key: of the same type, or only of other types (a server
        /// that offers only a type nobody recorded for it is treated as a changed key, never as a new one).
        case changed(file: String, line: Int)
        /// The key is marked @revoked.
        case revoked(file: String, line: Int)
        /// No key is recorded for the host, but a `@cert-authority` line covers it: host certificates are what
        /// that line trusts, and libssh2 1.10 cannot check them.
        case certificateAuthority(file: String, line: Int)
        /// No entry for this host.
        case unknown
    }

    /// The file new keys are recorded in (the user's), for messages.
    let path: String
    /// The key lines of every file, in order; comments, blank and malformed lines are left out.
    let entries: [Entry]

    /// Parses known_hosts text; lines that do not parse are skipped, as OpenSSH does.
    init(contents: String, path: String) {
        self.init(files: [(path, contents)])
    }

    /// Parses several files' text; the first is the one new keys are recorded in.
    init(files: [(path: String, contents: String)]) {
        path = files.first?.path ?? ""
        var entries: [Entry] = []
        for (file, contents) in files {
            var lineNumber = 0
            for rawLine in contents.split(separator: "\n", omittingEmptySubsequences: false) {
                lineNumber += 1
                if var entry = Self.parse(line: rawLine, number: lineNumber) {
                    entry.file = file
                    entries.append(entry)
                }
            }
        }
        self.entries = entries
    }

    /// The system-wide file OpenSSH reads after the user's.
    static let systemFile = "/etc/ssh/ssh_known_hosts"

    /// Reads the user's known_hosts file and then `systemFiles`; a missing file is an empty one.
    static func load(path: String, systemFiles: [String] = [systemFile]) throws(SSHError) -> KnownHosts {
        var files: [(String, String)] = []
        for file in [expandTilde(path)] + systemFiles.map(expandTilde) {
            guard FileManager.default.fileExists(atPath: file) else {
                files.append((file, ""))
                continue
            }
            do {
                let data = try Data(contentsOf: URL(fileURLWithPath: file))
                files.append((file, String(decoding: data, as: UTF8.self)))
            } catch {
                throw .localIO(path: file, reason: "cannot read known_hosts: \(error.localizedDescription)")
            }
        }
        return KnownHosts(files: files)
    }

    /// The name OpenSSH looks up: `host` for port 22, `[host]:port` otherwise.
    static func lookupName(host: String, port: Int) -> String {
        port == 22 ? host : "[\(host)]:\(port)"
    }

    /// The host-key entries (plain and @revoked) that name `host` on `port`, in file order.
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

    /// Checks the server's key (type and blob) the way OpenSSH does: a revoked mark wins, then any exact match;
    /// any other key recorded for the host, of whatever type, makes it a changed key.
    func verdict(host: String, port: Int, keyType: String, key: [UInt8]) -> Verdict {
        let candidates = entries(host: host, port: port)
        if let revoked = candidates.first(where: { $0.marker == .revoked && $0.key == key }) {
            return .revoked(file: revoked.file, line: revoked.line)
        }
        let plain = candidates.filter { $0.marker == .none }
        if let match = plain.first(where: { $0.keyType == keyType && $0.key == key }) {
            return .known(file: match.file, line: match.line)
        }
        if let other = plain.first(where: { $0.keyType == keyType }) ?? plain.first {
            return .changed(file: other.file, line: other.line)
        }
        let name = Self.lookupName(host: host, port: port)
        if let authority = entries.first(where: { $0.marker == .certAuthority && $0.matches(name) }) {
            return .certificateAuthority(file: authority.file, line: authority.line)
        }
        return .unknown
    }

    /// The line to append for a newly accepted key, without a newline (the host name lowercased, as OpenSSH
    /// writes it).
    static func line(host: String, port: Int, keyType: String, key: [UInt8]) -> String {
        "\(lookupName(host: host.lowercased(), port: port)) \(keyType) \(Data(key).base64EncodedString())"
    }

    /// Records a newly accepted key for `host` at the end of the file at `path`, creating it (mode 600, folder
    /// 700) if needed, and returns the verdict that then holds.
    ///
    /// Two coordinators may accept keys at once, and the user's `ssh` may be writing too: the file is locked
    /// (`flock`) and read again under the lock, so a key another process recorded meanwhile is seen (the same key:
    /// nothing is written; another key: `.changed`), and the line goes in with one `O_APPEND` write.
    @discardableResult
    static func append(host: String, port: Int, keyType: String, key: [UInt8], to path: String) throws(SSHError) -> Verdict {
        let expanded = expandTilde(path)
        let directory = (expanded as NSString).deletingLastPathComponent
        if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw .knownHostsNotWritable(path: expanded, reason: error.localizedDescription)
            }
        }
        let fd = open(expanded, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .knownHostsNotWritable(path: expanded, reason: errnoDescription(errno)) }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else { throw .knownHostsNotWritable(path: expanded, reason: "cannot lock it: \(errnoDescription(errno))") }
        }
        defer { flock(fd, LOCK_UN) }
        var current = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 65536)
        var offset: off_t = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .knownHostsNotWritable(path: expanded, reason: errnoDescription(errno))
            }
            if n == 0 { break }
            current += buffer[0..<n]
            offset += off_t(n)
        }
        let existing = KnownHosts(contents: String(decoding: current, as: UTF8.self), path: expanded)
        let verdict = existing.verdict(host: host, port: port, keyType: keyType, key: key)
        if verdict != .unknown { return verdict }
        var text = line(host: host, port: port, keyType: keyType, key: key) + "\n"
        if let last = current.last, last != UInt8(ascii: "\n") { text = "\n" + text }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else {
            throw .knownHostsNotWritable(path: expanded, reason: written < 0 ? errnoDescription(errno) : "a short write")
        }
        // The new line is the last one: its number is the count of newlines once it is written.
        let lineNumber = (current + bytes).filter { $0 == UInt8(ascii: "\n") }.count
        return .known(file: expanded, line: lineNumber)
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
