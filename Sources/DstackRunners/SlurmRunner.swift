import DstackModel
import Foundation
import Logging

/// Runs jobs on a Slurm cluster through its login node: reached over SSH exactly like an SSH runner (the same
/// connection, agent, code sync and artifact transfers), but each job is submitted with `sbatch` rather than
/// started there, and runs the same wrapper on whichever node Slurm picks, in its folder on the shared filesystem
/// (docs/slurm.md).
public final class SlurmRunner: Runner, Sendable {
    public let name: String
    /// The cluster's settings from the inventory.
    public let settings: SlurmSettings
    /// The login node: an SSH runner whose agent also answers the Slurm requests (`Scripts/slurm.sh`).
    let login: SSHRunner
    let poller: SlurmPoller
    /// Jobs this coordinator asked Slurm to cancel: their end is a stop, not a failure.
    let stopping = LockedValue<Set<String>>([])
    /// The GPU types (GRES) the probe found, to spell a workflow's GPU name the way the cluster does.
    let gpuTypes = LockedValue<[String]>([])

    /// Jobs kept submitted at once when the inventory gives no `max_jobs`.
    public static let defaultMaxJobs = 100

    /// Creates a runner for the cluster behind the login node `config` describes; nothing is connected until used.
    public init(_ config: SSHRunnerConfig, settings: SlurmSettings, logger: Logger = Logger(label: "dstack.runner")) {
        self.name = config.name
        self.settings = settings
        let login = SSHRunner(config, logger: logger, agentScript: RunnerScript.slurm.text + "\n" + RunnerScript.agentProgram)
        self.login = login
        self.poller = SlurmPoller(workdir: login.workdir) { arguments in try await login.agent("slurm_poll", arguments) }
    }

    var workdir: String { login.workdir }

    public func probe() async throws -> RunnerInfo {
        let reply: AgentReply
        do {
            reply = try await login.agent("slurm_probe", [workdir, settings.partition ?? ""])
        } catch let error as RunnerError {
            throw error
        } catch {
            throw RunnerError.unavailable(runner: name, reason: "\(error)")
        }
        guard reply.status == .ok else {
            throw RunnerError.unavailable(runner: name, reason: "probing the cluster failed: \(reply.errorText)")
        }
        let cluster = SlurmCluster(facts: reply.facts)
        var info = RunnerInfo(name: name, os: reply.facts.first { $0.key == "os" }?.value ?? "?", cpus: 1, memory: 0,
                              gpus: [], maxJobs: login.config.maxJobs ?? Self.defaultMaxJobs, labels: login.config.labels)
        // A job must fit one node: the largest usable node of the partition says what can ever run.
        let usable = cluster.nodes.filter(\.isUsable)
        info.cpus = usable.map(\.cpus).max() ?? 0
        info.memory = (usable.map(\.memoryMB).max() ?? 0) << 20
        let widest = usable.max { $0.gpuCount < $1.gpuCount }
        if let widest, widest.gpuCount > 0 {
            info.gpus = (0..<widest.gpuCount).map { GPU(index: $0, name: widest.gpuType ?? "gpu", memory: 0) }
        }
        gpuTypes.set(Array(Set(usable.compactMap(\.gpuType))).sorted())
        info.diskFree = reply.facts.first { $0.key == "disk_free_kb" }.flatMap { Int64($0.value) }.map { $0 * 1024 }
        info.slurm = cluster
        if let r = login.config.resources {
            if r.gpu >= 0, r.gpu != info.gpus.count {
                info.gpus = (0..<r.gpu).map { GPU(index: $0, name: r.gpuName ?? "gpu", memory: r.gpuMemory ?? 0) }
            }
            if let cpu = r.cpu { info.cpus = cpu }
            if let memory = r.memory { info.memory = memory }
        }
        return info
    }

    public func sync(_ snapshot: Snapshot) async throws -> Int { try await login.sync(snapshot) }

    public func prepareTree(_ snapshot: Snapshot) async throws { try await login.prepareTree(snapshot) }

    public var syncedBefore: Bool { login.syncedBefore }

