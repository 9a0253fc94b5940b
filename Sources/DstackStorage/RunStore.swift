import Crypto
import DstackModel
import Foundation

/// The storage layout of DESIGN.md §4 for one project, built on any `Storage`:
///
/// ```
/// <project>/runs/<run>/run.json, jobs/<job>/job.json, jobs/<job>/log
/// <project>/artifacts/<cache-key>/manifest.json + files/<path>
/// <project>/cache/<cache-key>.json
/// <project>/tags/<tag>.json
/// ```
public struct RunStore: Sendable {
    /// The backend.
    public let storage: any Storage
    /// The project whose records these are.
    public let project: String

    /// Creates a store for `project` in `storage`.
    public init(storage: any Storage, project: String) {
        self.storage = storage
        self.project = project
    }

    func key(_ parts: String...) -> String { ([project] + parts).joined(separator: "/") }

    // MARK: Runs

    /// Claims a run name atomically; false when another coordinator holds it already (nothing is written then).
    ///
    /// The claim comes before any other record of the run, so two coordinators can never write the same run.
    public func claimRunName(_ name: String, by owner: String) async throws -> Bool {
        try await storage.create(key("runs", name, "claim"), data: Data(owner.utf8))
    }

    /// Replaces a run's record and the records of its jobs.
    public func saveRun(_ run: RunRecord) async throws {
        try await storage.write(key("runs", run.name, "run.json"), data: encode(run))
    }

    /// Writes one job's own record (`job.json`).
    public func saveJob(_ job: JobRecord, run: String) async throws {
        try await storage.write(key("runs", run, "jobs", job.workflow, "job.json"), data: encode(job))
    }

    /// A job's own record (`job.json`), written on every change of the job, so never older than `run.json`'s copy.
    public func loadJob(run: String, workflow: String) async throws -> JobRecord? {
        guard let data = try await storage.read(key("runs", run, "jobs", workflow, "job.json")) else { return nil }
        return try? RecordCoding.decoder().decode(JobRecord.self, from: data)
    }

    /// The record of run `name`, or nil.
    public func loadRun(_ name: String) async throws -> RunRecord? {
        guard let data = try await storage.read(key("runs", name, "run.json")) else { return nil }
        do {
            return try RecordCoding.decoder().decode(RunRecord.self, from: data)
        } catch {
            throw StorageError.unusable(location: storage.location, reason: "run record '\(name)' is unreadable (\(error)); delete it with 'dstack delete \(name)'")
        }
    }

    /// The names of every stored run (unordered).
    public func runNames() async throws -> [String] {
        try await storage.listChildren(prefix: key("runs") + "/")
    }

    /// Every stored run, newest first.
    public func loadRuns() async throws -> [RunRecord] {
        let names = try await runNames()
        var runs: [RunRecord] = []
        try await withThrowingTaskGroup(of: RunRecord?.self) { group in
            var next = names.makeIterator()
            // A bounded number of reads in flight: fast on a bucket, gentle on a file system.
            for _ in 0..<16 {
                guard let name = next.next() else { break }
                group.addTask { try? await loadRun(name) }
            }
            while let result = try await group.next() {
                if let run = result { runs.append(run) }
                if let name = next.next() { group.addTask { try? await loadRun(name) } }
            }
        }
        return runs.sorted { ($0.submittedAt, $0.name) > ($1.submittedAt, $1.name) }
    }

    /// Removes a run's records and logs (artifacts stay, they belong to the cache).
    public func deleteRun(_ name: String) async throws {
        try await storage.deleteAll(prefix: key("runs", name) + "/")
    }

    /// Takes the run's coordinator lease atomically; false when a lease is already stored (see `lease(_:)`).
    public func takeLease(_ run: String, _ holder: CoordinatorInfo) async throws -> Bool {
        try await storage.create(key("runs", run, "lease"), data: encode(holder))
    }

