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

/// Counts the bytes of one job's artifact transfer and shows them: a line when it starts and one when it ends (size
/// and rate), a live line on a terminal (bytes, rate, time left) and the job record's figures for `dstack status`.
///
/// A transfer may go in stretches (`begin`): through this machine, from the runner here, then from here to the
/// bucket; the live line and the record follow the current stretch. Transfers under `DirectRoutes.minimum` are
/// not announced, and their live line is not drawn.
final class TransferMeter: Sendable {
    let workflow: String
    /// `storing` or `fetching`.
    let verb: String
    let sink: any RunEventSink
    let started = ContinuousClock.now
    let record: @Sendable (TransferProgress) -> Void

    struct State {
        var label: String
        var total: Int64 = 0
        var moved: Int64 = 0
        var since = ContinuousClock.now
        /// When the record was last told, and when the live line was last drawn.
        var told = ContinuousClock.now
        var drawn: ContinuousClock.Instant?
        var announced = false
        var over = false
    }
    let state: LockedValue<State>

    init(workflow: String, verb: String, sink: any RunEventSink, record: @escaping @Sendable (TransferProgress) -> Void = { _ in }) {
        self.workflow = workflow
        self.verb = verb
        self.sink = sink
        self.record = record
        state = LockedValue(State(label: verb))
    }

    /// A stretch starts: about `total` bytes to move, shown as `label`. The first stretch worth showing is announced
    /// with `announcement` (a line without the job's tag).
    func begin(_ label: String, total: Int64, announcing announcement: @autoclosure () -> String) {
        var announce = false
        state.update { state in
            state.label = label
            state.total = total
            state.moved = 0
            state.since = .now
            state.drawn = nil
            if !state.announced, total >= DirectRoutes.minimum {
                state.announced = true
                announce = true
            }
        }
        if announce { sink.emit(.notice("[\(workflow)] \(announcement())")) }
        if total >= DirectRoutes.minimum { record(TransferProgress(done: 0, total: total)) }
    }

    /// The total of the current stretch.
    var total: Int64 { state.get().total }

    /// Adds bytes that landed; the job record hears of it at most once a second, the live line five times.
    func add(_ bytes: Int64) {
        let now = ContinuousClock.now
        var tell: TransferProgress?
        // The live line is sent under the meter's lock, so that none can follow the `end` that took it away.
        state.update { state in
            guard !state.over else { return }
            state.moved += bytes
            // An estimate (a folder's size) may fall short.
            state.total = max(state.total, state.moved)
            guard state.total >= DirectRoutes.minimum else { return }
            if now - state.told >= .seconds(1) {
                state.told = now
                tell = TransferProgress(done: state.moved, total: state.total)
            }
            if state.drawn.map({ now - $0 >= .milliseconds(200) }) ?? true {
                state.drawn = now
                sink.emit(.transfer(workflow: workflow, TransferReport(verb: state.label, done: state.moved, total: state.total,
                                                                       bytesPerSecond: Double(state.moved) / Self.seconds(since: state.since))))
            }
        }
        if let tell { record(tell) }
    }

    /// Reports the end: `total` bytes moved `how`, the time and the rate (when the start was announced).
    func finish(total: Int64, how: String = "") {
        let announced = end()
        guard announced else { return }
        let time = Self.seconds(since: started)
        sink.emit(.notice("[\(workflow)] \(verb == "storing" ? "stored" : "fetched") \(formatBytes(total))\(how.isEmpty ? "" : " " + how) in \(formatDuration(time)) (\(formatBytes(Int64(Double(total) / time)))/s)"))
    }

