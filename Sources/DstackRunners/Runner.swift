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

    // secrets: `secretValues` is deliberately absent, so no record ever holds a value.
    enum CodingKeys: String, CodingKey {
        case jobId, commands, environment, workingDir, image, gpus, secretNames
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
/// `repo/` (the code), `log`, `pid` and, once it ended, `exit`.
public protocol Runner: Sendable {
    /// The runner's name, as runs record it.
    var name: String { get }

    /// What it has: CPUs, memory, GPUs, slots.
    func probe() async throws -> RunnerInfo

    /// Makes sure the runner holds every object (file content, by hash) of the snapshot; returns how many it sent.
    func sync(_ snapshot: Snapshot) async throws -> Int

    /// Takes a job slot, and `count` of the runner's `gpus`, with locks kept on the runner itself, so that
    /// coordinators sharing it never exceed `slots` nor share a GPU; nil when not enough is free now.
    func acquire(jobId: String, gpus: [Int], count: Int, slots: Int, owner: String) async throws -> SlotGrant?

    /// Releases what `acquire` took for the job.
    func release(jobId: String) async throws

    /// Creates the job's directory and fills `repo/` with the snapshot's files, from the synced objects.
    func prepare(jobId: String, snapshot: Snapshot) async throws

    /// Copies the files under a local `staging` directory into the job's `repo/` (dependency artifacts).
    func place(jobId: String, from staging: URL) async throws

    /// Starts the job detached; returns once it is running.
    func launch(_ job: JobLaunch) async throws

    /// True when the job was launched on this runner (its wrapper recorded a pid), whether or not it still runs.
    func launched(jobId: String) async throws -> Bool

    /// Delivers the job's log from byte `offset` as it grows, and returns how the job ended once it has.
    func follow(jobId: String, from offset: Int64, output: @Sendable (Data) async throws -> Void) async throws -> JobExit

    /// Hands `body` a local directory holding the job's artifact `paths` (as in its `repo/`) after it ran, and
    /// removes any local copy made for it afterwards.
    func withArtifacts<T: Sendable>(jobId: String, paths: [String], _ body: (URL) async throws -> T) async throws -> T

    /// Stops the job's processes (the whole process group), politely first.
    func stop(jobId: String) async throws

    /// Removes the job's directory (and any local staging copy).
    func cleanup(jobId: String) async throws

    /// Closes connections; called before the process exits (libcrypto must not be in use while it is torn down).
    func disconnect() async

    /// Releases the job's locks and/or removes its directory, in one round trip where the runner can.
    func finish(jobId: String, release: Bool, cleanup: Bool) async throws

    /// Gets the runner ready to start jobs of `snapshot` quickly (after `sync`); SSH runners build a tree of its
    /// files once, which each job then copies.
    func prepareTree(_ snapshot: Snapshot) async throws

    /// Starts a fresh attempt of a job: takes its slot, prepares its directory, launches it and follows its log
    /// until it exits, in one round trip where the runner can. `events` hears `.sending` before anything reaches
    /// the runner, `.granted` once the slot is held and `.launched` once the job runs; after an error, what it
    /// heard says how far the runner got.
    func start(_ request: JobStart, events: @escaping @Sendable (StartEvent) async -> Void,
               output: @escaping @Sendable (Data) async throws -> Void) async throws -> StartOutcome

    /// Removes the directories of jobs that finished (one round trip where the runner can).
    func cleanup(jobIds: [String]) async throws

    /// True when this machine has synced code to the runner before (so a sync now sends only what changed).
    var syncedBefore: Bool { get }
}

/// What `Runner.start` needs beyond the job itself.
public struct JobStart: Sendable {
    /// The job (its `gpus` are filled from the slot granted).
    public var launch: JobLaunch
    /// The code it runs.
    public var snapshot: Snapshot
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

    /// Creates a start request.
    public init(launch: JobLaunch, snapshot: Snapshot, gpus: [Int], gpuCount: Int, slots: Int, owner: String,
                exportGPUs: Bool, engine: String?, dependencies: URL? = nil, cleanup: [String] = []) {
        self.launch = launch
        self.snapshot = snapshot
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

/// How far `Runner.start` got.
public enum StartEvent: Sendable {
    /// The request is about to reach the runner: from here on, an error leaves it unknown whether it took a slot.
    case sending
    /// The slot (and GPUs) are held.
    case granted(SlotGrant)
    /// The job runs.
    case launched
}

/// How `Runner.start` ended.
public enum StartOutcome: Sendable {
    /// No slot (or not enough GPUs) free now; nothing was kept.
    case busy
    /// The job ran and exited; `released` when the runner released its slot itself.
    case exited(JobExit, released: Bool)
}

extension Runner {
    /// Release, then clean up, one call each.
    public func finish(jobId: String, release: Bool, cleanup: Bool) async throws {
        if release { try await self.release(jobId: jobId) }
        if cleanup { try await self.cleanup(jobId: jobId) }
    }

    /// Nothing to close by default.
    public func disconnect() async {}

    /// No record by default.
    public var syncedBefore: Bool { false }

    /// Nothing to prepare by default.
    public func prepareTree(_ snapshot: Snapshot) async throws {}

    /// One `cleanup` per job.
    public func cleanup(jobIds: [String]) async throws {
        for id in jobIds { try await cleanup(jobId: id) }
    }

    /// Step by step: acquire, prepare, place, launch, follow.
    public func start(_ request: JobStart, events: @escaping @Sendable (StartEvent) async -> Void,
                      output: @escaping @Sendable (Data) async throws -> Void) async throws -> StartOutcome {
        try await startStepwise(self, request, events: events, output: output)
    }
}

/// `Runner.start` one call at a time, for runners that cannot do better (and jobs that need it).
func startStepwise(_ runner: some Runner, _ request: JobStart, events: @escaping @Sendable (StartEvent) async -> Void,
                   output: @escaping @Sendable (Data) async throws -> Void) async throws -> StartOutcome {
    let jobId = request.launch.jobId
    await events(.sending)
    if !request.cleanup.isEmpty { try await runner.cleanup(jobIds: request.cleanup) }
    guard let grant = try await runner.acquire(jobId: jobId, gpus: request.gpus, count: request.gpuCount,
                                               slots: request.slots, owner: request.owner) else { return .busy }
    await events(.granted(grant))
    try await runner.prepare(jobId: jobId, snapshot: request.snapshot)
    if let dependencies = request.dependencies { try await runner.place(jobId: jobId, from: dependencies) }
    var launch = request.launch
    launch.gpus = grant.gpus
    // On a machine with GPUs, a job that holds none must not see (and grab) the others' GPUs.
    if request.exportGPUs {
        launch.environment["CUDA_VISIBLE_DEVICES"] = grant.gpus.map(String.init).joined(separator: ",")
    }
    try await runner.launch(launch)
    await events(.launched)
    return .exited(try await runner.follow(jobId: jobId, from: 0, output: output), released: false)
}

/// A slot (and GPUs) held on a runner for one job.
public struct SlotGrant: Sendable, Hashable {
    /// The slot number.
    public var slot: Int
    /// The GPUs held.
    public var gpus: [Int]

    /// Creates a grant.
    public init(slot: Int, gpus: [Int]) {
        self.slot = slot
        self.gpus = gpus
    }

    /// Reads the acquire script's answer: the slot, then the GPUs; exit 3 or 4 mean nothing free.
    static func parse(status: Int32, output: String, stderr: String, runner: String) throws -> SlotGrant? {
        if status == 3 || status == 4 { return nil }
        let lines = output.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard status == 0, let first = lines.first, let slot = Int(first) else {
            throw RunnerError.unavailable(runner: runner, reason: "cannot take a slot lock (status \(status)): \(stderr)")
        }
        let gpus = lines.count > 1 ? lines[1].split(separator: " ").compactMap { Int($0) } : []
        return SlotGrant(slot: slot, gpus: gpus)
    }
}

/// Failures of a runner, in words a person can act on.
public enum RunnerError: Error, Sendable, CustomStringConvertible {
    /// The runner cannot be used (unreachable, misconfigured).
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
