import DstackModel
import DstackRunners
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
///
/// One loop owns the run's state: each job attempt is a child task that talks to its runner and returns a typed
/// `AttemptResult`, which the loop applies (record, retry, requeue); where jobs go is a `Schedule` value, and
/// records are written by a `RecordWriter` apart.
public actor Coordinator {
    let store: RunStore
    let pool: [PoolMember]
    let snapshot: Snapshot
    let plan: Plan
    let sink: any RunEventSink
    let logger: Logger
    let owner: String
    let writer: RecordWriter
    /// The run's name (fixed; `run` itself is actor state).
    let runName: String
    /// Each job's position in `run.jobs` (which never reorders), and each planned job's cache key, by workflow:
    /// looked up for every job at every dispatch round, so linear scans made large runs quadratic.
    let positions: [String: Int]
    let cacheKeys: [String: String]
    /// The workflows whose jobs declare artifacts: only their results are looked up for a dependent job (a job that
    /// declares none stores no manifest).
    let declaresArtifacts: Set<String>
    /// How long a runner may stay unreachable before its jobs count as lost (`$DSTACK_LOST_TIMEOUT`, seconds).
    let lostTimeout: TimeInterval
    var run: RunRecord
    var schedule: Schedule
    var stopRequested = false
    /// Whether a stop keeps the stopped jobs' artifacts (`dstack stop` without `-x`, Ctrl-C).
    var collectOnStop = true
    /// Jobs holding a slot, by job id, with the runner that holds them.
    var running: [String: any Runner] = [:]
    /// Jobs whose runner slot was given back to the schedule when their commands ended (their results are being
    /// collected): their end does not give it back again.
    var vacated: Set<String> = []
    /// Directories of finished jobs to remove, by runner: passed along with a later start there, `cleanupBatch` at a
    /// time, and the rest when the run ends.
    var pendingCleanup: [String: [String]] = [:]
    /// Cleanup lists of starts that never reached their runner, given back from the attempts' own tasks.
    nonisolated let returnedCleanup = LockedValue<[String: [String]]>([:])
    /// Code syncs `submit` began, to runners synced before (so a re-sync after an edit is under way already).
    var presyncs: [String: Task<Int, Error>]
    /// The code sync to each runner, done once per runner by the first job that goes there.
    var syncs: [String: Task<Int, Error>] = [:]
    /// Times each job found its runner unreachable before it started.
    var unreachableTries: [String: Int] = [:]
    var timedOutJobs: Set<String> = []
    var dirtyJobs: Set<String> = []
    /// Which runners move artifact bytes to and from the bucket themselves (DirectRoutes.swift).
    let directRoutes = DirectRoutes()

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
        self.declaresArtifacts = Set(plan.jobs.filter { !$0.artifacts.isEmpty }.map(\.workflow))
        self.sink = sink
        self.logger = logger
        self.owner = "\(ProcessInfo.processInfo.hostName):\(getpid())"
        self.writer = RecordWriter(store: store, sink: sink, logger: logger)
        self.schedule = Schedule(runners: pool.map(\.info))
        self.lostTimeout = ProcessInfo.processInfo.environment["DSTACK_LOST_TIMEOUT"].flatMap(Double.init) ?? 60
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
        await withTaskGroup(of: AttemptResult.self) { group in
            resumeInFlight(&group)
            await startReady(&group)
            while let result = await group.next() {
                await apply(result, &group)
                await startReady(&group)
                // Jobs wait for runners that are full (another coordinator) or resting: look again shortly.
                if group.isEmpty, waitingForRunners() {
                    group.addTask {
                        try? await Task.sleep(nanoseconds: 200_000_000)
                        return .wakeUp
                    }
                }
            }
        }
        heartbeat.cancel()
        await heartbeat.value  // no heartbeat may write run.json after the final record below
        takeBackCleanup()
        for member in pool {
            if let ids = pendingCleanup.removeValue(forKey: member.info.name), !ids.isEmpty {
                try? await member.runner.finish(jobIds: ids, release: false)
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

    func index(_ workflow: String) -> Int? {
        positions[workflow]
    }

    func record(_ workflow: String) -> JobRecord? {
        positions[workflow].map { run.jobs[$0] }
    }

    func update(_ workflow: String, _ change: (inout JobRecord) -> Void) {
        guard let i = index(workflow) else { return }
        change(&run.jobs[i])
        dirtyJobs.insert(workflow)
    }

    /// Hands the current state to the writer; returns once it is written, saying whether it was.
    @discardableResult
    func persist(force: Bool = false) async -> Bool {
        let jobs = dirtyJobs
        dirtyJobs = []
        return await writer.save(run, jobs: jobs, force: force)
    }

    /// Hands the current state to the writer without waiting for the write (where nothing depends on it being
    /// written yet: the writer keeps the order, and the next awaited save includes it).
    func persistSoon() {
        let jobs = dirtyJobs
        dirtyJobs = []
        writer.submit(run, jobs: jobs, force: false)
    }

    /// True when some job is ready and waits only for a runner that is full or resting.
    private func waitingForRunners() -> Bool {
        !stopRequested && plan.jobs.contains { job in
            guard let i = index(job.workflow), run.jobs[i].status == .submitted else { return false }
            return job.dependsOn.allSatisfy { dep in record(dep)?.status.isSuccess == true }
        }
    }

    /// Starts every job whose dependencies are done, as slots allow; skips those that can never run.
    private func startReady(_ group: inout TaskGroup<AttemptResult>) async {
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
                let misfit = { (info: RunnerInfo) in job.misfit(on: info) }
                if let reason = schedule.unfit(misfit) {
                    // The runner that could take it is unreachable now (attach after a runner was lost, say).
                    update(job.workflow) { $0.status = .failed; $0.reason = reason; $0.finishedAt = Date() }
                    if let done = record(job.workflow) { sink.emit(.finished(done)) }
                    changed = true
                    continue
                }
                guard let info = schedule.pick(now: Date(), misfit),
                      let member = pool.first(where: { $0.info.name == info.name }) else { continue }
                schedule.assign(info.name)
                let attempt = (record(job.workflow)?.attempts.count ?? 0) + 1
                update(job.workflow) { $0.status = .preparing; $0.runner = info.name }
                group.addTask { await self.attempt(job, on: member, number: attempt, resuming: false) }
            }
        }
        // The records of the jobs started here are written by their attempts (`beginAttempt`), right after.
    }

    /// Picks up the jobs a previous coordinator left in flight: each goes back to its runner, where the same
    /// attempt is asked for again (the runner reports what it did and launches nothing twice) and followed from the
    /// stored log's end; a job whose runner is not reachable is requeued.
    private func resumeInFlight(_ group: inout TaskGroup<AttemptResult>) {
        for job in plan.jobs {
            guard let i = index(job.workflow) else { continue }
            let status = run.jobs[i].status
            guard status == .preparing || status == .running || status == .uploading else { continue }
            guard let name = run.jobs[i].runner, let member = pool.first(where: { $0.info.name == name }),
                  !run.jobs[i].attempts.isEmpty else {
                closeAttempt(job.workflow, reason: "runner \(run.jobs[i].runner ?? "?") unreachable when the run was resumed")
                update(job.workflow) { $0.status = .submitted; $0.runner = nil }
                continue
            }
            schedule.assign(name)
            sink.emit(.notice("[\(job.workflow)] resuming on \(name)"))
            let number = run.jobs[i].attempts.count
            group.addTask { await self.attempt(job, on: member, number: number, resuming: true) }
        }
    }

    // MARK: - Applying results (the loop)

    /// Applies what one attempt came to.
    private func apply(_ result: AttemptResult, _ group: inout TaskGroup<AttemptResult>) async {
        switch result {
        case .wakeUp:
            return
        case .busy(let job, let runner):
            // Another coordinator holds the slots (or GPUs) right now: put the job back and leave the runner be.
            schedule.vacate(runner)
            schedule.rest(runner, until: Date().addingTimeInterval(0.5))
            dropAttempt(job.workflow)
            update(job.workflow) { $0.status = .submitted; $0.runner = nil }
        case .unreachable(let job, let runner, let reason):
            schedule.vacate(runner)
            schedule.rest(runner, until: Date().addingTimeInterval(lostTimeout))
            dropAttempt(job.workflow)
            unreachableTries[job.id, default: 0] += 1
            sink.emit(.notice("[\(job.workflow)] runner \(runner) is unreachable (\(reason)); looking for another"))
            if unreachableTries[job.id]! > run.retries {
                update(job.workflow) {
                    $0.status = .failed
                    $0.reason = "no runner reachable: \(runner) unreachable (\(reason))"
                    $0.finishedAt = Date()
                }
                if let done = record(job.workflow) { sink.emit(.finished(done)) }
            } else {
                update(job.workflow) { $0.status = .submitted; $0.runner = nil }
            }
        case .exited(let job, let member, let exit, let released):
            // The runner freed the slot: the next job may start there while this one's results are collected.
            if released {
                schedule.vacate(member.info.name)
                vacated.insert(job.id)
            }
            group.addTask { .ended(job, member, await self.conclude(job, on: member, exit: exit), released: released) }
        case .ended(let job, let member, let outcome, let released):
            await finish(job, on: member, outcome, released: released)
        }
        persistSoon()
    }

    /// An attempt that never reached its runner does not count.
    private func dropAttempt(_ workflow: String) {
        if let id = record(workflow)?.id { running.removeValue(forKey: id) }
        update(workflow) { record in
            if let last = record.attempts.last, last.finishedAt == nil, last.pending == true { record.attempts.removeLast() }
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

    /// Records how the job's attempt ended, retrying or requeueing it where that is due, and releases its slot and
    /// directory on the runner. A job whose runner released the slot itself (`released`) and whose directory is
    /// not kept leaves the directory's removal to the next start on that runner, or to the end of the run: one
    /// remote command less per job. The record is written before anything is removed on the runner, so a
    /// coordinator that dies in between never finds a finished job's folder gone and starts it again.
    private func finish(_ job: PlannedJob, on member: PoolMember, _ outcome: Outcome, released: Bool) async {
        let runner = member.runner
        running.removeValue(forKey: job.id)
        if vacated.remove(job.id) == nil { schedule.vacate(member.info.name) }
        let attempts = record(job.workflow)?.attempts.count ?? 0
        switch outcome {
        case .lost(let reason) where !stopRequested && attempts <= run.retries,
             .vanished(let reason) where !stopRequested && attempts <= run.retries:
            // Never collected, never marked done: a late result from this attempt is simply ignored. A runner that
            // could not be reached is left be for a while; one whose job was killed there is not.
            closeAttempt(job.workflow, reason: "lost: \(reason)")
            if case .lost = outcome { schedule.rest(member.info.name, until: Date().addingTimeInterval(lostTimeout)) }
            sink.emit(.notice("[\(job.workflow)] lost on \(member.info.name) (\(reason)); trying again (attempt \(attempts + 1) of \(run.retries + 1))"))
            update(job.workflow) { $0.status = .submitted; $0.runner = nil }
            await persist()
            if !released { try? await runner.release(jobId: job.id) }
            return
        case .failed(let exit, let reason) where !stopRequested && exit.code != nil && attempts <= job.retryLimit:
            closeAttempt(job.workflow, reason: reason, exit: exit)
            sink.emit(.notice("[\(job.workflow)] failed (\(reason)); retrying (attempt \(attempts + 1) of \(job.retryLimit + 1))"))
            update(job.workflow) { $0.status = .submitted; $0.runner = nil }
            await persist()
            try? await runner.finish(jobIds: [job.id], release: !released)
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
            case .lost(let reason), .vanished(let reason):
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
        // A record that could not be written keeps the job's folder: a later attach finds the job there rather
        // than starting it again.
        if !(await persist()) { keepDirectory = true }
        if released, !keepDirectory {
            pendingCleanup[member.info.name, default: []].append(job.id)
        } else if !keepDirectory {
            try? await runner.finish(jobIds: [job.id], release: !released)
        } else if !released {
            try? await runner.release(jobId: job.id)
        }
        if let finished = record(job.workflow) {
            sink.emit(.finished(finished))
        }
    }

    // MARK: - Called by attempts (state they report on the way)

    /// The attempt is about to reach the runner: recorded (and written) first, with where its output starts in
    /// the stored log, so a later coordinator resumes the same attempt; returns the directories to remove there.
    func beginAttempt(_ job: PlannedJob, on runner: String, number: Int, logStart: Int64) async -> [String] {
        update(job.workflow) { record in
            while record.attempts.count < number {
                var attempt = Attempt(runner: runner, startedAt: Date())
                attempt.logStart = logStart
                attempt.pending = true
                record.attempts.append(attempt)
            }
        }
        await persist()
        // Folders go in batches (one removal on the runner for several jobs); the rest at the end of the run.
        takeBackCleanup()
        guard let pending = pendingCleanup[runner], pending.count >= Self.cleanupBatch else { return [] }
        pendingCleanup[runner] = nil
        return pending
    }

    /// How many finished jobs' folders a start on a runner removes at once.
    static let cleanupBatch = 8

    /// Puts the folders that starts never delivered (`returnedCleanup`) back with the pending ones.
    func takeBackCleanup() {
        var back: [String: [String]] = [:]
        returnedCleanup.update { back = $0; $0 = [:] }
        for (runner, ids) in back { pendingCleanup[runner, default: []] += ids }
    }

    /// The slot is held.
    func granted(_ job: PlannedJob, on member: PoolMember) {
        running[job.id] = member.runner
        update(job.workflow) { record in
            if !record.attempts.isEmpty { record.attempts[record.attempts.count - 1].pending = nil }
        }
    }

    /// The job runs.
    func started(_ job: PlannedJob, runner: any Runner) async {
        let first = record(job.workflow)?.status != .running
        update(job.workflow) { $0.status = .running; if $0.startedAt == nil || first { $0.startedAt = Date() } }
        if first { sink.emit(.started(workflow: job.workflow, runner: runner.name)) }
        persistSoon()
        if stopRequested { try? await runner.stop(jobId: job.id) }
    }

    func timedOut(_ job: PlannedJob) { timedOutJobs.insert(job.id) }
    func hasTimedOut(_ job: PlannedJob) -> Bool { timedOutJobs.contains(job.id) }
    func isStopping() -> Bool { stopRequested }
    func collectsOnStop() -> Bool { collectOnStop }

    func setArtifactsKey(_ workflow: String, _ key: String) {
        update(workflow) { $0.artifactsKey = key }
    }

    func setStatus(_ workflow: String, _ status: JobState) async {
        update(workflow) { $0.status = status }
        await persist()
    }

    /// Where the attempt's output starts in the stored log, as recorded on it.
    func logStart(_ workflow: String) -> Int64 {
        record(workflow)?.attempts.last?.logStart ?? 0
    }

    /// Sends the runner the code objects it lacks, once per runner; the first job there waits for it.
    func ensureSynced(_ member: PoolMember) async throws {
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
}

/// What one attempt came to, for the coordinator's loop to apply.
enum AttemptResult: Sendable {
    /// No slot free on the runner now: the job waits for another try.
    case busy(PlannedJob, runner: String)
    /// The runner could not be reached before the attempt began there.
    case unreachable(PlannedJob, runner: String, reason: String)
    /// The job's commands ended with `JobExit` (its slot freed on the runner when `released`): its results are
    /// collected next, in a child task of their own, while another job may take the slot.
    case exited(PlannedJob, PoolMember, JobExit, released: Bool)
    /// The attempt ended (done, failed, stopped, or lost).
    case ended(PlannedJob, PoolMember, Outcome, released: Bool)
    /// Nothing: the loop only looks at waiting jobs again.
    case wakeUp
}

/// How an attempt ended.
enum Outcome: Sendable {
    case done
    case failed(JobExit, String)
    case stopped(String)
    /// The runner was lost (unreachable past the timeout): try again, elsewhere first.
    case lost(String)
    /// The job's process vanished while its runner stayed reachable: try again.
    case vanished(String)
}
