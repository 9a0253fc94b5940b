internal import CLibSSH2
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The algorithm lists of one side of an SSH key exchange, in its order of preference.
public struct SSHAlgorithms: Sendable, Hashable {
    /// Key exchange methods.
    public var kex: [String]
    /// Host key types.
    public var hostKey: [String]
    /// Ciphers, client to server.
    public var ciphers: [String]
    /// MACs, client to server.
    public var macs: [String]

    /// Creates the lists.
    public init(kex: [String], hostKey: [String], ciphers: [String], macs: [String]) {
        self.kex = kex
        self.hostKey = hostKey
        self.ciphers = ciphers
        self.macs = macs
    }

    /// Ciphers that authenticate their own data, so that no MAC is negotiated with them.
    static let aead: Set<String> = ["chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]

    /// Why a client with these lists and `server` cannot agree, naming the first thing that has no common
    /// algorithm and both lists; nil when every category has one (the failure was something else).
    public func mismatch(with server: SSHAlgorithms, clientName: String) -> String? {
        func common(_ a: [String], _ b: [String]) -> String? { a.first { b.contains($0) } }
        func lists(_ what: String, _ mine: [String], _ theirs: [String], _ note: String = "") -> String {
            "no common \(what): the server offers \(theirs.joined(separator: ", ")); \(clientName) offers \(mine.joined(separator: ", "))\(note)"
        }
        if common(kex, server.kex) == nil { return lists("key exchange method", kex, server.kex) }
        if common(hostKey, server.hostKey) == nil { return lists("host key type", hostKey, server.hostKey) }
        guard let cipher = common(ciphers, server.ciphers) else { return lists("cipher", ciphers, server.ciphers) }
        if !Self.aead.contains(cipher), common(macs, server.macs) == nil {
            let usable = ciphers.filter { server.ciphers.contains($0) }
            return lists("MAC (message authentication code)", macs, server.macs,
                         " (the ciphers both sides have, \(usable.joined(separator: ", ")), need one)")
        }
        return nil
    }
}

/// What the linked libssh2 can negotiate, asked at run time, so that a newer library reaches more servers unchanged.
enum Negotiation {
    /// The linked libssh2's version, such as `1.10.0`.
    static var libraryVersion: String { libssh2_version(0).map { String(cString: $0) } ?? "unknown" }

    /// The methods of `type` (a `LIBSSH2_METHOD_*`) that `session`'s libssh2 supports, in its order.
    static func supported(_ session: OpaquePointer, _ type: Int32) -> [String] {
        var algs: UnsafeMutablePointer<UnsafePointer<CChar>?>?
        let count = libssh2_session_supported_algs(session, type, &algs)
        guard count > 0, let algs else { return [] }
        defer { libssh2_free(session, algs) }
        return (0..<Int(count)).compactMap { algs[$0].map { String(cString: $0) } }
    }

    /// Everything the linked libssh2 offers; host key types known_hosts holds for the host come first.
    static func offered(_ session: OpaquePointer, knownTypes: [String]) -> SSHAlgorithms {
        // OpenSSH's order among the types the library has (ed25519 first), then the library's others in its order.
        let library = supported(session, LIBSSH2_METHOD_HOSTKEY)
        let ranked = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"].filter(library.contains)
        let hostKeys = ranked + library.filter { !ranked.contains($0) }
        let known = hostKeys.filter { knownTypes.contains($0) }
        return SSHAlgorithms(kex: supported(session, LIBSSH2_METHOD_KEX),
                             hostKey: known + hostKeys.filter { !known.contains($0) },
                             ciphers: supported(session, LIBSSH2_METHOD_CRYPT_CS),
                             macs: supported(session, LIBSSH2_METHOD_MAC_CS))
    }

    /// What the linked libssh2 offers, asked of a session made for the purpose (for messages and tests).
    static func offeredByLibrary(knownTypes: [String] = []) -> SSHAlgorithms {
        guard (try? LibSSH2.initialize()) != nil, let session = libssh2_session_init_ex(nil, nil, nil, nil) else {
            return SSHAlgorithms(kex: [], hostKey: [], ciphers: [], macs: [])
        }
        defer { _ = libssh2_session_free(session) }
        return offered(session, knownTypes: knownTypes)
    }

