import DstackModel
import DstackRunners
import DstackStorage
import Foundation

/// Which runners move artifact bytes to and from storage themselves (docs/transfers.md), found out once per runner:
/// a bucket must hand out URLs (long-term credentials) that the runner can use (a tool, an answer to a presigned GET);
/// a storage directory must be mounted on the runner at its `storage_path:` (a probe file written here is seen there). Everything else goes through the coordinator, as before, with a notice.
actor DirectRoutes {
    /// `$DSTACK_TRANSFERS`: `auto` (direct where possible, the default) or `relay` (always through this machine).
    let mode: String
    private var routes: [String: Task<Bool, Never>] = [:]

    /// Plain files at least this large go directly; smaller ones, folders and links travel with the relay.
    static let minimum: Int64 = 1 << 20
    /// How long a presigned URL stays valid.
    static let lifetime: Duration = .seconds(4 * 3600)

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        mode = environment["DSTACK_TRANSFERS"] ?? "auto"
    }

    /// The runner and storage to move `member`'s artifact bytes directly, or nil for the relay.
    func route(_ member: PoolMember, store: RunStore, sink: any RunEventSink) async -> (any DirectTransferRunner, any DirectStorage)? {
        guard mode != "relay", let runner = member.runner as? any DirectTransferRunner else { return nil }
        let storage: any DirectStorage
        let shared: Bool
        if let bucket = store.storage as? any DirectStorage {
            storage = bucket
            shared = false
        } else if let directory = store.storage as? DirectoryStorage, let path = runner.sharedStoragePath {
            // The runner's orders carry paths as words of a line.
            guard Coordinator.isPlainName(path + "/" + store.project) else {
                if routes[member.info.name] == nil {
                    routes[member.info.name] = Task { false }
                    sink.emit(.notice("runner '\(member.info.name)' copies no artifacts itself: its storage_path or the project's name holds characters other than letters, digits and . _ / + = , @ % -"))
                }
                return nil
            }
            storage = SharedDirectory(storage: directory, runnerRoot: path)
            shared = true
        } else {
            return nil
        }
        let name = member.info.name
        if let refusal = storage.directRefusal {
            if routes[""] == nil {
                routes[""] = Task { false }
                sink.emit(.notice("artifacts go through this machine, not straight to the bucket: \(refusal)"))
            }
            return nil
        }
        let decided: Task<Bool, Never>
        if let known = routes[name] {
            decided = known
        } else {
            decided = Task {
                let reach: DirectReach
                // A shared directory is probed with a file of a random name written here and looked for there.
                let probe = store.probeKey(UUID().uuidString)
                do {
                    if shared { try await store.storage.write(probe, data: Data("dstack\n".utf8)) }
                    reach = try await runner.directReach(try storage.directDownloadURL(probe, lifetime: .seconds(300)))
                } catch {
                    reach = .unreachable("\(error)")
                }
                if shared { try? await store.storage.delete(probe) }
                switch reach {
                case .reachable:
                    return true
                case .unreachable(let why):
                    sink.emit(.notice("runner '\(name)' cannot reach the \(shared ? "storage" : "bucket") itself (\(why)); its artifacts go through this machine"))
                    return false
                }
            }
            routes[name] = decided
        }
        return await decided.value ? (runner, storage) : nil
    }
}

/// Counts bytes moved and reports the start and end of one job's transfer (size and rate).
final class TransferMeter: Sendable {
    let workflow: String
    let verb: String
    let sink: any RunEventSink
    let started = ContinuousClock.now
    let total: Int64
    /// Bytes landed, and when the record was last told.
    let state = LockedValue<(moved: Int64, told: ContinuousClock.Instant)>((0, .now))
    let record: @Sendable (TransferProgress) -> Void

    init(workflow: String, verb: String, total: Int64, how: String, sink: any RunEventSink,
         record: @escaping @Sendable (TransferProgress) -> Void) {
        self.workflow = workflow
        self.verb = verb
        self.sink = sink
        self.total = total
        self.record = record
        sink.emit(.notice("[\(workflow)] \(verb) \(formatBytes(total)) \(how)"))
        record(TransferProgress(done: 0, total: total))
    }

