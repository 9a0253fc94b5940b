import DstackCore
import DstackModel
import DstackRunners
import DstackStorage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The coordinator with real local processes and a real directory storage.
@Suite(.timeLimit(.minutes(2)))
struct CoordinatorTests {
    @Test func aDiamondRunsInDependencyOrderAndStoresEverything() async throws {
        let bench = try Bench()
        defer { bench.dir.remove() }
        try bench.dir.write("project/input.txt", "from the snapshot\n")
        let events = EventLog()
        let prepared = try await bench.prepare("""
        workflows:
          - name: a
            commands: [mkdir -p data, echo from-a > data/a.txt, sleep 0.2]
            artifacts: [data]
          - name: b
            depends-on: [a]
            commands: [cat data/a.txt, mkdir -p made, echo from-b > made/b.txt]
            artifacts: [made]
          - name: c
            depends-on: [a]
            commands: [cat data/a.txt, cat input.txt]
          - name: d
            depends-on: [b, c]
            commands: [cat made/b.txt]
        """, target: "d", sink: events)
        let final = await prepared.coordinator.execute()

        #expect(final.status == .done, "\(final.jobs.map { "\($0.workflow)=\($0.status) \($0.reason ?? "")" })")
        #expect(final.jobs.allSatisfy { $0.status == .done })
        #expect(final.coordinator == nil)
        for job in final.jobs {
            let start = try #require(job.startedAt, "\(job.workflow) has no start")
            for dep in prepared.plan.job(job.workflow)!.dependsOn {
                let end = try #require(final.job(dep)?.finishedAt)
                #expect(end <= start, "\(job.workflow) started before \(dep) finished")
            }
        }
        #expect(events.started.first == "a" && events.started.last == "d" && events.started.count == 4)
        #expect(events.output(of: "b") == "from-a\n")
        #expect(events.output(of: "c") == "from-a\nfrom the snapshot\n")
        #expect(events.output(of: "d") == "from-b\n")

        // Storage holds the final records, the logs, the artifacts with their manifests (jobs that declare none
        // store none), and the cache entries.
        let stored = try #require(try await bench.store.loadRun("test-run-1"))
        #expect(stored.status == .done && stored.jobs.map(\.status) == final.jobs.map(\.status))
        #expect(String(decoding: try await bench.store.readLog(run: "test-run-1", workflow: "c"), as: UTF8.self)
                == "from-a\nfrom the snapshot\n")
        for job in prepared.plan.jobs {
            #expect(try await bench.store.cacheEntry(job.cacheKey)?.job == job.id)
            #expect(try await bench.store.manifest(job.cacheKey) != nil || job.artifacts.isEmpty, "\(job.workflow) has no manifest")
            if job.artifacts.isEmpty { #expect(try await bench.store.manifest(job.cacheKey) == nil, "\(job.workflow) declares no artifacts") }
            let data = try #require(try await bench.store.storage.read("proj/runs/test-run-1/jobs/\(job.workflow)/job.json"))
            let record = try RecordCoding.decoder().decode(JobRecord.self, from: data)
            #expect(record.status == .done)
        }
        #expect(try await bench.store.manifest(prepared.plan.job("a")!.cacheKey)?.files.map(\.path) == ["data", "data/a.txt"])
        // Successful job directories are cleaned up.
        #expect(!FileManager.default.fileExists(atPath: bench.runner.jobDirectory("test-run-1-a").path))
    }

