import DstackModel
import DstackRunners
import DstackStorage
import Foundation

/// What `dstack run` asks for.
public struct RunRequest: Sendable {
    /// The workflow to run.
    public var workflow: String
    /// Variables given on the command line.
    public var overrides: [String: String]
    /// Rerun every job even when its result is stored.
    public var noCache: Bool
    /// Keep job directories even on success.
    public var keep: Bool
    /// A tag to give the run once it is done.
    public var tag: String?
    /// How many times a job whose runner is lost is tried again elsewhere.
    public var retries: Int = 2
    /// The command line that asked for the run, recorded with it (secret values in it are masked).
    public var commandLine: [String] = []

    /// Creates a request.
    public init(workflow: String, overrides: [String: String] = [:], noCache: Bool = false, keep: Bool = false, tag: String? = nil) {
        self.workflow = workflow
        self.overrides = overrides
        self.noCache = noCache
        self.keep = keep
        self.tag = tag
    }
}

/// A run that is recorded in storage and ready to be coordinated.
public struct SubmittedRun: Sendable {
    /// The run record as created.
    public var record: RunRecord
    /// Its plan.
    public var plan: Plan
    /// The code it runs.
    public var snapshot: Snapshot
    /// The runners found reachable when it was submitted.
    public var pool: [PoolMember]
    /// Code syncs begun at submission, by runner.
    var presyncs: [String: Task<Int, Error>] = [:]
    /// What the submission found worth saying about the pool (runners unreachable).
    var notices: [String] = []
}

extension Workspace {
    /// Whether a finished job's results are in storage: its manifest, for a job that declares artifacts; nothing to
    /// look for, for one that declares none (no manifest is stored for it).
    func resultsStored(artifacts: [String], cacheKey: String) async throws -> Bool {
        if artifacts.isEmpty { return true }
        return try await store.manifest(cacheKey) != nil
    }

    /// Resolves every `workflow:tag` dependency of `closure` to the tagged run's stored results.
    func resolveTags(_ closure: [Workflow]) async throws -> [String: TagDependency] {
        var out: [String: TagDependency] = [:]
        for wf in closure {
            for dep in wf.dependsOn {
                guard let tag = dep.tag, out[dep.spelled] == nil else { continue }
                guard let record = try await store.tag(tag), let run = try await store.loadRun(record.run),
                      let job = run.jobs.first(where: { $0.workflow == dep.workflow && $0.status.isSuccess }),
                      try await resultsStored(artifacts: job.artifacts, cacheKey: job.cacheKey) else { continue }
                out[dep.spelled] = TagDependency(workflow: dep.workflow, tag: tag, run: run.name,
                                                 cacheKey: job.cacheKey, artifacts: job.artifacts)
            }
        }
        return out
    }

    /// Plans `request` for a run called `runName`, with cache hits marked (unless `noCache`).
    public func plan(_ request: RunRequest, project: Project, snapshot: Snapshot, runName: String) async throws -> Plan {
        let planner = Planner(project: project)
        let closure = try planner.closure(of: request.workflow)
        let tags = try await resolveTags(closure)
        var plan = try planner.plan(request.workflow, overrides: request.overrides, snapshotId: snapshot.id,
                                    runName: runName, tags: tags)
        if !request.noCache {
            let cached = try await store.cachedKeys()
            for i in plan.jobs.indices where cached.contains(plan.jobs[i].cacheKey) {
                // A job that declares artifacts is reused only with its manifest; one that declares none stores
                // no manifest (older dstacks stored an empty one), its cache entry says it finished.
                if try await resultsStored(artifacts: plan.jobs[i].artifacts, cacheKey: plan.jobs[i].cacheKey),
                   let entry = try await store.cacheEntry(plan.jobs[i].cacheKey) {
                    plan.jobs[i].cached = entry
                }
            }
        }
        return plan
    }

    /// The jump hosts `runner` is reached through, in order (ProxyJump); empty for a direct or local runner.
    public func via(_ runner: any Runner) -> [String] {
        (runner as? SSHRunner)?.config.ssh.via ?? []
    }

    /// How many runners are probed at once: each holds a socket and a session thread while it connects.
    static let probeConcurrency = 128

    /// Probes the runners, `probeConcurrency` at a time; an unreachable one never holds up the others past its
    /// connect timeout.
    public func probePool() async -> [(runner: any Runner, result: Result<RunnerInfo, any Error>)] {
        // Each child hands back a reference: with the Result itself as the child's value (a tuple of an index
        // and Result<RunnerInfo, any Error>), Swift 6.3.1 release builds read garbage and trapped.
        let outcomes = runners.map { _ in LockedValue<Result<RunnerInfo, any Error>>(.failure(CoreError.infrastructure("not probed"))) }
        let runners = self.runners
        await BoundedConcurrency.forEach(count: runners.count, limit: Self.probeConcurrency) { index in
            do { outcomes[index].set(.success(try await runners[index].probe())) } catch { outcomes[index].set(.failure(error)) }
        }
        return zip(runners, outcomes).map { ($0, $1.get()) }
    }

