import DstackModel
import DstackStorage
import Foundation
import Logging
import Testing

@testable import DstackCore

/// The record writer: a change somebody waits for is written at once and alone; one nobody waits for (a job that
/// started running) settles first, so a short job's `running` is merged into its end.
@Suite struct RecordWriterTests {
    func fixture(_ name: String = #function) throws -> (Scratch, RunStore, RunRecord) {
        let dir = try Scratch(name)
        let store = RunStore(storage: try DirectoryStorage(root: dir.at("storage")), project: "proj")
        let jobs = ["a", "b"].map { JobRecord(id: "r-1-\($0)", workflow: $0, cacheKey: "k\($0)", dependsOn: [], artifacts: []) }
        let run = RunRecord(name: "r-1", project: "proj", workflow: "b", overrides: [:], snapshotId: "s",
                            submittedAt: Date(), jobs: jobs)
        return (dir, store, run)
    }

    @Test func aSettlingChangeWaitsAndIsNotCarriedByAnotherJobsSave() async throws {
        let (dir, store, start) = try fixture()
        defer { dir.remove() }
        let writer = RecordWriter(store: store, sink: SilentSink(), logger: Logger(label: "test"), settle: .seconds(30))
        var run = start
        run.jobs[0].status = .running
        writer.submit(run, jobs: ["a"], force: false)
        run.jobs[1].status = .preparing
        #expect(await writer.save(run, jobs: ["b"], force: false))
        #expect(try await store.loadJob(run: "r-1", workflow: "b")?.status == .preparing)
        #expect(try await store.loadJob(run: "r-1", workflow: "a") == nil, "a's running state was written with b's save")
        // Its own next save writes the newest state, once.
        run.jobs[0].status = .done
        #expect(await writer.save(run, jobs: ["a"], force: false))
        #expect(try await store.loadJob(run: "r-1", workflow: "a")?.status == .done)
    }

    @Test func aSettlingChangeIsWrittenWithinTheSettleTimeOrWhenForced() async throws {
        let (dir, store, start) = try fixture()
        defer { dir.remove() }
        let writer = RecordWriter(store: store, sink: SilentSink(), logger: Logger(label: "test"), settle: .milliseconds(100))
        var run = start
        run.jobs[0].status = .running
        writer.submit(run, jobs: ["a"], force: false)
        #expect(await eventually(within: 10) { (try? await store.loadJob(run: "r-1", workflow: "a"))??.status == .running })
        // A forced save (the heartbeat, the end of the run) writes every settling job.
        let slow = RecordWriter(store: store, sink: SilentSink(), logger: Logger(label: "test"), settle: .seconds(30))
        run.jobs[1].status = .running
        slow.submit(run, jobs: ["b"], force: false)
        #expect(await slow.save(run, jobs: [], force: true))
        #expect(try await store.loadJob(run: "r-1", workflow: "b")?.status == .running)
    }
}
