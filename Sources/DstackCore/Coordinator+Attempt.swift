import DstackModel
import DstackRunners
import DstackStorage
import Foundation

extension Coordinator {
    /// One attempt of a job on `member`, as a child task: syncs the code there, stages the dependencies' artifacts,
    /// runs the job through `Runner.run` (recording what the runner reports as it comes) and collects its results.
    /// Returns what it came to; the loop applies it.
    nonisolated func attempt(_ job: PlannedJob, on member: PoolMember, number: Int, resuming: Bool) async -> AttemptResult {
        let runner = member.runner
        var staging: URL?
        defer { if let staging { try? FileManager.default.removeItem(at: staging) } }
        var request: JobStart
        var fetching: TransferMeter?
        // An attempt that ends before its job launched takes its live line away.
        defer { fetching?.end() }
        // Finished jobs' folders this start was to remove: given back if it never reached its runner.
        var cleanup: [String] = []
        var granted = false
        defer {
            if !granted, !cleanup.isEmpty {
                let (name, ids) = (member.info.name, cleanup)
                returnedCleanup.update { $0[name, default: []] += ids }
            }
        }
        let output: JobOutput
        do {
            try await ensureSynced(member)
            // A resumed attempt whose job is already running there needs no artifacts; one that never launched does.
            let directDependencies: [DirectGet]
            (staging, directDependencies, fetching) = try await stageDependenciesShown(job, on: member)
            let stored = try await store.logSize(run: runName, workflow: job.workflow)
            cleanup = await beginAttempt(job, on: member.info.name, number: number, logStart: stored)
            let logStart = await logStart(job.workflow)
            // Output goes through JobOutput: secret values masked, then the terminal and the stored log. It says
            // where to follow the runner's log from (masked bytes do not count the runner's).
            output = JobOutput(store: store, sink: sink, run: runName, workflow: job.workflow,
                               secrets: job.launch.secretValues, storedSize: stored,
                               stored: resuming ? max(0, stored - logStart) : 0, resuming: resuming)
            request = JobStart(launch: job.launch(on: member.info), snapshot: snapshot, attempt: number,
                               logOffset: output.runnerOffset,
                               gpus: member.info.gpus.map(\.index), gpuCount: job.resources.gpu,
                               slots: member.info.maxJobs, owner: owner, exportGPUs: !member.info.gpus.isEmpty,
                               engine: member.info.engine, dependencies: staging, cleanup: cleanup)
            request.directDependencies = directDependencies
        } catch let error as RunnerError {
            if case .unavailable(_, let reason) = error { return .unreachable(job, runner: member.info.name, reason: reason) }
            return .ended(job, member, .failed(JobExit(code: nil, reason: "\(error)"), "\(error)"), released: false)
        } catch {
            return .ended(job, member, .failed(JobExit(code: nil, reason: "\(error)"), "\(error)"), released: false)
        }
        var exit: JobExit?
        var released = false
        var watchdog: Task<Void, Never>?
        defer { watchdog?.cancel() }
        do {
            for try await event in runner.run(request) {
                switch event {
                case .granted:
                    granted = true
                    await self.granted(job, on: member)
                case .launched:
                    fetching?.finish(total: fetching?.total ?? 0)
                    fetching = nil
                    await started(job, runner: runner)
                    if watchdog == nil { watchdog = self.watchdog(job, runner: runner) }
                case .log(let data):
                    try await output.write(data)
                case .exited(let ended):
                    exit = ended
                    try await output.finish()
                case .released:
                    released = true
                case .busy:
                    return .busy(job, runner: member.info.name)
                case .lost(let reason):
                    return .ended(job, member, .lost(reason), released: released)
                case .vanished(let reason):
                    return .ended(job, member, .vanished(reason), released: true)
                case .notice(let text):
                    sink.emit(.notice("[\(job.workflow)] \(text)"))
                case .transferred(let bytes):
                    fetching?.add(bytes)
                case .scheduler(let state):
                    await recordScheduler(job, state)
                }
            }
        } catch let error as RunnerError {
            if case .unavailable(_, let reason) = error, !granted {
                return .unreachable(job, runner: member.info.name, reason: reason)
            }
            if case .unavailable(_, let reason) = error {
                return .ended(job, member, .lost("\(member.info.name) unreachable: \(reason)"), released: released)
            }
            return .ended(job, member, .failed(JobExit(code: nil, reason: "\(error)"), "\(error)"), released: released)
        } catch {
            return .ended(job, member, .failed(JobExit(code: nil, reason: "\(error)"), "\(error)"), released: released)
        }
        guard let exit else {
            return .ended(job, member, .lost("\(member.info.name) did not say how the job ended"), released: released)
        }
        return .exited(job, member, exit, released: released)
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

    /// What an attempt whose job exited with `exit` comes to: stopped, failed, lost, or done once its artifacts
    /// and cache entry are stored.
    nonisolated func conclude(_ job: PlannedJob, on member: PoolMember, exit: JobExit) async -> Outcome {
        let runner = member.runner
        do {
            if await hasTimedOut(job) {
                return .failed(exit, "max_duration (\(formatDuration(job.maxDuration ?? 0))) exceeded; the job was stopped")
            }
            if await isStopping(), !exit.succeeded {
                if await collectsOnStop(), !job.artifacts.isEmpty {
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
            // A job that declares no artifacts has nothing to collect: the runner is not asked, no manifest is
            // stored (its cache entry is enough: see Workspace.plan), and it goes straight to done.
            if !job.artifacts.isEmpty {
                await setStatus(job.workflow, .uploading)
                try await storeArtifacts(job, on: member)
            }
            try await store.recordCache(job.cacheKey, CacheEntry(run: runName, job: job.id, finishedAt: Date()))
            return .done
        } catch let error as RunnerError {
            if case .unavailable(_, let reason) = error { return .lost("\(member.info.name) unreachable while collecting artifacts: \(reason)") }
            return .failed(JobExit(code: nil, reason: "\(error)"), "\(error)")
        } catch {
            return .failed(JobExit(code: nil, reason: "\(error)"), "\(error)")
        }
    }

    /// Downloads the artifacts of every dependency into a new staging folder, which the caller removes; nil when
    /// there are none (no dependencies, or none with artifacts).
    nonisolated func stageDependencies(_ job: PlannedJob) async throws -> URL? {
        var keys: [(String, String)] = []
        for dep in job.dependsOn where declaresArtifacts.contains(dep) {
            if let key = cacheKeys[dep] { keys.append((dep, key)) }
        }
        for tag in job.tagDependencies where !tag.artifacts.isEmpty { keys.append(("\(tag.workflow):\(tag.tag)", tag.cacheKey)) }
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
}