    public func withArtifacts<T: Sendable>(jobId: String, paths: [String], _ body: (URL) async throws -> T) async throws -> T {
        try await login.withArtifacts(jobId: jobId, paths: paths, body)
    }

    public func stop(jobId: String) async throws {
        var set = stopping.get()
        set.insert(jobId)
        stopping.set(set)
        _ = try await login.agent("slurm_stop", [login.jobDir(jobId)])
    }

    public func finish(jobIds: [String], release: Bool) async throws {
        try await login.finish(jobIds: jobIds, release: false)
    }

    /// Slurm holds no dstack locks: nothing to release.
    public func release(jobId: String) async throws {}

    public func disconnect() async { await login.disconnect() }

    public func run(_ request: JobStart) -> AsyncThrowingStream<JobEvent, any Error> {
        .attempt { emit in try await self.attempt(request, emit: emit) }
    }

    /// The agent's `slurm_submit` request of an attempt: its arguments (the sbatch options last, each one word)
    /// and the payload that writes the job's files (the SSH runner's, and `batch.sh`).
    func submitRequest(_ request: JobStart) throws -> (arguments: [String], payload: Data) {
        var job = request.launch
        // No slots nor GPU locks of dstack's: Slurm allocates, and sets CUDA_VISIBLE_DEVICES where it has devices
        // (a container job passes those on: its run.sh reads them from the environment).
        job.gpus = []
        let plain = JobStart(launch: job, snapshot: request.snapshot, attempt: request.attempt, logOffset: request.logOffset,
                             gpus: [], gpuCount: request.gpuCount, slots: 1, owner: request.owner, exportGPUs: false,
                             engine: request.engine, dependencies: request.dependencies, cleanup: request.cleanup)
        var payload = try login.startRequest(plain).payload
        payload.append(Data("printf '%s' \(shellQuote(RunnerScript.slurmBatch.text)) > batch.sh || return 2\n".utf8))
        var slurm = job.slurm ?? SlurmRequest(resources: Resources())
        if let wanted = slurm.resources.gpuName {
            // The cluster's spelling of the GPU type the workflow names (`A100` → `a100`), as the probe matched it.
            slurm.resources.gpuName = gpuTypes.get().first { $0.lowercased() == wanted.lowercased() }
                ?? gpuTypes.get().first { $0.lowercased().contains(wanted.lowercased()) } ?? wanted
        }
        let options = SbatchOptions.arguments(for: slurm, settings: settings, jobName: "dstack-" + job.jobId)
        let cleanup = request.cleanup.filter(SSHRunner.isPlainName).joined(separator: " ")
        // The agent reads the payload as this many lines (a quoted text's own newlines count).
        let lines = payload.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
        let arguments = [workdir, job.jobId, String(request.attempt), request.snapshot.id, job.workingDir, cleanup,
                         String(lines)] + options
        return (arguments, payload)
    }

