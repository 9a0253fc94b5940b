@testable import DstackSSH
import Foundation
import Testing

/// Host key checking against real servers that have both an ed25519 and an ECDSA host key (libssh2 would pick
/// ECDSA by its own preference); the test bed's known_hosts records only the ed25519 one.
@Suite("host key verification over a real sshd", .serialized, .testbed(runners: 2, hostKeyTypes: "ed25519 ecdsa"))
struct HostKeyTests {
    private func fingerprint(_ runner: Testbed.Runner, _ type: String = "ed25519") async throws -> String {
        let line = try await shell("ssh-keygen -lf \(runner.folder)/host_\(type).pub")
        return String(line.split(separator: " ")[1])
    }

    private func knownHostsCopy(_ contents: String) throws -> String {
        let folder = try makeTemporaryFolder("kh", in: testbed().folder)
        let path = folder + "/known_hosts"
        try contents.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test("a known ed25519 key is accepted although the server also offers ECDSA")
    func knownKey() async throws {
        let bed = try testbed()
        let session = try await bed.connect()
        #expect(session.hostKeyFingerprint == (try await fingerprint(bed.runners[0])))
        #expect(try await session.exec("echo ok").stdoutText == "ok\n")
        await session.close()
    }

    @Test("an unknown host is refused with its SHA256 fingerprint and the flag to accept it")
    func unknownRefused() async throws {
        let bed = try testbed()
        let path = try knownHostsCopy("")
        let runner = bed.runners[1]
        let expected = try await fingerprint(runner)
        do {
            _ = try await bed.connect(1) { $0.knownHostsFile = path }
            Issue.record("connected to an unknown host")
        } catch let error as SSHError {
            #expect(error == .unknownHostKey(
                host: "[\(runner.host)]:\(runner.port)", keyType: "ssh-ed25519", fingerprint: expected, knownHostsFile: path))
            #expect(error.description.contains(expected))
            #expect(error.description.contains("--accept-new-host-keys"))
        }
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "", "nothing recorded without acceptNew")
    }

    @Test("with acceptNew an unknown key is recorded as [host]:port, and the next connect checks it")
    func acceptNew() async throws {
        let bed = try testbed()
        let folder = try makeTemporaryFolder("kh-new", in: bed.folder)
        let path = folder + "/sub/known_hosts"  // neither the folder nor the file exists yet
        let runner = bed.runners[1]
        let first = try await bed.connect(1) {
            $0.knownHostsFile = path
            $0.acceptNewHostKeys = true
        }
        await first.close()
        let recorded = try String(contentsOfFile: path, encoding: .utf8)
        let pub = try String(contentsOfFile: runner.folder + "/host_ed25519.pub", encoding: .utf8).split(separator: " ")
        #expect(recorded == "[\(runner.host)]:\(runner.port) \(pub[0]) \(pub[1])\n")
        let second = try await bed.connect(1) { $0.knownHostsFile = path }
        #expect(second.hostKeyFingerprint == (try await fingerprint(runner)))
        await second.close()
        #expect(try String(contentsOfFile: path, encoding: .utf8) == recorded, "a known key is not recorded twice")
    }

    @Test("a changed key is refused, even with acceptNew, naming the file and line")
    func changedKey() async throws {
        let bed = try testbed()
        let runner = bed.runners[0]
        let other = try String(contentsOfFile: bed.runners[1].folder + "/host_ed25519.pub", encoding: .utf8)
            .split(separator: " ")
        let path = try knownHostsCopy("""
            # runners
            gpu-9 \(other[0]) \(other[1])
            [\(runner.host)]:\(runner.port) \(other[0]) \(other[1])

            """)
        for accept in [false, true] {
            await #expect(throws: SSHError.hostKeyChanged(
                host: "[\(runner.host)]:\(runner.port)", keyType: "ssh-ed25519",
                fingerprint: try await fingerprint(runner), knownHostsFile: path, line: 3)
            ) {
                _ = try await bed.connect { options in
                    options.knownHostsFile = path
                    options.acceptNewHostKeys = accept
                }
            }
        }
        let error = SSHError.hostKeyChanged(
            host: "[\(runner.host)]:\(runner.port)", keyType: "ssh-ed25519", fingerprint: "SHA256:x", knownHostsFile: path, line: 3)
        #expect(error.description.contains("\(path):3"))
    }

    @Test("hashed known_hosts entries (ssh-keygen -H) are matched")
    func hashedEntries() async throws {
        let bed = try testbed()
        let path = try knownHostsCopy(try String(contentsOfFile: bed.knownHosts, encoding: .utf8))
        try await shell("ssh-keygen -q -H -f \(path) && rm -f \(path).old")
        let hashed = try String(contentsOfFile: path, encoding: .utf8)
        #expect(hashed.hasPrefix("|1|") && !hashed.contains(bed.runners[0].host))
        for index in bed.runners.indices {
            let session = try await bed.connect(index) { $0.knownHostsFile = path }
            #expect(try await session.exec("echo \(index)").stdoutText == "\(index)\n")
            await session.close()
        }
    }

    @Test("a server offering only a type that known_hosts does not hold for it is a changed key, even with acceptNew")
    func otherTypeOnly() async throws {
        let bed = try testbed()
        let runner = bed.runners[0]
        let folder = try makeTemporaryFolder("kh-rsa", in: bed.folder)
        try await shell("ssh-keygen -q -t rsa -b 2048 -N '' -f \(folder)/rsa")
        let rsa = try String(contentsOfFile: folder + "/rsa.pub", encoding: .utf8).split(separator: " ")
        let path = try knownHostsCopy("[\(runner.host)]:\(runner.port) \(rsa[0]) \(rsa[1])\n")
        for accept in [false, true] {
            await #expect(throws: SSHError.hostKeyChanged(
                host: "[\(runner.host)]:\(runner.port)", keyType: "ssh-ed25519",
                fingerprint: try await fingerprint(runner), knownHostsFile: path, line: 1)
            ) {
                _ = try await bed.connect { options in
                    options.knownHostsFile = path
                    options.acceptNewHostKeys = accept
                }
            }
        }
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "[\(runner.host)]:\(runner.port) \(rsa[0]) \(rsa[1])\n")
    }

    @Test("the system known_hosts file is read, and its @revoked lines refuse a key the user's file accepts")
    func systemFile() async throws {
        let bed = try testbed()
        let runner = bed.runners[0]
        let recorded = try String(contentsOfFile: bed.knownHosts, encoding: .utf8)
        let empty = try knownHostsCopy("")
        let system = try knownHostsCopy(recorded)
        let session = try await bed.connect { options in
            options.knownHostsFile = empty
            options.systemKnownHostsFiles = [system]
        }
        #expect(try await session.exec("echo ok").stdoutText == "ok\n")
        await session.close()

        let pub = try String(contentsOfFile: runner.folder + "/host_ed25519.pub", encoding: .utf8).split(separator: " ")
        let revoking = try knownHostsCopy("# revoked by the admins\n@revoked * \(pub[0]) \(pub[1])\n")
        let user = try knownHostsCopy(recorded)
        await #expect(throws: SSHError.hostKeyRevoked(
            host: "[\(runner.host)]:\(runner.port)", fingerprint: try await fingerprint(runner), knownHostsFile: revoking, line: 2)
        ) {
            _ = try await bed.connect { options in
                options.knownHostsFile = user
                options.systemKnownHostsFiles = [revoking]
            }
        }
    }

    @Test("a @cert-authority line covering a host with no key of its own is refused clearly, even with acceptNew")
    func certificateAuthority() async throws {
        let bed = try testbed()
        let runner = bed.runners[1]
        let ca = try String(contentsOfFile: bed.runners[0].folder + "/host_ed25519.pub", encoding: .utf8).split(separator: " ")
        let path = try knownHostsCopy("@cert-authority * \(ca[0]) \(ca[1])\n")
        for accept in [false, true] {
            await #expect(throws: SSHError.hostCertificateAuthority(host: "[\(runner.host)]:\(runner.port)", knownHostsFile: path, line: 1)) {
                _ = try await bed.connect(1) { options in
                    options.knownHostsFile = path
                    options.acceptNewHostKeys = accept
                }
            }
        }
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "@cert-authority * \(ca[0]) \(ca[1])\n", "nothing recorded")
    }

    @Test("an ECDSA-only known_hosts entry makes libssh2 ask for the ECDSA key")
    func ecdsaOnly() async throws {
        let bed = try testbed()
        let runner = bed.runners[0]
        let pub = try String(contentsOfFile: runner.folder + "/host_ecdsa.pub", encoding: .utf8).split(separator: " ")
        let path = try knownHostsCopy("[\(runner.host)]:\(runner.port) \(pub[0]) \(pub[1])\n")
        let session = try await bed.connect { $0.knownHostsFile = path }
        #expect(session.hostKeyFingerprint == (try await fingerprint(runner, "ecdsa")))
        await session.close()
    }
}
