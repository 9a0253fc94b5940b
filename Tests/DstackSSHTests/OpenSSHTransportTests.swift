@testable import DstackSSH
import Foundation
import Testing

/// The runner protocol's operations over the system `ssh` client (`transport: openssh`), against a hardened sshd
/// that libssh2 1.10 cannot negotiate with, on the loopback test bed.
@Suite("the system ssh client as a transport", .serialized, .testbed(runners: 1, extraConfigs: [1: hardenedSSHD]))
struct OpenSSHTransportTests {
    func options(_ bed: Testbed) -> SSHOptions {
        bed.options(0) { $0.transport = .openssh }
    }

    @Test("exec collects output and status, feeds stdin, and streams between local handles")
    func exec() async throws {
        let bed = try testbed()
        let session = try await OpenSSHSession.connect(options(bed))
        let echoed = try await session.exec("echo out; echo err >&2; exit 3")
        #expect(echoed.stdoutText == "out\n")
        #expect(echoed.stderrText == "err\n")
        #expect(echoed.exitStatus == 3)
        let input = Data((0..<300_000).map { UInt8($0 % 251) })
        let cat = try await session.exec("cat", stdin: input)
        #expect(cat.stdout == input, "stdin reaches the command whole, after the portable line's script")

        // Files, through exec alone: a tree up and down, one file by cat.
        let local = try makeTemporaryFolder("openssh-up")
        defer { try? FileManager.default.removeItem(atPath: local) }
        try FileManager.default.createDirectory(atPath: local + "/d", withIntermediateDirectories: true)
        try input.write(to: URL(fileURLWithPath: local + "/d/blob"))
        let remote = try makeTemporaryFolder("openssh-remote", in: bed.folder)
        try await session.uploadTree(local, paths: ["d"], to: remote)
        let back = try makeTemporaryFolder("openssh-down")
        defer { try? FileManager.default.removeItem(atPath: back) }
        try await session.downloadTree(remote, paths: ["d"], to: back)
        #expect(try Data(contentsOf: URL(fileURLWithPath: back + "/d/blob")) == input)
        let size = try await session.downloadFile(remote + "/d/blob", to: back + "/single")
        #expect(size == Int64(input.count))
        #expect(try Data(contentsOf: URL(fileURLWithPath: back + "/single")) == input)
        await session.close()
        #expect(!FileManager.default.fileExists(atPath: session.folder), "the private folder goes with the connection")
    }

    @Test("a long-lived process takes input as it is written and answers; several commands share one master")
    func process() async throws {
        let bed = try testbed()
        let logins = try String(contentsOfFile: bed.runners[0].folder + "/sshd.log", encoding: .utf8)
            .components(separatedBy: "Accepted publickey").count
        let session = try await OpenSSHSession.connect(options(bed))
        let process = session.startProcess("while read line; do echo \"got $line\"; done", label: "echo loop")
        process.write(Data("one\n".utf8))
        var output = Data()
        var iterator = process.events.makeAsyncIterator()
        while !String(decoding: output, as: UTF8.self).contains("got one\n") {
            guard case let .output(.stdout, data)? = try await iterator.next() else { break }
            output.append(data)
        }
        // Meanwhile other commands run over the same master.
        let results = try await withThrowingTaskGroup(of: String.self) { group in
            for i in 0..<12 { group.addTask { try await session.exec("echo \(i)").stdoutText } }
            return try await group.reduce(into: [String]()) { $0.append($1) }
        }
        #expect(results.count == 12)
        process.write(Data("two\n".utf8))
        process.closeInput()
        while let event = try await iterator.next() {
            if case let .output(.stdout, data) = event { output.append(data) }
            if case let .exit(result) = event { #expect(result.exitStatus == 0) }
        }
        #expect(String(decoding: output, as: UTF8.self) == "got one\ngot two\n")
        let log = try String(contentsOfFile: bed.runners[0].folder + "/sshd.log", encoding: .utf8)
        #expect(log.components(separatedBy: "Accepted publickey").count == logins + 1, "one login: every command rode the master")
        await session.close()
    }

    @Test("an unknown host key is refused by ssh with nothing run; the master's death is the connection's failure")
    func hostKeysAndDrops() async throws {
        let bed = try testbed()
        let empty = try makeTemporaryFolder("openssh-kh") + "/known_hosts"
        _ = FileManager.default.createFile(atPath: empty, contents: nil)
        let before = try String(contentsOfFile: bed.runners[0].folder + "/sshd.log", encoding: .utf8)
        do {
            let session = try await OpenSSHSession.connect(bed.options(0) { $0.knownHostsFile = empty })
            await session.close()
            Issue.record("connected to a host whose key is unknown")
        } catch let error as SSHError {
            guard case let .opensshFailed(target, said, transient) = error else { throw error }
            #expect(target == bed.options(0).hostKeyName)
            #expect(said.contains("Host key verification failed"), "\(said)")
            #expect(!transient)
            #expect("\(error)".contains("--accept-new-host-keys"))
        }
        let after = try String(contentsOfFile: bed.runners[0].folder + "/sshd.log", encoding: .utf8)
        #expect(after.components(separatedBy: "Accepted publickey").count == before.components(separatedBy: "Accepted publickey").count)

        // --accept-new-host-keys: ssh records it (accept-new), then strict again.
        let session = try await OpenSSHSession.connect(bed.options(0) { $0.knownHostsFile = empty; $0.acceptNewHostKeys = true })
        #expect(try String(contentsOfFile: empty, encoding: .utf8).contains("ssh-ed25519"))
        #expect(session.isConnected)
        // The master killed: the connection is lost, and a command says so as a connection problem.
        let master = try #require(try await shell("pgrep -f -- '-M -S \(session.folder)/control' || true").split(separator: "\n").first)
        _ = try await shell("kill -9 \(master)")
        try await Task.sleep(for: .milliseconds(300))
        #expect(!session.isConnected)
        await #expect(throws: SSHError.self) { try await session.exec("true") }
        await session.close()
    }

    @Test("transport auto reaches the hardened server: libssh2 when it can negotiate, the system ssh client when not")
    func auto() async throws {
        let bed = try testbed()
        let session = try await RemoteSessions.connect(bed.options(0) { $0.transport = .auto }, retrying: RetryPolicy(attempts: 1))
        let server = try #require(Negotiation.serverAlgorithms(host: bed.runners[0].host, port: bed.runners[0].port, timeout: .seconds(5)))
        if Negotiation.offeredByLibrary().mismatch(with: server, clientName: "libssh2") != nil {
            #expect(session is OpenSSHSession, "libssh2 \(Negotiation.libraryVersion) cannot negotiate, so ssh carries it")
        } else {
            #expect(session is SSHSession)
        }
        #expect(try await session.exec("echo ok").stdoutText == "ok\n")
        await session.close()
    }
}
