import DstackModel
import Foundation

/// What a runner has to offer, as probed (or as the inventory overrides it).
public struct RunnerInfo: Sendable, Hashable, Codable {
    /// The runner's name (`local` for the local runner).
    public var name: String
    /// Operating system and architecture (`Linux x86_64`).
    public var os: String
    /// CPUs.
    public var cpus: Int
    /// Memory in bytes.
    public var memory: Int64
    /// GPUs, by index.
    public var gpus: [GPU]
    /// Jobs it runs at once.
    public var maxJobs: Int
    /// Labels the inventory gives it.
    public var labels: [String]
    /// The container engine found (`docker`, `podman`), if any.
    public var engine: String?
    /// Free space in the work directory, in bytes, if known.
    public var diskFree: Int64?
    /// Slot and GPU locks held right now: `slot-0 JOB OWNER`.
    public var locks: [String] = []
    /// The `python3.X` interpreters on its `PATH`, by version (`3.11`), for jobs that ask for one.
    public var pythons: [String] = []
    /// For a Slurm runner: the cluster's partitions, nodes and this user's queued jobs, as probed.
    public var slurm: SlurmCluster?

    /// Creates runner info.
    public init(name: String, os: String, cpus: Int, memory: Int64, gpus: [GPU], maxJobs: Int, labels: [String] = []) {
        self.name = name
        self.os = os
        self.cpus = cpus
        self.memory = memory
        self.gpus = gpus
        self.maxJobs = maxJobs
        self.labels = labels
    }

    /// Why a job needing `resources` (and `labels`, and a container engine when `image`) can never run here.
    public func misfit(_ resources: Resources, labels wanted: [String] = [], needsEngine: Bool = false) -> String? {
        if let label = wanted.first(where: { !labels.contains($0) }) { return "the label '\(label)'" }
        if needsEngine, engine == nil { return "a container engine (docker or podman) for its image" }
        if resources.gpu > 0 {
            let matching = gpus.filter { gpu in
                (resources.gpuName.map { gpu.name.lowercased().contains($0.lowercased()) } ?? true)
                    && (resources.gpuMemory.map { gpu.memory >= $0 } ?? true)
            }
            if matching.count < resources.gpu {
                var what = "\(resources.gpu) GPU\(resources.gpu == 1 ? "" : "s")"
                if let name = resources.gpuName { what += " named \(name)" }
                if let memory = resources.gpuMemory { what += " with \(formatBytes(memory))" }
                return "\(what) (it has \(matching.count))"
            }
        }
        if let cpu = resources.cpu, cpu > cpus { return "\(cpu) CPUs (it has \(cpus))" }
        if let memory = resources.memory, memory > self.memory {
            return "\(formatBytes(memory)) of memory (it has \(formatBytes(self.memory)))"
        }
        return nil
    }
}

/// One GPU of a runner.
public struct GPU: Sendable, Hashable, Codable {
    /// Its index (what `CUDA_VISIBLE_DEVICES` names).
    public var index: Int
    /// Its model name.
    public var name: String
    /// Its memory in bytes.
    public var memory: Int64

    /// Creates a GPU description.
    public init(index: Int, name: String, memory: Int64) {
        self.index = index
        self.name = name
        self.memory = memory
    }
}

/// Everything a runner needs to start one job.
public struct JobLaunch: Sendable, Hashable, Codable {
    /// The job's id (also its directory's name on the runner).
    public var jobId: String
    /// The commands, already substituted, each run in order by `/bin/sh -e`.
    public var commands: [String]
    /// The job's environment, beyond the runner's own.
    public var environment: [String: String]
    /// Where the commands start, relative to the repository root ("" for the root).
    public var workingDir: String
    /// A container image, if the job runs in one.
    public var image: String?
    /// The GPUs the job holds.
    public var gpus: [Int]
    /// The names of the secrets the job receives (recorded in the plan, so a later coordinator can look them up).
    public var secretNames: [String] = []
    /// Their values: in memory only, delivered through the job's 0600 `secrets.env`, never encoded (left out of
    /// `CodingKeys`) nor printed (`SecretValues` shows `***`).
    public var secretValues = SecretValues()
    /// What a Slurm runner asks `sbatch` for (resources, time limit, the workflow's `slurm:` options).
    public var slurm: SlurmRequest?

    // secrets: `secretValues` is deliberately absent, so no record ever holds a value.
    enum CodingKeys: String, CodingKey {
        case jobId, commands, environment, workingDir, image, gpus, secretNames, slurm
    }

