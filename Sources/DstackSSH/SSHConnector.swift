internal import CLibSSH2
import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The connection's setup, run on the session's own thread in libssh2's blocking mode under one deadline:
/// TCP connect, handshake, host key check, authentication. Then the session switches to non-blocking mode.
struct SSHConnector {
    let options: SSHOptions
    let logger: Logger
    /// A socket already connected to the server (a tunnel through a jump host); nil makes a TCP connection.
    var socket: Int32? = nil

    /// Connects and hands the ready session to `loop`; returns the server's host key fingerprint.
    func run(on loop: SSHEventLoop) throws(SSHError) -> String {
        try LibSSH2.initialize()
        let start = ContinuousClock.now
        let deadline = start + options.connectTimeout
        let knownHosts = try KnownHosts.load(path: options.knownHostsFile, systemFiles: options.systemKnownHostsFiles)
        let socket: Int32
        if let given = self.socket {
            socket = given
        } else {
            socket = try TCPSocket.connect(
                host: options.host, port: options.port, deadline: deadline, timeout: options.connectTimeout)
        }
        guard let session = libssh2_session_init_ex(nil, nil, nil, UnsafeMutableRawPointer(loop.received)) else {
            close(socket)
            throw .libssh2(operation: "creating an ssh session", code: LIBSSH2_ERROR_ALLOC, message: "out of memory")
        }
        var adopted = false
        defer {
            if !adopted {
                libssh2_session_set_timeout(session, 500)
                _ = libssh2_session_free(session)
                close(socket)
            }
        }
        dstack_install_counting_recv(session)
        libssh2_session_set_blocking(session, 1)
        try setTimeout(session, deadline)

        let knownTypes = knownHosts.keyTypes(host: options.host, port: options.port)
        // Everything the linked libssh2 offers, asked at run time: a newer library reaches more servers unchanged.
        let offered = Negotiation.offered(session, knownTypes: knownTypes)
        Negotiation.prefer(session, offered)
        let rc = libssh2_session_handshake(session, libssh2_socket_t(socket))
        if rc != 0 {
            if rc == LIBSSH2_ERROR_TIMEOUT || ContinuousClock.now >= deadline {
                throw .connectTimedOut(host: options.host, port: options.port, seconds: options.connectTimeout.seconds)
            }
            if self.socket == nil, let mismatch = explainNegotiation(offered, deadline: deadline) { throw mismatch }
            var reason = LibSSH2.error(session, Int(rc), "handshake").messageText
            if !knownTypes.isEmpty && (rc == LIBSSH2_ERROR_KEX_FAILURE || rc == LIBSSH2_ERROR_METHOD_NONE) {
                reason += " (known_hosts holds \(knownTypes.joined(separator: ", ")) keys for this host, and libssh2 1.10 negotiates ssh-ed25519, ecdsa-sha2-nistp* and SHA-1 ssh-rsa host keys only)"
            }
            throw .handshakeFailed(host: options.host, port: options.port, reason: reason)
        }
        let fingerprint = try verifyHostKey(session, knownHosts)
        try setTimeout(session, deadline)
        try authenticate(session, deadline: deadline)

        libssh2_session_set_blocking(session, 0)
        libssh2_keepalive_config(session, 1, UInt32(max(1, Int(options.keepaliveInterval.seconds))))
        loop.adopt(session: session, socket: socket, options: options)
        adopted = true
        logger.debug("ssh \(options.user)@\(options.hostKeyName): connected in \(ContinuousClock.now - start)")
        return fingerprint
    }

    /// After a failed handshake: reads the server's own lists on a second connection and, when some category has
    /// nothing in common with `offered`, the error that names it with both lists.
    private func explainNegotiation(_ offered: SSHAlgorithms, deadline: ContinuousClock.Instant) -> SSHError? {
        let remaining = min(deadline - ContinuousClock.now, .seconds(5))
        guard remaining > .milliseconds(50),
              let server = Negotiation.serverAlgorithms(host: options.host, port: options.port, timeout: remaining),
              let what = offered.mismatch(with: server, clientName: "libssh2 \(Negotiation.libraryVersion) (linked)") else { return nil }
        logger.error("ssh \(options.hostKeyName): \(what)")
        return .negotiationFailed(host: options.host, port: options.port, what: what, hint: Negotiation.hint)
    }

