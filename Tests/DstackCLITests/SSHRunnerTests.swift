import Foundation
import Testing

/// Jobs on real sshd runners on loopback addresses (scripts/testbed), through the real binary.
@Suite struct SSHRunnerTests {
    @Test func examplePipelineAndParallelJobsOnTwoRunners() throws {
        let bed = try SSHBed(2)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try FileManager.default.removeItem(at: box.project)
        try FileManager.default.copyItem(at: Sandbox.repositoryRoot.appendingPathComponent("examples"), to: box.project)
        try box.write(".dstack/hosts.yaml", bed.inventory())

        let runners = try box.dstack(["runners", "--json"], environment: bed.environment)
        #expect(runners.status == 0, "\(runners.output)")
        #expect(runners.stdout.components(separatedBy: "\"reachable\" : true").count == 3)

        let result = try box.dstack(["run", "evaluate"], environment: bed.environment)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("evaluate | mse "))
        let run = try box.lastRun()
        let artifacts = try box.dstack("artifacts", "list", run, "--json")
        #expect(artifacts.stdout.contains("\"path\" : \"metrics/report.txt\""))
        #expect(artifacts.stdout.contains("\"path\" : \"model/weights.txt\""))

        // Independent jobs spread over both runners.
        try FileManager.default.removeItem(at: box.project.appendingPathComponent(".dstack/variables.yaml"))
        try box.workflows("""
        workflows:
          - name: a
            commands: [sleep 1]
          - name: b
            commands: [sleep 1]
          - name: c
            commands: [sleep 1]
          - name: d
            commands: [sleep 1]
          - name: all
            depends-on: [a, b, c, d]
            commands: ["true"]
        """)
        try box.write(".dstack/hosts.yaml", bed.inventory(maxJobs: 2))
        let spread = try box.dstack(["run", "all"], environment: bed.environment)
        #expect(spread.status == 0, "\(spread.output)")
        let used = Set(try box.jobs(try box.lastRun()).values.compactMap { $0["runner"] as? String })
        #expect(used == ["r1", "r2"], "jobs ran on \(used)")
    }

    @Test func aRunnerThatIsDownIsSkippedAndItsJobsGoElsewhere() throws {
        let bed = try SSHBed(1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("workflows:\n  - name: a\n    commands: [echo ran]\n")
        let closed = try Bucket.freePort()
        var inventory = bed.inventory()
        inventory += "  - name: down\n    host: 127.0.0.9\n    port: \(closed)\n    workdir: /tmp/never\n"
        try box.write(".dstack/hosts.yaml", inventory)

        let probe = try box.dstack(["runners"], environment: bed.environment)
        #expect(probe.status == 0)
        #expect(probe.stdout.contains("down    unreachable"))
        let result = try box.dstack(["run", "a"], environment: bed.environment)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stderr.contains("runner down is unreachable, its jobs go elsewhere"))
        #expect(try box.jobs(try box.lastRun())["a"]?["runner"] as? String == "r1")
    }

    @Test func everyRunnerUnreachableIsAnInfrastructureError() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("workflows:\n  - name: a\n    commands: [echo ran]\n")
        try box.write(".dstack/hosts.yaml", "runners:\n  - name: gone\n    host: 127.0.0.9\n    port: \(try Bucket.freePort())\n")
        let result = try box.dstack(["run", "a"], environment: ["DSTACK_CONNECT_TIMEOUT": "3"])
        #expect(result.status == 3, "\(result.output)")
        #expect(result.stderr.contains("every runner is unreachable"))
        #expect(result.stderr.contains("gone: "))
    }

    @Test func unknownHostKeysAreRefusedUntilAcceptedAndChangedKeysAlways() throws {
        let bed = try SSHBed(1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("workflows:\n  - name: a\n    commands: [echo ran]\n")
        try box.write(".dstack/hosts.yaml", bed.inventory())
        let trusted = try String(contentsOf: bed.knownHosts, encoding: .utf8)

        // Unknown: refused, with the key's fingerprint and what to do.
        try Data().write(to: bed.knownHosts)
        let unknown = try box.dstack(["run", "a"], environment: bed.environment)
        #expect(unknown.status == 3, "\(unknown.output)")
        #expect(unknown.stderr.contains("SHA256:"))
        #expect(unknown.stderr.contains("--accept-new-host-keys"))

        // Accepted: recorded, and the next run needs no flag.
        let accepted = try box.dstack(["run", "a", "--accept-new-host-keys"], environment: bed.environment)
        #expect(accepted.status == 0, "\(accepted.output)")
        let recorded = try String(contentsOf: bed.knownHosts, encoding: .utf8)
        #expect(recorded.contains("[\(bed.runners[0].host)]:\(bed.runners[0].port)"))
        #expect(try box.dstack(["run", "a", "--no-cache"], environment: bed.environment).status == 0)

        // Changed: another machine's key under this host's name is always refused, naming the line.
        let other = try String(contentsOf: bed.directory.appendingPathComponent("runner-1/host_ed25519.pub"), encoding: .utf8)
        _ = trusted
        let fake = try Sandbox.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", bed.directory.appendingPathComponent("fake").path], in: bed.directory)
        #expect(fake.status == 0)
        let fakeKey = try String(contentsOf: bed.directory.appendingPathComponent("fake.pub"), encoding: .utf8)
            .split(separator: " ").prefix(2).joined(separator: " ")
        #expect(!other.isEmpty)
        try Data("# comment\n[\(bed.runners[0].host)]:\(bed.runners[0].port) \(fakeKey)\n".utf8).write(to: bed.knownHosts)
        let changed = try box.dstack(["run", "a", "--no-cache", "--accept-new-host-keys"], environment: bed.environment)
        #expect(changed.status == 3, "\(changed.output)")
        #expect(changed.stderr.contains(":2"), "the message names the known_hosts line: \(changed.stderr)")
    }

    @Test func aOneFileEditSendsOneObject() throws {
        let bed = try SSHBed(1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("workflows:\n  - name: a\n    commands: [cat src/f7.txt]\n")
        try box.write(".dstack/hosts.yaml", bed.inventory())
        for i in 0..<50 { try box.write("src/f\(i).txt", "file \(i)\n") }
        let first = try box.dstack(["run", "a"], environment: bed.environment)
        #expect(first.status == 0, "\(first.output)")
        // 50 sources, workflows.yaml and hosts.yaml.
        #expect(first.stderr.contains("r1: sent 52 new files of code"), "\(first.stderr)")
        try box.write("src/f7.txt", "edited\n")
        let second = try box.dstack(["run", "a"], environment: bed.environment)
        #expect(second.status == 0, "\(second.output)")
        #expect(second.stderr.contains("r1: sent 1 new file of code"), "\(second.stderr)")
        #expect(second.stdout.contains("a | edited"))
    }

    /// Jobs copy the runner's tree of the snapshot, which is built from the previous tree by difference: edits,
    /// removals, new folders and mode changes must all show, and nothing else may linger.
    @Test func theRunnersTreeFollowsEditsRemovalsAndModes() throws {
        let bed = try SSHBed(1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        // The first tree goes as one tar stream written here: modes, and paths past ustar's 100 bytes, must hold.
        let long = "src/" + String(repeating: "d", count: 60) + "/" + String(repeating: "e", count: 60) + "/" + String(repeating: "f", count: 120) + ".txt"
        let show = "cat src/a.txt; ls -R src; test -x src/tool.sh && echo tool-executable || echo tool-plain; test -x src/run.sh && echo run-executable; cat \(long)"
        try box.workflows("workflows:\n  - name: a\n    commands: ['\(show)']\n  - name: b\n    commands: ['\(show)']\n")
        try box.write(".dstack/hosts.yaml", bed.inventory(tag: "tree"))
        try box.write("src/a.txt", "first\n")
        try box.write("src/gone.txt", "bye\n")
        try box.write("src/tool.sh", "echo hi\n")
        try box.write("src/run.sh", "echo run\n", mode: 0o755)
        try box.write(long, "long name\n")
        let first = try box.dstack(["run", "a"], environment: bed.environment)
        #expect(first.status == 0, "\(first.output)")
        #expect(first.stdout.contains("a | first"))
        #expect(first.stdout.contains("a | gone.txt"))
        #expect(first.stdout.contains("a | tool-plain"))
        #expect(first.stdout.contains("a | run-executable"))
        #expect(first.stdout.contains("a | long name"), "\(first.output)")

        try box.write("src/a.txt", "second\n")
        try FileManager.default.removeItem(at: box.project.appendingPathComponent("src/gone.txt"))
        try box.write("src/deep/er/new.txt", "new\n")
        chmod(box.project.appendingPathComponent("src/tool.sh").path, 0o755)
        let second = try box.dstack(["run", "b"], environment: bed.environment)
        #expect(second.status == 0, "\(second.output)")
        #expect(second.stdout.contains("b | second"))
        #expect(!second.stdout.contains("gone.txt"), "\(second.stdout)")
        #expect(second.stdout.contains("b | new.txt"))
        #expect(second.stdout.contains("b | tool-executable"))

        // Finished jobs leave no directory behind (removed along with a later start, or at the end of the run),
        // and the slot locks are free.
        let work = bed.directory.appendingPathComponent("work-tree-r1")
        let jobs = (try? FileManager.default.contentsOfDirectory(atPath: work.appendingPathComponent("jobs").path)) ?? []
        #expect(jobs.isEmpty, "\(jobs)")
        let locks = try FileManager.default.contentsOfDirectory(atPath: work.appendingPathComponent("locks").path)
        #expect(locks.isEmpty, "\(locks)")

        // A tree removed by hand behind its link is built again, not waited for.
        let trees = work.appendingPathComponent("trees")
        let id = try String(contentsOf: trees.appendingPathComponent("latest"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let target = try FileManager.default.destinationOfSymbolicLink(atPath: trees.appendingPathComponent(id).path)
        try FileManager.default.removeItem(at: trees.appendingPathComponent(target))
        let third = try box.dstack(["run", "b", "--no-cache"], environment: bed.environment)
        #expect(third.status == 0, "\(third.output)")
        #expect(third.stdout.contains("b | second"), "\(third.output)")
    }

    /// This machine remembers which objects it sent a runner, so a re-sync lists nothing; a runner that lost them
    /// is found out when a tree is built, and everything is sent again.
    @Test func aRunnerThatLostItsObjectsIsSyncedAgain() throws {
        let bed = try SSHBed(1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("workflows:\n  - name: a\n    commands: [cat src/f1.txt]\n")
        try box.write(".dstack/hosts.yaml", bed.inventory(tag: "lost"))
        for i in 0..<5 { try box.write("src/f\(i).txt", "file \(i)\n") }
        let first = try box.dstack(["run", "a"], environment: bed.environment)
        #expect(first.status == 0, "\(first.output)")
        #expect(first.stderr.contains("r1: sent 7 new files of code"), "\(first.stderr)")

        try box.write("src/f1.txt", "edited\n")
        let second = try box.dstack(["run", "a"], environment: bed.environment)
        #expect(second.status == 0, "\(second.output)")
        #expect(second.stdout.contains("a | edited"), "\(second.output)")

        // The runner loses its objects; going back to the first content, which this machine recorded as sent,
        // needs that object to build the new tree from the last one.
        try FileManager.default.removeItem(at: bed.directory.appendingPathComponent("work-lost-r1/objects"))
        try box.write("src/f1.txt", "file 1\n")
        try box.write("src/f9.txt", "new\n")  // a snapshot never seen, so a tree is built
        let third = try box.dstack(["run", "a", "--no-cache"], environment: bed.environment)
        #expect(third.status == 0, "\(third.output)")
        #expect(third.stdout.contains("a | file 1"), "\(third.output)")
    }

    /// Large plain files come back on channels of their own (no tar), everything else in one tar stream; both
    /// must arrive byte for byte with their modes, and links and missing paths are judged as before.
    @Test func artifactsFromAnSSHRunnerArriveByteForByteWithModesAndLinks() throws {
        let bed = try SSHBed(1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        // big.bin and out/deep.bin are over the direct-fetch size (1 MiB); out/ also holds a small file and a link.
        try box.workflows("""
        workflows:
          - name: make
            commands:
              - head -c 3000001 /dev/urandom > big.bin && chmod 750 big.bin
              - mkdir -p out/sub && head -c 2000000 /dev/urandom > out/sub/deep.bin && chmod 604 out/sub/deep.bin
              - echo small > out/small.txt && ln -s sub/deep.bin out/link.bin
              - head -c 1500000 /dev/urandom > solo.bin
              - sha256sum big.bin out/sub/deep.bin solo.bin out/small.txt > sums
            artifacts: [big.bin, out, out/sub/deep.bin, solo.bin, sums]
          - name: partial
            commands: [head -c 2000000 /dev/urandom > here.bin]
            artifacts: [here.bin, nothere.bin]
        """)
        try box.write(".dstack/hosts.yaml", bed.inventory())
        let result = try box.dstack(["run", "make"], environment: bed.environment)
        #expect(result.status == 0, "\(result.output)")
        let out = box.root.appendingPathComponent("dl")
        let download = try box.dstack(["artifacts", "download", try box.lastRun(), "-o", out.path], environment: bed.environment)
        #expect(download.status == 0, "\(download.output)")
        let check = try Sandbox.run(["sha256sum", "-c", "sums"], in: out)
        #expect(check.status == 0, "\(check.output)")
        func mode(_ path: String) throws -> Int? {
            try FileManager.default.attributesOfItem(atPath: out.appendingPathComponent(path).path)[.posixPermissions] as? Int
        }
        #expect(try mode("big.bin") == 0o750)
        #expect(try mode("out/sub/deep.bin") == 0o604)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: out.appendingPathComponent("out/link.bin").path) == "sub/deep.bin")

        let partial = try box.dstack(["run", "partial"], environment: bed.environment)
        #expect(partial.status == 1)
        #expect(partial.stderr.contains("artifact 'nothere.bin' was not produced"), "\(partial.output)")
    }

    /// More commands than fit on one command line (sshd passes it to the shell as one argument, capped at 128 KiB).
    @Test func aJobWithCommandsLongerThanACommandLineRuns() throws {
        let bed = try SSHBed(1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        let long = String(repeating: "y", count: 150_000)
        try box.workflows("workflows:\n  - name: a\n    commands:\n      - \": \(long)\"\n      - echo after the long line\n")
        try box.write(".dstack/hosts.yaml", bed.inventory())
        let result = try box.dstack(["run", "a"], environment: bed.environment)
        #expect(result.status == 0, "\(result.output.prefix(2_000))")
        #expect(result.stdout.contains("a | after the long line"), "\(result.stdout.prefix(2_000))")
    }

    @Test func aJobNoRunnerCanEverFitIsRefusedBeforeAnythingRuns() throws {
        let bed = try SSHBed(1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("workflows:\n  - name: a\n    commands: [echo ran]\n  - name: big\n    depends-on: [a]\n    resources: {gpu: 2}\n    commands: [echo never]\n")
        try box.write(".dstack/hosts.yaml", bed.inventory())
        let result = try box.dstack(["run", "big"], environment: bed.environment)
        #expect(result.status == 2, "\(result.output)")
        #expect(result.stderr.contains("no runner can ever fit job 'big': it needs 2 GPUs (it has 0) on runner 'r1'"))
        #expect(try box.statusJSON().isEmpty, "nothing ran")
    }

    @Test func twoCoordinatorsOnAOneGPUPoolNeverShareTheGPU() throws {
        let bed = try SSHBed(1)
        defer { bed.stop() }
        let alice = try Sandbox("alice")
        let bob = try Sandbox("bob")
        defer { alice.cleanup(); bob.cleanup() }
        let workflows = """
        workflows:
          - name: g1
            resources: {gpu: 1}
            commands: ['echo "gpu=$CUDA_VISIBLE_DEVICES start=$(date +%s%N)"; sleep 1; echo "end=$(date +%s%N)"']
          - name: g2
            resources: {gpu: 1}
            commands: ['echo "gpu=$CUDA_VISIBLE_DEVICES start=$(date +%s%N)"; sleep 1; echo "end=$(date +%s%N)"']
          - name: all
            depends-on: [g1, g2]
            commands: ["true"]
        """
        let inventory = bed.inventory(tag: "shared", extra: [0: "resources: {gpu: 1}"], maxJobs: 4)
        for box in [alice, bob] {
            try box.workflows(workflows)
            try box.write(".dstack/hosts.yaml", inventory)
        }
        // Both coordinators at once, each with its own storage and runner directory, sharing the runner.
        let a = try Sandbox.start([Sandbox.binary, "run", "all"], in: alice.project, environment: alice.environment.merging(bed.environment) { $1 })
        let b = try Sandbox.start([Sandbox.binary, "run", "all"], in: bob.project, environment: bob.environment.merging(bed.environment) { $1 })
        let ra = try a.wait(), rb = try b.wait()
        #expect(ra.status == 0, "\(ra.output)")
        #expect(rb.status == 0, "\(rb.output)")
        var intervals: [(Double, Double)] = []
        for r in [ra, rb] {
            for job in ["g1", "g2"] {
                let lines = r.stdout.split(separator: "\n").filter { $0.hasPrefix("\(job)  | ") }.map(String.init)
                let gpu = lines.first { $0.contains("gpu=") }
                #expect(gpu?.contains("gpu=0 ") == true, "\(lines)")
                let start = gpu.flatMap { $0.components(separatedBy: "start=").last }.flatMap(Double.init)
                let end = lines.first { $0.contains("end=") }.flatMap { $0.components(separatedBy: "end=").last }.flatMap(Double.init)
                if let start, let end { intervals.append((start, end)) }
            }
        }
        #expect(intervals.count == 4)
        let sorted = intervals.sorted { $0.0 < $1.0 }
        for (x, y) in zip(sorted, sorted.dropFirst()) {
            #expect(x.1 <= y.0, "two jobs held GPU 0 at once: \(x) and \(y)")
        }
    }
}
