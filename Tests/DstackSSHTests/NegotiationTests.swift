@testable import DstackSSH
import Foundation
import Testing

/// The Ciphers and MACs of a common sshd hardening guide (no SHA-1, no non-etm MACs, no CBC).
let hardenedSSHD = """
    Ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr,aes192-ctr,aes128-ctr
    MACs hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com

    """

@Suite("what the key exchange could not agree on")
struct NegotiationMessageTests {
    let client = SSHAlgorithms(kex: ["curve25519-sha256"], hostKey: ["ssh-ed25519", "ssh-rsa"],
                               ciphers: ["aes256-ctr", "aes128-ctr"], macs: ["hmac-sha2-256", "hmac-sha1"])

    @Test("each category is named with both sides' lists; the first one lacking a common method is reported")
    func categories() {
        let server = SSHAlgorithms(kex: ["curve25519-sha256"], hostKey: ["ssh-ed25519"], ciphers: ["aes256-ctr"],
                                   macs: ["hmac-sha2-512-etm@openssh.com", "umac-128-etm@openssh.com"])
        #expect(client.mismatch(with: server, clientName: "libssh2 1.10.0 (linked)") ==
            "no common MAC (message authentication code): the server offers hmac-sha2-512-etm@openssh.com, umac-128-etm@openssh.com; libssh2 1.10.0 (linked) offers hmac-sha2-256, hmac-sha1 (the ciphers both sides have, aes256-ctr, need one)")
        var kex = server
        kex.kex = ["sntrup761x25519-sha512@openssh.com"]
        #expect(client.mismatch(with: kex, clientName: "c") ==
            "no common key exchange method: the server offers sntrup761x25519-sha512@openssh.com; c offers curve25519-sha256")
        var hostKey = server
        hostKey.hostKey = ["rsa-sha2-512"]
        #expect(client.mismatch(with: hostKey, clientName: "c") ==
            "no common host key type: the server offers rsa-sha2-512; c offers ssh-ed25519, ssh-rsa")
        var cipher = server
        cipher.ciphers = ["chacha20-poly1305@openssh.com"]
        #expect(client.mismatch(with: cipher, clientName: "c") ==
            "no common cipher: the server offers chacha20-poly1305@openssh.com; c offers aes256-ctr, aes128-ctr")
    }

    @Test("an AEAD cipher needs no MAC; with everything in common there is nothing to report")
    func agreed() {
        let aeadClient = SSHAlgorithms(kex: ["curve25519-sha256"], hostKey: ["ssh-ed25519"],
                                       ciphers: ["aes256-gcm@openssh.com"], macs: ["hmac-sha2-256"])
        let server = SSHAlgorithms(kex: ["curve25519-sha256"], hostKey: ["ssh-ed25519"],
                                   ciphers: ["aes256-gcm@openssh.com"], macs: ["umac-128-etm@openssh.com"])
        #expect(aeadClient.mismatch(with: server, clientName: "c") == nil)
        #expect(client.mismatch(with: client, clientName: "c") == nil)
    }
}

@Suite("a hardened sshd", .serialized, .testbed(runners: 2, extraConfigs: [1: hardenedSSHD]))
struct HardenedServerTests {
    @Test("the server's lists are read from its KEXINIT")
    func serverLists() throws {
        let bed = try testbed()
        let lists = try #require(Negotiation.serverAlgorithms(host: bed.runners[0].host, port: bed.runners[0].port, timeout: .seconds(5)))
        #expect(lists.macs == ["hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com", "umac-128-etm@openssh.com"])
        #expect(lists.ciphers.first == "chacha20-poly1305@openssh.com")
        #expect(lists.hostKey.contains("ssh-ed25519"))
        #expect(lists.kex.contains("curve25519-sha256"))
    }

    @Test("ssh connects; dstack either connects with what the linked libssh2 offers or names the MAC problem with both lists")
    func hardened() async throws {
        let bed = try testbed()
        let runner = bed.runners[0]
        try await shell("ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=\(shellQuote(bed.knownHosts)) -i \(shellQuote(bed.clientKey)) -p \(runner.port) \(runner.host) true")
        let library = Negotiation.offeredByLibrary()
        let server = try #require(Negotiation.serverAlgorithms(host: runner.host, port: runner.port, timeout: .seconds(5)))
        if let what = library.mismatch(with: server, clientName: "libssh2 \(Negotiation.libraryVersion) (linked)") {
            // libssh2 1.10 (Debian 12): no AEAD cipher, no etm MAC.
            do {
                let session = try await bed.connect(0)
                await session.close()
                Issue.record("connected although \(what)")
            } catch let error as SSHError {
                guard case let .negotiationFailed(host, port, reported, _) = error else {
                    Issue.record("expected a negotiation failure, got: \(error)")
                    return
                }
                #expect(host == runner.host && port == runner.port)
                #expect(reported == what)
                #expect(reported.hasPrefix("no common MAC (message authentication code): the server offers hmac-sha2-512-etm@openssh.com, hmac-sha2-256-etm@openssh.com, umac-128-etm@openssh.com; libssh2 "))
                #expect("\(error)".contains("sshd_config"))
            }
            let log = try String(contentsOfFile: runner.folder + "/sshd.log", encoding: .utf8)
            #expect(log.contains("no matching MAC found"), "sshd's own log names the MAC too")
        } else {
            // A newer libssh2 (1.11+): the same code reaches the hardened server unchanged.
            let session = try await bed.connect(0)
            await session.close()
        }
        // The other runner, not hardened, is reached either way.
        let plain = try await bed.connect(1)
        await plain.close()
    }
}
