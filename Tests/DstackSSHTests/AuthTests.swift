@testable import DstackSSH
import Foundation
import Testing

@Suite("authentication against a real sshd", .serialized, .testbed())
struct AuthTests {
    /// Generates a key in a fresh folder and authorizes it on runner 1 unless told not to.
    private func authorizedKey(type: String, passphrase: String = "", authorize: Bool = true) async throws -> String {
        let bed = try testbed()
        let folder = try makeTemporaryFolder("key", in: bed.folder)
        let key = folder + "/id_\(type)"
        try await shell("ssh-keygen -q -t \(type) -N \(shellQuote(passphrase)) -C test -f \(key)")
        if authorize { try await shell("cat \(key).pub >> \(bed.runners[0].folder)/authorized_keys") }
        return key
    }

    @Test("an unencrypted key file authenticates, with or without its .pub")
    func keyFile() async throws {
        let bed = try testbed()
        let session = try await bed.connect()
        #expect(try await session.exec("id -un").stdoutText == ProcessInfo.processInfo.environment["USER", default: "root"] + "\n")
        await session.close()

        let key = try await authorizedKey(type: "ed25519")
        try FileManager.default.removeItem(atPath: key + ".pub")
        let withoutPub = try await bed.connect { $0.identityFiles = [key] }
        await withoutPub.close()
    }

    @Test("keys from ssh-agent authenticate first")
    func agent() async throws {
        let bed = try testbed()
        let key = try await authorizedKey(type: "ed25519")
        // A unix socket path must stay under ~104 bytes, shorter than the test bed's folders.
        let socket = "/tmp/dstack-agent-\(UInt32.random(in: 0...UInt32.max)).sock"
        defer { try? FileManager.default.removeItem(atPath: socket) }
        // In the foreground (-D): a daemonized agent would keep Foundation from ever seeing its launcher exit.
        let agent = Process()
        agent.executableURL = URL(fileURLWithPath: "/usr/bin/ssh-agent")
        agent.arguments = ["-D", "-a", socket]
        agent.standardOutput = FileHandle.nullDevice
        agent.standardError = FileHandle.nullDevice
        try agent.run()
        // SIGKILL: a child of Foundation's Process inherits a mask that blocks SIGTERM.
        defer { kill(agent.processIdentifier, SIGKILL) }
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: socket) {
            try await Task.sleep(for: .milliseconds(20))
        }
        try await shell("ssh-add -q \(key)", environment: ["SSH_AUTH_SOCK": socket])
        try FileManager.default.removeItem(atPath: key)  // only the agent holds it now

