@testable import DstackCore
import DstackModel
import DstackStorage
import Foundation
import Testing

/// Two `attach` that both find a dead coordinator cannot both take the run (issue 16, point 7).
@Suite("Lease race")
struct LeaseRaceTests {
    /// The interleaving that let two processes both win is shown deterministically by `raceForADeadLease`; this
    /// checks the whole path through `Workspace.takeLease`.
    @Test func attachTakesOverADeadCoordinatorsLeaseOnceWhateverTheNumberOfCallers() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        try scratch.write("project/.dstack/workflows.yaml", "workflows:\n  - name: a\n    commands: [echo]\n")
        let workspace = try Workspace.open(Workspace.Options(directory: scratch.at("project").path, storage: scratch.at("storage").path,
                                                             environment: ["HOME": scratch.url.path]))
        // A coordinator on this host whose process is gone.
        let finished = Process()
        finished.executableURL = URL(fileURLWithPath: "/bin/true")
        try finished.run()
        finished.waitUntilExit()
        let dead = CoordinatorInfo(host: ProcessInfo.processInfo.hostName, pid: finished.processIdentifier, heartbeatAt: Date())
        var record = RunRecord(name: "r-r-1", project: workspace.projectName, workflow: "a", overrides: [:], snapshotId: "s",
                               submittedAt: Date(), jobs: [])
        record.coordinator = dead
        try await workspace.store.saveRun(record)
        #expect(try await workspace.store.takeLease("r-r-1", dead))
        let stored = record

        // Every racer is this process, so once one has taken the lease the others see a live holder.
        let outcomes = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<8 {
                group.addTask { (try? await workspace.takeLease(stored)) != nil }
            }
            var taken = 0
            for await won in group where won { taken += 1 }
            return taken
        }
        #expect(outcomes == 1, "\(outcomes) attaches took the run")
        #expect(try await workspace.store.lease("r-r-1")?.holder?.pid == getpid())
    }
}