    /// Adds bytes that landed; the job record hears of it at most once a second.
    func add(_ bytes: Int64) {
        let now = ContinuousClock.now
        var tell: Int64?
        var moved: Int64 = 0
        state.update { value in
            value.moved += bytes
            moved = value.moved
            if now - value.told >= .seconds(1) {
                value.told = now
                tell = value.moved
            }
        }
        if let tell { record(TransferProgress(done: tell, total: total)) }
        sink.emit(.transfer(workflow: workflow, TransferReport(verb: verb, done: moved, total: total,
                                                               bytesPerSecond: Double(moved) / Self.seconds(since: started))))
    }

    /// Reports the end: bytes, time and rate.
    func finish(total: Int64) {
        sink.emit(.transfer(workflow: workflow, nil))
        let time = Self.seconds(since: started)
        sink.emit(.notice("[\(workflow)] \(verb == "storing" ? "stored" : "fetched") \(formatBytes(total)) in \(formatDuration(time)) (\(formatBytes(Int64(Double(total) / time)))/s)"))
    }

    /// Seconds since `start` (at least a millisecond, so that rates stay finite).
    static func seconds(since start: ContinuousClock.Instant) -> Double {
        let elapsed = (ContinuousClock.now - start).components
        return max(0.001, Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18)
    }
}

extension Coordinator {
    /// Records how far a job's direct transfer has come (nil once it is over).
    func setTransfer(_ workflow: String, _ progress: TransferProgress?) {
        // A report that arrives after the job moved on is dropped, so a finished record never shows one.
        guard let job = record(workflow), progress == nil ? job.transfer != nil : job.status == .uploading else { return }
        update(workflow) { $0.transfer = progress }
        persistSoon()
    }

    /// Stores a finished job's artifacts: large files straight from the runner to the bucket where it can, the rest
    /// (or everything) through this machine.
    nonisolated func storeArtifacts(_ job: PlannedJob, on member: PoolMember) async throws {
        let runner = member.runner
        if let (direct, storage) = await directRoutes.route(member, store: store, sink: sink) {
            _ = try await direct.withSplitArtifacts(jobId: job.id, paths: job.artifacts, minimum: DirectRoutes.minimum) { staging, large in
                try await storeSplit(job, direct: direct, storage: storage, staging: staging, large: large)
            }
        } else {
            let started = ContinuousClock.now
            let manifest = try await runner.withArtifacts(jobId: job.id, paths: job.artifacts) { directory in
                try await store.storeArtifacts(cacheKey: job.cacheKey, run: runName, job: job.id,
                                               paths: job.artifacts, from: directory)
            }
            let total = manifest.files.reduce(0) { $0 + $1.size }
            if total >= DirectRoutes.minimum {
                let time = TransferMeter.seconds(since: started)
                sink.emit(.notice("[\(job.workflow)] stored \(formatBytes(total)) through this machine in \(formatDuration(time)) (\(formatBytes(Int64(Double(total) / time)))/s)"))
            }
        }
    }

    nonisolated private func storeSplit(_ job: PlannedJob, direct: any DirectTransferRunner, storage: any DirectStorage,
                                        staging: URL, large: [RunnerFile]) async throws -> ArtifactManifest {
        guard !large.isEmpty else {
            return try await store.storeArtifacts(cacheKey: job.cacheKey, run: runName, job: job.id, paths: job.artifacts, from: staging)
        }
        // A coordinator that died during a transfer of this key left its unfinished uploads: drop them first.
        try await storage.abortDirectUploads(under: store.artifactFilesPrefix(job.cacheKey))
        let total = large.reduce(0) { $0 + $1.size }
        let workflow = job.workflow
        let meter = TransferMeter(workflow: workflow, verb: "storing", total: total,
                                  how: "from \(direct.name) straight to \(storage is SharedDirectory ? "the storage" : "the bucket")", sink: sink) { progress in
            Task { await self.setTransfer(workflow, progress) }
        }
        defer { Task { await self.setTransfer(workflow, nil) } }
        var uploads: [DirectUpload] = []
        do {
            for file in large {
                uploads.append(try await storage.beginDirectUpload(store.artifactFileKey(job.cacheKey, file.path), size: file.size,
                                                                   lifetime: DirectRoutes.lifetime))
            }
            let orders = zip(large, uploads).map { DirectPut(path: $0.path, size: $0.size, partSize: $1.partSize, urls: $1.urls) }
            let results = try await direct.putDirect(jobId: job.id, orders) { meter.add($0) }
            var elsewhere: [String: ArtifactFile] = [:]
            for (index, file) in large.enumerated() {
                let result = results[index]
                try await storage.finishDirectUpload(uploads[index], parts: result.parts.map {
                    DirectPart(number: $0.number, md5: $0.md5, etag: $0.etag)
                })
                var entry = ArtifactFile(path: file.path, size: file.size, mode: file.mode)
                entry.sha256 = result.sha256
                elsewhere[file.path] = entry
                try Self.standIn(for: file, in: staging)
            }
            let manifest = try await store.storeArtifacts(cacheKey: job.cacheKey, run: runName, job: job.id, paths: job.artifacts,
                                                          from: staging, storedElsewhere: elsewhere)
            meter.finish(total: total)
            return manifest
        } catch {
            sink.emit(.transfer(workflow: workflow, nil))
            for upload in uploads { await storage.abortDirectUpload(upload) }
            throw error
        }
    }

