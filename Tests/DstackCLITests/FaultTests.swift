import Foundation
import Testing

/// Fault injection on real sshd runners: what the user checks afterwards is run status, every job's attempts,
/// stored logs complete and not doubled, artifacts stored, and that each job's commands completed exactly once
/// (counted by a side effect on the runner).
@Suite struct FaultTests {
    /// A job that prints six lines over three seconds, counts its completion in `counter`, and stores an artifact.
    static func workflows(counter: String, extra: String = "") -> String {
        """
        workflows:
          - name: slow
            commands:
              - 'for i in 1 2 3 4 5 6; do echo "line $i"; sleep 0.5; done'
              - echo done >> \(counter)
              - mkdir -p out && echo result > out/r.txt
            artifacts: [out]
        \(extra)
          - name: after
            depends-on: [slow]
            commands: [cat out/r.txt]
        """
    }

    static let sixLines = (1...6).map { "line \($0)\n" }.joined()

    /// Waits (up to a minute) until the newest run's `job` log holds `text`; returns the run's name.
    func waitForLog(_ box: Sandbox, _ text: String, _ env: [String: String], job: String = "slow") throws -> String {
        for _ in 0..<600 {
            let status = try box.dstack(["status", "--json", "-n", "1"], environment: env)
            let runs = (try? JSONSerialization.jsonObject(with: Data(status.stdout.utf8))) as? [[String: Any]]
            if let run = runs?.first?["name"] as? String,
               try box.dstack(["logs", run, job], environment: env).stdout.contains(text) {
                return run
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        Issue.record("'\(text)' never appeared in the log")
        return ""
    }

    func count(_ file: URL) -> Int {
        ((try? String(contentsOf: file, encoding: .utf8)) ?? "").split(separator: "\n").count
    }

    @Test func killingTheCoordinatorThenAttachResumesWithNothingLostOrDoubled() throws {
        let bed = try SSHBed(1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        let counter = bed.directory.appendingPathComponent("count")
        try box.workflows(Self.workflows(counter: counter.path))
        try box.write(".dstack/hosts.yaml", bed.inventory())
        let env = box.environment.merging(bed.environment) { $1 }

        let coordinator = try Sandbox.start([Sandbox.binary, "run", "after"], in: box.project, environment: env)
        let run = try waitForLog(box, "line 2", bed.environment)
        kill(coordinator.process.processIdentifier, SIGKILL)
        _ = try? coordinator.wait()

        let status = try #require(try box.statusJSON(run).first)
        #expect(status["status"] as? String == "running")
        #expect(status["coordinator_gone"] as? Bool == true)

        // Two attaches at once: one wins, the other is told who holds the run.
        let first = try Sandbox.start([Sandbox.binary, "attach", run], in: box.project, environment: env)
        Thread.sleep(forTimeInterval: 0.5)
        let second = try box.dstack(["attach", run], environment: bed.environment)
        let resumed = try first.wait()
        #expect(resumed.status == 0, "\(resumed.output)")
        #expect(second.status == 64 || second.status == 0, "\(second.output)")
        if second.status == 64 { #expect(second.stderr.contains("is coordinated by pid")) }

        #expect(try box.dstack("logs", run, "slow").stdout == Self.sixLines, "the stored log lost or doubled lines")
        #expect(count(counter) == 1, "the job's commands completed \(count(counter)) times")
        let jobs = try box.jobs(run)
        #expect(jobs["slow"]?["status"] as? String == "done")
        #expect((jobs["slow"]?["attempts"] as? [Any])?.count == 1)
        #expect(jobs["after"]?["status"] as? String == "done")
        #expect(try box.dstack("artifacts", "list", run).stdout.contains("out/r.txt"))
    }

    @Test func droppingEveryConnectionMidJobReconnectsAndTheJobGoesOn() throws {
        let bed = try SSHBed(1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        let counter = bed.directory.appendingPathComponent("count")
        try box.workflows(Self.workflows(counter: counter.path))
        try box.write(".dstack/hosts.yaml", bed.inventory())
        let env = box.environment.merging(bed.environment) { $1 }

        let coordinator = try Sandbox.start([Sandbox.binary, "run", "after"], in: box.project, environment: env)
        let run = try waitForLog(box, "line 2", bed.environment)
        // Kill the per-connection sshd processes (children of the listener), keeping the listener: every
        // connection drops at once and the server comes straight back.
        let listener = try String(contentsOf: bed.directory.appendingPathComponent("runner-1/sshd.pid"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        _ = try Sandbox.run(["pkill", "-KILL", "-P", listener], in: bed.directory)
        let result = try coordinator.wait()
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stderr.contains("dropped"), "\(result.stderr)")
        #expect(try box.dstack("logs", run, "slow").stdout == Self.sixLines)
        #expect(count(counter) == 1)
        let jobs = try box.jobs(run)
        #expect((jobs["slow"]?["attempts"] as? [Any])?.count == 1, "a dropped connection is not a lost runner")
    }

    /// A machine-side `kill -9` of the job's whole process tree (an admin's cleanup, the OOM killer taking the
    /// wrapper too) on a runner that stays reachable: the job is lost, tried again with a notice, and its attempts
    /// say what happened.
    @Test func aJobWhoseProcessesAreKilledOnAReachableRunnerIsTriedAgain() throws {
        let bed = try SSHBed(1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        let counter = bed.directory.appendingPathComponent("count")
        try box.workflows(Self.workflows(counter: counter.path))
        try box.write(".dstack/hosts.yaml", bed.inventory(tag: "vanish"))
        let env = box.environment.merging(bed.environment) { $1 }

        let coordinator = try Sandbox.start([Sandbox.binary, "run", "after"], in: box.project, environment: env)
        let run = try waitForLog(box, "line 2", bed.environment)
        let jobDir = bed.directory.appendingPathComponent("work-vanish-r1/jobs/\(run)-slow")
        let pidText = try String(contentsOf: jobDir.appendingPathComponent("pid"), encoding: .utf8)
        try Self.killTree(pidText, in: bed.directory)

        let result = try coordinator.wait()
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stderr.contains("vanished without an exit status"), "\(result.stderr)")
        #expect(result.stderr.contains("trying again (attempt 2 of 3)"), "\(result.stderr)")
        let jobs = try box.jobs(run)
        let attempts = try #require(jobs["slow"]?["attempts"] as? [[String: Any]])
        #expect(attempts.count == 2)
        #expect((attempts.first?["reason"] as? String)?.hasPrefix("lost: its process on r1 vanished") == true, "\(attempts)")
        #expect(jobs["slow"]?["status"] as? String == "done")
        #expect(count(counter) == 1, "only the second attempt completed")
    }

    /// `kill -9` of a job's whole process tree from its `pid` file (`WRAPPER BOOTID`, and the job's process group on a
    /// second line where it is not the wrapper's own): the wrapper and the job's process group.
    static func killTree(_ pidText: String, in directory: URL) throws {
        let words = pidText.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
        let wrapper = try #require(words.first)
        let group = words.count >= 3 ? words[2] : wrapper
        // The wrapper first: once its commands are gone it would write their exit code.
        _ = try Sandbox.run(["kill", "-KILL", wrapper], in: directory)
        _ = try Sandbox.run(["kill", "-KILL", "--", "-\(group)"], in: directory)
    }

    @Test func aLostRunnersJobIsRetriedOnAnotherRunner() throws {
        let bed = try SSHBed(2)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        let counter = bed.directory.appendingPathComponent("count")
        try box.workflows(Self.workflows(counter: counter.path))
        try box.write(".dstack/hosts.yaml", bed.inventory(tag: "lost"))
        var env = box.environment.merging(bed.environment) { $1 }
        env["DSTACK_LOST_TIMEOUT"] = "3"

        let coordinator = try Sandbox.start([Sandbox.binary, "run", "after"], in: box.project, environment: env)
        let run = try waitForLog(box, "line 2", bed.environment)
        // run.json may lag the job by up to a second: wait for it to name the runner.
        var runner: String?
        for _ in 0..<50 where runner == nil {
            runner = try box.jobs(run)["slow"]?["runner"] as? String
            if runner == nil { Thread.sleep(forTimeInterval: 0.1) }
        }
        let first = try #require(runner)
        let index = first == "r1" ? 1 : 2
        // The machine dies: its sshd (listener and connections) and the job's processes.
        let pid = try String(contentsOf: bed.directory.appendingPathComponent("runner-\(index)/sshd.pid"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        _ = try Sandbox.run(["pkill", "-KILL", "-P", pid], in: bed.directory)
        _ = try Sandbox.run(["kill", "-KILL", pid], in: bed.directory)
        let jobDir = bed.directory.appendingPathComponent("work-lost-\(first)/jobs/\(run)-slow")
        let listing = (try? FileManager.default.contentsOfDirectory(atPath: jobDir.path)) ?? []
        let pidText = try #require(try? String(contentsOf: jobDir.appendingPathComponent("pid"), encoding: .utf8),
                                   "no pid in \(jobDir.path): \(listing)")
        try Self.killTree(pidText, in: bed.directory)

        let result = try coordinator.wait()
        #expect(result.status == 0, "\(result.output)")
        let jobs = try box.jobs(run)
        let attempts = try #require(jobs["slow"]?["attempts"] as? [[String: Any]])
        #expect(attempts.count == 2)
        #expect((attempts.first?["reason"] as? String)?.hasPrefix("lost") == true, "\(attempts)")
        #expect(attempts.first?["runner"] as? String == first)
        #expect(jobs["slow"]?["runner"] as? String != first)
        #expect(jobs["slow"]?["status"] as? String == "done")
        #expect(count(counter) == 1, "only the second attempt completed")
        #expect(try box.dstack("artifacts", "list", run).stdout.contains("out/r.txt"))
    }

    @Test func killingAJobsProcessFailsItAndRetryLimitRunsItAgain() throws {
        let bed = try SSHBed(1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        let marker = bed.directory.appendingPathComponent("marker").path
        try box.workflows("""
        workflows:
          - name: killed
            commands: ['echo $$ > \(bed.directory.path)/job.pid; echo start; exec sleep 30']
          - name: flaky
            retry: {limit: 1}
            commands: ['if [ ! -f \(marker) ]; then touch \(marker); echo first; exit 4; fi; echo second']
        """)
        try box.write(".dstack/hosts.yaml", bed.inventory(tag: "kill"))
        let env = box.environment.merging(bed.environment) { $1 }
        let coordinator = try Sandbox.start([Sandbox.binary, "run", "killed"], in: box.project, environment: env)
        let run = try waitForLog(box, "start", bed.environment, job: "killed")
        let jobPid = try String(contentsOf: bed.directory.appendingPathComponent("job.pid"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        _ = try Sandbox.run(["kill", "-KILL", jobPid], in: bed.directory)
        let result = try coordinator.wait()
        #expect(result.status == 1)
        #expect(result.stderr.contains("error: job 'killed' failed on r1: killed by signal 9 (SIGKILL)"), "\(result.stderr)")
        #expect(try box.jobs(run)["killed"]?["signal"] as? Int == 9)

        let flaky = try box.dstack(["run", "flaky"], environment: bed.environment)
        #expect(flaky.status == 0, "\(flaky.output)")
        let attempts = try #require(try box.jobs(try box.lastRun())["flaky"]?["attempts"] as? [[String: Any]])
        #expect(attempts.count == 2)
        #expect(attempts.first?["exit_code"] as? Int == 4)
        #expect(try box.dstack("logs", try box.lastRun(), "flaky").stdout.contains("second"))
    }

    @Test func maxDurationStopsAJobThatRunsTooLong() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("workflows:\n  - name: long\n    max_duration: 2s\n    commands: [sleep 60]\n")
        let started = Date()
        let result = try box.dstack("run", "long")
        #expect(result.status == 1)
        #expect(Date().timeIntervalSince(started) < 30)
        #expect(result.stderr.contains("max_duration (2s) exceeded"), "\(result.stderr)")
        #expect(try box.jobs(try box.lastRun())["long"]?["status"] as? String == "failed")
    }

    @Test func ctrlCInAnAttachedRunStopsIt() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("workflows:\n  - name: long\n    commands: [echo begun, sleep 60]\n")
        let coordinator = try Sandbox.start([Sandbox.binary, "run", "long"], in: box.project, environment: box.environment)
        _ = try waitForLog(box, "begun", [:], job: "long")
        kill(coordinator.process.processIdentifier, SIGINT)
        let result = try coordinator.wait()
        #expect(result.status == 1, "\(result.output)")
        #expect(try box.jobs(try box.lastRun())["long"]?["status"] as? String == "stopped")
        #expect(try box.statusJSON().first?["status"] as? String == "stopped")
    }
}