    /// A run's coordinator lease as stored: its holder (nil when the record cannot be read) and its exact bytes.
    public struct Lease: Sendable {
        /// Who holds it, when the record can be read.
        public var holder: CoordinatorInfo?
        /// The stored bytes, which identify this lease among all the run will ever have.
        public var raw: Data
    }

    /// The run's lease as stored now, or nil when nobody holds it.
    public func lease(_ run: String) async throws -> Lease? {
        guard let data = try await storage.read(key("runs", run, "lease")) else { return nil }
        return Lease(holder: try? RecordCoding.decoder().decode(CoordinatorInfo.self, from: data), raw: data)
    }

    /// Takes over `dead`, a lease whose holder was found gone; true when this process now holds the run.
    ///
    /// Two `attach` that both find the same dead holder must not both take the run: each first creates a claim
    /// named after the dead lease's bytes, atomically (`link(2)` on a directory, `If-None-Match` on a bucket), and
    /// only the one whose claim was created replaces the lease. Nothing is ever moved aside and put back, so a
    /// live holder's lease never disappears, even for a moment. Claims stay with the run until it is deleted.
    public func takeOverLease(_ run: String, from dead: Lease, _ holder: CoordinatorInfo) async throws -> Bool {
        let digest = SHA256.hash(data: dead.raw).prefix(12).map { String(format: "%02x", $0) }.joined()
        guard try await storage.create(key("runs", run, "lease-takeover-" + digest), data: encode(holder)) else { return false }
        try await storage.write(key("runs", run, "lease"), data: encode(holder))
        return true
    }

    /// Gives the lease up (its holder does, once the run is coordinated).
    public func dropLease(_ run: String) async throws {
        try await storage.delete(key("runs", run, "lease"))
    }

    /// Asks the run's coordinator to stop it (it polls for this); `collect` keeps the stopped jobs' artifacts.
    public func requestStop(_ run: String, collect: Bool = true) async throws {
        try await storage.write(key("runs", run, "stop"), data: Data(((collect ? "collect " : "abort ") + formatTimestamp(Date())).utf8))
    }

    /// nil until `requestStop` was called for the run; then whether the stopped jobs' artifacts are kept.
    public func stopRequested(_ run: String) async throws -> Bool? {
        guard let data = try await storage.read(key("runs", run, "stop")) else { return nil }
        return !String(decoding: data, as: UTF8.self).hasPrefix("abort")
    }

    /// Stores the plan and the snapshot manifest of a run, so another process can coordinate it later.
    public func saveRunInputs(_ run: String, plan: Data, snapshot: Data) async throws {
        try await storage.write(key("runs", run, "plan.json"), data: plan)
        try await storage.write(key("runs", run, "snapshot.json"), data: snapshot)
    }

    /// The plan and snapshot manifest stored by `saveRunInputs`.
    public func loadRunInputs(_ run: String) async throws -> (plan: Data, snapshot: Data)? {
        guard let plan = try await storage.read(key("runs", run, "plan.json")),
              let snapshot = try await storage.read(key("runs", run, "snapshot.json")) else { return nil }
        return (plan, snapshot)
    }

    // MARK: Logs

    /// The key of a job's stored log.
    public func logKey(run: String, workflow: String) -> String { key("runs", run, "jobs", workflow, "log") }

    /// Adds output to a job's stored log.
    public func appendLog(run: String, workflow: String, _ data: Data) async throws {
        try await storage.append(logKey(run: run, workflow: workflow), data: data)
    }

    /// The size of a job's stored log: where following resumes, so nothing is lost or doubled.
    public func logSize(run: String, workflow: String) async throws -> Int64 {
        let key = logKey(run: run, workflow: workflow)
        return try await storage.list(prefix: key).first { $0.key == key }?.size ?? 0
    }

    /// A job's stored log so far (empty when there is none).
    public func readLog(run: String, workflow: String) async throws -> Data {
        try await storage.read(logKey(run: run, workflow: workflow)) ?? Data()
    }

