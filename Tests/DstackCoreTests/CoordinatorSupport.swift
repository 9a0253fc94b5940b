import DstackCore
import DstackModel
import DstackRunners
import DstackStorage
import Foundation
import Testing

/// A project directory, a directory storage and a local runner, all inside one scratch directory.
struct Bench {
    let dir: Scratch
    let store: RunStore
    let runner: LocalRunner

    init(_ name: String = #function) throws {
        dir = try Scratch(name)
        try FileManager.default.createDirectory(at: dir.at("project"), withIntermediateDirectories: true)
        store = RunStore(storage: try DirectoryStorage(root: dir.at("storage")), project: "proj")
        runner = LocalRunner(baseDirectory: dir.at("runner"), maxJobs: 8)
    }

    /// A run planned from `workflows`, recorded in storage the way `Workspace.submit` records it.
    struct Prepared {
        let coordinator: Coordinator
        let plan: Plan
        let record: RunRecord
    }

    /// Plans `target`, claims and saves the run, and returns a coordinator for it over a pool of one local runner
    /// that runs `maxJobs` jobs at once.
    /// `cached` marks jobs as reusing an earlier run's result (what `Workspace.plan` does from the cache index).
    func prepare(_ workflows: String, variables: String? = nil, target: String, run: String = "test-run-1",
                 maxJobs: Int = 4, cached: [String: CacheEntry] = [:], sink: any RunEventSink = SilentSink()) async throws -> Prepared {
        let project = try loadProject(workflows, variables: variables)
        let snapshot = try await Snapshotter.snapshot(root: dir.at("project"))
        var plan = try Planner(project: project).plan(target, overrides: [:], snapshotId: snapshot.id, runName: run, tags: [:])
        for i in plan.jobs.indices { plan.jobs[i].cached = cached[plan.jobs[i].workflow] }
        try #require(try await store.claimRunName(run, by: "tests"))
        let record = RunRecord(name: run, project: "proj", workflow: target, overrides: [:], snapshotId: snapshot.id,
                               submittedAt: Date(), jobs: plan.jobs.map { job in
                                   var r = JobRecord(id: job.id, workflow: job.workflow, cacheKey: job.cacheKey,
                                                     dependsOn: job.dependsOn.map { "\(run)-\($0)" }, artifacts: job.artifacts)
                                   r.cachedFrom = job.cached
                                   return r
                               })
        try await store.saveRun(record)
        _ = try await runner.sync(snapshot)
        // The runner's slots come from the pool member's probed info: maxJobs caps them here.
        var info = try await runner.probe()
        info.maxJobs = maxJobs
        let coordinator = Coordinator(store: store, pool: [PoolMember(runner: runner, info: info)], snapshot: snapshot,
                                      plan: plan, run: record, sink: sink)
        return Prepared(coordinator: coordinator, plan: plan, record: record)
    }
}

extension RunRecord {
    /// The record of the job running `workflow`.
    func job(_ workflow: String) -> JobRecord? { jobs.first { $0.workflow == workflow } }
}
