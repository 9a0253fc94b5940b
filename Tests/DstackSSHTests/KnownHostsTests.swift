import Foundation
import Testing
@testable import DstackSSH

/// Keys and hashed lines made with ssh-keygen (fingerprints from `ssh-keygen -lf`).
private enum Vector {
    static let key1 = "AAAAC3NzaC1lZDI1NTE5AAAAIP/h3k9HbudYn5vipVCV68GVh0usSvbCAny6qALhaf9/"
    static let key1Fingerprint = "SHA256:Z1cFPHaOQfln2hAxIJCrbqbQHVihsZ7ptalq0Q6dPRg"
    static let key2 = "AAAAC3NzaC1lZDI1NTE5AAAAINRIHhYVICF1QqGfu8cGOw9mOOxSc6u1MUaGs+oQVzhY"
    static let key2Fingerprint = "SHA256:jP5alW+qRrE2EMCA1bfYOi7wtFPDrrK1kEYl2nNPj0E"
    static let ecdsa = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEK1gYd3nBFykvWib6fwm9p0EOWs1/ONDs0RBeifNLALw61UzbZG6DQVqFG3kbec3D96SjSudPKHbENqroXldug="
    static let ecdsaFingerprint = "SHA256:5LecOKQH0xw6avR5CacN51rBuNDom5Eiw666d6+Z3NM"
    /// `ssh-keygen -H` of "example.com <key1>".
    static let hashedExample = "|1|F/5PGu3kQifjfoBty6SWEszHZlk=|jMe7fUp5EQ5T+hAuh4cNSuVnwUs= ssh-ed25519 \(key1)"
    /// `ssh-keygen -H` of "[127.0.0.2]:2222 <key2>".
    static let hashedBracketed = "|1|eYR0zAHCqjd4kZNMUkv5DGyDPPM=|68SGhanTD2BqRpqL4+QB9/iEFoM= ssh-ed25519 \(key2)"

    static func blob(_ base64: String) -> [UInt8] { Array(Data(base64Encoded: base64)!) }
}

@Suite("known_hosts parsing and matching")
struct KnownHostsTests {
    @Test("fingerprints match ssh-keygen -lf", arguments: [
        (Vector.key1, Vector.key1Fingerprint), (Vector.key2, Vector.key2Fingerprint), (Vector.ecdsa, Vector.ecdsaFingerprint),
    ])
    func fingerprint(key: String, expected: String) {
        #expect(HostKey.fingerprint(Vector.blob(key)) == expected)
    }

    @Test("the key type is read from the blob")
    func keyType() {
        #expect(HostKey.type(of: Vector.blob(Vector.key1)) == "ssh-ed25519")
        #expect(HostKey.type(of: Vector.blob(Vector.ecdsa)) == "ecdsa-sha2-nistp256")
        #expect(HostKey.type(of: [0, 0, 0, 9, 1]) == nil)
    }

    @Test("lookup names: plain on port 22, bracketed otherwise")
    func lookupName() {
        #expect(KnownHosts.lookupName(host: "gpu-1", port: 22) == "gpu-1")
        #expect(KnownHosts.lookupName(host: "127.0.0.2", port: 2222) == "[127.0.0.2]:2222")
    }

    @Test("plain entries, comma lists, comments, markers and junk")
    func parsing() {
        let text = """
            # a comment

            gpu-1,10.0.0.11 ssh-ed25519 \(Vector.key1) comment here
            [127.0.0.2]:2222 ssh-ed25519 \(Vector.key2)
            @revoked bad.example ssh-ed25519 \(Vector.key2)
            @cert-authority *.example ssh-ed25519 \(Vector.key1)
            @unknown-marker x ssh-ed25519 \(Vector.key1)
            not-enough-fields ssh-ed25519
            broken ssh-ed25519 !!!notbase64!!!
            \(Vector.hashedExample)
            """
        let hosts = KnownHosts(contents: text, path: "/kh")
        #expect(hosts.entries.map(\.line) == [3, 4, 5, 6, 10])
        #expect(hosts.entries[0].hosts == .patterns(["gpu-1", "10.0.0.11"]))
        #expect(hosts.entries[2].marker == .revoked)
        #expect(hosts.entries[3].marker == .certAuthority)
        #expect(hosts.entries(host: "10.0.0.11", port: 22).map(\.line) == [3])
        #expect(hosts.entries(host: "gpu-1", port: 2222).isEmpty, "a plain name does not cover other ports")
        #expect(hosts.entries(host: "127.0.0.2", port: 2222).map(\.line) == [4])
        #expect(hosts.entries(host: "127.0.0.2", port: 22).isEmpty)
        #expect(hosts.entries(host: "x.example", port: 22).isEmpty, "cert-authority lines are not host keys")
    }

