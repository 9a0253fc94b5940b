import Foundation

/// The states a job goes through; `cached` marks a reused result.
public enum JobState: String, Sendable, Codable, CaseIterable {
    case submitted, preparing, running, uploading, done, failed, stopped, skipped, cached

    /// True once the job will not change any more.
    public var isFinished: Bool {
        switch self {
        case .done, .failed, .stopped, .skipped, .cached: return true
        default: return false
        }
    }

    /// True when the job's results can be used by jobs that depend on it.
    public var isSuccess: Bool { self == .done || self == .cached }
}

/// The state of a run as a whole.
public enum RunState: String, Sendable, Codable {
    case submitted, running, done, failed, stopped

    /// True once the run will not change any more.
    public var isFinished: Bool { self == .done || self == .failed || self == .stopped }

    /// The state a run is in given its jobs' states (and whether a stop was asked for).
    public static func of(_ jobs: [JobState], stopRequested: Bool = false) -> RunState {
        if jobs.contains(where: { !$0.isFinished }) { return jobs.allSatisfy { $0 == .submitted } ? .submitted : .running }
        if jobs.contains(.failed) { return .failed }
        if jobs.contains(.stopped) || stopRequested && !jobs.allSatisfy(\.isSuccess) { return .stopped }
        if jobs.allSatisfy(\.isSuccess) { return .done }
        return .failed
    }
}

/// One try at running a job.
public struct Attempt: Sendable, Codable, Hashable {
    /// The runner it ran on.
    public var runner: String
    /// When it started.
    public var startedAt: Date
    /// When it ended, if it has.
    public var finishedAt: Date?
    /// The commands' exit code, if they exited.
    public var exitCode: Int32?
    /// The signal that ended it, if one did.
    public var signal: Int32?
    /// Why it ended, in a few words, when not by a plain exit.
    public var reason: String?
    /// The size of the job's stored log when this attempt began: its own output starts there.
    public var logStart: Int64?
    /// True while the attempt was sent to its runner but not yet granted a slot there (a busy runner's refusal
    /// then removes it: it never ran).
    public var pending: Bool?

    /// Creates an attempt that has just started.
    public init(runner: String, startedAt: Date) {
        self.runner = runner
        self.startedAt = startedAt
    }
}

/// How far a job's artifact transfer has come.
public struct TransferProgress: Sendable, Codable, Hashable {
    /// Bytes moved.
    public var done: Int64
    /// Bytes to move.
    public var total: Int64

    /// Creates a progress record.
    public init(done: Int64, total: Int64) {
        self.done = done
        self.total = total
    }
}

/// What storage knows about one job of a run (`runs/<run>/jobs/<job>/job.json`, and inside `run.json`).
public struct JobRecord: Sendable, Codable, Hashable {
    /// The job's id, unique across runs: `<run>-<workflow>`.
    public var id: String
    /// The workflow it runs.
    public var workflow: String
    /// Its state.
    public var status: JobState
    /// Where it ran (`local` for the local runner), if it was dispatched.
    public var runner: String?
    /// The exit code of its commands, once they exited.
    public var exitCode: Int32?
    /// The signal that ended it, if one did.
    public var signal: Int32?
    /// Why it failed, stopped or was skipped, in a few words.
    public var reason: String?
    /// Its cache key.
    public var cacheKey: String
    /// Ids of the jobs of this run it waits for.
    public var dependsOn: [String]
    /// Tagged results it uses: `workflow:tag` → the tagged run's job whose artifacts are placed.
    public var tagDependencies: [TagDependency]
    /// Artifact paths it stores when it succeeds.
    public var artifacts: [String]
    /// For a cached job: the run and job whose results were reused.
    public var cachedFrom: CacheEntry?
    /// For a stopped job whose partial artifacts were kept: where they are stored (never a cache key).
    public var artifactsKey: String?
    /// When it started running.
    public var startedAt: Date?
    /// When it finished.
    public var finishedAt: Date?
    /// Every try, oldest first.
    public var attempts: [Attempt]
    /// Artifact bytes moved so far while the job stores (or fetches) them directly; nil otherwise.
    public var transfer: TransferProgress?
    /// On a Slurm runner: the job's Slurm id, state and reason, as last seen.
    public var slurm: SlurmJobState?

