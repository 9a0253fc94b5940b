import DstackModel
import DstackStorage
import Foundation
import Logging

/// Writes a run's records to storage apart from the coordinator's loop: the changed job records at each save, the
/// run record when forced or half a second passed (a 200-job run does not rewrite a large `run.json` for every
/// state change).
///
/// Every write takes the newest state handed in, so an older state is never written after a newer one. A job whose
/// change somebody waits for (`save`) is written at once; one nobody waits for (`submit`: a job that started
/// running) within `settle`, or with the job's next awaited save, whichever comes first. So a job that starts and
/// ends within `settle` has its `running` state merged into its end: one record write less per short job, and
/// other jobs' saves do not carry it along.
final class RecordWriter: @unchecked Sendable {
    let store: RunStore
    let sink: any RunEventSink
    let logger: Logger
    /// How long a change nobody waits for may wait to be merged with the job's next one.
    let settle: Duration
    private let lock = NSLock()
    /// The newest state handed in (kept after a write: the settling jobs are written from it later).
    private var latest: RunRecord?
    /// Jobs (workflow names) to write at once, and jobs settling with when each is due.
    private var urgent: Set<String> = []
    private var settling: [String: ContinuousClock.Instant] = [:]
    private var force = false
    /// The settle timer ran out: some settling jobs are due.
    private var settled = false
    private var timerSet = false
    private var waiters: [CheckedContinuation<Bool, Never>] = []
    private var writing = false
    private var runWrittenAt = Date.distantPast

    init(store: RunStore, sink: any RunEventSink, logger: Logger, settle: Duration = .milliseconds(500)) {
        self.store = store
        self.sink = sink
        self.logger = logger
        self.settle = settle
    }

    /// Queues `run` to be written, rewriting the job records of `jobs` within `settle`; returns at once.
    func submit(_ run: RunRecord, jobs: Set<String>, force: Bool) {
        lock.withLock {
            latest = run
            let due = ContinuousClock.now.advanced(by: settle)
            for job in jobs where settling[job] == nil { settling[job] = due }
            self.force = self.force || force
            if force { startDrainIfIdle() }
            setTimer()
        }
    }

    /// Under the lock: wakes the writer when the first settling job is due, unless a wake-up is set already.
    private func setTimer() {
        guard !timerSet, let first = settling.values.min() else { return }
        timerSet = true
        Task {
            try? await Task.sleep(until: first, clock: .continuous)
            lock.withLock {
                timerSet = false
                settled = true
                startDrainIfIdle()
            }
        }
    }

    /// Queues `run`, rewriting the job records of `jobs` now, and returns once a write holding it is done: whether it
    /// was written.
    @discardableResult
    func save(_ run: RunRecord, jobs: Set<String>, force: Bool) async -> Bool {
        await withCheckedContinuation { continuation in
            lock.withLock {
                waiters.append(continuation)
                latest = run
                urgent.formUnion(jobs)
                self.force = self.force || force
                startDrainIfIdle()
            }
        }
    }

    /// Under the lock: starts the write loop unless it runs.
    private func startDrainIfIdle() {
        guard !writing else { return }
        writing = true
        Task { await self.drain() }
    }

    /// What the next write holds, taken under the lock; nil when nothing is due.
    private func next() -> (run: RunRecord, jobs: Set<String>, force: Bool, answered: [CheckedContinuation<Bool, Never>])? {
        lock.withLock {
            guard let run = latest, !urgent.isEmpty || force || settled || !waiters.isEmpty else {
                writing = false
                return nil
            }
            // The urgent jobs, and the settling ones that are due (all of them when forced): each written from the
            // newest state, once.
            var jobs = urgent
            let now = ContinuousClock.now
            for (job, due) in settling where force || due <= now || urgent.contains(job) {
                jobs.insert(job)
                settling[job] = nil
            }
            settled = false
            defer {
                urgent = []
                force = false
                waiters = []
                setTimer()
            }
            return (run, jobs, force, waiters)
        }
    }

    private func drain() async {
        while let state = next() {
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
            for waiter in state.answered { waiter.resume(returning: written) }
        }
    }
}
