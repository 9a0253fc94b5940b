import DstackModel
import DstackRunners
import DstackStorage
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One file of a run's artifacts, as `dstack artifacts list` shows it.
public struct ArtifactEntry: Sendable, Codable, Hashable {
    /// The job that produced it (its workflow).
    public var job: String
    /// Its path relative to the repository root.
    public var path: String
    /// Its size in bytes.
    public var size: Int64
}

extension Workspace {
    /// The run called `name`, or a not-found error that says how to list runs.
    public func run(_ name: String) async throws -> RunRecord {
        guard let run = try await store.loadRun(name) else {
            throw CoreError.notFound("no run named '\(name)' in project '\(projectName)' (storage \(store.storage.location)); 'dstack ps -a' lists runs")
        }
        return run
    }

    /// A run by name, or by tag when written `:TAG`.
    public func run(nameOrTag: String) async throws -> RunRecord {
        if nameOrTag.hasPrefix(":") {
            let tag = String(nameOrTag.dropFirst())
            guard let record = try await store.tag(tag) else {
                throw CoreError.notFound("no tag '\(tag)'; 'dstack tags list' shows the tags")
            }
            return try await run(record.run)
        }
        return try await run(nameOrTag)
    }

    /// True when the run's coordinator has stopped saying it is alive (killed, or its machine went away).
    public func coordinatorGone(_ run: RunRecord, now: Date = Date()) -> Bool {
        guard !run.status.isFinished else { return false }
        guard let c = run.coordinator else { return true }
        if c.host == ProcessInfo.processInfo.hostName {
            return !processAlive(c.pid)
        }
        return now.timeIntervalSince(c.heartbeatAt) > 30
    }

    /// True while `pid` is a live process here (a zombie, killed but not yet reaped, counts as gone).
    func processAlive(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        #if os(Linux)
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
           let close = stat.lastIndex(of: ")") {
            let state = stat[stat.index(after: close)...].split(separator: " ").first
            if state == "Z" || state == "X" { return false }
        }
        #endif
        return true
    }

    /// Runs, newest first; `limit` keeps the first ones.
    public func runs(limit: Int? = nil) async throws -> [RunRecord] {
        let all = try await store.loadRuns()
        return limit.map { Array(all.prefix($0)) } ?? all
    }

    /// The tags, by run name.
    public func tagsByRun() async throws -> [String: [String]] {
        var out: [String: [String]] = [:]
        for tag in try await store.tags() { out[tag.run, default: []].append(tag.tag) }
        return out
    }

    /// Asks a run to stop (keeping the stopped jobs' artifacts unless `collect` is false). When its coordinator is
    /// gone, stops its jobs and records it here instead.
    public func stop(_ name: String, collect: Bool = true) async throws -> RunRecord {
        var record = try await run(name)
        guard !record.status.isFinished else { return record }
        try await store.requestStop(name, collect: collect)
        if coordinatorGone(record) {
            for i in record.jobs.indices where !record.jobs[i].status.isFinished {
                if record.jobs[i].status != .submitted, let runner = runners.first(where: { $0.name == record.jobs[i].runner }) {
                    try? await runner.stop(jobId: record.jobs[i].id)
                    try? await runner.release(jobId: record.jobs[i].id)
                }
                record.jobs[i].status = .stopped
                record.jobs[i].reason = "stopped by 'dstack stop'"
                record.jobs[i].finishedAt = Date()
            }
            record.status = .stopped
            record.finishedAt = Date()
            try await store.saveRun(record)
            return record
        }
        // The coordinator notices within a second and stops the jobs itself; wait for it to record that.
        for _ in 0..<300 {
            try await Task.sleep(nanoseconds: 100_000_000)
            record = try await run(name)
            if record.status.isFinished { return record }
        }
        throw CoreError.infrastructure("run '\(name)' did not stop within 30 seconds; its coordinator (pid \(record.coordinator?.pid ?? 0)) may be stuck")
    }