    @Test("hashed entries match the names they were hashed from, and only those")
    func hashed() {
        let hosts = KnownHosts(contents: Vector.hashedExample + "\n" + Vector.hashedBracketed + "\n", path: "/kh")
        #expect(hosts.entries(host: "example.com", port: 22).map(\.line) == [1])
        #expect(hosts.entries(host: "127.0.0.2", port: 2222).map(\.line) == [2])
        #expect(hosts.entries(host: "example.org", port: 22).isEmpty)
        #expect(hosts.entries(host: "example.com", port: 2222).isEmpty)
        #expect(hosts.entries(host: "127.0.0.2", port: 22).isEmpty)
    }

    @Test("wildcards and negation")
    func patterns() {
        let hosts = KnownHosts(contents: "*.lab,!secret.lab,gpu-? ssh-ed25519 \(Vector.key1)\n", path: "/kh")
        #expect(hosts.entries(host: "a.lab", port: 22).count == 1)
        #expect(hosts.entries(host: "A.LAB", port: 22).count == 1, "host names compare case-insensitively")
        #expect(hosts.entries(host: "secret.lab", port: 22).isEmpty)
        #expect(hosts.entries(host: "gpu-7", port: 22).count == 1)
        #expect(hosts.entries(host: "gpu-17", port: 22).isEmpty)
    }

    @Test("verdicts: known, changed with its line, unknown, revoked")
    func verdicts() {
        let text = """
            other ssh-ed25519 \(Vector.key2)
            [h]:2200 ecdsa-sha2-nistp256 \(Vector.ecdsa)
            [h]:2200 ssh-ed25519 \(Vector.key1)
            @revoked [r]:2200 ssh-ed25519 \(Vector.key2)
            [r]:2200 ssh-ed25519 \(Vector.key2)
            """
        let hosts = KnownHosts(contents: text, path: "/kh")
        let key1 = Vector.blob(Vector.key1), key2 = Vector.blob(Vector.key2)
        #expect(hosts.verdict(host: "h", port: 2200, keyType: "ssh-ed25519", key: key1) == .known(file: "/kh", line: 3))
        #expect(hosts.verdict(host: "h", port: 2200, keyType: "ssh-ed25519", key: key2) == .changed(file: "/kh", line: 3))
        #expect(hosts.verdict(host: "h", port: 2201, keyType: "ssh-ed25519", key: key1) == .unknown)
        #expect(hosts.verdict(host: "r", port: 2200, keyType: "ssh-ed25519", key: key2) == .revoked(file: "/kh", line: 4))
        #expect(hosts.keyTypes(host: "h", port: 2200) == ["ecdsa-sha2-nistp256", "ssh-ed25519"])
    }