    // MARK: Cache

    /// The cache entry for `cacheKey`, or nil.
    public func cacheEntry(_ cacheKey: String) async throws -> CacheEntry? {
        guard let data = try await storage.read(key("cache", cacheKey + ".json")) else { return nil }
        return try? RecordCoding.decoder().decode(CacheEntry.self, from: data)
    }

    /// Every cache key that has an entry, read with one listing rather than one read per job.
    public func cachedKeys() async throws -> Set<String> {
        let prefix = key("cache") + "/"
        return Set(try await storage.list(prefix: prefix).compactMap { object in
            let name = object.key.dropFirst(prefix.count)
            return name.hasSuffix(".json") ? String(name.dropLast(5)) : nil
        })
    }

    /// Records that `cacheKey`'s results are stored (written after the artifacts and their manifest).
    public func recordCache(_ cacheKey: String, _ entry: CacheEntry) async throws {
        try await storage.write(key("cache", cacheKey + ".json"), data: encode(entry))
    }

    /// Forgets a cache entry (its artifacts stay until pruned).
    public func deleteCacheEntry(_ cacheKey: String) async throws {
        try await storage.delete(key("cache", cacheKey + ".json"))
    }

    // MARK: Tags

    /// The tag called `name`, or nil.
    public func tag(_ name: String) async throws -> TagRecord? {
        guard let data = try await storage.read(key("tags", name + ".json")) else { return nil }
        return try? RecordCoding.decoder().decode(TagRecord.self, from: data)
    }

    /// Every tag, by name.
    public func tags() async throws -> [TagRecord] {
        let prefix = key("tags") + "/"
        var out: [TagRecord] = []
        for object in try await storage.list(prefix: prefix) where object.key.hasSuffix(".json") {
            if let data = try await storage.read(object.key),
               let tag = try? RecordCoding.decoder().decode(TagRecord.self, from: data) {
                out.append(tag)
            }
        }
        return out.sorted { $0.tag < $1.tag }
    }

    /// Creates or moves a tag.
    public func saveTag(_ tag: TagRecord) async throws {
        try await storage.write(key("tags", tag.tag + ".json"), data: encode(tag))
    }

    /// Removes a tag.
    public func deleteTag(_ name: String) async throws {
        try await storage.delete(key("tags", name + ".json"))
    }

    // MARK: Artifacts

    /// The key prefix of an artifact's files.
    /// The storage key of one artifact file.
    public func artifactFileKey(_ cacheKey: String, _ path: String) -> String { key("artifacts", cacheKey, "files", path) }

    /// The key of a short-lived file that shows whether a runner sees this storage (docs/transfers.md).
    public func probeKey(_ name: String) -> String { key(".direct-probe-" + name) }

    /// The storage key prefix under which the files of `cacheKey` live.
    public func artifactFilesPrefix(_ cacheKey: String) -> String { key("artifacts", cacheKey, "files") + "/" }

    /// The manifest stored for `cacheKey`, or nil when its artifacts are not (completely) stored.
    public func manifest(_ cacheKey: String) async throws -> ArtifactManifest? {
        guard let data = try await storage.read(key("artifacts", cacheKey, "manifest.json")) else { return nil }
        return try? RecordCoding.decoder().decode(ArtifactManifest.self, from: data)
    }

    /// Removes the stored artifacts of `cacheKey`, manifest first so readers stop seeing them at once.
    public func deleteArtifacts(_ cacheKey: String) async throws {
        try await storage.delete(key("artifacts", cacheKey, "manifest.json"))
        try await storage.deleteAll(prefix: key("artifacts", cacheKey) + "/")
    }

    /// The cache keys that have artifacts stored.
    public func artifactKeys() async throws -> [String] {
        try await storage.listChildren(prefix: key("artifacts") + "/")
    }

    func encode<T: Encodable>(_ value: T) throws -> Data {
        try RecordCoding.encoder().encode(value)
    }
}
