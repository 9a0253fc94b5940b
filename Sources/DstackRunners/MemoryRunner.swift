import DstackModel
import Foundation

/// A runner that lives in memory: jobs do what they are told to (`Behavior`) at once, with no process, no clock
/// and no sleep, so coordinator tests of retries, lost runners, busy slots and stops run fast and the same every
/// time. The reference for what a `Runner` must do, as `LocalRunner` and `SSHRunner` do it for real.
public actor MemoryRunner: Runner {
    /// What one attempt of a job does here.
    public enum Behavior: Sendable, Equatable {
        /// Writes `output`, then exits with `code`.
        case exit(Int32, output: String = "")
        /// Vanishes without an exit code once launched (killed from outside).
        case vanish
        /// Launches, then the runner stays unreachable past its timeout.
        case disconnect
        /// Finds no free slot.
        case busy
        /// Cannot be reached before the attempt begins.
        case unreachable
        /// Runs until it is stopped, then exits with 143.
        case runUntilStopped
    }

    public nonisolated let name: String
    /// What the runner reports when probed.
    public let info: RunnerInfo
    /// What each job's next attempts do, by job id; a job with nothing listed exits 0.
    private var behaviors: [String: [Behavior]]
    /// The job ids each `run` was asked to start, in order, with their attempt numbers.
    public private(set) var starts: [(job: String, attempt: Int)] = []
    /// The job ids that were stopped.
    public private(set) var stops: [String] = []
    /// Jobs holding a slot now.
    public private(set) var held: Set<String> = []
    /// Finished jobs' folders removed.
    public private(set) var removed: [String] = []
    private var waitingForStop: [String: CheckedContinuation<Void, Never>] = [:]
    private var stopped: Set<String> = []
    /// Jobs whose artifacts are being collected now.
    public private(set) var collecting: Set<String> = []
    private var closedArtifacts: Set<String> = []
    private var artifactWaiters: [String: CheckedContinuation<Void, Never>] = [:]

    /// Creates a runner named `name` with `slots` slots whose jobs behave as `behaviors` says.
    public init(name: String, slots: Int = 4, gpus: Int = 0, behaviors: [String: [Behavior]] = [:]) {
        self.name = name
        self.info = RunnerInfo(name: name, os: "memory", cpus: slots, memory: 1 << 34,
                               gpus: (0..<gpus).map { GPU(index: $0, name: "memory-gpu", memory: 1 << 34) }, maxJobs: slots)
        self.behaviors = behaviors
    }

    public func probe() async throws -> RunnerInfo { info }

    public func sync(_ snapshot: Snapshot) async throws -> Int { 0 }

    public nonisolated func run(_ request: JobStart) -> AsyncThrowingStream<JobEvent, any Error> {
        .attempt { emit in try await self.perform(request, emit: emit) }
    }

    private func perform(_ request: JobStart, emit: @Sendable (JobEvent) -> Void) async throws {
        let job = request.launch.jobId
        starts.append((job, request.attempt))
        removed.append(contentsOf: request.cleanup)
        var queue = behaviors[job] ?? []
        let behavior = queue.isEmpty ? Behavior.exit(0) : queue.removeFirst()
        behaviors[job] = queue
        switch behavior {
        case .unreachable:
            throw RunnerError.unavailable(runner: name, reason: "connection refused (memory runner)")
        case .busy:
            emit(.busy)
            return
        default:
            break
        }
        held.insert(job)
        emit(.granted(SlotGrant(slot: 0, gpus: Array(request.gpus.prefix(request.gpuCount)))))
        emit(.launched)
        switch behavior {
        case .exit(let code, let output):
            if !output.isEmpty { emit(.log(Data(output.utf8))) }
            emit(.exited(JobExit(code: code)))
        case .vanish:
            held.remove(job)
            emit(.vanished("its process on \(name) vanished without an exit status"))
            return
        case .disconnect:
            emit(.lost("\(name) unreachable (memory runner)"))
            return
        case .runUntilStopped:
            if !stopped.contains(job) {
                await withCheckedContinuation { waitingForStop[job] = $0 }
            }
            emit(.exited(JobExit(code: 143, signal: 15)))
        case .busy, .unreachable:
            break
        }
        held.remove(job)
        emit(.released)
    }

    /// Makes the collection of `jobId`'s artifacts wait until `openArtifacts(of:)` (to see what happens meanwhile).
    public func closeArtifacts(of jobId: String) {
        closedArtifacts.insert(jobId)
    }

    /// Lets the collection of `jobId`'s artifacts go on.
    public func openArtifacts(of jobId: String) {
        closedArtifacts.remove(jobId)
        artifactWaiters.removeValue(forKey: jobId)?.resume()
    }

    private func collect(_ jobId: String) async {
        collecting.insert(jobId)
        if closedArtifacts.contains(jobId) { await withCheckedContinuation { artifactWaiters[jobId] = $0 } }
    }

    private func collected(_ jobId: String) {
        collecting.remove(jobId)
    }

    public nonisolated func withArtifacts<T: Sendable>(jobId: String, paths: [String],
                                                       _ body: (URL) async throws -> T) async throws -> T {
        await collect(jobId)
        defer { Task { await self.collected(jobId) } }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-memory-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        for path in paths {
            let file = folder.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data("\(jobId):\(path)\n".utf8).write(to: file)
        }
        return try await body(folder)
    }

    public func stop(jobId: String) async throws {
        stops.append(jobId)
        stopped.insert(jobId)
        waitingForStop.removeValue(forKey: jobId)?.resume()
    }

    public func finish(jobIds: [String], release: Bool) async throws {
        removed.append(contentsOf: jobIds)
        if release { held.subtract(jobIds) }
    }

    public func release(jobId: String) async throws {
        held.remove(jobId)
    }
}
