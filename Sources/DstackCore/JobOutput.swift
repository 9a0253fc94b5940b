import DstackModel
import DstackStorage
import Foundation

/// Where one stream of a job's output goes: secret values masked (`SecretMasker`), then to the terminal (the
/// run's event sink) and appended to the stored log, with a time mark every few seconds for `dstack logs --since`.
///
/// The stored log holds masked bytes, so its size no longer counts the runner's bytes once a value was masked: a
/// job with secrets is followed again from the start of its runner log, masked again the same way, and the part
/// already stored is skipped (`skipping`).
final class JobOutput: @unchecked Sendable {
    /// The most time between two marks while output flows.
    static let markInterval: TimeInterval = 5

    let store: RunStore
    let sink: any RunEventSink
    let run: String
    let workflow: String
    /// Where to follow the runner's log from.
    let runnerOffset: Int64

    private let lock = NSLock()
    private var masker: SecretMasker
    private var skipping: Int64
    private var storedSize: Int64
    private var lastMark: Date?

    /// A stream for the job's attempt whose stored output so far is `stored` bytes, in a log now `storedSize`
    /// bytes long; without secrets the runner's log is followed from `stored`, with them from its start.
    ///
    /// A fresh attempt (`stored` 0) writes no mark for its first seconds: the attempt's own start (its `logStart`
    /// and `startedAt` in the job record) stands for one, so a short job costs no extra write. A stream that
    /// resumes an attempt marks its first output.
    init(store: RunStore, sink: any RunEventSink, run: String, workflow: String, secrets: SecretValues,
         storedSize: Int64, stored: Int64 = 0, resuming: Bool = false) {
        self.store = store
        self.sink = sink
        self.run = run
        self.workflow = workflow
        self.masker = SecretMasker(secrets.values)
        self.storedSize = storedSize
        self.runnerOffset = masker.isEmpty ? stored : 0
        self.skipping = masker.isEmpty ? 0 : stored
        self.lastMark = resuming ? nil : Date()
    }

    /// Masks the next bytes of the runner's log and passes on what is new.
    func write(_ data: Data) async throws {
        try await deliver(lock.withLock { take(masker.mask(data)) })
    }

    /// Passes on what the masker held back once the stream has ended.
    func finish() async throws {
        try await deliver(lock.withLock { take(masker.finish()) })
    }

    /// Drops what is already stored; says where the rest goes in the stored log and whether a mark is due.
    private func take(_ masked: Data) -> (Data, mark: (offset: Int64, time: Date)?) {
        var out = masked
        if skipping > 0 {
            let drop = Int(min(Int64(out.count), skipping))
            out.removeFirst(drop)
            skipping -= Int64(drop)
        }
        guard !out.isEmpty else { return (out, nil) }
        let offset = storedSize
        storedSize += Int64(out.count)
        let now = Date()
        guard lastMark.map({ now.timeIntervalSince($0) >= Self.markInterval }) ?? true else { return (out, nil) }
        lastMark = now
        return (out, (offset, now))
    }

    private func deliver(_ next: (Data, mark: (offset: Int64, time: Date)?)) async throws {
        let (data, mark) = next
        guard !data.isEmpty else { return }
        sink.emit(.output(workflow: workflow, data))
        try await store.appendLog(run: run, workflow: workflow, data)
        // Only an index for `logs --since`: a mark that cannot be written must not fail the job.
        if let mark { try? await store.appendLogMark(run: run, workflow: workflow, offset: mark.offset, at: mark.time) }
    }
}