    private func setTimeout(_ session: OpaquePointer, _ deadline: ContinuousClock.Instant) throws(SSHError) {
        let remaining = (deadline - ContinuousClock.now).milliseconds
        guard remaining > 0 else {
            throw .connectTimedOut(host: options.host, port: options.port, seconds: options.connectTimeout.seconds)
        }
        libssh2_session_set_timeout(session, Int(remaining))
    }

    /// Checks the server's key against known_hosts; records it when it is new and `acceptNewHostKeys` is set.
    private func verifyHostKey(_ session: OpaquePointer, _ knownHosts: KnownHosts) throws(SSHError) -> String {
        var length = 0
        var type: Int32 = 0
        guard let raw = libssh2_session_hostkey(session, &length, &type), length > 0 else {
            throw .handshakeFailed(host: options.host, port: options.port, reason: "the server sent no host key")
        }
        let blob = Array(UnsafeRawBufferPointer(start: raw, count: length))
        let keyType = HostKey.type(of: blob) ?? "unknown"
        let fingerprint = HostKey.fingerprint(blob)
        let name = options.hostKeyName
        func check(_ verdict: KnownHosts.Verdict) throws(SSHError) -> Bool {
            switch verdict {
            case .known:
                return true
            case let .revoked(file, line):
                throw .hostKeyRevoked(host: name, fingerprint: fingerprint, knownHostsFile: file, line: line)
            case let .changed(file, line):
                logger.error("ssh \(name): host key changed, see \(file):\(line)")
                throw .hostKeyChanged(host: name, keyType: keyType, fingerprint: fingerprint, knownHostsFile: file, line: line)
            case let .certificateAuthority(file, line):
                throw .hostCertificateAuthority(host: name, knownHostsFile: file, line: line)
            case .unknown:
                return false
            }
        }
        if try check(knownHosts.verdict(host: options.host, port: options.port, keyType: keyType, key: blob)) {
            return fingerprint
        }
        guard options.acceptNewHostKeys else {
            throw .unknownHostKey(host: name, keyType: keyType, fingerprint: fingerprint, knownHostsFile: knownHosts.path)
        }
        // Read again under the file's lock: another process may have recorded a key for this host meanwhile.
        _ = try check(KnownHosts.append(host: options.host, port: options.port, keyType: keyType, key: blob, to: knownHosts.path))
        logger.notice("ssh \(name): recorded new \(keyType) host key \(fingerprint) in \(knownHosts.path)")
        return fingerprint
    }

    /// Tries the agent's keys, then each identity file; throws with everything that was tried.
    private func authenticate(_ session: OpaquePointer, deadline: ContinuousClock.Instant) throws(SSHError) {
        var tried: [String] = []
        var refusedRSA = false
        var lockedKey: String?
        var wrongPassphrase = false
        let user = options.user

        if let socket = options.agentSocket {
            switch tryAgent(session, socket: socket, user: user) {
            case .success: return
            case let .failure(note, rsa):
                tried.append(note)
                refusedRSA = refusedRSA || rsa
            }
        }
        for file in options.identityFiles.map(expandTilde) {
            guard let info = IdentityFile.inspect(path: file) else {
                tried.append("\(file) (cannot read it)")
                continue
            }
            if info.isEncrypted && options.passphrase == nil {
                tried.append("\(file) (encrypted, no passphrase)")
                lockedKey = lockedKey ?? file
                continue
            }
            let pub = file + ".pub"
            let havePub = FileManager.default.fileExists(atPath: pub)
            let rc = user.withCString { name in
                libssh2_userauth_publickey_fromfile_ex(
                    session, name, UInt32(strlen(name)), havePub ? pub : nil, file, options.passphrase)
            }
            if rc == 0 {
                logger.debug("ssh \(options.hostKeyName): authenticated with \(file)")
                return
            }
            if rc == LIBSSH2_ERROR_TIMEOUT {
                throw .connectTimedOut(host: options.host, port: options.port, seconds: options.connectTimeout.seconds)
            }
            if LibSSH2.isFatal(rc) {
                throw .connectionLost(host: options.hostKeyName, reason: LibSSH2.error(session, Int(rc), "authentication").messageText)
            }
            // With a .pub beside it, the server accepts the public key first and only signing fails
            // (PUBLICKEY_UNVERIFIED, "callback returned error"); without one, loading fails (FILE).
            let unlockFailed = [LIBSSH2_ERROR_FILE, LIBSSH2_ERROR_KEYFILE_AUTH_FAILED, LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED]
            if unlockFailed.contains(rc), info.isEncrypted {
                tried.append("\(file) (cannot decrypt it: wrong passphrase?)")
                wrongPassphrase = true
            } else if rc == LIBSSH2_ERROR_FILE {
                tried.append("\(file) (cannot load it: \(LibSSH2.error(session, Int(rc), "loading").messageText))")
            } else {
                tried.append("\(file) (refused)")
                if info.keyType == "ssh-rsa" { refusedRSA = true }
            }
        }
        if let lockedKey, !refusedRSA { throw .passphraseRequired(identityFile: lockedKey) }
        var hint: String?
        if refusedRSA {
            hint = "an RSA key was refused: libssh2 1.10 signs RSA keys only with SHA-1 (ssh-rsa), which OpenSSH 8.8 and later refuse; create an ed25519 key (ssh-keygen -t ed25519) and add it to the server's authorized_keys"
        } else if wrongPassphrase {
            hint = "check the passphrase in DSTACK_SSH_PASSPHRASE"
        } else {
            hint = "check that one of these keys is in ~\(user)/.ssh/authorized_keys on the server"
        }
        throw .authenticationFailed(user: user, host: options.hostKeyName, tried: tried, hint: hint)
    }