    /// An empty file standing for one stored directly, so that the artifact's listing sees it (never through a link).
    static func standIn(for file: RunnerFile, in staging: URL) throws {
        let path = staging.appendingPathComponent(file.path)
        try FileManager.default.createDirectory(at: path.deletingLastPathComponent(), withIntermediateDirectories: true)
        let fd = open(path.path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw CoreError.notFound("cannot list '\(file.path)' among the artifacts: \(String(cString: strerror(errno)))")
        }
        fchmod(fd, mode_t(file.mode & 0o777))
        close(fd)
    }

    /// Reports a job's dependency files that its runner fetches itself (nil when there are none).
    nonisolated func fetchMeter(_ job: PlannedJob, _ gets: [DirectGet], on member: PoolMember) -> TransferMeter? {
        guard !gets.isEmpty else { return nil }
        return TransferMeter(workflow: job.workflow, verb: "fetching", total: gets.reduce(0) { $0 + $1.size },
                             how: "from \(store.storage is DirectoryStorage ? "the storage" : "the bucket") straight to \(member.info.name)",
                             sink: sink) { _ in }
    }

    /// Like `stageDependencies`, but the large files of the dependencies' artifacts are left for the runner to fetch
    /// from the bucket itself, where it can: their download orders come back beside the staging folder.
    nonisolated func stageDependencies(_ job: PlannedJob, on member: PoolMember) async throws -> (URL?, [DirectGet]) {
        guard let (_, storage) = await directRoutes.route(member, store: store, sink: sink) else {
            return (try await stageDependencies(job), [])
        }
        var manifests: [ArtifactManifest] = []
        for dep in job.dependsOn where declaresArtifacts.contains(dep) {
            if let key = cacheKeys[dep], let manifest = try await store.manifest(key), !manifest.files.isEmpty { manifests.append(manifest) }
        }
        for tag in job.tagDependencies where !tag.artifacts.isEmpty {
            if let manifest = try await store.manifest(tag.cacheKey), !manifest.files.isEmpty { manifests.append(manifest) }
        }
        var gets: [DirectGet] = []
        var leaving = Set<String>()
        for manifest in manifests {
            for file in manifest.files where file.link == nil && file.isDirectory != true && file.size >= DirectRoutes.minimum
                && Self.isPlainName(file.path) {
                let key = store.artifactFileKey(manifest.cacheKey, file.path)
                leaving.insert(key)
                gets.append(DirectGet(path: file.path, size: file.size, mode: file.mode, sha256: file.sha256,
                                      url: try storage.directDownloadURL(key, lifetime: DirectRoutes.lifetime)))
            }
        }
        guard !gets.isEmpty else { return (try await stageDependencies(job), []) }
        let staging = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-stage-\(job.id)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: true)
        do {
            try await store.downloadArtifacts(manifests, into: staging, leaving: leaving)
        } catch {
            try? FileManager.default.removeItem(at: staging)
            throw error
        }
        return (staging, gets)
    }

    /// Names the runner's transfer script carries on a line (the same set its listing accepts).
    static func isPlainName(_ path: String) -> Bool {
        !path.isEmpty && path.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                || [UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "/"), UInt8(ascii: "+"), UInt8(ascii: "="),
                    UInt8(ascii: ","), UInt8(ascii: "@"), UInt8(ascii: "%"), UInt8(ascii: "-")].contains(c)
        }
    }
}