    /// Creates a job record in state `submitted`.
    public init(id: String, workflow: String, cacheKey: String, dependsOn: [String],
                tagDependencies: [TagDependency] = [], artifacts: [String]) {
        self.id = id
        self.workflow = workflow
        self.status = .submitted
        self.cacheKey = cacheKey
        self.dependsOn = dependsOn
        self.tagDependencies = tagDependencies
        self.artifacts = artifacts
        self.attempts = []
    }
}

/// A dependency on a tagged run's results.
public struct TagDependency: Sendable, Codable, Hashable {
    /// The workflow whose results are used.
    public var workflow: String
    /// The tag.
    public var tag: String
    /// The tagged run.
    public var run: String
    /// The cache key of the tagged run's job for `workflow`, under which its artifacts are stored.
    public var cacheKey: String
    /// The artifact paths that job stored.
    public var artifacts: [String]

    /// Creates a resolved tag dependency.
    public init(workflow: String, tag: String, run: String, cacheKey: String, artifacts: [String]) {
        self.workflow = workflow
        self.tag = tag
        self.run = run
        self.cacheKey = cacheKey
        self.artifacts = artifacts
    }
}

/// Who is coordinating a run, and when it last said so.
public struct CoordinatorInfo: Sendable, Codable, Hashable {
    /// The coordinator's host name.
    public var host: String
    /// Its process id.
    public var pid: Int32
    /// The last time it wrote the run record.
    public var heartbeatAt: Date

    /// Creates coordinator info.
    public init(host: String, pid: Int32, heartbeatAt: Date) {
        self.host = host
        self.pid = pid
        self.heartbeatAt = heartbeatAt
    }
}

/// What storage knows about a run (`runs/<run>/run.json`).
public struct RunRecord: Sendable, Codable, Hashable {
    /// The run's name (`grumpy-zebra-1`).
    public var name: String
    /// The project it belongs to.
    public var project: String
    /// The workflow that was asked for.
    public var workflow: String
    /// Variables given on the command line.
    public var overrides: [String: String]
    /// The code snapshot's id.
    public var snapshotId: String
    /// Its state.
    public var status: RunState
    /// When it was submitted.
    public var submittedAt: Date
    /// When it finished.
    public var finishedAt: Date?
    /// The coordinator, while one runs.
    public var coordinator: CoordinatorInfo?
    /// True once `dstack stop` asked for it to stop.
    public var stopRequested: Bool
    /// Keep job directories even on success.
    public var keep: Bool
    /// A tag to give the run once it is done (`dstack run -t TAG`).
    public var tagWhenDone: String?
    /// How many times a job whose runner is lost is tried again elsewhere (`--retries`, default 2).
    public var retries: Int = 2
    /// Its jobs, in dependency order.
    public var jobs: [JobRecord]
    /// Who submitted it, from which code, with which command (nil for runs recorded before it was kept).
    public var provenance: Provenance?

    /// Creates a run record.
    public init(name: String, project: String, workflow: String, overrides: [String: String], snapshotId: String,
                submittedAt: Date, jobs: [JobRecord], keep: Bool = false) {
        self.name = name
        self.project = project
        self.workflow = workflow
        self.overrides = overrides
        self.snapshotId = snapshotId
        self.status = .submitted
        self.submittedAt = submittedAt
        self.stopRequested = false
        self.keep = keep
        self.jobs = jobs
    }

    enum CodingKeys: String, CodingKey {
        case name, project, workflow, overrides, snapshotId, status, submittedAt, finishedAt, coordinator, stopRequested
        case keep, jobs, tagWhenDone, retries, provenance
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        project = try c.decode(String.self, forKey: .project)
        workflow = try c.decode(String.self, forKey: .workflow)
        overrides = try c.decode([String: String].self, forKey: .overrides)
        snapshotId = try c.decode(String.self, forKey: .snapshotId)
        status = try c.decode(RunState.self, forKey: .status)
        submittedAt = try c.decode(Date.self, forKey: .submittedAt)
        finishedAt = try c.decodeIfPresent(Date.self, forKey: .finishedAt)
        coordinator = try c.decodeIfPresent(CoordinatorInfo.self, forKey: .coordinator)
        stopRequested = try c.decodeIfPresent(Bool.self, forKey: .stopRequested) ?? false
        keep = try c.decodeIfPresent(Bool.self, forKey: .keep) ?? false
        jobs = try c.decode([JobRecord].self, forKey: .jobs)
        tagWhenDone = try c.decodeIfPresent(String.self, forKey: .tagWhenDone)
        retries = try c.decodeIfPresent(Int.self, forKey: .retries) ?? 2
        provenance = try c.decodeIfPresent(Provenance.self, forKey: .provenance)
    }
}