    /// Every file the run's finished jobs stored.
    public func artifacts(of run: RunRecord) async throws -> [ArtifactEntry] {
        var out: [ArtifactEntry] = []
        for job in run.jobs where job.status.isSuccess || job.artifactsKey != nil {
            guard let manifest = try await store.manifest(job.artifactsKey ?? job.cacheKey) else { continue }
            for file in manifest.files where file.isDirectory != true {
                out.append(ArtifactEntry(job: job.workflow, path: file.path, size: file.size))
            }
        }
        return out
    }

    /// Downloads every artifact of the run into `directory`, keeping paths and modes; returns what it placed.
    public func downloadArtifacts(of run: RunRecord, into directory: URL) async throws -> [ArtifactEntry] {
        // Every manifest at once: a link placed by one must not carry another's files out of `directory`.
        var manifests: [ArtifactManifest] = []
        for job in run.jobs where job.status.isSuccess || job.artifactsKey != nil {
            if let manifest = try await store.manifest(job.artifactsKey ?? job.cacheKey) { manifests.append(manifest) }
        }
        try await store.downloadArtifacts(manifests, into: directory)
        return try await artifacts(of: run)
    }

    /// Tags a finished run's results.
    public func addTag(_ tag: String, run name: String) async throws {
        guard Template.isValidName(tag) else {
            throw CoreError.invalid("'\(tag)' is not a valid tag (letters, digits, '_' and '-', starting with a letter)")
        }
        let record = try await run(name)
        guard record.status == .done else {
            throw CoreError.invalid("run '\(name)' is \(record.status.rawValue); only a run that is done can be tagged")
        }
        try await store.saveTag(TagRecord(tag: tag, run: name, createdAt: Date()))
    }

    /// Removes a tag.
    public func deleteTag(_ tag: String) async throws {
        guard try await store.tag(tag) != nil else { throw CoreError.notFound("no tag '\(tag)'; 'dstack tags list' shows the tags") }
        try await store.deleteTag(tag)
    }

    /// Deletes a finished, untagged run's records and logs.
    public func delete(_ name: String) async throws {
        let record = try await run(name)
        if !record.status.isFinished, !coordinatorGone(record) {
            throw CoreError.invalid("run '\(name)' is still \(record.status.rawValue); stop it first with 'dstack stop \(name)'")
        }
        if let tags = try await tagsByRun()[name] {
            throw CoreError.invalid("run '\(name)' is tagged \(tags.map { "'\($0)'" }.joined(separator: ", ")); delete the tag first with 'dstack tags delete \(tags[0])'")
        }
        try await store.deleteRun(name)
    }

    /// Deletes every finished untagged run, then the stored results no remaining run refers to.
    public func prune() async throws -> (runs: [String], artifacts: Int) {
        let tagged = try await tagsByRun()
        var removed: [String] = []
        var kept: [RunRecord] = []
        for run in try await store.loadRuns() {
            if run.status.isFinished, tagged[run.name] == nil {
                try await store.deleteRun(run.name)
                removed.append(run.name)
            } else {
                kept.append(run)
            }
        }
        var referenced = Set<String>()
        for run in kept {
            for job in run.jobs {
                referenced.insert(job.cacheKey)
                if let key = job.artifactsKey { referenced.insert(key) }
                job.tagDependencies.forEach { referenced.insert($0.cacheKey) }
            }
        }
        var artifacts = 0
        for key in try await store.artifactKeys() where !referenced.contains(key) {
            try await store.deleteCacheEntry(key)
            try await store.deleteArtifacts(key)
            artifacts += 1
        }
        for key in try await store.cachedKeys() where !referenced.contains(key) {
            try await store.deleteCacheEntry(key)
        }
        return (removed, artifacts)
    }

    /// The plan `dstack run` would make now, with cache hits marked, for `dstack dag`.
    public func dag(_ request: RunRequest) async throws -> Plan {
        let project = try loadProject()
        let snapshot = try await Snapshotter.snapshot(root: root, cache: snapshotCache)
        return try await plan(request, project: project, snapshot: snapshot, runName: "<run>")
    }
}