    /// Creates a launch description.
    public init(jobId: String, commands: [String], environment: [String: String], workingDir: String,
                image: String? = nil, gpus: [Int] = []) {
        self.jobId = jobId
        self.commands = commands
        self.environment = environment
        self.workingDir = workingDir
        self.image = image
        self.gpus = gpus
    }

    /// The script the runner runs: the commands in order, stopping at the first that fails.
    public var script: String {
        "set -e\n" + commands.joined(separator: "\n") + "\n"
    }
}

/// How a job's process ended.
public struct JobExit: Sendable, Hashable {
    /// The exit code, when it exited.
    public var code: Int32?
    /// The signal, when one ended it.
    public var signal: Int32?
    /// Why, when it did not simply exit (`lost`, `stopped`, ...).
    public var reason: String?

    /// Creates an exit description.
    public init(code: Int32?, signal: Int32? = nil, reason: String? = nil) {
        self.code = code
        self.signal = signal
        self.reason = reason
    }

    /// True when the commands all succeeded.
    public var succeeded: Bool { code == 0 && signal == nil && reason == nil }

    /// In words: `exit code 3`, `killed by signal 9 (SIGKILL)`.
    public var summary: String {
        if let signal { return "killed by signal \(signal)\(signalName(signal).map { " (\($0))" } ?? "")" }
        if let code { return "exit code \(code)" }
        return reason ?? "unknown"
    }
}

