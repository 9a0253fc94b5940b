import Foundation
import Testing

@testable import DstackRunners

/// What a runner keeps to itself: environment values never on a command line, locks that follow the machine's
/// boot, and stops that never signal a pid once its job has ended.
@Suite struct RunnerSafetyTests {
    /// An SSH job's environment values travel in the agent's start payload: no `ps` sample on the machine (the
    /// runners are on it) shows them while the job runs, nor does `-v`.
    @Test func environmentValuesAreNeverOnACommandLine() throws {
        let bed = try SSHBed(1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        let value = "env-value-\(UUID().uuidString.prefix(12))"
        try box.workflows("""
        workflows:
          - name: env
            environment: {MARK: \(value)}
            commands: ['test "$MARK" = \(value)', 'sleep 1.5']
        """)
        try box.write(".dstack/hosts.yaml", bed.inventory())
        let sampler = SecretsTests.ProcessSampler()
        sampler.start()
        let result = try box.dstack(["-v", "run", "env"], environment: bed.environment)
        let samples = sampler.stop()
        #expect(result.status == 0, "\(result.output)")
        #expect(samples.count >= 10, "only \(samples.count) process samples")
        #expect(!samples.contains { $0.contains(value) }, "ps showed an environment value")
        #expect(!result.output.contains(value), "-v showed an environment value: \(result.output)")
    }

    /// Runs the agent on `requests` here, under /bin/sh, and parses its answers.
    func agent(_ requests: [AgentRequest]) throws -> [AgentReply] {
        try RunnerScriptTests().agent(requests)
    }

    /// A live process of this test (a `sleep`), standing in for "some process that now has the recorded pid".
    func liveProcess() throws -> Process {
        let sleeper = Process()
        sleeper.executableURL = URL(fileURLWithPath: "/bin/sleep")
        sleeper.arguments = ["30"]
        try sleeper.run()
        return sleeper
    }

    @Test func aLockWhosePidWasRecordedBeforeARebootIsReclaimed() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-boot-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: base) }
        let sleeper = try liveProcess()
        defer { sleeper.terminate() }
        // The only slot is held by a job whose recorded pid is alive now, but was recorded on another boot.
        let fm = FileManager.default
        try fm.createDirectory(at: base.appendingPathComponent("locks/slot-0"), withIntermediateDirectories: true)
        try Data("old-job someone\n".utf8).write(to: base.appendingPathComponent("locks/slot-0/owner"))
        try fm.createDirectory(at: base.appendingPathComponent("jobs/old-job"), withIntermediateDirectories: true)
        try Data("\(sleeper.processIdentifier) 00000000-0000-0000-0000-000000000000\n".utf8)
            .write(to: base.appendingPathComponent("jobs/old-job/pid"))
        try fm.createDirectory(at: base.appendingPathComponent("trees/snap"), withIntermediateDirectories: true)
        let replies = try agent([AgentRequest("start", [base.path, "new-job", "1", "1", "", "0", "tests", "snap", "", "0", "", "0"])])
        #expect(replies.first?.events.first == "granted 0 ", "\(replies.map(\.events))")
        // The same pid recorded on this boot holds its slot.
        let boot = try String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        try fm.removeItem(at: base.appendingPathComponent("jobs/new-job"))
        try fm.removeItem(at: base.appendingPathComponent("locks"))
        try fm.createDirectory(at: base.appendingPathComponent("locks/slot-0"), withIntermediateDirectories: true)
        try Data("old-job someone\n".utf8).write(to: base.appendingPathComponent("locks/slot-0/owner"))
        try Data("\(sleeper.processIdentifier) \(boot)\n".utf8).write(to: base.appendingPathComponent("jobs/old-job/pid"))
        let busy = try agent([AgentRequest("start", [base.path, "new-job", "1", "1", "", "0", "tests", "snap", "", "0", "", "0"])])
        #expect(busy.first?.status == .noFreeSlot)
    }

    @Test func stopNeverSignalsThePidOfAJobThatWroteItsExit() throws {
        let job = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-stop-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: job) }
        try FileManager.default.createDirectory(at: job, withIntermediateDirectories: true)
        let sleeper = try liveProcess()
        defer { sleeper.terminate() }
        let boot = try String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        // The job ended (exit written); its recorded pid now belongs to another process.
        try Data("\(sleeper.processIdentifier) \(boot)\n".utf8).write(to: job.appendingPathComponent("pid"))
        try Data("0\n".utf8).write(to: job.appendingPathComponent("exit"))
        let replies = try agent([AgentRequest("stop", [job.path])])
        #expect(replies.first?.status == .ok)
        Thread.sleep(forTimeInterval: 0.2)
        #expect(sleeper.isRunning, "stop signalled a process that was not the job's")
    }
}