    /// The reachable runners with what they have; every runner unreachable is an infrastructure error.
    public func reachablePool(sink: (any RunEventSink)? = nil) async throws -> [PoolMember] {
        let (members, notices) = try await reachablePoolAndNotices()
        for notice in notices { sink?.emit(.notice(notice)) }
        return members
    }

    /// The reachable runners, and a notice for each unreachable one.
    func reachablePoolAndNotices() async throws -> ([PoolMember], [String]) {
        var members: [PoolMember] = []
        var problems: [String] = []
        var notices: [String] = []
        for (runner, result) in await probePool() {
            switch result {
            case .success(let info): members.append(PoolMember(runner: runner, info: info))
            case .failure(let error):
                problems.append("\(runner.name): \(error)")
                notices.append("runner \(runner.name) is unreachable, its jobs go elsewhere: \(error)")
            }
        }
        guard !members.isEmpty else {
            throw CoreError.infrastructure("every runner is unreachable:\n  " + problems.joined(separator: "\n  ")
                + "\ncheck the hosts inventory and that the machines are up ('dstack runners' probes them)")
        }
        return (members, notices)
    }

    /// Checks that some runner could ever run each job; a job that none can ever fit is a configuration error.
    func checkFit(_ plan: Plan, project: Project, pool: [PoolMember]) async throws {
        for job in plan.jobs where job.cached == nil {
            let misfits = pool.map { ($0.info.name, job.misfit(on: $0.info)) }
            if let first = misfits.first, misfits.allSatisfy({ $0.1 != nil }) {
                let detail = misfits.count == 1 ? "on runner '\(first.0)'" : "on any of \(misfits.map { "'\($0.0)'" }.joined(separator: ", "))"
                let message = "no runner can ever fit job '\(job.workflow)': it needs \(first.1!) \(detail); lower its resources or add a runner that has them"
                if let wf = project.workflow(named: job.workflow) {
                    throw ConfigError([project.sources.diagnostic(wf.name, message)])
                }
                throw ConfigError(message: message)
            }
        }
    }

    /// Loads, snapshots, plans and records a new run; nothing runs yet.
    public func submit(_ request: RunRequest) async throws -> SubmittedRun {
        let project = try loadProject()
        // A secret that is not set stops everything before anything is taken or stored.
        let secrets = try secretValues(for: try Planner(project: project).closure(of: request.workflow), project: project)
        let everySecret = ((try? secretStore.values(project: projectName)) ?? [:]).map(\.value)
        let provenance = Task { [root] in
            await Provenance.collect(root: root, command: request.commandLine, secrets: everySecret + secrets.values)
        }
        // Runners are connected and probed while the snapshot is taken: each takes about as long as the other.
        let probing = Task { try await self.reachablePoolAndNotices() }
        let snapshot: Snapshot
        do {
            snapshot = try await Snapshotter.snapshot(root: root, cache: snapshotCache)
        } catch {
            probing.cancel()
            throw error
        }
        // The code's contents are captured now, while the run is planned and recorded: edits made after
        // 'dstack run' returns never reach the run.
        let localRunner = self.localRunner
        let capturing = Task { try await localRunner.sync(snapshot) }
        let (pool, notices) = try await probing.value
        // Runners this machine synced before get the changed files now, while the run is planned and recorded:
        // after an edit, that is one small transfer each. Others are synced when a job first goes there.
        var presyncs: [String: Task<Int, Error>] = [:]
        for member in pool where member.runner.syncedBefore {
            let runner = member.runner
            presyncs[member.info.name] = Task {
                _ = try await capturing.value  // sent from the captured contents, never the working tree
                return try await runner.sync(snapshot)
            }
        }
        var generator = SystemRandomNumberGenerator()
        let stem = RunNames.stem(using: &generator)
        let existing = try await store.runNames().filter { $0.hasPrefix(stem + "-") }
        var number = (existing.compactMap { Int($0.dropFirst(stem.count + 1)) }.max() ?? 0) + 1
        while true {
            let name = "\(stem)-\(number)"
            var plan = try await self.plan(request, project: project, snapshot: snapshot, runName: name)
            for i in plan.jobs.indices where !plan.jobs[i].launch.secretNames.isEmpty {
                plan.jobs[i].launch.secretValues = SecretValues(secrets.filter { plan.jobs[i].launch.secretNames.contains($0.key) })
            }
            try await checkFit(plan, project: project, pool: pool)
            var record = RunRecord(name: name, project: projectName, workflow: request.workflow,
                                   overrides: request.overrides, snapshotId: snapshot.id, submittedAt: Date(),
                                   jobs: plan.jobs.map { job in
                                       var r = JobRecord(id: job.id, workflow: job.workflow, cacheKey: job.cacheKey,
                                                         dependsOn: job.dependsOn.map { "\(name)-\($0)" },
                                                         tagDependencies: job.tagDependencies, artifacts: job.artifacts)
                                       r.cachedFrom = job.cached
                                       return r
                                   }, keep: request.keep)
            record.tagWhenDone = request.tag
            record.retries = request.retries
            record.provenance = await provenance.value
            let owner = "\(ProcessInfo.processInfo.hostName):\(getpid())"
            guard try await store.claimRunName(name, by: owner) else {
                number += 1  // another coordinator took this name a moment ago
                continue
            }
            // Inputs before the record: a run record without them could not be coordinated by anyone.
            let encoder = RecordCoding.encoder(pretty: false)
            try await store.saveRunInputs(name, plan: try encoder.encode(plan), snapshot: try encoder.encode(snapshot))
            try await store.saveRun(record)
            _ = try await capturing.value
            return SubmittedRun(record: record, plan: plan, snapshot: snapshot, pool: pool, presyncs: presyncs, notices: notices)
        }
    }