    private enum AgentOutcome {
        case success
        case failure(note: String, refusedRSA: Bool)
    }

    private func tryAgent(_ session: OpaquePointer, socket: String, user: String) -> AgentOutcome {
        guard let agent = libssh2_agent_init(session) else {
            return .failure(note: "ssh-agent (cannot initialize)", refusedRSA: false)
        }
        defer { libssh2_agent_free(agent) }
        libssh2_agent_set_identity_path(agent, socket)
        guard libssh2_agent_connect(agent) == 0 else {
            return .failure(note: "ssh-agent at \(socket) (cannot connect)", refusedRSA: false)
        }
        defer { _ = libssh2_agent_disconnect(agent) }
        guard libssh2_agent_list_identities(agent) == 0 else {
            return .failure(note: "ssh-agent at \(socket) (cannot list keys)", refusedRSA: false)
        }
        var previous: UnsafeMutablePointer<libssh2_agent_publickey>?
        var count = 0
        let allowedAgentKeys = options.identitiesOnly ? Set(options.identityFiles.compactMap { publicKeyBlob(expandTilde($0) + ".pub") }) : []
        var refusedRSA = false
        while true {
            var identity: UnsafeMutablePointer<libssh2_agent_publickey>?
            let rc = libssh2_agent_get_identity(agent, &identity, previous)
            guard rc == 0, let identity else { break }
            previous = identity
            let blob = Array(UnsafeRawBufferPointer(start: identity.pointee.blob, count: identity.pointee.blob_len))
            // IdentitiesOnly: an agent key is offered only when it is one of the identity files.
            if options.identitiesOnly && !allowedAgentKeys.contains(blob) { continue }
            count += 1
            if libssh2_agent_userauth(agent, user, identity) == 0 {
                logger.debug("ssh \(options.hostKeyName): authenticated with an agent key")
                return .success
            }
            if HostKey.type(of: blob) == "ssh-rsa" { refusedRSA = true }
        }
        let note = count == 0 ? "ssh-agent at \(socket) (no keys)" : "ssh-agent at \(socket) (\(count) key\(count == 1 ? "" : "s") refused)"
        return .failure(note: note, refusedRSA: refusedRSA)
    }
}

/// The key blob of an OpenSSH `.pub` file (`type base64 comment`), or nil when it cannot be read.
private func publicKeyBlob(_ path: String) -> [UInt8]? {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
    let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
    guard fields.count >= 2, let data = Data(base64Encoded: String(fields[1])) else { return nil }
    return Array(data)
}

extension SSHError {
    /// The message of a libssh2 error, without the operation around it.
    var messageText: String {
        if case let .libssh2(_, _, message) = self { return message }
        return description
    }
}