/// The usual name of a signal number.
public func signalName(_ signal: Int32) -> String? {
    let names: [Int32: String] = [1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV",
                                  13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM"]
    return names[signal]
}

/// A machine that runs jobs: this one (`LocalRunner`) or one reached over SSH.
///
/// Jobs run detached: they survive the coordinator. Each job lives in its own directory on the runner holding
/// `repo/` (the code), `log`, `pid` and, once it ended, `exit`; those files are the truth a later coordinator
/// resumes from. How a runner gets there (one request to its agent, step by step, reconnecting after a drop) is
/// its own business: the coordinator only sees the typed events of `run`.
public protocol Runner: Sendable {
    /// The runner's name, as runs record it.
    var name: String { get }

    /// What it has: CPUs, memory, GPUs, slots.
    func probe() async throws -> RunnerInfo

    /// Makes sure the runner holds every object (file content, by hash) of the snapshot; returns how many it sent.
    func sync(_ snapshot: Snapshot) async throws -> Int

    /// Gets the runner ready to start jobs of `snapshot` quickly (after `sync`); SSH runners build a tree of its
    /// files once, which each job then copies.
    func prepareTree(_ snapshot: Snapshot) async throws

    /// True when this machine has synced code to the runner before (so a sync now sends only what changed).
    var syncedBefore: Bool { get }

    /// Runs one attempt of a job, fresh or resumed (`JobStart.attempt` says which; a start sent twice for the same
    /// attempt never launches twice): `.granted`, `.launched`, `.log`..., then `.exited` (and `.released` when the
    /// runner released the slot itself) — or `.busy` when no slot is free now, `.vanished` when the job's process
    /// vanished, or `.lost` when the runner stayed unreachable past its timeout. Throws `RunnerError` when the attempt cannot go on.
    func run(_ request: JobStart) -> AsyncThrowingStream<JobEvent, any Error>

    /// Hands `body` a local directory holding the job's artifact `paths` (as in its `repo/`) after it ran, and
    /// removes any local copy made for it afterwards.
    func withArtifacts<T: Sendable>(jobId: String, paths: [String], _ body: (URL) async throws -> T) async throws -> T

    /// Stops the job's processes (the whole process group), politely first; nothing once it wrote its exit code.
    func stop(jobId: String) async throws

    /// Releases the jobs' slot and GPU locks (when `release`) and removes their directories.
    func finish(jobIds: [String], release: Bool) async throws

    /// Releases the job's locks, keeping its directory.
    func release(jobId: String) async throws

    /// Closes connections; called before the process exits (libcrypto must not be in use while it is torn down).
    func disconnect() async
}

/// What `Runner.run` reports of one attempt, in order.
public enum JobEvent: Sendable, Equatable {
    /// The slot (and GPUs) are held.
    case granted(SlotGrant)
    /// The job runs.
    case launched
    /// Output the job wrote (the log, from where the request's `logOffset` said).
    case log(Data)
    /// The job ended.
    case exited(JobExit)
    /// The runner released the job's slot itself.
    case released
    /// No slot (or not enough GPUs) free now; nothing was kept.
    case busy
    /// The job's process vanished without an exit code while the runner stayed reachable (killed from outside, a
    /// reboot): the job is lost, and may be tried again, on this runner too.
    case vanished(String)
    /// The runner stayed unreachable past its timeout: the job is lost there.
    case lost(String)
    /// Something worth telling (a dropped connection being reconnected).
    case notice(String)
    /// Bytes of dependency artifacts the runner fetched itself from the bucket (progress of a direct transfer).
    case transferred(Int64)
    /// A batch scheduler's word on the job (a Slurm runner: its job id, state and pending reason), to record.
    case scheduler(SlurmJobState)
}

extension Runner {
    /// Nothing to close by default.
    public func disconnect() async {}

    /// No record by default.
    public var syncedBefore: Bool { false }

    /// Nothing to prepare by default.
    public func prepareTree(_ snapshot: Snapshot) async throws {}
}

/// What `Runner.run` needs beyond the job itself.
public struct JobStart: Sendable {
    /// The job (its `gpus` are filled from the slot granted).
    public var launch: JobLaunch
    /// The code it runs.
    public var snapshot: Snapshot
    /// Which attempt of the job this is (1 for the first): a start for the attempt the runner has already is a
    /// resumption, for another one a fresh start.
    public var attempt: Int
    /// Where in the job's log to deliver output from (after a resumption: what was stored before).
    public var logOffset: Int64
    /// The runner's GPU indices, and how many of them the job needs.
    public var gpus: [Int]
    public var gpuCount: Int
    /// The runner's slots, and who asks (for the lock's owner file).
    public var slots: Int
    public var owner: String
    /// Whether the held GPUs are exported as `CUDA_VISIBLE_DEVICES` (the runner has GPUs).
    public var exportGPUs: Bool
    /// The runner's container engine, as probed.
    public var engine: String?
    /// A local folder of dependency artifacts to place in the job's `repo/`, if any.
    public var dependencies: URL?
    /// Directories of earlier jobs to remove on the way (their results are stored).
    public var cleanup: [String]
    /// Dependency files the runner fetches from the bucket itself, into the same place as `dependencies`
    /// (a `DirectTransferRunner` only; docs/transfers.md).
    public var directDependencies: [DirectGet] = []

    /// Creates a start request.
    public init(launch: JobLaunch, snapshot: Snapshot, attempt: Int = 1, logOffset: Int64 = 0, gpus: [Int],
                gpuCount: Int, slots: Int, owner: String, exportGPUs: Bool, engine: String?, dependencies: URL? = nil,
                cleanup: [String] = []) {
        self.launch = launch
        self.snapshot = snapshot
        self.attempt = attempt
        self.logOffset = logOffset
        self.gpus = gpus
        self.gpuCount = gpuCount
        self.slots = slots
        self.owner = owner
        self.exportGPUs = exportGPUs
        self.engine = engine
        self.dependencies = dependencies
        self.cleanup = cleanup
    }
}

/// A slot (and GPUs) held on a runner for one job.
public struct SlotGrant: Sendable, Hashable, Equatable {
    /// The slot number.
    public var slot: Int
    /// The GPUs held.
    public var gpus: [Int]

    /// Creates a grant.
    public init(slot: Int, gpus: [Int]) {
        self.slot = slot
        self.gpus = gpus
    }

    /// Reads the agent's `granted SLOT GPUS` event (GPUs comma-separated).
    init(startEvent: String) {
        let words = startEvent.split(separator: " ", omittingEmptySubsequences: false)
        slot = words.count > 1 ? Int(words[1]) ?? 0 : 0
        gpus = words.count > 2 ? words[2].split(separator: ",").compactMap { Int($0) } : []
    }
}

/// Failures of a runner, in words a person can act on.
public enum RunnerError: Error, Sendable, CustomStringConvertible {
    /// The runner cannot be used now (unreachable, misconfigured): its jobs go elsewhere.
    case unavailable(runner: String, reason: String)
    /// Something failed while preparing, launching or collecting a job.
    case job(jobId: String, reason: String)

    public var description: String {
        switch self {
        case .unavailable(let runner, let reason): return "runner '\(runner)' is unavailable: \(reason)"
        case .job(let jobId, let reason): return "job '\(jobId)': \(reason)"
        }
    }
}

extension AsyncThrowingStream where Element == JobEvent, Failure == any Error {
    /// The events an attempt emits, as `Runner.run` returns them: the stream ends when `attempt` returns (or with
    /// what it throws), and the attempt is cancelled when nobody follows the stream any more.
    static func attempt(_ attempt: @escaping @Sendable (_ emit: @escaping @Sendable (JobEvent) -> Void) async throws -> Void) -> Self {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    try await attempt { continuation.yield($0) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}