    /// Makes this process the run's only coordinator: two `attach` at once, one wins and the other is told who
    /// holds the run. A lease whose holder is dead (its process is gone, or its heartbeat is 30 s old) is taken over,
    /// by one process only however many find it dead at once (`RunStore.takeOverLease`).
    func takeLease(_ record: RunRecord) async throws {
        let me = CoordinatorInfo(host: ProcessInfo.processInfo.hostName, pid: getpid(), heartbeatAt: Date())
        for _ in 0..<3 {
            if try await store.takeLease(record.name, me) { return }
            // Read what is stored now, bytes and all: a takeover replaces exactly this lease or nothing.
            guard let lease = try await store.lease(record.name) else { continue }
            if let holder = lease.holder {
                let current = try await store.loadRun(record.name) ?? record
                var probe = current
                probe.coordinator = current.coordinator?.pid == holder.pid ? current.coordinator : holder
                guard coordinatorGone(probe) else {
                    throw CoreError.invalid("run '\(record.name)' is coordinated by pid \(holder.pid) on \(holder.host); follow it with 'dstack logs -f \(record.name)'")
                }
            }
            if try await store.takeOverLease(record.name, from: lease, me) { return }
            // Another process took it over first; it is alive, which the next look shows.
        }
        throw CoreError.infrastructure("cannot take the coordinator lease of run '\(record.name)'; try again")
    }

    /// Coordinates a recorded run until it finishes (the work behind `dstack run` and `dstack attach`).
    public func coordinate(_ name: String, sink: any RunEventSink,
                           onCoordinator: (@Sendable (Coordinator) async -> Void)? = nil) async throws -> RunRecord {
        guard var record = try await store.loadRun(name) else {
            throw CoreError.notFound("no run named '\(name)' in \(store.storage.location); 'dstack ps -a' lists runs")
        }
        if record.status.isFinished { return record }
        guard let inputs = try await store.loadRunInputs(name) else {
            throw CoreError.notFound("run '\(name)' has no stored plan; it cannot be coordinated (delete it with 'dstack delete \(name)')")
        }
        let decoder = RecordCoding.decoder()
        var plan = try decoder.decode(Plan.self, from: inputs.plan)
        try fillSecrets(&plan, run: name)
        let snapshot = try decoder.decode(Snapshot.self, from: inputs.snapshot)
        try await takeLease(record)
        // run.json is written at most twice a second; each job.json on every change. A coordinator killed between
        // the two left the newer state in job.json: start from that.
        for i in record.jobs.indices {
            if let job = try await store.loadJob(run: name, workflow: record.jobs[i].workflow) { record.jobs[i] = job }
        }
        let pool: [PoolMember]
        do {
            pool = try await reachablePool(sink: sink)
        } catch {
            try? await store.dropLease(name)
            throw error
        }
        return try await execute(record, plan: plan, snapshot: snapshot, pool: pool, sink: sink, onCoordinator: onCoordinator)
    }

    /// Coordinates a run just submitted by this process: its records, inputs and pool are at hand, so nothing is
    /// read back from storage nor probed again (that took a good part of a short run's start).
    public func coordinate(_ submitted: SubmittedRun, sink: any RunEventSink,
                           onCoordinator: (@Sendable (Coordinator) async -> Void)? = nil) async throws -> RunRecord {
        try await takeLease(submitted.record)
        for notice in submitted.notices { sink.emit(.notice(notice)) }
        return try await execute(submitted.record, plan: submitted.plan, snapshot: submitted.snapshot, pool: submitted.pool,
                                 presyncs: submitted.presyncs, sink: sink, onCoordinator: onCoordinator)
    }

    /// Runs the coordinator over `record` (whose lease this process holds), then drops the lease and tags it.
    private func execute(_ record: RunRecord, plan: Plan, snapshot: Snapshot, pool: [PoolMember],
                         presyncs: [String: Task<Int, Error>] = [:], sink: any RunEventSink,
                         onCoordinator: (@Sendable (Coordinator) async -> Void)?) async throws -> RunRecord {
        let name = record.name
        let coordinator = Coordinator(store: store, pool: pool, snapshot: snapshot, plan: plan, run: record, sink: sink,
                                      presyncs: presyncs)
        await onCoordinator?(coordinator)
        let final = await coordinator.execute()
        try? await store.dropLease(name)
        if final.status == .done, let tag = final.tagWhenDone {
            try await store.saveTag(TagRecord(tag: tag, run: final.name, createdAt: Date()))
        }
        return final
    }
}