    /// Takes the live line away (a failed transfer); returns whether the start was announced.
    @discardableResult
    func end() -> Bool {
        var announced = false
        state.update { state in
            announced = state.announced
            state.over = true
            sink.emit(.transfer(workflow: workflow, nil))
        }
        return announced
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
            // Through this machine: from the runner here (unless it is this machine), then here to storage.
            let meter = storingMeter(job.workflow)
            defer { Task { await self.setTransfer(job.workflow, nil) } }
            let (from, to) = (member.info.name, storageName)
            let relayed = LockedValue(false)
            let observer = TransferObserver(leg: { leg, bytes in
                if leg == .fromRunner {
                    relayed.set(true)
                    meter.begin("storing from \(from)", total: bytes, announcing: "storing \(formatBytes(bytes)) from \(from) through this machine")
                } else {
                    meter.begin("storing to \(to)", total: bytes, announcing: "storing \(formatBytes(bytes)) to \(to)")
                }
            }, moved: meter.add)
            do {
                let manifest = try await TransferObserver.$current.withValue(observer) {
                    try await runner.withArtifacts(jobId: job.id, paths: job.artifacts) { directory in
                        try await store.storeArtifacts(cacheKey: job.cacheKey, run: runName, job: job.id,
                                                       paths: job.artifacts, from: directory)
                    }
                }
                meter.finish(total: manifest.files.reduce(0) { $0 + $1.size }, how: relayed.get() ? "through this machine" : "")
            } catch {
                meter.end()
                throw error
            }
        }
    }

    /// A meter for a job's storing, whose figures go to its record (`dstack status`).
    nonisolated func storingMeter(_ workflow: String) -> TransferMeter {
        TransferMeter(workflow: workflow, verb: "storing", sink: sink) { progress in
            Task { await self.setTransfer(workflow, progress) }
        }
    }

    /// How transfer lines name the storage.
    nonisolated var storageName: String { store.storage is DirectoryStorage ? "the storage" : "the bucket" }

    nonisolated private func storeSplit(_ job: PlannedJob, direct: any DirectTransferRunner, storage: any DirectStorage,
                                        staging: URL, large: [RunnerFile]) async throws -> ArtifactManifest {
        guard !large.isEmpty else {
            return try await store.storeArtifacts(cacheKey: job.cacheKey, run: runName, job: job.id, paths: job.artifacts, from: staging)
        }
        // A coordinator that died during a transfer of this key left its unfinished uploads: drop them first.
        try await storage.abortDirectUploads(under: store.artifactFilesPrefix(job.cacheKey))
        let total = large.reduce(0) { $0 + $1.size }
        let workflow = job.workflow
        let meter = storingMeter(workflow)
        meter.begin("storing", total: total,
                    announcing: "storing \(formatBytes(total)) from \(direct.name) straight to \(storage is SharedDirectory ? "the storage" : "the bucket")")
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
            meter.end()
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

    /// Stages a job's dependencies with a meter that shows them move: from storage to this machine (the relay's
    /// first stretch), then, once the runner is sent them, to the runner (the relay's second stretch and the files
    /// it fetches itself, which `Runner.run` reports as `.transferred`). Returns the meter when there is anything
    /// for the runner to receive.
    nonisolated func stageDependenciesShown(_ job: PlannedJob, on member: PoolMember) async throws -> (URL?, [DirectGet], TransferMeter?) {
        let meter = TransferMeter(workflow: job.workflow, verb: "fetching", sink: sink)
        let (from, to) = (storageName, member.info.name)
        let local = member.runner is LocalRunner
        let observer = TransferObserver(leg: { _, bytes in
            meter.begin("fetching from \(from)", total: bytes,
                        announcing: "fetching \(formatBytes(bytes)) from \(from)\(local ? "" : " through this machine")")
        }, moved: meter.add)
        let staging: URL?
        let gets: [DirectGet]
        do {
            (staging, gets) = try await TransferObserver.$current.withValue(observer) { try await stageDependencies(job, on: member) }
        } catch {
            meter.end()
            throw error
        }
        // The second stretch: what the runner receives from this machine (none for this machine's own runner) and
        // what it fetches itself.
        let relayed = local ? 0 : staging.map(FolderGrowth.size) ?? 0
        let direct = gets.reduce(0) { $0 + $1.size }
        guard relayed + direct > 0 else {
            // All here already (this machine's own runner places them itself): the end line, if it was announced.
            meter.finish(total: meter.total)
            return (staging, gets, nil)
        }
        if direct >= relayed {
            meter.begin("fetching", total: relayed + direct, announcing: "fetching \(formatBytes(direct)) from \(from) straight to \(to)")
        } else {
            meter.begin("fetching to \(to)", total: relayed + direct, announcing: "fetching \(formatBytes(relayed + direct)) through this machine to \(to)")
        }
        return (staging, gets, meter)
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