    @Test func aFailingJobSkipsEverythingDownstreamAndFailsTheRun() async throws {
        let bench = try Bench()
        defer { bench.dir.remove() }
        let prepared = try await bench.prepare("""
        workflows:
          - name: a
            commands: [echo before, exit 3, echo never]
            artifacts: [out]
          - name: b
            depends-on: [a]
            commands: [echo b]
          - name: c
            depends-on: [b]
            commands: [echo c]
          - name: x
            commands: [sleep 0.5, echo independent]
          - name: all
            depends-on: [c, x]
            commands: [echo all]
        """, target: "all")
        let final = await prepared.coordinator.execute()

        #expect(final.status == .failed)
        let a = try #require(final.job("a"))
        #expect(a.status == .failed)
        #expect(a.exitCode == 3)
        #expect(a.reason == "exit code 3")
        #expect(a.attempts.count == 1 && a.attempts.first?.exitCode == 3)
        #expect(final.job("b")?.status == .skipped)
        #expect(final.job("b")?.reason == "dependency 'a' failed")
        #expect(final.job("c")?.status == .skipped)
        #expect(final.job("c")?.reason == "dependency 'b' skipped")
        #expect(final.job("x")?.status == .done, "an unrelated job still runs to completion")
        #expect(final.job("all")?.status == .skipped)
        #expect(final.job("b")?.startedAt == nil && final.job("b")?.attempts.isEmpty == true, "a skipped job never started")

        #expect(String(decoding: try await bench.store.readLog(run: "test-run-1", workflow: "a"), as: UTF8.self) == "before\n")
        let aKey = prepared.plan.job("a")!.cacheKey
        #expect(try await bench.store.cacheEntry(aKey) == nil)
        #expect(try await bench.store.manifest(aKey) == nil)
        #expect(FileManager.default.fileExists(atPath: bench.runner.jobDirectory("test-run-1-a").path),
                "a failed job's directory is kept for inspection")
        #expect(try await bench.store.loadRun("test-run-1")?.status == .failed)
    }

    enum StopPath: String, Sendable, CaseIterable {
        /// `Coordinator.requestStop()`, what Ctrl-C does.
        case coordinator
        /// The `stop` object in storage, what `dstack stop` writes; the heartbeat notices it.
        case storage
    }

    @Test(arguments: StopPath.allCases)
    func stoppingWhileASleepRunsStopsTheJobAndTheRun(_ path: StopPath) async throws {
        let bench = try Bench("stop\(path.rawValue)")
        defer { bench.dir.remove() }
        let events = EventLog()
        let prepared = try await bench.prepare("""
        workflows:
          - name: forever
            commands: [echo begun, sleep 30, echo never]
          - name: after
            depends-on: [forever]
            commands: [echo never]
        """, target: "after", sink: events)
        let coordinator = prepared.coordinator
        let execution = Task { await coordinator.execute() }

        let begun = await eventually(within: 30) { events.output(of: "forever").contains("begun") }
        if !begun { await coordinator.requestStop() }
        try #require(begun, "the job did not start")
        let pidText = try String(contentsOf: bench.runner.jobDirectory("test-run-1-forever").appendingPathComponent("pid"), encoding: .utf8)
        // `PID BOOTID`: the wrapper records the boot with its pid.
        let pid = try #require(pid_t(pidText.split(separator: " ").first.map(String.init) ?? ""))
        let live = try #require(try await bench.store.loadRun("test-run-1"))
        #expect(live.status == .running)
        #expect(live.coordinator?.pid == getpid())

        let asked = Date()
        switch path {
        case .coordinator: await coordinator.requestStop()
        case .storage: try await bench.store.requestStop("test-run-1")
        }
        let final = await execution.value
        let seconds = Date().timeIntervalSince(asked)

        #expect(seconds < 20, "stopping took \(seconds) s")
        #expect(final.status == .stopped)
        #expect(final.job("forever")?.status == .stopped)
        #expect(final.job("after")?.status == .stopped)
        #expect(!events.output(of: "forever").contains("never"))
        #expect(try await bench.store.loadRun("test-run-1")?.status == .stopped)
        // Nothing of the job may still run; a zombie wrapper is a separate finding (see aFinishedJobLeavesNoZombie).
        let gone = await eventually(within: 10) {
            hasProc ? processStates(group: pid).allSatisfy { $0.state == "Z" } : kill(-pid, 0) != 0
        }
        #expect(gone, "the job's process group \(pid) is still running: \(processStates(group: pid))")
        // A heartbeat still in flight writes run.json once more after execute() returned (see
        // nothingIsWrittenAfterExecuteReturns); let it land before the directory is removed.
        try await Task.sleep(nanoseconds: 1_500_000_000)
    }

    struct Slots: Sendable, CustomTestStringConvertible {
        let maxJobs: Int
        let overlap: Bool
        var testDescription: String { "maxJobs \(maxJobs)" }
    }

    @Test(arguments: [Slots(maxJobs: 2, overlap: true), Slots(maxJobs: 1, overlap: false)])
    func independentJobsOverlapOnlyWhenSlotsAllow(_ slots: Slots) async throws {
        let bench = try Bench("slots\(slots.maxJobs)")
        defer { bench.dir.remove() }
        let prepared = try await bench.prepare("""
        workflows:
          - name: x
            commands: [sleep 2]
          - name: y
            commands: [sleep 2]
          - name: both
            depends-on: [x, y]
            commands: ["true"]
        """, target: "both", maxJobs: slots.maxJobs)
        let final = await prepared.coordinator.execute()
        #expect(final.status == .done)
        let x = try #require(final.job("x")), y = try #require(final.job("y"))
        let xs = try #require(x.startedAt), xe = try #require(x.finishedAt)
        let ys = try #require(y.startedAt), ye = try #require(y.finishedAt)
        let overlapped = xs < ye && ys < xe
        #expect(overlapped == slots.overlap, "x \(xs)…\(xe), y \(ys)…\(ye)")
    }

    @Test func aCachedJobIsNotRunAndItsStoredArtifactsReachItsDependents() async throws {
        let bench = try Bench()
        defer { bench.dir.remove() }
        let workflows = """
        workflows:
          - name: make
            commands: [mkdir -p data, echo made-once > data/v.txt]
            artifacts: [data]
          - name: use
            depends-on: [make]
            commands: [cat data/v.txt]
        """
        let first = try await bench.prepare(workflows, target: "make", run: "first-run-1")
        #expect(await first.coordinator.execute().status == .done)
        let entry = try #require(try await bench.store.cacheEntry(first.plan.jobs[0].cacheKey))

        let events = EventLog()
        let second = try await bench.prepare(workflows, target: "use", run: "second-run-1", cached: ["make": entry],
                                             sink: events)
        #expect(second.plan.job("make")?.cacheKey == first.plan.job("make")?.cacheKey)
        let final = await second.coordinator.execute()
        #expect(final.status == .done)
        #expect(final.job("make")?.status == .cached)
        #expect(final.job("make")?.cachedFrom?.run == "first-run-1")
        #expect(events.started == ["use"])
        #expect(events.output(of: "use") == "made-once\n")
    }

    /// Once `execute()` returned, the run is the caller's: deleting it must not be undone by a late write.
    @Test func nothingIsWrittenAfterExecuteReturns() async throws {
        let bench = try Bench()
        defer { bench.dir.remove() }
        let prepared = try await bench.prepare("workflows:\n  - name: a\n    commands: [\"sleep 1.2\"]\n", target: "a")
        #expect(await prepared.coordinator.execute().status == .done)
        try await bench.store.deleteRun("test-run-1")
        try await Task.sleep(nanoseconds: 1_500_000_000)
        let late = try await bench.store.storage.list(prefix: "proj/runs/test-run-1/").map(\.key)
        #expect(late.isEmpty, "written after execute() returned: \(late)")
    }

    /// The wrapper of a local job is this process's child; it must be reaped once the job ended, or every job
    /// leaves a zombie behind in a long-lived coordinator.
    @Test(.enabled(if: hasProc, "reads /proc"))
    func aFinishedJobLeavesNoZombie() async throws {
        let bench = try Bench()
        defer { bench.dir.remove() }
        var text = "workflows:\n"
        // Each job prints its process group: the wrapper's pid (it runs in its own session).
        for i in 0..<24 { text += "  - name: j\(i)\n    commands: [\"cut -d' ' -f5 /proc/$$/stat\"]\n" }
        text += "  - name: all\n    depends-on: [\((0..<24).map { "j\($0)" }.joined(separator: ", "))]\n    commands: [\"true\"]\n"
        let events = EventLog()
        let prepared = try await bench.prepare(text, target: "all", maxJobs: 6, sink: events)
        #expect(await prepared.coordinator.execute().status == .done)
        try await Task.sleep(nanoseconds: 1_000_000_000)
        let groups = (0..<24).compactMap { pid_t(events.output(of: "j\($0)").trimmingCharacters(in: .whitespacesAndNewlines)) }
        #expect(groups.count == 24)
        let zombies = groups.flatMap { processStates(group: $0) }.filter { $0.state == "Z" && $0.parent == getpid() }
        #expect(zombies.isEmpty, "zombie wrappers: \(zombies)")
    }

    /// Where, in a run, a job stands that fits no runner of the pool.
    enum Misfit: String, Sendable, CaseIterable {
        /// The only job ready at the start.
        case alone
        /// Ready at the start beside a job that runs.
        case besideAnother
        /// Ready once a job that runs is done.
        case afterAnother

        var workflows: String {
            let deps = self == .afterAnother ? "[small]" : "[]"
            return """
            workflows:
              - name: small
                commands: ["true"]
              - name: huge
                depends-on: \(deps)
                commands: ["true"]
                resources: {gpu: 1000}
              - name: both
                depends-on: [huge, small]
                commands: ["true"]
            """
        }
        var target: String { self == .alone ? "huge" : "both" }
    }

    /// A job that fits no runner of the pool: `checkFit` guards `submit`, but `dstack attach` builds its pool from
    /// the runners reachable now, so the only GPU runner going away leaves such a job.
    @Test(arguments: Misfit.allCases)
    func aJobNoRunnerOfThePoolFitsStillEndsTheRun(_ misfit: Misfit) async throws {
        let bench = try Bench("nofit\(misfit.rawValue)")
        defer { bench.dir.remove() }
        let prepared = try await bench.prepare(misfit.workflows, target: misfit.target)
        let coordinator = prepared.coordinator
        let outcome = Outcome()
        let execution = Task {
            let final = await coordinator.execute()
            await outcome.set(final)
        }
        let ended = await eventually(within: 10) { await outcome.value != nil }
        if !ended { await coordinator.requestStop() }
        await execution.value
        let final = try #require(await outcome.value)
        #expect(ended, "execute() was still going after 10 s")
        #expect(final.status == .failed, "run \(final.status)")
        #expect(final.job("huge")?.status == .failed, "huge \(String(describing: final.job("huge")?.status))")
        if misfit != .alone { #expect(final.job("small")?.status == .done) }
    }
}

/// Where a background `execute()` leaves its result.
actor Outcome {
    var value: RunRecord?
    func set(_ record: RunRecord) { value = record }
}
