import Foundation
import Testing

/// The Ciphers and MACs of a common sshd hardening guide, which libssh2 1.10 (Debian 12) cannot negotiate with.
let hardeningGuideSSHD = """
    Ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr,aes192-ctr,aes128-ctr
    MACs hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com

    """

/// A hardened runner behind the bastion of the network namespace test bed, reached with `transport: openssh` and
/// `transport: auto` (issue 10, point 7(c)).
@Suite(.serialized) struct OpenSSHTransportCLITests {
    @Test func theExamplesPipelineRunsOnAHardenedRunnerBehindTheBastionOverTheSystemSSHClient() throws {
        let bed = try NetnsBed(runners: 1, extraConfigs: [1: hardeningGuideSSHD])
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        let r1 = bed.runners[0]
        try FileManager.default.removeItem(at: box.project)
        try FileManager.default.copyItem(at: Sandbox.repositoryRoot.appendingPathComponent("examples"), to: box.project)

        // libssh2 alone: either it negotiates (a newer library) or it names what it could not agree on.
        try box.write(".dstack/hosts.yaml", bed.inventory([("h", r1, "proxy_jump: bastion")]))
        let plain = try box.dstack(["runners", "--json"], environment: bed.environment)
        if plain.stdout.contains("\"reachable\" : false") {
            #expect(plain.stdout.contains("no common MAC"), "\(plain.stdout)")
        }

        for transport in ["openssh", "auto"] {
            try box.write(".dstack/hosts.yaml", bed.inventory([("h", r1, "proxy_jump: bastion\ntransport: \(transport)")]))
            let probe = try box.dstack(["runners", "--json"], environment: bed.environment)
            #expect(probe.stdout.contains("\"reachable\" : true"), "\(transport): \(probe.output)")
            let result = try box.dstack(["run", "evaluate", "--no-cache"], environment: bed.environment)
            #expect(result.status == 0, "\(transport): \(result.output)")
            #expect(result.stdout.contains("evaluate | mse "), "\(transport): \(result.stdout)")
        }
        #expect(try bed.log(bed.bastion).contains("target \(r1.host) port \(r1.port)"), "ssh went through the bastion")
    }

    @Test func anUnknownHostKeyIsRefusedOverTheSystemSSHClientWithNothingRun() throws {
        let bed = try NetnsBed(runners: 1, extraConfigs: [1: hardeningGuideSSHD])
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        let r1 = bed.runners[0]
        let marker = bed.directory.appendingPathComponent("ran").path
        try box.workflows("workflows:\n  - name: a\n    commands: [touch \(marker)]\n")
        try box.write(".dstack/hosts.yaml", bed.inventory([("h", r1, "proxy_jump: bastion\ntransport: openssh")]))
        let entry = "[\(r1.host)]:\(r1.port)"
        let lines = try String(contentsOf: bed.knownHosts, encoding: .utf8).split(separator: "\n").filter { !$0.hasPrefix(entry + " ") }
        try (lines.joined(separator: "\n") + "\n").write(to: bed.knownHosts, atomically: true, encoding: .utf8)
        let runnerLog = try bed.log(r1)

        let run = try box.dstack(["run", "a"], environment: bed.environment)
        #expect(run.status != 0)
        #expect(run.output.contains("the system ssh client (transport: openssh) could not connect to \(entry): No ED25519 host key is known for \(entry) and you have requested strict checking.; Host key verification failed."), "\(run.output)")
        #expect(run.output.contains("--accept-new-host-keys"), "\(run.output)")
        #expect(!FileManager.default.fileExists(atPath: marker), "nothing ran")
        #expect(!(try bed.log(r1).dropFirst(runnerLog.count).contains("Accepted publickey")), "no login on the runner")

        // The bastion's key unknown: refused too, before anything reaches the runner.
        let bastionEntry = "[\(bed.bastion.host)]:\(bed.bastion.port)"
        let all = try String(contentsOf: bed.directory.appendingPathComponent("known_hosts"), encoding: .utf8)
            .split(separator: "\n").filter { !$0.hasPrefix(bastionEntry + " ") }
        try (all.joined(separator: "\n") + "\n").write(to: bed.knownHosts, atomically: true, encoding: .utf8)
        let jump = try box.dstack(["run", "a"], environment: bed.environment)
        #expect(jump.status != 0)
        #expect(jump.output.contains("Host key verification failed"), "\(jump.output)")
        #expect(!FileManager.default.fileExists(atPath: marker), "nothing ran")
    }
}
