import DstackModel
import DstackRunners
import DstackSSH
import DstackStorage
import Foundation
import Logging

/// A runner of the pool with what its probe found.
public struct PoolMember: Sendable {
    /// The runner.
    public var runner: any Runner
    /// What it has.
    public var info: RunnerInfo

    /// Creates a pool member.
    public init(runner: any Runner, info: RunnerInfo) {
        self.runner = runner
        self.info = info
    }
}

/// Executes one run: dispatches ready jobs to runners that fit and have free slots, follows their logs into
/// storage, stores artifacts, and keeps the run record current. A job is `done` only after its artifacts, their
/// manifest and its cache entry are stored. Slots and GPUs are locked on the runners themselves, so other
/// coordinators sharing the pool are respected.
public actor Coordinator {
    let store: RunStore
    let pool: [PoolMember]
    let snapshot: Snapshot
    let plan: Plan
    let sink: any RunEventSink
    let logger: Logger
    let owner: String
    /// The run's name (fixed; `run` itself is actor state).
    let runName: String
    /// Each job's position in `run.jobs` (which never reorders), and each planned job's cache key, by workflow:
    /// looked up for every job at every dispatch round, so linear scans made large runs quadratic.
    let positions: [String: Int]
    let cacheKeys: [String: String]
    var run: RunRecord
    var stopRequested = false
    /// Whether a stop keeps the stopped jobs' artifacts (`dstack stop` without `-x`, Ctrl-C).
    var collectOnStop = true
    /// Jobs holding a slot, by job id, with the runner that holds them.
    var running: [String: any Runner] = [:]
    /// Jobs this coordinator has in flight per runner.
    var active: [String: Int] = [:]
    /// Runners that were full at the last try (another coordinator), and until when to leave them be.
    var busyUntil: [String: Date] = [:]
    /// Directories of finished jobs to remove, by runner: passed along with the next start there.
    var pendingCleanup: [String: [String]] = [:]
    /// Code syncs `submit` began, to runners synced before (so a re-sync after an edit is under way already).
    var presyncs: [String: Task<Int, Error>]
    /// The code sync to each runner, done once per runner by the first job that goes there.
    var syncs: [String: Task<Int, Error>] = [:]
    var saving = false
    var version = 0
    var savedVersion = 0
    var dirtyJobs: Set<String> = []
    var runWrittenAt = Date.distantPast

    /// Creates a coordinator for `run`, whose jobs are described by `plan`, on the reachable runners of `pool`.
    public init(store: RunStore, pool: [PoolMember], snapshot: Snapshot, plan: Plan, run: RunRecord,
                sink: any RunEventSink, presyncs: [String: Task<Int, Error>] = [:],
                logger: Logger = Logger(label: "dstack.coordinator")) {
        self.presyncs = presyncs
        self.store = store
        self.pool = pool
        self.snapshot = snapshot
        self.plan = plan
        self.run = run
        self.runName = run.name
        self.positions = Dictionary(run.jobs.enumerated().map { ($1.workflow, $0) }, uniquingKeysWith: { a, _ in a })
        self.cacheKeys = Dictionary(plan.jobs.map { ($0.workflow, $0.cacheKey) }, uniquingKeysWith: { a, _ in a })
        self.sink = sink
        self.logger = logger
        self.owner = "\(ProcessInfo.processInfo.hostName):\(getpid())"
    }

    /// Asks every running job to stop; jobs not started yet are marked stopped.
    public func requestStop(collect: Bool = true) async {
        guard !stopRequested else { return }
        stopRequested = true
        collectOnStop = collect
        sink.emit(.notice("stopping run \(run.name)"))
        for (jobId, runner) in running {
            try? await runner.stop(jobId: jobId)
        }
    }

    /// Runs every unfinished job of the run and returns the final record.
    public func execute() async -> RunRecord {
        run.status = .running
        run.coordinator = CoordinatorInfo(host: ProcessInfo.processInfo.hostName, pid: getpid(), heartbeatAt: Date())
        for job in plan.jobs {
            if let entry = job.cached, index(job.workflow).map({ run.jobs[$0].status == .submitted }) == true {
                update(job.workflow) { $0.status = .cached; $0.cachedFrom = entry; $0.finishedAt = Date() }
                sink.emit(.cached(workflow: job.workflow, from: entry))
            }
        }
        await persist(force: true)

        let heartbeat = Task { [weak self] in
            while !Task.isCancelled {
                do { try await Task.sleep(nanoseconds: 1_000_000_000) } catch { break }
                await self?.beat()
            }
        }
        for member in pool where presyncs[member.info.name] != nil {
            startSync(member)
        }
        await withTaskGroup(of: Void.self) { group in
            resumeInFlight(&group)
            startReady(&group)
            while await group.next() != nil {
                startReady(&group)
                // Jobs wait for slots other coordinators hold: look again shortly.
                if group.isEmpty, waitingForSlots() {
                    group.addTask { try? await Task.sleep(nanoseconds: 500_000_000) }
                }
            }
        }
        heartbeat.cancel()
        await heartbeat.value  // no heartbeat may write run.json after the final record below
        for member in pool {
            if let ids = pendingCleanup.removeValue(forKey: member.info.name), !ids.isEmpty {
                try? await member.runner.cleanup(jobIds: ids)
            }
        }
        if stopRequested {
            for job in run.jobs where !job.status.isFinished {
                update(job.workflow) { $0.status = .stopped; $0.reason = "the run was stopped before it started" }
            }
        }
        run.status = RunState.of(run.jobs.map(\.status), stopRequested: stopRequested)
        run.finishedAt = Date()
        run.coordinator = nil
        await persist(force: true)
        return run
    }

    /// Once a second: refresh the heartbeat and look for a stop asked by `dstack stop`.
    private func beat() async {
        run.coordinator?.heartbeatAt = Date()
        if !stopRequested, let collect = (try? await store.stopRequested(run.name)) ?? nil {
            await requestStop(collect: collect)
        }
        await persist(force: true)
    }

    private func index(_ workflow: String) -> Int? {
        positions[workflow]
    }

    private func record(_ workflow: String) -> JobRecord? {
        positions[workflow].map { run.jobs[$0] }
    }

    private func update(_ workflow: String, _ change: (inout JobRecord) -> Void) {
        guard let i = index(workflow) else { return }
        change(&run.jobs[i])
        dirtyJobs.insert(workflow)
    }

    /// Writes the changed job records, and the run record when `force` or half a second has passed (the heartbeat
    /// forces it every second), so a 200-job run does not rewrite a large `run.json` for every state change.
    /// Returns once a write that includes the current state is done; writes never go out of order.
    private func persist(force: Bool = false) async {
        version += 1
        let mine = version
        while savedVersion < mine {
            if saving {
                try? await Task.sleep(nanoseconds: 1_000_000)
                continue
            }
            saving = true
            let target = version
            let snapshot = run
            let jobs = dirtyJobs
            dirtyJobs = []
            do {
                for job in snapshot.jobs where jobs.contains(job.workflow) {
                    try await store.saveJob(job, run: snapshot.name)
                }
                if force || Date().timeIntervalSince(runWrittenAt) >= 0.5 {
                    runWrittenAt = Date()
                    try await store.saveRun(snapshot)
                }
            } catch {
                logger.error("cannot save run record: \(error)")
                sink.emit(.notice("warning: cannot save the run record: \(error)"))
            }
            savedVersion = target
            saving = false
        }
    }

    /// True when some job is ready but every runner that fits it is full.
    private func waitingForSlots() -> Bool {
        !stopRequested && plan.jobs.contains { job in
            guard let i = index(job.workflow), run.jobs[i].status == .submitted else { return false }
            return job.dependsOn.allSatisfy { dep in record(dep)?.status.isSuccess == true }
        }
    }

    /// Why no runner of the pool can ever take `job`, or nil when one can.
    private func unfit(_ job: PlannedJob) -> String? {
        let misfits = pool.compactMap { $0.info.misfit(job.resources, labels: job.labels, needsEngine: job.launch.image != nil) }
        guard misfits.count == pool.count, let first = misfits.first else { return nil }
        return "no reachable runner fits it: it needs \(first)"
    }

    /// The runner to try for `job`: one that fits, has a free slot here and was not just found full elsewhere;
    /// the least loaded first, so jobs spread over the pool.
    private func pick(_ job: PlannedJob) -> PoolMember? {
        let now = Date()
        return pool
            .filter { member in
                member.info.misfit(job.resources, labels: job.labels, needsEngine: job.launch.image != nil) == nil
                    && (active[member.info.name] ?? 0) < member.info.maxJobs
                    && (busyUntil[member.info.name].map { $0 < now } ?? true)
            }
            .min { (active[$0.info.name] ?? 0) < (active[$1.info.name] ?? 0) }
    }

    /// Starts every job whose dependencies are done, as slots allow; skips those that can never run.
    private func startReady(_ group: inout TaskGroup<Void>) {
        var changed = true
        while changed {
            changed = false
            for job in plan.jobs {
                guard let i = index(job.workflow), run.jobs[i].status == .submitted else { continue }
                if stopRequested { continue }
                let deps = job.dependsOn.compactMap { dep in record(dep) }
                if let bad = deps.first(where: { $0.status.isFinished && !$0.status.isSuccess }) {
                    let reason = "dependency '\(bad.workflow)' \(bad.status.rawValue)"
                    update(job.workflow) { $0.status = .skipped; $0.reason = reason; $0.finishedAt = Date() }
                    sink.emit(.skipped(workflow: job.workflow, reason: reason))
                    changed = true
                    continue
                }
                guard deps.allSatisfy({ $0.status.isSuccess }) else { continue }
                if let reason = unfit(job) {
                    // The runner that could take it is unreachable now (attach after a runner was lost, say).
                    update(job.workflow) { $0.status = .failed; $0.reason = reason; $0.finishedAt = Date() }
                    if let done = record(job.workflow) { sink.emit(.finished(done)) }
                    changed = true
                    continue
                }
                guard let member = pick(job) else { continue }
                active[member.info.name, default: 0] += 1
                update(job.workflow) { $0.status = .preparing; $0.runner = member.info.name }
                group.addTask { await self.runJob(job, on: member) }
            }
        }
        Task { await persist() }
    }

    /// Picks up the jobs a previous coordinator left in flight: each goes back to its runner, where it is followed
    /// from the stored log's end (or launched, if it never was); a job whose runner is not reachable is requeued.
    private func resumeInFlight(_ group: inout TaskGroup<Void>) {
        for job in plan.jobs {
            guard let i = index(job.workflow) else { continue }
            let status = run.jobs[i].status
            guard status == .preparing || status == .running || status == .uploading else { continue }
            guard let name = run.jobs[i].runner, let member = pool.first(where: { $0.info.name == name }) else {
                closeAttempt(job.workflow, reason: "runner \(run.jobs[i].runner ?? "?") unreachable when the run was resumed")
                update(job.workflow) { $0.status = .submitted; $0.runner = nil }
                continue
            }
            active[name, default: 0] += 1
            sink.emit(.notice("[\(job.workflow)] resuming on \(name)"))
            group.addTask { await self.runJob(job, on: member, resuming: true) }
        }
    }

    private func runJob(_ job: PlannedJob, on member: PoolMember, resuming: Bool = false) async {
        if resuming {
            await runStepwise(job, on: member, checkLaunched: true, recordAttempt: false)
        } else {
            await startJob(job, on: member)
        }
    }

    /// One attempt, one runner call at a time: acquire, then `attempt`. Used to resume jobs a previous
    /// coordinator left in flight, and after a fresh start whose outcome is unknown (the connection dropped before
    /// the runner said whether it took a slot): then the slot is taken again (the runner reports the one the job
    /// holds), and the job is followed if it was launched.
    private func runStepwise(_ job: PlannedJob, on member: PoolMember, checkLaunched: Bool, recordAttempt: Bool) async {
        let runner = member.runner
        let grant: SlotGrant?
        do {
            grant = try await runner.acquire(jobId: job.id, gpus: member.info.gpus.map(\.index), count: job.resources.gpu,
                                             slots: member.info.maxJobs, owner: owner)
        } catch {
            await failedBeforeStart(job, on: member, error)
            return
        }
        guard let grant else {
            // Another coordinator holds the slots (or GPUs) right now: put the job back and leave the runner be.
            requeue(job, busy: member.info.name)
            return
        }
        if recordAttempt { began(job, on: member, grant: grant) } else { running[job.id] = member.runner }
        let outcome = await attempt(job, on: member, gpus: grant.gpus, resuming: checkLaunched)
        await finish(job, on: member, grant: grant, outcome)
    }

    /// A failure before the job got a slot: an unreachable runner is left be for a while (it is used again once it
    /// answers) and the job put back; anything else fails the job.
    private func failedBeforeStart(_ job: PlannedJob, on member: PoolMember, _ error: any Error) async {
        if isConnectionProblem(error) {
            unreachable(job, runner: member.info.name, error)
        } else {
            await finish(job, on: member, grant: nil, .failed(JobExit(code: nil, reason: "\(error)"), "\(error)"))
        }
    }

    /// A fresh attempt through `Runner.start`: slot, directory, launch and log in one call (one remote command on
    /// an SSH runner). What the runner reports on the way is recorded as it comes: the attempt once the slot is
    /// held, `running` once the job runs.
    private func startJob(_ job: PlannedJob, on member: PoolMember) async {
        let runner = member.runner
        var staging: URL?
        defer { if let staging { try? FileManager.default.removeItem(at: staging) } }
        let logStart: Int64
        do {
            try await ensureSynced(member)
            staging = try await stageDependencies(job)
            logStart = try await store.logSize(run: run.name, workflow: job.workflow)
        } catch {
            await failedBeforeStart(job, on: member, error)
            return
        }
        let request = JobStart(launch: job.launch, snapshot: snapshot, gpus: member.info.gpus.map(\.index),
                               gpuCount: job.resources.gpu, slots: member.info.maxJobs, owner: owner,
                               exportGPUs: !member.info.gpus.isEmpty, engine: member.info.engine,
                               dependencies: staging, cleanup: pendingCleanup.removeValue(forKey: member.info.name) ?? [])
        let progress = StartProgress()
        defer { progress.watchdog?.cancel() }
        let outcome: StartOutcome
        do {
            outcome = try await runner.start(request, events: { event in
                switch event {
                case .sending:
                    progress.sent = true
                case .granted(let grant):
                    progress.grant = grant
                    await self.granted(job, on: member, grant: grant, logStart: logStart)
                case .launched:
                    progress.launched = true
                    await self.started(job, runner: member.info.name)
                    progress.watchdog = self.watchdog(job, runner: runner)
                    if await self.isStopping() { try? await runner.stop(jobId: job.id) }
                }
            }, output: { data in
                self.sink.emit(.output(workflow: job.workflow, data))
                try await self.store.appendLog(run: self.runName, workflow: job.workflow, data)
            })
        } catch where isConnectionProblem(error) {
            if let grant = progress.grant {
                // The attempt is recorded: go on with it, following it if it was launched.
                sink.emit(.notice("[\(job.workflow)] connection to \(member.info.name) dropped (\(error)); reconnecting, the job goes on there"))
                let outcome = await attempt(job, on: member, gpus: grant.gpus, resuming: true, announced: progress.launched)
                await finish(job, on: member, grant: grant, outcome)
            } else if progress.sent {
                // The runner may have taken a slot, even launched the job: ask it again.
                sink.emit(.notice("[\(job.workflow)] connection to \(member.info.name) dropped (\(error)); reconnecting"))
                await runStepwise(job, on: member, checkLaunched: true, recordAttempt: true)
            } else {
                unreachable(job, runner: member.info.name, error)
            }
            return
        } catch {
            await finish(job, on: member, grant: progress.grant, .failed(JobExit(code: nil, reason: "\(error)"), "\(error)"))
            return
        }
        switch outcome {
        case .busy:
            requeue(job, busy: member.info.name)
        case .exited(let exit, let released):
            let result = await conclude(job, on: member, exit: exit)
            await finish(job, on: member, grant: progress.grant, result, released: released)
        }
    }

    /// The slot is held: the attempt begins, its output starting at `logStart` of the stored log.
    private func granted(_ job: PlannedJob, on member: PoolMember, grant: SlotGrant, logStart: Int64) {
        began(job, on: member, grant: grant)
        update(job.workflow) { record in
            if !record.attempts.isEmpty { record.attempts[record.attempts.count - 1].logStart = logStart }
        }
    }

    /// Stops the job once it has run for its `max_duration`.
    nonisolated private func watchdog(_ job: PlannedJob, runner: any Runner) -> Task<Void, Never>? {
        guard let limit = job.maxDuration else { return nil }
        return Task {
            try? await Task.sleep(nanoseconds: UInt64(limit * 1_000_000_000))
            guard !Task.isCancelled else { return }
            await self.timedOut(job)
            try? await runner.stop(jobId: job.id)
        }
    }

    /// Ends the job's latest attempt with `reason`.
    private func closeAttempt(_ workflow: String, reason: String, exit: JobExit? = nil) {
        update(workflow) { record in
            guard !record.attempts.isEmpty else { return }
            let last = record.attempts.count - 1
            record.attempts[last].finishedAt = Date()
            record.attempts[last].exitCode = exit?.code
            record.attempts[last].signal = exit?.signal
            record.attempts[last].reason = reason
        }
    }

    /// Times each job found its runner unreachable before it started.
    private var unreachableTries: [String: Int] = [:]

    private func unreachable(_ job: PlannedJob, runner: String, _ error: any Error) {
        active[runner, default: 1] -= 1
        busyUntil[runner] = Date().addingTimeInterval(lostTimeout)
        unreachableTries[job.id, default: 0] += 1
        sink.emit(.notice("[\(job.workflow)] runner \(runner) is unreachable (\(error)); looking for another"))
        if unreachableTries[job.id]! > run.retries {
            update(job.workflow) {
                $0.status = .failed
                $0.reason = "no runner reachable: \(runner) unreachable (\(error))"
                $0.finishedAt = Date()
            }
        } else {
            update(job.workflow) { $0.status = .submitted; $0.runner = nil }
        }
    }

    private func requeue(_ job: PlannedJob, busy runner: String) {
        active[runner, default: 1] -= 1
        busyUntil[runner] = Date().addingTimeInterval(0.5)
        update(job.workflow) { $0.status = .submitted; $0.runner = nil }
    }

    private func began(_ job: PlannedJob, on member: PoolMember, grant: SlotGrant) {
        running[job.id] = member.runner
        update(job.workflow) { $0.attempts.append(Attempt(runner: member.info.name, startedAt: Date())) }
    }

    /// What happened to one attempt.
    enum Outcome {
        case done
        case failed(JobExit, String)
        case stopped(String)
        /// The runner was lost (unreachable past the timeout, or the job vanished): try elsewhere.
        case lost(String)
    }

    /// How long a runner may stay unreachable before its jobs count as lost (`$DSTACK_LOST_TIMEOUT`, seconds).
    nonisolated var lostTimeout: TimeInterval {
        ProcessInfo.processInfo.environment["DSTACK_LOST_TIMEOUT"].flatMap(Double.init) ?? 60
    }

    /// Prepares, launches, follows and collects one job; nothing here touches actor state except through calls.
    ///
    /// A dropped connection never reruns anything: after reconnecting, a job already launched is followed, and
    /// artifacts are collected again (storing them is idempotent). Only a runner unreachable past `lostTimeout`
    /// makes the attempt lost.
    nonisolated private func attempt(_ job: PlannedJob, on member: PoolMember, gpus: [Int], resuming: Bool,
                                     announced: Bool = false) async -> Outcome {
        let runner = member.runner
        var watchdog: Task<Void, Never>?
        defer { watchdog?.cancel() }
        do {
            var checkFirst = resuming
            let launchedHere: Bool? = try await surviving(job, member) {
                if checkFirst, try await runner.launched(jobId: job.id) { return true }
                checkFirst = true  // after a drop, the launch may have happened: look before launching again
                try await ensureSynced(member)
                try await runner.prepare(jobId: job.id, snapshot: snapshot)
                try await placeDependencies(job, runner: runner)
                var launch = job.launch
                launch.gpus = gpus
                // On a machine with GPUs, a job that holds none must not see (and grab) the others' GPUs.
                if !member.info.gpus.isEmpty {
                    launch.environment["CUDA_VISIBLE_DEVICES"] = gpus.map(String.init).joined(separator: ",")
                }
                if await isStopping() { return false }
                try await runner.launch(launch)
                return true
            }
            guard let launchedHere else { return .lost("\(member.info.name) unreachable for \(Int(lostTimeout)) s") }
            let logStart = try await attemptLogStart(job, fresh: !resuming)
            if !launchedHere { return .stopped("the run was stopped before the job started") }
            if !announced {
                await started(job, runner: member.info.name)
                watchdog = self.watchdog(job, runner: runner)
            }
            let exit: JobExit
            switch try await followSurvivingDrops(job, on: member, logStart: logStart) {
            case .exited(let e): exit = e
            case .lost(let reason): return .lost(reason)
            }
            return await conclude(job, on: member, exit: exit)
        } catch {
            if isConnectionProblem(error) { return .lost("\(member.info.name) unreachable: \(error)") }
            return .failed(JobExit(code: nil, reason: "\(error)"), "\(error)")
        }
    }

    /// What an attempt whose job exited with `exit` comes to: stopped, failed, lost, or done once its artifacts
    /// and cache entry are stored.
    nonisolated private func conclude(_ job: PlannedJob, on member: PoolMember, exit: JobExit) async -> Outcome {
        let runner = member.runner
        do {
            if await hasTimedOut(job) {
                return .failed(exit, "max_duration (\(formatDuration(job.maxDuration ?? 0))) exceeded; the job was stopped")
            }
            if await isStopping(), !exit.succeeded {
                if await collectOnStop, !job.artifacts.isEmpty {
                    // Partial results are kept under a key of this run's own, never a cache key: a stopped job
                    // must never be reused as if it had finished.
                    let key = job.cacheKey + "-stopped-" + runName
                    let kept = try? await runner.withArtifacts(jobId: job.id, paths: job.artifacts) { directory in
                        let present = job.artifacts.filter { FileManager.default.fileExists(atPath: directory.appendingPathComponent($0).path) }
                        guard !present.isEmpty else { return false }
                        _ = try await store.storeArtifacts(cacheKey: key, run: runName, job: job.id, paths: present, from: directory)
                        return true
                    }
                    if kept == true { await setArtifactsKey(job.workflow, key) }
                }
                return .stopped("stopped (\(exit.summary))")
            }
            guard exit.succeeded else {
                if exit.code == nil { return .lost(exit.summary) }
                return .failed(exit, exit.summary)
            }
            await setStatus(job.workflow, .uploading)
            let stored: Bool? = try await surviving(job, member) {
                _ = try await runner.withArtifacts(jobId: job.id, paths: job.artifacts) { directory in
                    try await store.storeArtifacts(cacheKey: job.cacheKey, run: run.name, job: job.id,
                                                   paths: job.artifacts, from: directory)
                }
                return true
            }
            guard stored != nil else { return .lost("\(member.info.name) unreachable while collecting artifacts") }
            try await store.recordCache(job.cacheKey, CacheEntry(run: run.name, job: job.id, finishedAt: Date()))
            return .done
        } catch {
            if isConnectionProblem(error) { return .lost("\(member.info.name) unreachable: \(error)") }
            return .failed(JobExit(code: nil, reason: "\(error)"), "\(error)")
        }
    }

    /// Runs `body`, running it again after a dropped connection until the runner has been unreachable for
    /// `lostTimeout`; nil then.
    nonisolated private func surviving<T: Sendable>(_ job: PlannedJob, _ member: PoolMember, notice: String = "reconnecting",
                                                     _ body: () async throws -> T) async throws -> T? {
        var unreachableSince: Date?
        while true {
            do {
                return try await body()
            } catch where isConnectionProblem(error) {
                let since = unreachableSince ?? Date()
                if unreachableSince == nil {
                    unreachableSince = since
                    sink.emit(.notice("[\(job.workflow)] connection to \(member.info.name) dropped (\(error)); \(notice)"))
                }
                if Date().timeIntervalSince(since) > lostTimeout { return nil }
                try await Task.sleep(nanoseconds: 1_000_000_000)
            }
        }
    }

    enum FollowResult {
        case exited(JobExit)
        case lost(String)
    }

    /// Follows the job's log into storage from where the stored log ends, so nothing is lost or doubled; when the
    /// connection drops, reconnects and goes on, until the runner has been unreachable for `lostTimeout`.
    nonisolated private func followSurvivingDrops(_ job: PlannedJob, on member: PoolMember, logStart: Int64) async throws -> FollowResult {
        let exit: JobExit? = try await surviving(job, member, notice: "reconnecting, the job goes on there") {
            // The runner's log holds this attempt's output only; the stored log has earlier attempts' before it.
            let offset = max(0, try await store.logSize(run: run.name, workflow: job.workflow) - logStart)
            return try await member.runner.follow(jobId: job.id, from: offset) { data in
                self.sink.emit(.output(workflow: job.workflow, data))
                try await self.store.appendLog(run: self.run.name, workflow: job.workflow, data)
            }
        }
        guard let exit else { return .lost("\(member.info.name) unreachable for \(Int(lostTimeout)) s") }
        return .exited(exit)
    }

    /// True for failures that say the runner cannot be reached, rather than that the job or its files are wrong.
    nonisolated func isConnectionProblem(_ error: any Error) -> Bool {
        if let ssh = error as? SSHError { return ssh.isTransient || "\(ssh)".contains("connect") }
        if case RunnerError.unavailable = error { return true }
        return false
    }

    /// Where this attempt's output starts in the stored log: recorded on the attempt when it begins, read back
    /// when a later coordinator resumes it.
    private func attemptLogStart(_ job: PlannedJob, fresh: Bool) async throws -> Int64 {
        guard let i = index(job.workflow), !run.jobs[i].attempts.isEmpty else { return 0 }
        let last = run.jobs[i].attempts.count - 1
        if !fresh, let start = run.jobs[i].attempts[last].logStart { return start }
        let start = try await store.logSize(run: run.name, workflow: job.workflow)
        update(job.workflow) { $0.attempts[last].logStart = start }
        await persist()
        return start
    }

    private var timedOutJobs: Set<String> = []
    private func timedOut(_ job: PlannedJob) { timedOutJobs.insert(job.id) }
    private func hasTimedOut(_ job: PlannedJob) -> Bool { timedOutJobs.contains(job.id) }

    private func isStopping() -> Bool { stopRequested }

    private func setArtifactsKey(_ workflow: String, _ key: String) {
        update(workflow) { $0.artifactsKey = key }
    }

    /// Sends the runner the code objects it lacks, once per runner; the first job there waits for it.
    private func ensureSynced(_ member: PoolMember) async throws {
        let task = startSync(member)
        do {
            _ = try await task.value
        } catch {
            // Not for ever: the next job there tries again (after a dropped connection, say).
            if syncs[member.info.name] == task { syncs.removeValue(forKey: member.info.name) }
            throw error
        }
    }

    /// The code sync to `member` (begun by `submit` where that runner was synced before), then its tree.
    @discardableResult
    private func startSync(_ member: PoolMember) -> Task<Int, Error> {
        if let task = syncs[member.info.name] { return task }
        let snapshot = self.snapshot
        let sink = self.sink
        let begun = presyncs.removeValue(forKey: member.info.name)
        let task = Task {
            let sent = try await (begun ?? Task { try await member.runner.sync(snapshot) }).value
            if sent > 0 {
                sink.emit(.notice("\(member.info.name): sent \(sent) new file\(sent == 1 ? "" : "s") of code"))
            }
            try await member.runner.prepareTree(snapshot)
            return sent
        }
        syncs[member.info.name] = task
        return task
    }

    private func started(_ job: PlannedJob, runner: String) {
        update(job.workflow) { $0.status = .running; $0.startedAt = Date() }
        sink.emit(.started(workflow: job.workflow, runner: runner))
        Task { await persist() }
    }

    private func setStatus(_ workflow: String, _ status: JobState) async {
        update(workflow) { $0.status = status }
        await persist()
    }

    /// Downloads the artifacts of every dependency into a staging folder and has the runner place them.
    nonisolated private func placeDependencies(_ job: PlannedJob, runner: any Runner) async throws {
        guard let staging = try await stageDependencies(job) else { return }
        defer { try? FileManager.default.removeItem(at: staging) }
        try await runner.place(jobId: job.id, from: staging)
    }

    /// Downloads the artifacts of every dependency into a new staging folder, which the caller removes; nil when
    /// there are none (no dependencies, or none with artifacts).
    nonisolated private func stageDependencies(_ job: PlannedJob) async throws -> URL? {
        var keys: [(String, String)] = []
        for dep in job.dependsOn {
            if let key = cacheKeys[dep] { keys.append((dep, key)) }
        }
        for tag in job.tagDependencies { keys.append(("\(tag.workflow):\(tag.tag)", tag.cacheKey)) }
        guard !keys.isEmpty else { return nil }
        var manifests: [ArtifactManifest] = []
        for (name, key) in keys {
            guard let manifest = try await store.manifest(key) else {
                throw CoreError.notFound("the artifacts of '\(name)' (cache key \(key.prefix(12))) are missing from storage; rerun with --no-cache")
            }
            if !manifest.files.isEmpty { manifests.append(manifest) }
        }
        guard !manifests.isEmpty else { return nil }
        let staging = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-stage-\(job.id)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: true)
        do {
            try await store.downloadArtifacts(manifests, into: staging)  // issue 16: checked together, links never followed
        } catch {
            try? FileManager.default.removeItem(at: staging)
            throw error
        }
        return staging
    }

    /// Records how the job's attempt ended, retrying or requeueing it where that is due, and releases its slot and
    /// directory on the runner. A job whose runner released the slot itself (`released`) and whose directory is
    /// not kept leaves the directory's removal to the next start on that runner, or to the end of the run: one
    /// remote command less per job.
    private func finish(_ job: PlannedJob, on member: PoolMember, grant: SlotGrant?, _ outcome: Outcome, released: Bool = false) async {
        let runner = member.runner
        running.removeValue(forKey: job.id)
        active[member.info.name, default: 1] -= 1
        let attempts = record(job.workflow)?.attempts.count ?? 0
        switch outcome {
        case .lost(let reason) where !stopRequested && attempts <= run.retries:
            // Never collected, never marked done: a late result from this attempt is simply ignored.
            closeAttempt(job.workflow, reason: "lost: \(reason)")
            busyUntil[member.info.name] = Date().addingTimeInterval(lostTimeout)
            sink.emit(.notice("[\(job.workflow)] lost on \(member.info.name) (\(reason)); trying again elsewhere (attempt \(attempts + 1) of \(run.retries + 1))"))
            if grant != nil { try? await runner.release(jobId: job.id) }
            update(job.workflow) { $0.status = .submitted; $0.runner = nil }
            await persist()
            return
        case .failed(let exit, let reason) where !stopRequested && exit.code != nil && attempts <= job.retryLimit:
            closeAttempt(job.workflow, reason: reason, exit: exit)
            sink.emit(.notice("[\(job.workflow)] failed (\(reason)); retrying (attempt \(attempts + 1) of \(job.retryLimit + 1))"))
            if grant != nil { try? await runner.release(jobId: job.id) }
            try? await runner.cleanup(jobId: job.id)
            update(job.workflow) { $0.status = .submitted; $0.runner = nil }
            await persist()
            return
        default:
            break
        }
        let now = Date()
        var keepDirectory = run.keep
        update(job.workflow) { record in
            record.finishedAt = now
            switch outcome {
            case .done:
                record.status = .done
                record.exitCode = 0
            case .failed(let exit, let reason):
                record.status = .failed
                record.exitCode = exit.code
                record.signal = exit.signal
                record.reason = reason
                keepDirectory = true
            case .stopped(let reason):
                record.status = .stopped
                record.reason = reason
            case .lost(let reason):
                record.status = .failed
                record.reason = "runner lost after \(record.attempts.count) attempt\(record.attempts.count == 1 ? "" : "s"): \(reason)"
                keepDirectory = true
            }
            if !record.attempts.isEmpty {
                record.attempts[record.attempts.count - 1].finishedAt = now
                record.attempts[record.attempts.count - 1].exitCode = record.exitCode
                record.attempts[record.attempts.count - 1].signal = record.signal
                record.attempts[record.attempts.count - 1].reason = record.reason
            }
        }
        if released, !keepDirectory {
            pendingCleanup[member.info.name, default: []].append(job.id)
        } else {
            try? await runner.finish(jobId: job.id, release: grant != nil && !released, cleanup: !keepDirectory)
        }
        await persist()
        if let finished = record(job.workflow) {
            sink.emit(.finished(finished))
        }
    }
}

/// What `Runner.start` has reported so far for one attempt; written by its event callback, read after it returns.
final class StartProgress: @unchecked Sendable {
    private let lock = NSLock()
    private var _sent = false
    private var _launched = false
    private var _grant: SlotGrant?
    private var _watchdog: Task<Void, Never>?

    var sent: Bool {
        get { lock.withLock { _sent } }
        set { lock.withLock { _sent = newValue } }
    }
    var launched: Bool {
        get { lock.withLock { _launched } }
        set { lock.withLock { _launched = newValue } }
    }
    var grant: SlotGrant? {
        get { lock.withLock { _grant } }
        set { lock.withLock { _grant = newValue } }
    }
    var watchdog: Task<Void, Never>? {
        get { lock.withLock { _watchdog } }
        set { lock.withLock { _watchdog = newValue } }
    }
}