/// `cache/<key>.json`: which run and job produced the results stored under a cache key.
public struct CacheEntry: Sendable, Codable, Hashable {
    /// The run that produced them.
    public var run: String
    /// The job that produced them.
    public var job: String
    /// When it finished.
    public var finishedAt: Date

    /// Creates a cache entry.
    public init(run: String, job: String, finishedAt: Date) {
        self.run = run
        self.job = job
        self.finishedAt = finishedAt
    }
}

/// `tags/<tag>.json`: a name for a run's results.
public struct TagRecord: Sendable, Codable, Hashable {
    /// The tag.
    public var tag: String
    /// The run it names.
    public var run: String
    /// When it was made.
    public var createdAt: Date

    /// Creates a tag record.
    public init(tag: String, run: String, createdAt: Date) {
        self.tag = tag
        self.run = run
        self.createdAt = createdAt
    }
}

/// One file of a stored artifact.
public struct ArtifactFile: Sendable, Codable, Hashable {
    /// Its path relative to the repository root (so it starts with the artifact's path).
    public var path: String
    /// Its size in bytes (0 for directories and links).
    public var size: Int64
    /// Its permission bits.
    public var mode: UInt32
    /// For a symbolic link: where it points (always inside the artifact).
    public var link: String?
    /// True for an (empty) directory entry.
    public var isDirectory: Bool?
    /// The hex SHA-256 of a file's content, when the runner that stored it directly computed it (see
    /// docs/transfers.md); a runner fetching the file directly checks it.
    public var sha256: String?

    /// Creates an entry.
    public init(path: String, size: Int64, mode: UInt32, link: String? = nil, isDirectory: Bool? = nil) {
        self.path = path
        self.size = size
        self.mode = mode
        self.link = link
        self.isDirectory = isDirectory
    }
}

/// `artifacts/<key>/manifest.json`: written last, so an artifact without one does not exist.
public struct ArtifactManifest: Sendable, Codable, Hashable {
    /// The cache key the files belong to.
    public var cacheKey: String
    /// The run that produced them.
    public var run: String
    /// The job that produced them.
    public var job: String
    /// The artifact paths declared by the workflow.
    public var paths: [String]
    /// Every stored file.
    public var files: [ArtifactFile]
    /// When they were stored.
    public var createdAt: Date

    /// Creates a manifest.
    public init(cacheKey: String, run: String, job: String, paths: [String], files: [ArtifactFile], createdAt: Date) {
        self.cacheKey = cacheKey
        self.run = run
        self.job = job
        self.paths = paths
        self.files = files
        self.createdAt = createdAt
    }
}

/// The JSON form used for every record: snake_case keys, ISO 8601 dates, sorted keys.
public enum RecordCoding {
    /// An encoder for records.
    public static func encoder(pretty: Bool = true) -> JSONEncoder {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(formatTimestamp(date))
        }
        e.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        return e
    }

    /// A decoder for records.
    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        d.dateDecodingStrategy = .custom { decoder in
            let c = try decoder.singleValueContainer()
            let s = try c.decode(String.self)
            guard let date = parseTimestamp(s) else {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "not an ISO 8601 time: \(s)")
            }
            return date
        }
        return d
    }
}

/// Formats a time as ISO 8601 UTC with milliseconds (`2026-11-27T02:06:31.123Z`).
public func formatTimestamp(_ date: Date) -> String {
    date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
}

/// Parses an ISO 8601 time, with or without fractional seconds.
public func parseTimestamp(_ text: String) -> Date? {
    if let d = try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text) { return d }
    return try? Date.ISO8601FormatStyle().parse(text)
}
