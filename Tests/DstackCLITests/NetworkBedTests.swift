import Foundation
import Testing

/// Runners that only a bastion reaches, on a real network of Linux namespaces (scripts/testbed-netns): here a
/// test cannot pass by connecting directly, so each of these proves the way through the bastion (issue 10,
/// point 6). They need root, as CI runs; without it they fail saying why.
@Suite(.serialized) struct NetworkBedTests {
    @Test func aRunnerIsUnreachableDirectlyAndThePipelineRunsOnTwoRunnersThroughTheBastion() throws {
        let bed = try NetnsBed(runners: 2)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        let (r1, r2) = (bed.runners[0], bed.runners[1])

        // Straight from here to a runner: the network says no (the unreachable route of the bed's range).
        let tcp = try Sandbox.run(["bash", "-c", "exec 3<>/dev/tcp/\(r1.host)/\(r1.port)"], in: bed.directory)
        #expect(tcp.status != 0)
        #expect(tcp.stderr.contains("No route to host"), "\(tcp.stderr)")
        try box.write(".dstack/hosts.yaml", bed.inventory([("direct", r1, "")]))
        let direct = try box.dstack(["runners", "--json"], environment: bed.environment)
        #expect(direct.stdout.contains("\"reachable\" : false"), "\(direct.output)")
        #expect(direct.stdout.contains("cannot connect to \(r1.host) port \(r1.port)"), "\(direct.stdout)")

        try FileManager.default.removeItem(at: box.project)
        try FileManager.default.copyItem(at: Sandbox.repositoryRoot.appendingPathComponent("examples"), to: box.project)
        try box.write(".dstack/hosts.yaml", bed.inventory([("a", r1, "proxy_jump: bastion"), ("b", r2, "proxy_jump: bastion")]))
        let json = try box.dstack(["runners", "--json"], environment: bed.environment)
        #expect(json.stdout.components(separatedBy: "\"reachable\" : true").count == 3, "\(json.output)")
        #expect(json.stdout.components(separatedBy: "\"via\" : [\n      \"bastion\"\n    ]").count == 3, "\(json.stdout)")

        let result = try box.dstack(["run", "evaluate"], environment: bed.environment)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("evaluate | mse "), "\(result.stdout)")
        let jobs = try box.jobs(try box.lastRun())
        #expect(jobs.values.allSatisfy { $0["status"] as? String == "done" }, "\(jobs)")
        let log = try bed.log(bed.bastion)
        for r in [r1, r2] {
            #expect(log.contains("target \(r.host) port \(r.port)"), "the bastion forwarded to \(r.host):\(r.port)")
        }
    }

    @Test func aTwoHopChainReachesARunnerThatOnlyTheSecondHopReaches() throws {
        let bed = try NetnsBed(runners: 1, deep: 1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        let marker = bed.directory.appendingPathComponent("ran-deep").path
        try box.workflows("workflows:\n  - name: a\n    commands: [hostname -I > \(marker) || echo ran > \(marker)]\n")
        let d1 = bed.deep[0]

        // One hop is not enough: the bastion cannot reach it, and the error says which hop failed.
        try box.write(".dstack/hosts.yaml", bed.inventory([("deep", d1, "proxy_jump: bastion")]))
        let short = try box.dstack(["runners", "--json"], environment: bed.environment)
        #expect(short.stdout.contains("\"reachable\" : false"), "\(short.output)")
        #expect(short.stdout.contains("the jump host bastion could not open a connection to it"), "\(short.stdout)")

        try box.write(".dstack/hosts.yaml", bed.inventory([("deep", d1, "proxy_jump: bastion,r1")]))
        let text = try box.dstack(["runners"], environment: bed.environment)
        #expect(text.stdout.contains("deep via bastion,r1"), "\(text.output)")
        let run = try box.dstack(["run", "a"], environment: bed.environment)
        #expect(run.status == 0, "\(run.output)")
        #expect(FileManager.default.fileExists(atPath: marker))
        #expect(try bed.log(bed.bastion).contains("target \(bed.runners[0].host) port \(bed.runners[0].port)"))
        #expect(try bed.log(bed.runners[0]).contains("Accepted publickey"), "the first runner was the second hop")
    }

    @Test func aRunnerBehindAProxyCommandThroughTheBastion() throws {
        let bed = try NetnsBed(runners: 1)
        defer { bed.stop() }
        let r1 = bed.runners[0]
        try (bed.sshConfig() + """
            Host behind
              HostName \(r1.host)
              Port \(r1.port)
              User root
              IdentityFile \(bed.key)
              ProxyCommand ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=\(bed.knownHosts.path) -i \(bed.key) -p \(bed.bastion.port) %r@\(bed.bastion.host) -W %h:%p

            """).write(to: bed.home.appendingPathComponent(".ssh/config"), atomically: true, encoding: .utf8)
        let box = try Sandbox()
        defer { box.cleanup() }
        let marker = bed.directory.appendingPathComponent("ran-pc").path
        try box.workflows("workflows:\n  - name: a\n    commands: [touch \(marker)]\n")
        try box.write(".dstack/hosts.yaml", "runners:\n  - name: pc\n    host: behind\n    workdir: \(bed.directory.path)/work-pc\n")
        let run = try box.dstack(["run", "a"], environment: bed.environment)
        #expect(run.status == 0, "\(run.output)")
        #expect(FileManager.default.fileExists(atPath: marker))
        #expect(try bed.log(bed.bastion).contains("target \(r1.host) port \(r1.port)"), "the ProxyCommand went through the bastion")
    }

    @Test func unknownAndChangedBastionKeysAreRefusedWithNothingRun() throws {
        let bed = try NetnsBed(runners: 1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        let marker = bed.directory.appendingPathComponent("ran").path
        try box.workflows("workflows:\n  - name: a\n    commands: [touch \(marker)]\n")
        try box.write(".dstack/hosts.yaml", bed.inventory([("r", bed.runners[0], "proxy_jump: bastion")]))
        let runnerLog = try bed.log(bed.runners[0])
        let bastionEntry = "[\(bed.bastion.host)]:\(bed.bastion.port)"
        let lines = try String(contentsOf: bed.knownHosts, encoding: .utf8).split(separator: "\n").map(String.init)
        let others = lines.filter { !$0.hasPrefix(bastionEntry + " ") }

        // Unknown: known_hosts knows the runner, not the bastion.
        try (others.joined(separator: "\n") + "\n").write(to: bed.knownHosts, atomically: true, encoding: .utf8)
        let unknown = try box.dstack(["run", "a"], environment: bed.environment)
        #expect(unknown.status != 0)
        #expect(unknown.output.contains("through jump host bastion: the authenticity of host '\(bastionEntry)' can't be established: its ssh-ed25519 key fingerprint is SHA256:"), "\(unknown.output)")

        // Changed: the bastion's entry holds another key, on line 2.
        let other = bed.directory.appendingPathComponent("other_host_key").path
        _ = try Sandbox.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], in: bed.directory)
        let otherKey = try String(contentsOfFile: other + ".pub", encoding: .utf8).split(separator: " ").prefix(2).joined(separator: " ")
        try ([others[0], "\(bastionEntry) \(otherKey)"] + others.dropFirst()).joined(separator: "\n")
            .appending("\n").write(to: bed.knownHosts, atomically: true, encoding: .utf8)
        let changed = try box.dstack(["run", "a"], environment: bed.environment)
        #expect(changed.status != 0)
        #expect(changed.output.contains("through jump host bastion: warning: remote host identification has changed for '\(bastionEntry)'!"), "\(changed.output)")
        #expect(changed.output.contains("but \(bed.knownHosts.path):2 records a different key"), "\(changed.output)")

        #expect(!FileManager.default.fileExists(atPath: marker), "nothing ran")
        #expect(try bed.log(bed.runners[0]) == runnerLog, "nothing reached the runner behind the bastion")
    }

    /// Over libssh2 the tunnels drop; over the system ssh client the master's `ssh -W` to the bastion does.
    @Test(arguments: ["libssh2", "openssh"])
    func theBastionsSessionsKilledMidJobTheJobIsFollowedToItsEndAndRunsOnce(transport: String) throws {
        let bed = try NetnsBed(runners: 1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        let counter = bed.directory.appendingPathComponent("count")
        try box.workflows(FaultTests.workflows(counter: counter.path))
        try box.write(".dstack/hosts.yaml", bed.inventory([("r", bed.runners[0], "proxy_jump: bastion\ntransport: \(transport)")]))
        let env = box.environment.merging(bed.environment) { $1 }

        let coordinator = try Sandbox.start([Sandbox.binary, "run", "after"], in: box.project, environment: env)
        let run = try FaultTests().waitForLog(box, "line 2", bed.environment)
        let killed = try bed.dropBastionSessions()
        #expect(!killed.isEmpty, "the bastion had sessions to kill")
        let result = try coordinator.wait()
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stderr.contains("dropped"), "\(result.stderr)")
        #expect(try box.dstack("logs", run, "slow").stdout == FaultTests.sixLines, "the log was followed to its end, nothing doubled")
        #expect(FaultTests().count(counter) == 1, "the job's commands completed \(FaultTests().count(counter)) times")
        let jobs = try box.jobs(run)
        #expect((jobs["slow"]?["attempts"] as? [Any])?.count == 1, "a dropped bastion is not a lost runner")
        #expect(jobs["after"]?["status"] as? String == "done")
        let logins = try bed.log(bed.bastion).components(separatedBy: "Accepted publickey").count - 1
        #expect(logins >= 2, "dstack logged in to the bastion again after the drop")
    }
}