    /// Sets `session`'s preferences to every method of `offered` (in both directions), so that nothing the library
    /// supports is left out by a fixed list.
    static func prefer(_ session: OpaquePointer, _ offered: SSHAlgorithms) {
        let pairs: [(Int32, [String])] = [
            (LIBSSH2_METHOD_KEX, offered.kex), (LIBSSH2_METHOD_HOSTKEY, offered.hostKey),
            (LIBSSH2_METHOD_CRYPT_CS, offered.ciphers), (LIBSSH2_METHOD_CRYPT_SC, offered.ciphers),
            (LIBSSH2_METHOD_MAC_CS, offered.macs), (LIBSSH2_METHOD_MAC_SC, offered.macs),
        ]
        for (type, list) in pairs where !list.isEmpty {
            _ = libssh2_session_method_pref(session, type, list.joined(separator: ","))
        }
    }

    /// The server's lists, read from the KEXINIT it sends in the clear on a fresh connection to `host:port`
    /// (a second connection, made only to explain a failed handshake); nil when it cannot be read in time.
    static func serverAlgorithms(host: String, port: Int, timeout: Duration) -> SSHAlgorithms? {
        let deadline = ContinuousClock.now + timeout
        guard let fd = try? TCPSocket.connect(host: host, port: port, deadline: deadline, timeout: timeout) else { return nil }
        defer { close(fd) }
        return serverAlgorithms(socket: fd, deadline: deadline)
    }

    /// Reads the server's banner and KEXINIT from `fd` after sending a client banner.
    static func serverAlgorithms(socket fd: Int32, deadline: ContinuousClock.Instant) -> SSHAlgorithms? {
        let banner = Array("SSH-2.0-dstack_probe\r\n".utf8)
        guard banner.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == banner.count else { return nil }
        var buffer: [UInt8] = []
        func fill(_ count: Int) -> Bool {
            while buffer.count < count {
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let remaining = (deadline - ContinuousClock.now).milliseconds
                guard remaining > 0, poll(&pfd, 1, Int32(min(remaining, 10_000))) > 0 else { return false }
                var chunk = [UInt8](repeating: 0, count: 4096)
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n < 0, errno == EAGAIN || errno == EINTR { continue }
                guard n > 0 else { return false }
                buffer += chunk[0..<n]
            }
            return true
        }
        // Lines before the "SSH-" banner line are allowed; the binary packet follows the banner's LF.
        while true {
            guard let lf = buffer.firstIndex(of: 10) else {
                guard buffer.count < 8192, fill(buffer.count + 1) else { return nil }
                continue
            }
            let line = buffer[..<lf]
            buffer.removeFirst(lf + 1)
            if line.starts(with: Array("SSH-".utf8)) { break }
        }
        guard fill(5) else { return nil }
        let length = Int(buffer[0]) << 24 | Int(buffer[1]) << 16 | Int(buffer[2]) << 8 | Int(buffer[3])
        guard length > 0, length < 65_536, fill(4 + length) else { return nil }
        let padding = Int(buffer[4])
        var payload = Array(buffer[5..<(4 + length - padding)])
        guard payload.first == 20, payload.count > 17 else { return nil }  // SSH_MSG_KEXINIT, then a 16-byte cookie
        payload.removeFirst(17)
        var lists: [[String]] = []
        for _ in 0..<6 {
            guard payload.count >= 4 else { return nil }
            let n = Int(payload[0]) << 24 | Int(payload[1]) << 16 | Int(payload[2]) << 8 | Int(payload[3])
            guard payload.count >= 4 + n else { return nil }
            let text = String(decoding: payload[4..<(4 + n)], as: UTF8.self)
            lists.append(text.split(separator: ",").map(String.init))
            payload.removeFirst(4 + n)
        }
        // OpenSSH advertises "ext-info-s"/"kex-strict-*" markers among its key exchanges; they are not methods.
        let kex = lists[0].filter { !$0.hasPrefix("ext-info-") && !$0.hasPrefix("kex-strict-") }
        return SSHAlgorithms(kex: kex, hostKey: lists[1], ciphers: lists[2], macs: lists[4])
    }
}