    @Test("a host whose recorded keys are all of another type presenting a new type has a changed key")
    func otherTypeIsChanged() {
        let hosts = KnownHosts(contents: "# c\n[h]:2200 ecdsa-sha2-nistp256 \(Vector.ecdsa)\n", path: "/kh")
        #expect(hosts.verdict(host: "h", port: 2200, keyType: "ssh-ed25519", key: Vector.blob(Vector.key1))
            == .changed(file: "/kh", line: 2))
    }

    @Test("hashed entries match host names whatever their case, as OpenSSH lowercases before hashing")
    func hashedIgnoresCase() {
        let hosts = KnownHosts(contents: Vector.hashedExample + "\n", path: "/kh")
        #expect(hosts.entries(host: "Example.COM", port: 22).map(\.line) == [1])
        #expect(KnownHosts.line(host: "GPU-1.Lab", port: 22, keyType: "ssh-ed25519", key: Vector.blob(Vector.key1))
            .hasPrefix("gpu-1.lab ssh-ed25519 "))
    }

    @Test("the system file is read after the user's, and each verdict names the file that decided it")
    func systemFile() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kh-sys-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let user = folder.appendingPathComponent("known_hosts").path, system = folder.appendingPathComponent("ssh_known_hosts").path
        try "other ssh-ed25519 \(Vector.key2)\n".write(toFile: user, atomically: true, encoding: .utf8)
        try "# fleet\ngpu-1 ssh-ed25519 \(Vector.key1)\n@revoked bad ssh-ed25519 \(Vector.key2)\nbad ssh-ed25519 \(Vector.key2)\n"
            .write(toFile: system, atomically: true, encoding: .utf8)
        let hosts = try KnownHosts.load(path: user, systemFiles: [system, folder.appendingPathComponent("absent").path])
        #expect(hosts.path == user)
        #expect(hosts.verdict(host: "gpu-1", port: 22, keyType: "ssh-ed25519", key: Vector.blob(Vector.key1)) == .known(file: system, line: 2))
        #expect(hosts.verdict(host: "bad", port: 22, keyType: "ssh-ed25519", key: Vector.blob(Vector.key2)) == .revoked(file: system, line: 3))
        #expect(hosts.verdict(host: "other", port: 22, keyType: "ssh-ed25519", key: Vector.blob(Vector.key1)) == .changed(file: user, line: 1))
    }

    @Test("a @cert-authority line for a host with no key of its own is a verdict of its own, never unknown")
    func certificateAuthority() {
        let hosts = KnownHosts(contents: "@cert-authority *.lab ssh-ed25519 \(Vector.key2)\nknown.lab ssh-ed25519 \(Vector.key1)\n", path: "/kh")
        #expect(hosts.verdict(host: "new.lab", port: 22, keyType: "ssh-ed25519", key: Vector.blob(Vector.key1)) == .certificateAuthority(file: "/kh", line: 1))
        #expect(hosts.verdict(host: "known.lab", port: 22, keyType: "ssh-ed25519", key: Vector.blob(Vector.key1)) == .known(file: "/kh", line: 2))
        #expect(hosts.verdict(host: "elsewhere", port: 22, keyType: "ssh-ed25519", key: Vector.blob(Vector.key1)) == .unknown)
        let error = SSHError.hostCertificateAuthority(host: "new.lab", knownHostsFile: "/kh", line: 1)
        #expect(error.description == "/kh:1 trusts a certificate authority for 'new.lab', but dstack's SSH library (libssh2 1.10) cannot check host certificates, so it cannot trust that host by it; refusing to connect. add the host's own key to your known_hosts once you have checked its fingerprint (ssh-keyscan new.lab | ssh-keygen -lf - shows it)")
    }

    @Test("new keys recorded at once by many writers all arrive whole, each once")
    func concurrentAppends() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kh-many-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("known_hosts").path
        let key = Vector.blob(Vector.key1)
        let failures = LockedCount()
        DispatchQueue.concurrentPerform(iterations: 64) { i in
            // Every writer records its own host, and all of them the shared one.
            do {
                try KnownHosts.append(host: "h\(i)", port: 22, keyType: "ssh-ed25519", key: key, to: path)
                try KnownHosts.append(host: "shared", port: 22, keyType: "ssh-ed25519", key: key, to: path)
            } catch {
                failures.add()
            }
        }
        #expect(failures.value == 0)
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.last == "")
        #expect(Set(lines.dropLast()) == Set((0..<64).map { "h\($0) ssh-ed25519 \(Vector.key1)" } + ["shared ssh-ed25519 \(Vector.key1)"]))
        #expect(lines.count == 66, "the shared host was recorded more than once")
    }

    @Test("a key recorded by another process meanwhile is seen under the lock: a different one is a changed key")
    func appendRechecks() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kh-race-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("known_hosts").path
        try KnownHosts.append(host: "h", port: 22, keyType: "ssh-ed25519", key: Vector.blob(Vector.key2), to: path)
        let verdict = try KnownHosts.append(host: "h", port: 22, keyType: "ssh-ed25519", key: Vector.blob(Vector.key1), to: path)
        #expect(verdict == .changed(file: path, line: 1))
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "h ssh-ed25519 \(Vector.key2)\n")
    }

    @Test("the offered host-key types are the linked libssh2's, the known ones first")
    func methodPreference() {
        let library = Negotiation.offeredByLibrary()
        #expect(library.hostKey.contains("ssh-ed25519") && library.hostKey.contains("ecdsa-sha2-nistp256"))
        #expect(!library.kex.isEmpty && library.ciphers.contains("aes128-ctr") && library.macs.contains("hmac-sha2-256"))
        let known = Negotiation.offeredByLibrary(knownTypes: ["ecdsa-sha2-nistp384", "ssh-ed25519"]).hostKey
        #expect(Set(known.prefix(2)) == ["ecdsa-sha2-nistp384", "ssh-ed25519"])
        #expect(Set(known) == Set(library.hostKey))
    }

    @Test("appending creates the file and adds a newline where one is missing")
    func append() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kh-\(UUID().uuidString)/sub")
        defer { try? FileManager.default.removeItem(at: folder.deletingLastPathComponent()) }
        let path = folder.appendingPathComponent("known_hosts").path
        let key = Vector.blob(Vector.key1)
        try KnownHosts.append(host: "h", port: 2200, keyType: "ssh-ed25519", key: key, to: path)
        try appendText("other ssh-ed25519 \(Vector.key2)", to: path)
        try KnownHosts.append(host: "g", port: 22, keyType: "ssh-ed25519", key: key, to: path)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text == "[h]:2200 ssh-ed25519 \(Vector.key1)\nother ssh-ed25519 \(Vector.key2)\ng ssh-ed25519 \(Vector.key1)\n")
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }

    @Test("messages: unknown shows the fingerprint and the flag; changed names file and line")
    func messages() {
        let unknown = SSHError.unknownHostKey(
            host: "[127.0.0.2]:2222", keyType: "ssh-ed25519", fingerprint: Vector.key1Fingerprint, knownHostsFile: "/root/.ssh/known_hosts")
        #expect(unknown.description == "the authenticity of host '[127.0.0.2]:2222' can't be established: its ssh-ed25519 key fingerprint is SHA256:Z1cFPHaOQfln2hAxIJCrbqbQHVihsZ7ptalq0Q6dPRg and /root/.ssh/known_hosts has no entry for it; if you trust this fingerprint, rerun with --accept-new-host-keys to record it")
        let changed = SSHError.hostKeyChanged(
            host: "gpu-1", keyType: "ssh-ed25519", fingerprint: Vector.key2Fingerprint, knownHostsFile: "/kh", line: 7)
        #expect(changed.description.hasPrefix("warning: remote host identification has changed for 'gpu-1'!"))
        #expect(changed.description.contains("/kh:7 records a different key"))
        #expect(changed.description.contains("delete line 7 of /kh"))
    }
}

@Suite("identity file inspection")
struct IdentityFileTests {
    @Test("openssh-format keys: type and encryption are read from the header")
    func openssh() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("id-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try await shell("""
            cd \(folder.path) && ssh-keygen -q -t ed25519 -N '' -f plain && ssh-keygen -q -t ed25519 -N secret -f locked \
              && ssh-keygen -q -t rsa -b 2048 -N '' -f rsa && rm rsa.pub
            """)
        let plain = IdentityFile.inspect(privateKey: try String(contentsOfFile: folder.path + "/plain", encoding: .utf8))
        #expect(plain == IdentityFile(keyType: "ssh-ed25519", isEncrypted: false))
        let locked = IdentityFile.inspect(privateKey: try String(contentsOfFile: folder.path + "/locked", encoding: .utf8))
        #expect(locked == IdentityFile(keyType: "ssh-ed25519", isEncrypted: true))
        #expect(IdentityFile.inspect(path: folder.path + "/rsa")?.keyType == "ssh-rsa")
    }
}

/// A counter safe to bump from many threads.
private final class LockedCount: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func add() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}
