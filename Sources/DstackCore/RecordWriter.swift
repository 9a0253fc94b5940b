import DstackModel
import DstackStorage
import Foundation
import Logging

/// Writes a run's records to storage apart from the coordinator's loop: the changed job records at each save, the
/// run record when forced or half a second passed (a 200-job run does not rewrite a large `run.json` for every
/// state change). Saves never go out of order, and a save returns once a write holding its state is done.
actor RecordWriter {
    let store: RunStore
    let sink: any RunEventSink
    let logger: Logger
    private var runWrittenAt = Date.distantPast
    private var pending: (run: RunRecord, jobs: Set<String>, force: Bool)?
    private var writing = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init(store: RunStore, sink: any RunEventSink, logger: Logger) {
        self.store = store
        self.sink = sink
        self.logger = logger
    }

    /// Saves `run`, rewriting the job records of `jobs` (workflow names).
    func save(_ run: RunRecord, jobs: Set<String>, force: Bool) async {
        if let previous = pending {
            pending = (run, previous.jobs.union(jobs), previous.force || force)
        } else {
            pending = (run, jobs, force)
        }
        await withCheckedContinuation { continuation in
            waiters.append(continuation)
            if !writing {
                writing = true
                Task { await self.drain() }
            }
        }
    }

    private func drain() async {
        while let (run, jobs, force) = pending {
            pending = nil
            let answered = waiters
            waiters = []
            do {
                for job in run.jobs where jobs.contains(job.workflow) {
                    try await store.saveJob(job, run: run.name)
                }
                if force || Date().timeIntervalSince(runWrittenAt) >= 0.5 {
                    runWrittenAt = Date()
                    try await store.saveRun(run)
                }
            } catch {
                logger.error("cannot save run record: \(error)")
                sink.emit(.notice("warning: cannot save the run record: \(error)"))
            }
            for waiter in answered { waiter.resume() }
        }
        writing = false
    }
}
