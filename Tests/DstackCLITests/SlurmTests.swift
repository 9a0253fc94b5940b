import Foundation
import Testing

/// Runners of kind slurm against a real single-node Slurm cluster (scripts/testbed-slurm) behind a real sshd login
/// node: what users check afterwards is the run's status, the jobs' records (their Slurm ids and states), what
/// Slurm itself says of the jobs (`scontrol show job`), logs and artifacts.
@Suite(.serialized) struct SlurmTests {
    /// Polls (up to `seconds`) until `condition` holds for the newest run's jobs; returns them.
    func waitForJobs(_ box: Sandbox, _ env: [String: String], seconds: Double = 60,
                     _ condition: ([String: [String: Any]]) -> Bool) throws -> (run: String, jobs: [String: [String: Any]]) {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            // Read without #require: before the run exists there is nothing to read yet, and that is no failure.
            let status = try box.dstack(["status", "--json", "-n", "1"], environment: env)
            let runs = (try? JSONSerialization.jsonObject(with: Data(status.stdout.utf8))) as? [[String: Any]]
            if let run = runs?.first?["name"] as? String, let list = runs?.first?["jobs"] as? [[String: Any]] {
                let jobs = Dictionary(uniqueKeysWithValues: list.map { ($0["workflow"] as? String ?? "", $0) })
                if condition(jobs) { return (run, jobs) }
            }
            Thread.sleep(forTimeInterval: 0.2)
        }
        Issue.record("the jobs never reached the state waited for")
        return ("", [:])
    }

    func slurmId(_ job: [String: Any]?) -> String? {
        (job?["slurm"] as? [String: Any])?["id"] as? String
    }

    @Test func theExamplesPipelineRunsOnSlurm() throws {
        let bed = try SlurmBed()
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try FileManager.default.removeItem(at: box.project)
        try FileManager.default.copyItem(at: Sandbox.repositoryRoot.appendingPathComponent("examples"), to: box.project)
        try box.write(".dstack/hosts.yaml", bed.inventory())

        let result = try box.dstack(["run", "evaluate"], environment: bed.environment)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("mse"), "\(result.stdout)")
        let run = try box.lastRun(bed.environment)
        let jobs = try box.jobs(run)
        for workflow in ["prepare", "train", "evaluate"] {
            #expect(jobs[workflow]?["status"] as? String == "done")
            #expect(jobs[workflow]?["runner"] as? String == "r1")
            let id = try #require(slurmId(jobs[workflow]), "no Slurm id recorded for \(workflow)")
            let shown = try bed.job(id)
            #expect(shown["JobState"] == "COMPLETED", "\(shown)")
            #expect(shown["JobName"] == "dstack-\(run)-\(workflow)")
        }
        #expect(try box.dstack("artifacts", "list", run).stdout.contains("metrics/report.txt"))
    }

    @Test func runnersProbesPartitionsNodesAndGPUsOfTheCluster() throws {
        let bed = try SlurmBed(sshRunners: 1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("workflows:\n  - name: a\n    commands: [echo a]\n")
        try box.write(".dstack/hosts.yaml", bed.inventory(extra: [0: "max_jobs: 20"]))
        let result = try box.dstack(["runners"], environment: bed.environment)
        #expect(result.status == 0, "\(result.output)")
        let lines = result.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") }
        #expect(lines.contains { $0.hasPrefix("r1 ok (slurm) Linux") && $0.contains(" 8 4.0 GB 2x tesla (GRES) ") && $0.hasSuffix(" 0/20") },
                "\(result.stdout)")
        #expect(lines.contains { $0.hasPrefix("r2 ok Linux") }, "the SSH runner beside it")
        #expect(lines.contains("r1: partition debug up, 1 node, time limit infinite"), "\(result.stdout)")
        #expect(lines.contains("r1: nodes 1 idle"))
        #expect(lines.contains("r1: \(bed.node) idle, 8 CPUs, 4.0 GB, gpu:tesla:2"))

        let json = try box.dstack(["runners", "--json"], environment: bed.environment)
        let entries = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]])
        let slurm = try #require(entries.first { $0["name"] as? String == "r1" }?["slurm"] as? [String: Any])
        let nodes = try #require(slurm["nodes"] as? [[String: Any]])
        #expect(nodes.first?["gpu_count"] as? Int == 2)
        #expect(nodes.first?["state"] as? String == "idle")
        #expect(entries.first { $0["name"] as? String == "r2" }?["slurm"] is NSNull)
    }

    @Test func aPoolMixesASlurmRunnerAndAnSSHRunner() throws {
        let bed = try SlurmBed(sshRunners: 1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
            workflows:
              - name: a
                labels: [cluster]
                commands: [mkdir -p out, 'echo "a in slurm job $SLURM_JOB_ID" > out/a.txt']
                artifacts: [out/a.txt]
              - name: b
                labels: [box]
                commands: [mkdir -p out, 'echo "b in slurm job ${SLURM_JOB_ID:-none}" > out/b.txt']
                artifacts: [out/b.txt]
              - name: c
                labels: [cluster]
                depends-on: [a, b]
                commands: [cat out/a.txt out/b.txt]
            """)
        try box.write(".dstack/hosts.yaml", bed.inventory(extra: [0: "labels: [cluster]", 1: "labels: [box]"]))

        let result = try box.dstack(["run", "c"], environment: bed.environment)
        #expect(result.status == 0, "\(result.output)")
        let run = try box.lastRun(bed.environment)
        let jobs = try box.jobs(run)
        #expect(jobs["a"]?["runner"] as? String == "r1")
        #expect(jobs["b"]?["runner"] as? String == "r2")
        #expect(jobs["c"]?["runner"] as? String == "r1")
        let a = try #require(slurmId(jobs["a"]))
        #expect(slurmId(jobs["b"]) == nil, "the SSH runner's job has no Slurm id")
        #expect(slurmId(jobs["c"]) != nil)
        let log = try box.dstack("logs", run, "c").stdout
        #expect(log == "a in slurm job \(a)\nb in slurm job none\n", "\(log)")
    }

    @Test func resourcesBecomeSbatchOptionsAsSlurmReadsThemBack() throws {
        let bed = try SlurmBed()
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        let pwned = bed.cluster.appendingPathComponent("pwned")
        try box.workflows("""
            workflows:
              - name: fit
                commands: ['echo "gpus=$CUDA_VISIBLE_DEVICES cpus=$SLURM_CPUS_PER_TASK"']
                resources:
                  gpu: {count: 1, name: Tesla}
                  cpu: 3
                  memory: 300MB
                max_duration: 90m
                slurm:
                  extra: ["--comment=a b; $(touch \(pwned.path)) `touch \(pwned.path)`"]
            """)
        try box.write(".dstack/hosts.yaml", bed.inventory())

        let result = try box.dstack(["run", "fit"], environment: bed.environment)
        #expect(result.status == 0, "\(result.output)")
        let run = try box.lastRun(bed.environment)
        #expect(try box.dstack("logs", run, "fit").stdout == "gpus=0 cpus=3\n")
        let id = try #require(slurmId(try box.jobs(run)["fit"]))
        let shown = try bed.job(id)
        #expect(shown["NumCPUs"] == "3", "\(shown)")
        #expect(shown["CPUs/Task"] == "3")
        #expect(shown["MinMemoryNode"] == "300M")
        #expect(shown["TimeLimit"] == "01:30:00")
        #expect(shown["TresPerNode"] == "gres:gpu:tesla:1", "the GPU name is spelt as the cluster spells its type")
        #expect(shown["Partition"] == "debug")
        #expect(shown["Comment"]?.hasPrefix("a b; $(touch ") == true, "\(shown["Comment"] ?? "")")
        #expect(shown["Requeue"] == "0", "dstack retries lost jobs itself")
        #expect(!FileManager.default.fileExists(atPath: pwned.path), "an sbatch option was run by a shell")
    }

    @Test func aJobWaitingInTheQueueShowsSlurmsReasonAndStopCancelsIt() throws {
        let bed = try SlurmBed()
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        // The node has 8 CPUs: the first job takes them all, the second waits for Resources.
        try box.workflows("""
            workflows:
              - name: hog
                commands: [echo hogging, sleep 60]
                resources: {cpu: 8}
              - name: small
                commands: [echo small]
            """)
        try box.write(".dstack/hosts.yaml", bed.inventory())
        let env = bed.environment
        #expect(try box.dstack(["run", "hog", "-d"], environment: env).status == 0)
        let hog = try waitForJobs(box, env) { ($0["hog"]?["status"] as? String) == "running" }.run
        #expect(try box.dstack(["run", "small", "-d"], environment: env).status == 0)
        let small = try waitForJobs(box, env) { jobs in
            ((jobs["small"]?["slurm"] as? [String: Any])?["reason"] as? String) == "Resources"
        }.run
        #expect(small != hog)
        let table = try box.dstack(["status"], environment: env).stdout
        #expect(table.contains("pending (Resources)"), "\(table)")
        let id = try #require(slurmId(try box.jobs(small)["small"]))
        #expect(try bed.job(id)["JobState"] == "PENDING")

        // Stopping the queued job cancels it in Slurm; it never ran.
        #expect(try box.dstack(["stop", small], environment: env).status == 0)
        #expect(try box.dstack(["stop", hog], environment: env).status == 0)
        let stopped = try box.jobs(small)
        #expect(stopped["small"]?["status"] as? String == "stopped", "\(stopped)")
        #expect(try bed.job(id)["JobState"] == "CANCELLED")
        #expect(try box.jobs(hog)["hog"]?["status"] as? String == "stopped")
    }

    @Test func scancelFromOutsideFailsTheJobWithSlurmsReason() throws {
        let bed = try SlurmBed()
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
            workflows:
              - name: slow
                commands: [echo started, sleep 60, echo never]
              - name: after
                depends-on: [slow]
                commands: [echo never]
            """)
        try box.write(".dstack/hosts.yaml", bed.inventory())
        let env = box.environment.merging(bed.environment) { $1 }
        let began = Date()
        let coordinator = try Sandbox.start([Sandbox.binary, "run", "after"], in: box.project, environment: env)
        let (run, jobs) = try waitForJobs(box, bed.environment) { ($0["slow"]?["status"] as? String) == "running" }
        let id = try #require(slurmId(jobs["slow"]))
        #expect(try bed.slurm("scancel", id).status == 0)
        let result = try coordinator.wait()
        #expect(result.status != 0)
        #expect(Date().timeIntervalSince(began) < 40, "the cancelled job was waited out")
        let after = try box.jobs(run)
        #expect(after["slow"]?["status"] as? String == "failed")
        let reason = after["slow"]?["reason"] as? String ?? ""
        #expect(reason.contains("Slurm ended job \(id) as CANCELLED"), "\(reason)")
        #expect(after["after"]?["status"] as? String == "skipped")
        #expect((after["slow"]?["attempts"] as? [Any])?.count == 1, "a cancelled job is not retried")
    }

    /// Slurm's time limit is a minute at least, and Slurm enforces it on its own clock (every 30 s or so here):
    /// this test takes 60-100 s.
    @Test func slurmsTimeLimitFailsTheJobWithSlurmsReason() throws {
        let bed = try SlurmBed()
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
            workflows:
              - name: forever
                commands: [echo started, sleep 600]
            """)
        // The runner's default time limit (no max_duration, so dstack's own watchdog is not involved): 1 minute.
        try box.write(".dstack/hosts.yaml", bed.inventory(time: "1"))
        let result = try box.dstack(["run", "forever"], environment: bed.environment)
        #expect(result.status == 1, "\(result.output)")
        let run = try box.lastRun(bed.environment)
        let job = try #require(try box.jobs(run)["forever"])
        #expect(job["status"] as? String == "failed")
        let id = try #require(slurmId(job))
        let reason = job["reason"] as? String ?? ""
        #expect(reason.contains("Slurm ended job \(id) as TIMEOUT"), "\(reason)")
        #expect((job["attempts"] as? [Any])?.count == 1, "a job past its time limit is not retried")
        #expect(try bed.job(id)["JobState"] == "TIMEOUT")
    }

    @Test func aNodeFailureLosesTheJobAndItIsTriedAgain() throws {
        let bed = try SlurmBed()
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        let counter = bed.cluster.appendingPathComponent("count")
        try box.workflows(FaultTests.workflows(counter: counter.path))
        try box.write(".dstack/hosts.yaml", bed.inventory())
        let env = box.environment.merging(bed.environment) { $1 }
        let coordinator = try Sandbox.start([Sandbox.binary, "run", "after"], in: box.project, environment: env)
        let (run, jobs) = try waitForJobs(box, bed.environment) { ($0["slow"]?["status"] as? String) == "running" }
        let first = try #require(slurmId(jobs["slow"]))
        // The node goes down under the job: Slurm ends it as NODE_FAIL; ReturnToService brings the node back
        // when its slurmd next registers.
        #expect(try bed.slurm("scontrol", "update", "nodename=\(bed.node)", "state=down", "reason=dstack-test").status == 0)
        Thread.sleep(forTimeInterval: 1)
        _ = try? bed.slurm("scontrol", "update", "nodename=\(bed.node)", "state=resume")
        let result = try coordinator.wait()
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stderr.contains("lost on r1"), "\(result.stderr)")
        let after = try box.jobs(run)
        #expect(after["slow"]?["status"] as? String == "done")
        let attempts = after["slow"]?["attempts"] as? [[String: Any]] ?? []
        #expect(attempts.count == 2)
        #expect((attempts.first?["reason"] as? String)?.contains("Slurm ended job \(first) as NODE_FAIL") == true, "\(attempts)")
        #expect(slurmId(after["slow"]) != first, "the retry is a new Slurm job")
        #expect(after["after"]?["status"] as? String == "done")
    }

    @Test func killingTheCoordinatorThenAttachFindsTheSlurmJob() throws {
        let bed = try SlurmBed()
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        let counter = bed.cluster.appendingPathComponent("count")
        try box.workflows(FaultTests.workflows(counter: counter.path))
        try box.write(".dstack/hosts.yaml", bed.inventory())
        let env = box.environment.merging(bed.environment) { $1 }

        let coordinator = try Sandbox.start([Sandbox.binary, "run", "after"], in: box.project, environment: env)
        let run = try FaultTests().waitForLog(box, "line 2", bed.environment)
        kill(coordinator.process.processIdentifier, SIGKILL)
        _ = try? coordinator.wait()
        let id = try #require(slurmId(try box.jobs(run)["slow"]))

        let resumed = try box.dstack(["attach", run], environment: bed.environment)
        #expect(resumed.status == 0, "\(resumed.output)")
        #expect(try box.dstack("logs", run, "slow").stdout == FaultTests.sixLines, "the stored log lost or doubled lines")
        #expect(FaultTests().count(counter) == 1, "the job's commands completed \(FaultTests().count(counter)) times")
        let jobs = try box.jobs(run)
        #expect(jobs["slow"]?["status"] as? String == "done")
        #expect((jobs["slow"]?["attempts"] as? [Any])?.count == 1)
        #expect(slurmId(jobs["slow"]) == id, "attach followed the recorded Slurm job rather than submitting again")
        #expect(jobs["after"]?["status"] as? String == "done")
        #expect(try bed.slurm("squeue", "-h", "--states=all", "-o", "%j").stdout
            .split(separator: "\n").filter { $0 == "dstack-\(run)-slow" }.count == 1)
    }

    @Test func twoCoordinatorsShareTheCluster() throws {
        let bed = try SlurmBed()
        defer { bed.stop() }
        let boxes = [try Sandbox("alice"), try Sandbox("bob")]
        defer { boxes.forEach { $0.cleanup() } }
        let workflows = """
            workflows:
              - name: one
                commands: [sleep 1, echo one]
              - name: two
                commands: [sleep 1, echo two]
              - name: all
                depends-on: [one, two]
                commands: [echo all]
            """
        var running: [Sandbox.Running] = []
        for box in boxes {
            try box.workflows(workflows)
            // Each coordinator its own work directory on the same cluster, as two users would have.
            try box.write(".dstack/hosts.yaml", bed.inventory())
            running.append(try Sandbox.start([Sandbox.binary, "run", "all"], in: box.project,
                                             environment: box.environment.merging(bed.environment) { $1 }))
        }
        for (box, process) in zip(boxes, running) {
            let result = try process.wait()
            #expect(result.status == 0, "\(result.output)")
            let jobs = try box.jobs(try box.lastRun(bed.environment))
            #expect(jobs.values.allSatisfy { ($0["status"] as? String) == "done" })
            #expect(jobs.values.allSatisfy { slurmId($0) != nil })
        }
        let names = try bed.slurm("squeue", "-h", "--states=all", "-o", "%j").stdout.split(separator: "\n")
        #expect(names.count == 6, "\(names)")
    }
}
