import DstackCore
import DstackModel
import DstackRunners
import DstackStorage
import Foundation
import Testing

/// The coordinator's loop against in-memory runners: retries, lost jobs, busy and unreachable runners and stops,
/// with jobs that do exactly what they are told and no process anywhere.
@Suite struct MemoryRunnerTests {
    static let workflows = """
    workflows:
      - name: prepare
        commands: [echo prepare]
        artifacts: [data]
      - name: train
        depends-on: [prepare]
        commands: [echo train]
    """

    /// Plans `train` with the bench's storage and runs it on `runners`; returns the final record.
    func run(_ runners: [MemoryRunner], bench: Bench, retries: Int = 2,
             whileRunning: (@Sendable (Coordinator) async -> Void)? = nil) async throws -> RunRecord {
        let prepared = try await bench.prepare(Self.workflows, target: "train")
        var record = prepared.record
        record.retries = retries
        var pool: [PoolMember] = []
        for runner in runners { pool.append(PoolMember(runner: runner, info: try await runner.probe())) }
        let snapshot = try await Snapshotter.snapshot(root: bench.dir.at("project"))
        let coordinator = Coordinator(store: bench.store, pool: pool, snapshot: snapshot, plan: prepared.plan,
                                      run: record, sink: SilentSink())
        async let final = coordinator.execute()
        await whileRunning?(coordinator)
        return await final
    }

    @Test func aJobWhoseProcessVanishesIsTriedAgainAndItsAttemptsSaySo() async throws {
        let bench = try Bench()
        defer { bench.dir.remove() }
        let runner = MemoryRunner(name: "m1", behaviors: ["test-run-1-train": [.vanish]])
        let final = try await run([runner], bench: bench)
        #expect(final.status == .done)
        let train = try #require(final.job("train"))
        #expect(train.status == .done)
        #expect(train.attempts.count == 2)
        #expect(train.attempts.first?.reason?.hasPrefix("lost: its process on m1 vanished") == true, "\(train.attempts)")
        #expect(await runner.starts.map(\.attempt) == [1, 1, 2], "prepare once, train twice as attempts 1 and 2")
    }

    @Test func aSlotGoesToTheNextJobWhileTheResultsOfTheLastAreCollected() async throws {
        // One slot: `a` ends and its artifacts are collected (held open here, as a large upload would be); `b` must
        // take the slot meanwhile, since the runner freed it when `a`'s commands ended.
        let bench = try Bench()
        defer { bench.dir.remove() }
        let prepared = try await bench.prepare("""
        workflows:
          - name: a
            commands: [echo a]
            artifacts: [data]
          - name: b
            commands: [echo b]
          - name: all
            depends-on: [a, b]
            commands: [echo all]
        """, target: "all")
        let runner = MemoryRunner(name: "m1", slots: 1)
        await runner.closeArtifacts(of: "test-run-1-a")
        let snapshot = try await Snapshotter.snapshot(root: bench.dir.at("project"))
        let coordinator = Coordinator(store: bench.store, pool: [PoolMember(runner: runner, info: try await runner.probe())],
                                      snapshot: snapshot, plan: prepared.plan, run: prepared.record, sink: SilentSink())
        async let final = coordinator.execute()
        #expect(await eventually(within: 10) { await runner.collecting.contains("test-run-1-a") })
        let bStarted = await eventually(within: 10) { await runner.starts.contains { $0.job == "test-run-1-b" } }
        #expect(bStarted, "b waited for a's artifacts")
        #expect(await runner.collecting.contains("test-run-1-a"))
        await runner.openArtifacts(of: "test-run-1-a")
        let record = await final
        #expect(record.status == .done)
        #expect(await runner.starts.map(\.job) == ["test-run-1-a", "test-run-1-b", "test-run-1-all"])
    }

    @Test func aJobLostOnOneRunnerGoesToAnother() async throws {
        let bench = try Bench()
        defer { bench.dir.remove() }
        let flaky = MemoryRunner(name: "flaky", slots: 1, behaviors: ["test-run-1-train": [.disconnect, .disconnect, .disconnect]])
        let steady = MemoryRunner(name: "steady", slots: 1)
        let final = try await run([flaky, steady], bench: bench)
        #expect(final.job("train")?.status == .done)
        #expect(final.job("train")?.attempts.map(\.runner).last == "steady")
    }

    @Test func lostEveryTimeFailsTheJobAfterItsRetries() async throws {
        let bench = try Bench()
        defer { bench.dir.remove() }
        let runner = MemoryRunner(name: "m1", behaviors: ["test-run-1-train": [.vanish, .vanish, .vanish]])
        let final = try await run([runner], bench: bench, retries: 1)
        let train = try #require(final.job("train"))
        #expect(final.status == .failed)
        #expect(train.status == .failed)
        #expect(train.attempts.count == 2)
        #expect(train.reason?.hasPrefix("runner lost after 2 attempts") == true, "\(train.reason ?? "")")
    }

    @Test func anExitStatusIsAFailureNotALostJob() async throws {
        let bench = try Bench()
        defer { bench.dir.remove() }
        // 137: the OOM killer. The job exited with a status: it failed, and is not tried again.
        let runner = MemoryRunner(name: "m1", behaviors: ["test-run-1-train": [.exit(137, output: "Killed\n")]])
        let final = try await run([runner], bench: bench)
        let train = try #require(final.job("train"))
        #expect(train.status == .failed)
        #expect(train.exitCode == 137)
        #expect(train.attempts.count == 1)
        #expect(await runner.starts.count == 2)
    }

    @Test func aBusyRunnerIsAskedAgainAndTheRefusalIsNoAttempt() async throws {
        let bench = try Bench()
        defer { bench.dir.remove() }
        let runner = MemoryRunner(name: "m1", behaviors: ["test-run-1-prepare": [.busy, .busy]])
        let final = try await run([runner], bench: bench)
        #expect(final.status == .done)
        #expect(final.job("prepare")?.attempts.count == 1)
        #expect(await runner.starts.filter { $0.job == "test-run-1-prepare" }.count == 3)
    }

    @Test func anUnreachableRunnersJobGoesToAnotherRunner() async throws {
        let bench = try Bench()
        defer { bench.dir.remove() }
        let down = MemoryRunner(name: "down", behaviors: ["test-run-1-prepare": [.unreachable]])
        let up = MemoryRunner(name: "up")
        let final = try await run([down, up], bench: bench)
        #expect(final.status == .done)
        #expect(final.job("prepare")?.runner == "up")
        #expect(final.job("prepare")?.attempts.count == 1)
    }

    @Test func stoppingStopsTheRunningJobAndSkipsNothingElseSilently() async throws {
        let bench = try Bench()
        defer { bench.dir.remove() }
        let runner = MemoryRunner(name: "m1", behaviors: ["test-run-1-prepare": [.runUntilStopped]])
        let final = try await run([runner], bench: bench) { coordinator in
            while await runner.held.isEmpty { await Task.yield() }
            await coordinator.requestStop()
        }
        #expect(final.status == .stopped)
        #expect(final.job("prepare")?.status == .stopped)
        #expect(final.job("train")?.status == .stopped)
        #expect(Set(await runner.stops) == ["test-run-1-prepare"])
    }
}
