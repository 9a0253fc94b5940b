@testable import DstackSSH
import Foundation
import Testing

/// Runner 1 of the test bed is the bastion (its sshd logs each forwarding at DEBUG1); runners 2 and 3 sit behind it.
@Suite("ProxyJump over direct-tcpip channels", .serialized, .testbed(runners: 3, logLevels: [1: "DEBUG1"]))
struct JumpTests {
    func behind(_ index: Int, knownHosts: String? = nil, acceptNew: Bool = false) throws -> SSHOptions {
        let bed = try testbed()
        var bastion = bed.options(0)
        bastion.label = "bastion"
        if let knownHosts { bastion.knownHostsFile = knownHosts }
        bastion.acceptNewHostKeys = acceptNew
        var options = bed.options(index)
        options.jumpHosts = [bastion]
        return options
    }

    func bastionLog() throws -> String {
        try String(contentsOfFile: try testbed().runners[0].folder + "/sshd.log", encoding: .utf8)
    }

    @Test("a runner is reached through the bastion: the bastion forwards to it, and commands and data go both ways")
    func throughBastion() async throws {
        let bed = try testbed()
        let session = try await SSHSession.connect(try behind(1))
        defer { Task { await session.close() } }
        #expect(session.via == ["bastion"])
        let result = try await session.exec("echo hello from $SSH_CONNECTION")
        #expect(result.exitStatus == 0)
        #expect(result.stdoutText.hasPrefix("hello from "))
        let target = bed.runners[1]
        #expect(try bastionLog().contains("target \(target.host) port \(target.port)"), "the bastion's sshd forwarded the connection")
        // 8 MB each way through the tunnel, byte for byte.
        let payload = Data((0..<(8 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        let echoed = try await session.exec("cat", stdin: payload)
        #expect(echoed.stdout == payload)
        await session.close()
    }

    @Test("runners behind one bastion share its one connection, closed after the last of them")
    func shared() async throws {
        let before = try bastionLog().components(separatedBy: "Accepted publickey").count
        let a = try await SSHSession.connect(try behind(1))
        let b = try await SSHSession.connect(try behind(2))
        #expect(await JumpPool.shared.count == 1)
        async let ra = a.exec("echo a")
        async let rb = b.exec("echo b")
        #expect(try await ra.stdoutText == "a\n")
        #expect(try await rb.stdoutText == "b\n")
        #expect(try bastionLog().components(separatedBy: "Accepted publickey").count == before + 1, "one login on the bastion")
        await a.close()
        #expect(await JumpPool.shared.count == 1)
        await b.close()
        #expect(await JumpPool.shared.count == 0)
    }

    @Test("an unknown bastion host key is refused with its fingerprint; nothing reaches the runner behind it")
    func unknownBastion() async throws {
        let bed = try testbed()
        let folder = try makeTemporaryFolder("kh", in: bed.folder)
        let known = folder + "/known_hosts"
        // Only the runners behind are known, not the bastion.
        let all = try String(contentsOfFile: bed.knownHosts, encoding: .utf8).split(separator: "\n")
        try all.dropFirst().joined(separator: "\n").appending("\n").write(toFile: known, atomically: true, encoding: .utf8)
        let targetLog = bed.runners[1].folder + "/sshd.log"
        let logBefore = try String(contentsOfFile: targetLog, encoding: .utf8)
        do {
            let session = try await SSHSession.connect(try behind(1, knownHosts: known))
            await session.close()
            Issue.record("connected through a bastion whose key is unknown")
        } catch let error as SSHError {
            guard case let .jumpHostFailed(jump, _, inner) = error, case let .unknownHostKey(host, _, fingerprint, _) = inner else {
                Issue.record("expected an unknown bastion key, got \(error)")
                return
            }
            #expect(jump == "bastion")
            #expect(host == bed.options(0).hostKeyName)
            #expect(fingerprint.hasPrefix("SHA256:"))
            #expect("\(error)".hasPrefix("cannot reach \(bed.options(1).hostKeyName) through jump host bastion: the authenticity of host"))
            #expect("\(error)".contains("--accept-new-host-keys"))
        }
        #expect(try String(contentsOfFile: targetLog, encoding: .utf8) == logBefore, "the runner behind saw no connection")
        #expect(await JumpPool.shared.count == 0)

        // With acceptNewHostKeys, the bastion's key is recorded and the runner is reached.
        let session = try await SSHSession.connect(try behind(1, knownHosts: known, acceptNew: true))
        #expect(try await session.exec("true").exitStatus == 0)
        await session.close()
        #expect(try String(contentsOfFile: known, encoding: .utf8).contains(bed.options(0).hostKeyName))
    }

    @Test("a target the bastion cannot reach fails naming the bastion and the target")
    func unreachableTarget() async throws {
        var options = try behind(1)
        options.port = 1
        let error = await #expect(throws: SSHError.self) { try await SSHSession.connect(options) }
        #expect("\(error.map { "\($0)" } ?? "")".contains("the jump host bastion could not open a connection to it"))
        #expect(await JumpPool.shared.count == 0)
    }
}


/// ProxyCommand: the command's stdin/stdout carry the connection. Runner 1 is the bastion; OpenSSH's own
/// `ssh -W` through it reaches runner 2.
@Suite("ProxyCommand", .serialized, .testbed(runners: 2, logLevels: [1: "DEBUG1"]))
struct ProxyCommandTests {
    @Test("ssh -W through the bastion as ProxyCommand: commands run, and the bastion forwarded the connection")
    func throughSSHW() async throws {
        let bed = try testbed()
        let bastion = bed.runners[0], target = bed.runners[1]
        var options = bed.options(1)
        options.proxyCommand = "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=\(shellQuote(bed.knownHosts)) -i \(shellQuote(bed.clientKey)) -p \(bastion.port) \(bastion.host) -W \(target.host):\(target.port)"
        let session = try await SSHSession.connect(options)
        let result = try await session.exec("echo through")
        #expect(result.stdoutText == "through\n")
        let payload = Data((0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13) })
        #expect(try await session.exec("cat", stdin: payload).stdout == payload)
        await session.close()
        let log = try String(contentsOfFile: bastion.folder + "/sshd.log", encoding: .utf8)
        #expect(log.contains("target \(target.host) port \(target.port)"))
    }

    @Test("a ProxyCommand that fails: the error names it and carries its stderr")
    func failing() async throws {
        var options = try testbed().options(1)
        options.proxyCommand = "sh -c 'echo proxy says no >&2; exit 3'"
        do {
            let session = try await SSHSession.connect(options)
            await session.close()
            Issue.record("connected through a failing ProxyCommand")
        } catch let error as SSHError {
            guard case let .proxyCommandFailed(command, _, stderr, _) = error else {
                Issue.record("expected a ProxyCommand failure, got \(error)")
                return
            }
            #expect(command == "sh -c 'echo proxy says no >&2; exit 3'")
            #expect(stderr == "proxy says no")
            #expect("\(error)".hasPrefix("cannot reach \(options.hostKeyName) through ProxyCommand 'sh -c 'echo proxy says no >&2; exit 3'': "))
            #expect("\(error)".hasSuffix("(its stderr: proxy says no)"))
        }
    }
}
