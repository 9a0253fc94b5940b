import DstackModel
import DstackStorage
import Foundation
import Logging

/// Writes a run's records to storage apart from the coordinator's loop: the changed job records at each save, the
/// run record when forced or half a second passed (a 200-job run does not rewrite a large `run.json` for every
/// state change). States are taken in the order they are submitted and written in that order, merged while a write
/// is under way, so an older state is never written after a newer one.
final class RecordWriter: @unchecked Sendable {
    let store: RunStore
    let sink: any RunEventSink
    let logger: Logger
    private let lock = NSLock()
    private var pending: (run: RunRecord, jobs: Set<String>, force: Bool)?
    private var waiters: [CheckedContinuation<Bool, Never>] = []
    private var writing = false
    private var runWrittenAt = Date.distantPast

    init(store: RunStore, sink: any RunEventSink, logger: Logger) {
        self.store = store
        self.sink = sink
        self.logger = logger
    }

    /// Queues `run` to be written, rewriting the job records of `jobs` (workflow names); returns at once.
    func submit(_ run: RunRecord, jobs: Set<String>, force: Bool) {
        lock.withLock { merge(run, jobs, force) }
    }

    /// Queues `run` like `submit` and returns once a write holding it is done: whether it was written.
    @discardableResult
    func save(_ run: RunRecord, jobs: Set<String>, force: Bool) async -> Bool {
        await withCheckedContinuation { continuation in
            lock.withLock {
                waiters.append(continuation)
                merge(run, jobs, force)
            }
        }
    }

    /// Under the lock: takes the newer state, and starts writing when nothing is being written.
    private func merge(_ run: RunRecord, _ jobs: Set<String>, _ force: Bool) {
        if let previous = pending {
            pending = (run, previous.jobs.union(jobs), previous.force || force)
        } else {
            pending = (run, jobs, force)
        }
        if !writing {
            writing = true
            Task { await self.drain() }
        }
    }

    private func drain() async {
        while true {
            let next: ((run: RunRecord, jobs: Set<String>, force: Bool), [CheckedContinuation<Bool, Never>])? = lock.withLock {
                guard let state = pending else {
                    writing = false
                    return nil
                }
                pending = nil
                defer { waiters = [] }
                return (state, waiters)
            }
            guard let (state, answered) = next else { return }
            var written = true
            do {
                for job in state.run.jobs where state.jobs.contains(job.workflow) {
                    try await store.saveJob(job, run: state.run.name)
                }
                if state.force || Date().timeIntervalSince(runWrittenAt) >= 0.5 {
                    runWrittenAt = Date()
                    try await store.saveRun(state.run)
                }
            } catch {
                written = false
                logger.error("cannot save run record: \(error)")
                sink.emit(.notice("warning: cannot save the run record: \(error)"))
            }
            for waiter in answered { waiter.resume(returning: written) }
        }
    }
}