    /// One attempt: the agent's `slurm_submit` (sent again after a dropped connection: it submits nothing twice),
    /// then polls (batched with the other jobs' by `SlurmPoller`) of the log and Slurm's state until the job ended.
    func attempt(_ request: JobStart, emit: @escaping @Sendable (JobEvent) -> Void) async throws {
        let job = request.launch
        let submit = try submitRequest(request)
        var offset = request.logOffset
        var sent = false
        var slurmId: String?
        var launched = false
        var treeRebuilt = false
        var last: SlurmJobState?
        var unreachableSince: ContinuousClock.Instant?
        var nap = Duration.milliseconds(20)
        var signalTries = 0
        var deliveredDependencies = request.dependencies == nil
        while true {
            do {
                if !deliveredDependencies, let dependencies = request.dependencies {
                    try await login.reaching {
                        try await login.connection.session().uploadTree(dependencies.path, paths: ["."], to: login.jobDir(job.jobId) + ".deps") {
                            emit(.transferred($0))
                        }
                    }
                    deliveredDependencies = true
                }
                if slurmId == nil {
                    sent = true
                    let reply = try await login.agent("slurm_submit", submit.arguments, payload: submit.payload)
                    switch reply.status {
                    case .ok: break
                    case .noTree where !treeRebuilt:
                        treeRebuilt = true
                        try await login.prepareTree(request.snapshot)
                        continue
                    case .other(7):
                        throw SSHRunner.Refused(error: .job(jobId: job.jobId, reason: "on \(name): \(reply.errorText)"))
                    default:
                        let why = "submitting it failed (\(reply.status))\(reply.errorText.isEmpty ? "" : ": \(reply.errorText)")"
                        throw SSHRunner.Refused(error: .unavailable(runner: name, reason: why))
                    }
                    guard let id = reply.events.first(where: { $0.hasPrefix("slurm ") })?.dropFirst(6), !id.isEmpty else {
                        throw SSHRunner.Refused(error: .job(jobId: job.jobId, reason: "\(name) did not say the Slurm job id: \(reply.errorText)"))
                    }
                    slurmId = String(id)
                    emit(.granted(SlotGrant(slot: 0, gpus: [])))
                    let submitted = SlurmJobState(id: String(id), state: "PENDING")
                    last = submitted
                    emit(.scheduler(submitted))
                }
                guard let id = slurmId else { continue }
                let poll = try await poller.poll(jobId: job.jobId, offset: offset, slurmId: id)
                if unreachableSince != nil {
                    unreachableSince = nil
                    emit(.notice("reconnected to \(name)"))
                }
                guard poll.status == .ok else {
                    throw SSHRunner.Refused(error: .unavailable(runner: name, reason: "following the job failed (\(poll.status))"))
                }
                if let state = poll.slurm(id: id), state.state != "?", state != last {
                    last = state
                    emit(.scheduler(state))
                }
                let running = ["RUNNING", "COMPLETING"].contains(last?.state ?? "")
                if !launched, running || poll.data != nil || poll.state != .running {
                    launched = true
                    emit(.launched)
                }
                if let data = poll.data, !data.isEmpty {
                    offset += Int64(data.count)
                    emit(.log(data))
                    nap = .milliseconds(20)
                }
                switch poll.state {
                case .running:
                    try await Task.sleep(for: nap)
                    // Quiet jobs are asked less often; jobs waiting in the queue least.
                    nap = min(nap * 2, running ? .milliseconds(250) : .seconds(1))
                case .exited(let code):
                    let exit = code > 128 && code < 160 ? JobExit(code: code, signal: code - 128) : JobExit(code: code)
                    if code > 128, !(last?.isFinal ?? false), !stopping.get().contains(job.jobId), signalTries < 6 {
                        // Killed by a signal: Slurm may have ended the job (scancel, a time limit), and its word
                        // comes with the agent's next squeue; wait for it a little before deciding.
                        signalTries += 1
                        try await Task.sleep(for: .milliseconds(500))
                        continue
                    }
                    if let ended = try endedBySlurm(job.jobId, last, exit: exit.summary) {
                        emit(.released)
                        emit(ended)
                        return
                    }
                    emit(.exited(exit))
                    emit(.released)
                    return
                case .gone:
                    emit(.released)
                    if stopping.get().contains(job.jobId) {
                        // Cancelled by this coordinator before it ran (or before the wrapper could write its exit).
                        emit(.exited(JobExit(code: nil, reason: "stopped")))
                    } else if let ended = try endedBySlurm(job.jobId, last, exit: nil) {
                        emit(ended)
                    } else {
                        emit(.vanished("its Slurm job \(id) ended without an exit code"))
                    }
                    return
                case .missing:
                    emit(.lost("its folder on \(name) vanished"))
                    return
                }
            } catch let refused as SSHRunner.Refused {
                throw refused.error
            } catch let error as RunnerError {
                guard case .unavailable(_, let reason) = error, sent else { throw error }
                let now = ContinuousClock.now
                if unreachableSince == nil {
                    unreachableSince = now
                    emit(.notice("connection to \(name) dropped (\(reason)); reconnecting, the job goes on there"))
                }
                if let since = unreachableSince, now - since > login.config.lostTimeout {
                    emit(.lost("\(name) unreachable for \(login.config.lostTimeout.components.seconds) s"))
                    return
                }
                try await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// What a job Slurm ended comes to, unless this coordinator stopped it or its commands simply ended (nil):
    /// a node failure or preemption loses it (`.vanished`: tried again); a time limit, a cancellation from outside
    /// or running out of memory fails it with Slurm's reason (thrown). `exit` says how its commands ended, if known.
    func endedBySlurm(_ jobId: String, _ state: SlurmJobState?, exit: String?) throws -> JobEvent? {
        if stopping.get().contains(jobId) { return nil }
        guard let state, state.isFinal, !["COMPLETED", "FAILED", "UNKNOWN"].contains(state.state) || exit == nil else {
            return nil
        }
        let said = "Slurm ended job \(state.id) as \(state.state)" + (state.reason.map { " (\($0))" } ?? "")
            + (exit.map { "; its commands: \($0)" } ?? " before its commands wrote an exit code")
        if state.isLost { return .vanished(said) }
        throw SSHRunner.Refused(error: .job(jobId: jobId, reason: said))
    }
}

/// Batches the polls of every job followed on one Slurm runner into one agent request (one squeue, one round trip
/// for all of them), so that a hundred queued jobs cost one request per tick rather than a hundred.
final class SlurmPoller: @unchecked Sendable {
    /// What one job's poll found.
    struct Result {
        var status: AgentStatus
        var data: Data?
        var state: PollState
        /// `STATE REASON` as the agent reported it.
        var slurmWords: String?

        /// Slurm's state of the job, if the agent knew it (`?`: squeue did not answer).
        func slurm(id: String) -> SlurmJobState? {
            guard let words = slurmWords?.split(separator: " ", maxSplits: 1) else { return nil }
            guard let state = words.first.map(String.init) else { return nil }
            let reason = words.count > 1 ? String(words[1]) : nil
            return SlurmJobState(id: id, state: state, reason: reason == "None" || reason?.isEmpty == true ? nil : reason)
        }
    }

    private struct Entry {
        var jobId: String
        var offset: Int64
        var slurmId: String
        var continuation: CheckedContinuation<Result, any Error>
    }

    private let lock = NSLock()
    private var queue: [Entry] = []
    private var flushing = false
    private let send: @Sendable ([String]) async throws -> AgentReply
    private let workdir: String

    /// A poller of the jobs under `workdir`, sending its requests with `send`.
    init(workdir: String, send: @escaping @Sendable ([String]) async throws -> AgentReply) {
        self.workdir = workdir
        self.send = send
    }

    /// The job's new log bytes from `offset` and its state, from the next batched request.
    func poll(jobId: String, offset: Int64, slurmId: String) async throws -> Result {
        try await withCheckedThrowingContinuation { continuation in
            let start: Bool = lock.withLock {
                queue.append(Entry(jobId: jobId, offset: offset, slurmId: slurmId, continuation: continuation))
                if flushing { return false }
                flushing = true
                return true
            }
            if start { Task { await self.flush() } }
        }
    }

    /// Sends what is queued, again and again while more comes; a few milliseconds' wait first lets the polls of
    /// jobs that woke together go in one request.
    private func flush() async {
        while true {
            try? await Task.sleep(for: .milliseconds(5))
            let batch: [Entry] = lock.withLock {
                let taken = queue
                queue = []
                if taken.isEmpty { flushing = false }
                return taken
            }
            if batch.isEmpty { return }
            let arguments = [workdir] + batch.flatMap { [$0.jobId, String($0.offset), $0.slurmId] }
            do {
                let reply = try await send(arguments)
                var words: [Int: String] = [:]
                for (key, value) in reply.facts where key == "state" {
                    let parts = value.split(separator: " ", maxSplits: 1)
                    if let index = parts.first.flatMap({ Int($0) }) { words[index] = parts.count > 1 ? String(parts[1]) : "" }
                }
                for (i, entry) in batch.enumerated() {
                    entry.continuation.resume(returning: Result(status: reply.status, data: reply.data[i],
                                                                state: reply.states[i] ?? .running, slurmWords: words[i]))
                }
            } catch {
                for entry in batch { entry.continuation.resume(throwing: error) }
            }
        }
    }
}
