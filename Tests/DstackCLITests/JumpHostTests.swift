import Foundation
import Testing

/// Runners reached only through a bastion (ProxyJump): runner 1 of the test bed is the bastion, whose sshd logs
/// every forwarding, and the others are reached through it.
@Suite struct JumpHostTests {
    /// The bastion as a Host alias of the sandbox's ~/.ssh/config.
    func writeSSHConfig(_ bed: SSHBed) throws {
        let bastion = bed.runners[0]
        try """
            Host bastion
              HostName \(bastion.host)
              Port \(bastion.port)
              User root
              IdentityFile \(bed.key)

            """.write(to: bed.home.appendingPathComponent(".ssh/config"), atomically: true, encoding: .utf8)
    }

    func log(_ bed: SSHBed, _ index: Int) throws -> String {
        try String(contentsOf: bed.directory.appendingPathComponent("runner-\(index + 1)/sshd.log"), encoding: .utf8)
    }

    @Test func thePipelineRunsOnTwoRunnersBehindTheBastionAndRunnersShowTheWay() throws {
        let bed = try SSHBed(3, logLevels: [0: "DEBUG1"])
        defer { bed.stop() }
        try writeSSHConfig(bed)
        let box = try Sandbox()
        defer { box.cleanup() }
        try FileManager.default.removeItem(at: box.project)
        try FileManager.default.copyItem(at: Sandbox.repositoryRoot.appendingPathComponent("examples"), to: box.project)
        try box.write(".dstack/hosts.yaml", bed.inventory([1, 2], extra: [1: "proxy_jump: bastion", 2: "proxy_jump: bastion"]))

        let json = try box.dstack(["runners", "--json"], environment: bed.environment)
        #expect(json.status == 0, "\(json.output)")
        #expect(json.stdout.components(separatedBy: "\"reachable\" : true").count == 3, "\(json.stdout)")
        #expect(json.stdout.components(separatedBy: "\"via\" : [\n      \"bastion\"\n    ]").count == 3, "\(json.stdout)")
        let text = try box.dstack(["runners"], environment: bed.environment)
        #expect(text.stdout.contains("r2 via bastion"), "\(text.stdout)")
        #expect(text.stdout.contains("r3 via bastion"), "\(text.stdout)")
        for r in bed.runners.dropFirst() {
            #expect(try log(bed, 0).contains("target \(r.host) port \(r.port)"), "the bastion forwarded to \(r.host):\(r.port)")
        }

        let result = try box.dstack(["run", "evaluate"], environment: bed.environment)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("evaluate | mse "))
    }

    @Test func anUnknownBastionKeyIsRefusedWithItsFingerprintAndNothingRuns() throws {
        let bed = try SSHBed(2)
        defer { bed.stop() }
        try writeSSHConfig(bed)
        // known_hosts knows the runner behind, not the bastion.
        let lines = try String(contentsOf: bed.knownHosts, encoding: .utf8).split(separator: "\n")
        try (lines.dropFirst().joined(separator: "\n") + "\n").write(to: bed.knownHosts, atomically: true, encoding: .utf8)
        let box = try Sandbox()
        defer { box.cleanup() }
        let marker = box.project.appendingPathComponent("ran").path
        try box.workflows("workflows:\n  - name: a\n    commands: [touch \(marker)]\n")
        try box.write(".dstack/hosts.yaml", bed.inventory([1], extra: [1: "proxy_jump: bastion"]))
        let runnerLog = try log(bed, 1)

        let probe = try box.dstack(["runners", "--json"], environment: bed.environment)
        #expect(probe.stdout.contains("\"reachable\" : false"), "\(probe.stdout)")
        #expect(probe.stdout.contains("cannot reach [\(bed.runners[1].host)]:\(bed.runners[1].port) through jump host bastion: the authenticity of host '[\(bed.runners[0].host)]:\(bed.runners[0].port)' can't be established: its ssh-ed25519 key fingerprint is SHA256:"), "\(probe.stdout)")
        let run = try box.dstack(["run", "a"], environment: bed.environment)
        #expect(run.status != 0)
        #expect(run.output.contains("through jump host bastion"), "\(run.output)")
        #expect(!FileManager.default.fileExists(atPath: marker))
        #expect(try log(bed, 1) == runnerLog, "nothing reached the runner behind the bastion")

        // --accept-new-host-keys records the bastion's key, like any runner's.
        let accepted = try box.dstack(["--accept-new-host-keys", "runners", "--json"], environment: bed.environment)
        #expect(accepted.stdout.contains("\"reachable\" : true"), "\(accepted.output)")
        #expect(try String(contentsOf: bed.knownHosts, encoding: .utf8).contains("[\(bed.runners[0].host)]:\(bed.runners[0].port) ssh-ed25519"))
    }
}

/// A runner whose ~/.ssh/config alias has a ProxyCommand (with tokens) through the bastion.
@Suite struct ProxyCommandCLITests {
    @Test func aRunnerBehindAProxyCommandIsReachedWithItsTokensExpanded() throws {
        let bed = try SSHBed(2, logLevels: [0: "DEBUG1"])
        defer { bed.stop() }
        let bastion = bed.runners[0], target = bed.runners[1]
        try """
            Host behind
              HostName \(target.host)
              Port \(target.port)
              User root
              IdentityFile \(bed.key)
              ProxyCommand ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=\(bed.knownHosts.path) -i \(bed.key) -p \(bastion.port) %r@\(bastion.host) -W %h:%p

            """.write(to: bed.home.appendingPathComponent(".ssh/config"), atomically: true, encoding: .utf8)
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.write(".dstack/hosts.yaml", "runners:\n  - name: pc\n    host: behind\n    workdir: \(bed.directory.path)/work-pc\n")
        let probe = try box.dstack(["runners", "--json"], environment: bed.environment)
        #expect(probe.stdout.contains("\"reachable\" : true"), "\(probe.output)")
        let log = try String(contentsOf: bed.directory.appendingPathComponent("runner-1/sshd.log"), encoding: .utf8)
        #expect(log.contains("target \(target.host) port \(target.port)"), "the bastion forwarded it")
    }
}