        let session = try await bed.connect { options in
            options.agentSocket = socket
            options.identityFiles = []
        }
        #expect(try await session.exec("echo via agent").stdoutText == "via agent\n")
        await session.close()
    }

    @Test("an agent with no usable key falls through to the identity files")
    func agentFallsThrough() async throws {
        let bed = try testbed()
        let session = try await bed.connect { $0.agentSocket = "/nonexistent/agent.sock" }
        await session.close()
    }

    @Test("an encrypted key works with its passphrase, and without it says how to supply one")
    func encryptedKey() async throws {
        let bed = try testbed()
        let key = try await authorizedKey(type: "ed25519", passphrase: "correct horse")
        let session = try await bed.connect { options in
            options.identityFiles = [key]
            options.passphrase = "correct horse"
        }
        #expect(try await session.exec("echo unlocked").stdoutText == "unlocked\n")
        await session.close()

        do {
            _ = try await bed.connect { $0.identityFiles = [key] }
            Issue.record("connected without a passphrase")
        } catch let error as SSHError {
            #expect(error == .passphraseRequired(identityFile: key))
            #expect(error.description.contains("DSTACK_SSH_PASSPHRASE"))
        }

        do {
            _ = try await bed.connect { options in
                options.identityFiles = [key]
                options.passphrase = "wrong"
            }
            Issue.record("connected with a wrong passphrase")
        } catch let error as SSHError {
            guard case let .authenticationFailed(_, _, tried, hint) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(tried == ["\(key) (cannot decrypt it: wrong passphrase?)"])
            #expect(hint == "check the passphrase in DSTACK_SSH_PASSPHRASE")
        }
    }

    @Test("a refused RSA key explains the SHA-1 limit and suggests ed25519")
    func rsaRefused() async throws {
        let bed = try testbed()
        let key = try await authorizedKey(type: "rsa")
        do {
            _ = try await bed.connect { $0.identityFiles = [key] }
            Issue.record("an RSA key was accepted; this libssh2 should only sign with ssh-rsa")
        } catch let error as SSHError {
            let text = error.description
            #expect(text.contains("\(key) (refused)"))
            #expect(text.contains("SHA-1"))
            #expect(text.contains("OpenSSH 8.8"))
            #expect(text.contains("ed25519"))
        }
    }

    @Test("an unauthorized key is refused, listing what was tried")
    func unauthorized() async throws {
        let bed = try testbed()
        let key = try await authorizedKey(type: "ed25519", authorize: false)
        let user = ProcessInfo.processInfo.environment["USER", default: "root"]
        let runner = bed.runners[0]
        await #expect(throws: SSHError.authenticationFailed(
            user: user, host: "[\(runner.host)]:\(runner.port)", tried: ["\(key) (refused)", "/nonexistent/key (cannot read it)"],
            hint: "check that one of these keys is in ~\(user)/.ssh/authorized_keys on the server")
        ) {
            _ = try await bed.connect { $0.identityFiles = [key, "/nonexistent/key"] }
        }
    }
}

@Suite("connecting: failures and retries")
struct ConnectTests {
    private func options(port: Int, timeout: Duration = .seconds(5)) -> SSHOptions {
        SSHOptions(
            host: "127.0.0.1", port: port, identityFiles: [], agentSocket: nil, knownHostsFile: "/nonexistent/known_hosts",
            connectTimeout: timeout)
    }

    /// A port on 127.0.0.1 that nothing listens on.
    private func closedPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(bound == 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    @Test("a closed port fails at once with a clear error")
    func closedPortFails() async throws {
        let port = try closedPort()
        let start = ContinuousClock.now
        await #expect(throws: SSHError.connectFailed(host: "127.0.0.1", port: port, reason: "connection refused")) {
            _ = try await SSHSession.connect(options(port: port))
        }
        // Far below the 10 s connect timeout: a refused connection is not waited out (loose bound: shared CI machines).
        #expect(ContinuousClock.now - start < .seconds(5))
        let message = SSHError.connectFailed(host: "127.0.0.1", port: port, reason: "connection refused").description
        #expect(message == "cannot connect to 127.0.0.1 port \(port): connection refused; check that the host is up and sshd listens on that port")
    }

    @Test("a server that accepts but never speaks hits the connect timeout")
    func silentServer() async throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ready = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 4) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        try #require(ready)
        let port = Int(UInt16(bigEndian: address.sin_port))
        let start = ContinuousClock.now
        await #expect(throws: SSHError.connectTimedOut(host: "127.0.0.1", port: port, seconds: 1)) {
            _ = try await SSHSession.connect(options(port: port, timeout: .seconds(1)))
        }
        let elapsed = ContinuousClock.now - start
        #expect(elapsed >= .milliseconds(900) && elapsed < .seconds(8))
    }

    @Test("connect(retrying:) backs off between attempts, then reports the last error")
    func retries() async throws {
        let port = try closedPort()
        let start = ContinuousClock.now
        let policy = RetryPolicy(attempts: 3, initialDelay: .milliseconds(200), maxDelay: .seconds(1))
        await #expect(throws: SSHError.connectFailed(host: "127.0.0.1", port: port, reason: "connection refused")) {
            _ = try await SSHSession.connect(options(port: port), retrying: policy)
        }
        let elapsed = ContinuousClock.now - start
        #expect(elapsed >= .milliseconds(600), "two pauses of 200 and 400 ms")
        #expect(elapsed < .seconds(8))
    }
}
