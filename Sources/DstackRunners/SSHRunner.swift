import DstackModel
import DstackSSH
import Foundation
import Logging

/// How to reach one SSH runner and what the inventory says about it.
public struct SSHRunnerConfig: Sendable {
    /// The runner's name.
    public var name: String
    /// Connection options (host, port, user, keys, known_hosts, timeouts).
    public var ssh: SSHOptions
    /// The work directory, relative to the login directory (or absolute).
    public var workdir: String
    /// Jobs at once, or nil for the probed CPU count.
    public var maxJobs: Int?
    /// Labels jobs can ask for.
    public var labels: [String]
    /// GPU count, CPU and memory that override what the probe finds.
    public var resources: Resources?
    /// A local folder of file contents by hash (the local runner's objects), read in preference to the working
    /// tree, so that code edited after `dstack run` returned never reaches the run.
    public var localObjects: URL?
    /// How long the runner may stay unreachable while a job runs there before the job counts as lost.
    public var lostTimeout: Duration = .seconds(60)
    /// Where the runner sees the storage directory (`storage_path:`), if it does (docs/transfers.md).
    public var storagePath: String?

    /// Creates a runner configuration.
    public init(name: String, ssh: SSHOptions, workdir: String, maxJobs: Int? = nil, labels: [String] = [],
                resources: Resources? = nil, localObjects: URL? = nil) {
        self.localObjects = localObjects
        self.name = name
        self.ssh = ssh
        self.workdir = workdir
        self.maxJobs = maxJobs
        self.labels = labels
        self.resources = resources
    }
}

/// Runs jobs on a machine reached over SSH, with nothing installed there but sshd, `sh` and `tar`.
///
/// One connection per runner carries everything (exec and transfer channels at once); it is opened on first use
/// and opened again, with backoff, when it drops. Code is synced content-addressed into `workdir/objects`, so a
/// run after a one-file edit sends one object.
public final class SSHRunner: Runner, Sendable {
    public let name: String
    /// Its configuration.
    public let config: SSHRunnerConfig
    let connection: SSHConnection
    let logger: Logger

    /// Creates a runner; nothing is connected until it is used.
    public convenience init(_ config: SSHRunnerConfig, logger: Logger = Logger(label: "dstack.runner")) {
        self.init(config, logger: logger, agentScript: RunnerScript.agentProgram)
    }

    /// Creates a runner whose agent shell runs `agentScript` (a Slurm runner's functions, then the agent's).
    init(_ config: SSHRunnerConfig, logger: Logger, agentScript: String) {
        self.name = config.name
        self.config = config
        self.connection = SSHConnection(options: config.ssh, logger: logger, agentScript: agentScript)
        self.logger = logger
    }

    var workdir: String { config.workdir.isEmpty ? "." : config.workdir }
    var objects: String { workdir + "/objects" }
    func jobDir(_ jobId: String) -> String { workdir + "/jobs/" + jobId }

    /// Runs one of the runner scripts on a channel of its own with `arguments` as its positional parameters (for
    /// transfers, whose data travel on the channel's standard input or output; everything else goes to the agent).
    func script(_ script: RunnerScript, _ arguments: [String], stdin: Data? = nil, appending extra: RunnerScript? = nil) async throws -> ExecResult {
        try await connection.session().exec(Self.scriptText(script, arguments, appending: extra), stdin: stdin)
    }

    /// A script's text with `arguments` set as its `$1`...
    static func scriptText(_ script: RunnerScript, _ arguments: [String], appending extra: RunnerScript? = nil) -> String {
        var text = "set -- " + arguments.map(shellQuote).joined(separator: " ") + "\n" + script.text
        // Publishing a tree also reaps the Python environments unused as long (python-env.sh's functions).
        if extra == .treePublish { text += "\n" + PythonEnvironment.script }
        return text + (extra.map { "\n" + $0.text } ?? "")
    }

    /// Sends one request to the runner's agent (started, or started again, as needed); connection failures become
    /// `RunnerError.unavailable`.
    func agent(_ function: String, _ arguments: [String], payload: Data = Data()) async throws -> AgentReply {
        let request = try AgentRequest(function, arguments, payload: payload)
        do {
            return try await connection.agent(runner: name).send(request)
        } catch let error as SSHError {
            throw RunnerError.unavailable(runner: name, reason: "\(error)")
        }
    }

    /// Polls a job through the runner's agent (gathered with the other jobs' polls there); connection failures
    /// become `RunnerError.unavailable`.
    func pollAgent(_ jobId: String, from offset: Int64) async throws -> PollReply {
        do {
            return try await connection.agent(runner: name).poll(base: workdir, job: jobId, offset: offset)
        } catch let error as SSHError {
            throw RunnerError.unavailable(runner: name, reason: "\(error)")
        }
    }

    func failure(_ what: String, _ result: ExecResult) -> RunnerError {
        let detail = result.stderrText.trimmingCharacters(in: .whitespacesAndNewlines)
        return .unavailable(runner: name, reason: "\(what) failed (\(result.statusDescription))\(detail.isEmpty ? "" : ": \(detail)")")
    }

    public func probe() async throws -> RunnerInfo {
        let reply: AgentReply
        do {
            reply = try await agent("probe", [workdir])
        } catch let error as RunnerError {
            throw error
        } catch {
            throw RunnerError.unavailable(runner: name, reason: "\(error)")
        }
        var info = RunnerInfo(name: name, os: "?", cpus: 1, memory: 0, gpus: [], maxJobs: 1, labels: config.labels)
        var locks: [String] = []
        for (key, value) in reply.facts {
            switch key {
            case "os": info.os = value
            case "cpus": info.cpus = Int(value) ?? 1
            case "memory_kb": info.memory = (Int64(value) ?? 0) * 1024
            case "gpu": info.gpus += parseNvidiaSMI(value)
            case "engine": info.engine = value
            case "disk_free_kb": info.diskFree = (Int64(value) ?? 0) * 1024
            case "lock": locks.append(value)
            case "python": info.pythons = PythonEnvironment.sortedVersions(info.pythons + [value])
            default: break
            }
        }
        info.locks = locks
        if let r = config.resources {
            // A negative count means the inventory did not override the GPUs.
            if r.gpu >= 0, r.gpu != info.gpus.count {
                info.gpus = (0..<r.gpu).map { GPU(index: $0, name: r.gpuName ?? "gpu", memory: r.gpuMemory ?? 0) }
            }
            if let cpu = r.cpu { info.cpus = cpu }
            if let memory = r.memory { info.memory = memory }
        }
        info.maxJobs = config.maxJobs ?? info.cpus
        return info
    }

    public func release(jobId: String) async throws {
        _ = try await agent("release", [workdir, jobId])
    }

    public func sync(_ snapshot: Snapshot) async throws -> Int {
        try await reaching { try await sync(snapshot, trustRecord: true) }
    }

    /// Runs `body`, turning a failed connection into `RunnerError.unavailable` (the runner cannot be used now),
    /// the one error the coordinator treats as a runner problem rather than a job's.
    func reaching<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as SSHError where error.isConnectionProblem {
            throw RunnerError.unavailable(runner: name, reason: "\(error)")
        }
    }

    /// Runs `body` again after a dropped connection until the runner has been unreachable for `lostTimeout`; then
    /// throws `RunnerError.unavailable`.
    func surviving<T>(_ body: () async throws -> T) async throws -> T {
        var since: ContinuousClock.Instant?
        while true {
            do {
                return try await reaching(body)
            } catch RunnerError.unavailable(let runner, let reason) {
                let now = ContinuousClock.now
                let first = since ?? now
                since = first
                if now - first > config.lostTimeout { throw RunnerError.unavailable(runner: runner, reason: reason) }
                try await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Where this machine remembers which objects the runner holds (beside the local objects folder), so that a
    /// re-sync sends what changed without listing the runner's objects first; nil without a local objects folder.
    var objectRecord: URL? {
        guard let local = config.localObjects else { return nil }
        let key = "\(config.ssh.user)@\(config.ssh.host):\(config.ssh.port):\(workdir)".utf8.map { c -> Character in
            Self.isNameByte(c) ? Character(UnicodeScalar(c)) : "_"
        }
        return local.deletingLastPathComponent().appendingPathComponent("ssh-objects").appendingPathComponent(String(key))
    }

    /// Sends the objects of `snapshot` the runner lacks. With `trustRecord`, what this machine recorded as sent
    /// before is taken as present (a runner that lost objects is found out when its tree is built, and synced
    /// again without the record); otherwise the runner's objects are listed.
    func sync(_ snapshot: Snapshot, trustRecord: Bool) async throws -> Int {
        var present: Set<Substring>
        if trustRecord, let record = objectRecord, let data = try? Data(contentsOf: record) {
            present = Set(String(decoding: data, as: UTF8.self).split(separator: "\n"))
        } else {
            let listing = try await script(.objectsList, [objects])
            guard listing.succeeded else { throw failure("listing objects in \(objects)", listing) }
            present = Set(listing.stdoutText.split(separator: "\n"))
        }
        var missing: [SnapshotFile] = []
        var seen = Set<String>()
        for file in snapshot.files where !present.contains(Substring(file.hash)) && seen.insert(file.hash).inserted {
            missing.append(file)
        }
        guard !missing.isEmpty else {
            if !trustRecord { remember(present) }
            return 0
        }
        let incoming = objects + "/.incoming-" + UUID().uuidString.prefix(8)
        // One exec: the missing contents arrive as one tar stream in an incoming folder and are moved into place
        // only once all arrived, so a dropped transfer never leaves a truncated object.
        let adopt = "sh -c " + shellQuote(RunnerScript.objectsAdopt.text) + " dstack " + shellQuote(incoming)
        // Straight from the local objects folder (named by hash, never changed in place) when it has them all;
        // else staged under their hashes.
        if let local = config.localObjects,
           missing.allSatisfy({ access(local.appendingPathComponent($0.hash).path, F_OK) == 0 }) {
            try await connection.session().uploadTree(local.path, paths: missing.map(\.hash), to: incoming, then: adopt)
        } else {
            let staging = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-objects-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: staging) }
            let root = URL(fileURLWithPath: snapshot.root)
            for file in missing {
                var source = root.appendingPathComponent(file.path).path
                if let objects = config.localObjects?.appendingPathComponent(file.hash).path, access(objects, F_OK) == 0 {
                    source = objects
                }
                // A copy, not a hard link: link(2) changes the source's ctime, and GNU tar syncing the same object
                // to another runner at that moment fails with "file changed as we read it".
                try FileManager.default.copyItem(atPath: source, toPath: staging.appendingPathComponent(file.hash).path)
            }
            try await connection.session().uploadTree(staging.path, paths: missing.map(\.hash), to: incoming, then: adopt)
        }
        for file in missing { present.insert(Substring(file.hash)) }
        remember(present)
        return missing.count
    }

    /// Records the objects the runner holds (atomically; a record that cannot be written only costs a listing).
    func remember(_ present: Set<Substring>) {
        guard let record = objectRecord else { return }
        try? FileManager.default.createDirectory(at: record.deletingLastPathComponent(), withIntermediateDirectories: true)
        try? Data(present.joined(separator: "\n").utf8).write(to: record, options: .atomic)
    }

    public var syncedBefore: Bool {
        objectRecord.map { access($0.path, F_OK) == 0 } ?? false
    }

    /// Forgets what the runner was recorded to hold.
    func forgetObjects() {
        if let record = objectRecord { try? FileManager.default.removeItem(at: record) }
    }

    /// `hash mode path` lines, as the tree scripts read them.
    static func manifest(_ files: [SnapshotFile]) -> String {
        files.map { "\($0.hash) \(String($0.mode, radix: 8)) \($0.path)\n" }.joined()
    }

    /// Builds the runner's tree of the snapshot, unless it has it: from the latest tree it has, changing only the
    /// files that differ (so a one-file edit costs a `cp -R` and one copy), or file by file the first time.
    public func prepareTree(_ snapshot: Snapshot) async throws {
        try await reaching { try await buildTree(snapshot) }
    }

    func buildTree(_ snapshot: Snapshot) async throws {
        let status = try await agent("tree_status", [workdir, snapshot.id])
        if status.facts.contains(where: { $0.key == "present" }) { return }
        var base = ""
        var ops = ""
        if let found = status.facts.first(where: { $0.key == "base" }) {
            base = found.value
            var old: [Substring: (hash: Substring, mode: Substring)] = [:]
            for (key, line) in status.facts where key == "line" {
                let parts = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
                if parts.count == 3 { old[parts[2]] = (parts[0], parts[1]) }
            }
            var current = Set<Substring>()
            for file in snapshot.files {
                let path = Substring(file.path)
                current.insert(path)
                let mode = String(file.mode, radix: 8)
                if let was = old[path], was.hash == file.hash, was.mode == mode { continue }
                ops += "+ \(file.hash) \(mode) \(file.path)\n"
            }
            // Removals first: a file may have become a directory.
            let removed = old.keys.filter { !current.contains($0) }
            if removed.allSatisfy(FileNames.isRemovableByLine) {
                ops = removed.map { "- \($0)\n" }.joined() + ops
            } else {
                // Issue 16: a name a `- path` line cannot carry (`.. x` reads as `..`) is never removed by name.
                base = ""
                ops = Self.manifest(snapshot.files).split(separator: "\n").map { "+ \($0)\n" }.joined()
            }
        } else if let local = config.localObjects,
                  snapshot.files.allSatisfy({ access(local.path + "/" + $0.hash, F_OK) == 0 }) {
            try await buildTreeFromTar(snapshot, objects: local.path)
            return
        } else {
            ops = Self.manifest(snapshot.files).split(separator: "\n").map { "+ \($0)\n" }.joined()
        }
        let input = Data((ops + "MANIFEST\n" + Self.manifest(snapshot.files)).utf8)
        var built = try await script(.treeBuild, [workdir, snapshot.id, String(UUID().uuidString.prefix(8)), base], stdin: input, appending: .treePublish)
        if built.exitStatus == 3 {
            // An object is missing: the runner lost some since this machine recorded them. List and send again.
            forgetObjects()
            _ = try await sync(snapshot, trustRecord: false)
            built = try await script(.treeBuild, [workdir, snapshot.id, String(UUID().uuidString.prefix(8)), base], stdin: input, appending: .treePublish)
        }
        guard built.succeeded else { throw failure("building the code tree", built) }
    }

    /// The runner's first tree: the snapshot's files as one tar stream, written here from the local objects on a
    /// thread of its own (a blocking pipe never sits on the cooperative pool) and unpacked by one `tar` there.
    /// The contents travel a second time (they were just sent as objects), but a `cp` and a `chmod` per file took
    /// 20 s for 5,000 files.
    func buildTreeFromTar(_ snapshot: Snapshot, objects local: String) async throws {
        let token = String(UUID().uuidString.prefix(8))
        let pipe = Pipe()
        let writerFailure = LockedValue<String?>(nil)
        let files = snapshot.files
        let manifest = Data(Self.manifest(files).utf8)
        let output = pipe.fileHandleForWriting
        let thread = Thread {
            // A reader gone early must fail the write, not kill the process.
            var blocked = sigset_t()
            sigemptyset(&blocked)
            sigaddset(&blocked, SIGPIPE)
            pthread_sigmask(SIG_BLOCK, &blocked, nil)
            let writer = TarWriter(output: output)
            do {
                for file in files { try writer.add(path: file.path, mode: file.mode, source: local + "/" + file.hash) }
                try writer.add(path: ".dstack-manifest-" + token, mode: 0o644, data: manifest)
                try writer.finish()
            } catch {
                writerFailure.set("\(error)")
            }
            try? output.close()
        }
        thread.start()
        let command = Self.scriptText(.treeFromTar, [workdir, snapshot.id, token], appending: .treePublish)
        let result: ExecResult
        do {
            result = try await connection.session().exec(command, stdinFrom: pipe.fileHandleForReading, stdoutTo: nil)
        } catch {
            try? pipe.fileHandleForReading.close()
            throw error
        }
        try? pipe.fileHandleForReading.close()
        if let problem = writerFailure.get() { throw RunnerError.unavailable(runner: name, reason: "sending the code tree failed: \(problem)") }
        guard result.succeeded else { throw failure("building the code tree", result) }
    }

    public func run(_ request: JobStart) -> AsyncThrowingStream<JobEvent, any Error> {
        .attempt { emit in try await self.attempt(request, emit: emit) }
    }

    /// One attempt: the agent's `start` (sent again after a dropped connection: it launches nothing twice), then
    /// polls of the log until the job's exit. A drop before anything could reach the runner makes it unavailable
    /// at once (the job goes elsewhere); a drop later is reconnected until `lostTimeout`, then the job is lost.
    func attempt(_ request: JobStart, emit: @escaping @Sendable (JobEvent) -> Void) async throws {
        let job = request.launch
        let startArguments = try startRequest(request)
        var offset = request.logOffset
        var sent = false
        var granted = false
        var launched = false
        var treeRebuilt = false
        var unreachableSince: ContinuousClock.Instant?
        var nap = Duration.milliseconds(10)
        var deliveredDependencies = request.dependencies == nil
        while true {
            do {
                if !deliveredDependencies, let dependencies = request.dependencies {
                    // Before the start: the start moves them into the job's repo/.
                    try await reaching {
                        try await connection.session().uploadTree(dependencies.path, paths: ["."], to: jobDir(job.jobId) + ".deps") {
                            emit(.transferred($0))
                        }
                    }
                    try await getDirect(jobId: job.jobId, request.directDependencies) { emit(.transferred($0)) }
                    deliveredDependencies = true
                }
                if !launched {
                    sent = true
                    let reply = try await agent("start", startArguments.arguments, payload: startArguments.payload)
                    switch reply.status {
                    case .ok: break
                    case .noFreeSlot, .noFreeGPUs:
                        emit(.busy)
                        return
                    case .noTree where !treeRebuilt && !granted:
                        // The tree went (reaped as unused, or never built by this coordinator): build it, ask again.
                        treeRebuilt = true
                        try await prepareTree(request.snapshot)
                        continue
                    default:
                        // The runner answered: retrying as after a dropped connection would not help.
                        let why = "starting it failed (\(reply.status))\(reply.errorText.isEmpty ? "" : ": \(reply.errorText)")"
                        if reply.events.contains(where: { $0.hasPrefix("granted") }) {
                            throw Refused(error: .job(jobId: job.jobId, reason: "on \(name): \(why)"))
                        }
                        throw Refused(error: .unavailable(runner: name, reason: why))
                    }
                    for event in reply.events {
                        if event.hasPrefix("granted"), !granted {
                            granted = true
                            emit(.granted(SlotGrant(startEvent: event)))
                        } else if event == "launched" {
                            launched = true
                        }
                    }
                    guard launched else { throw Refused(error: .job(jobId: job.jobId, reason: "the runner \(name) did not launch it: \(reply.errorText)")) }
                    emit(.launched)
                    // A job launched this instant has not written anything yet: a poll now would only say so.
                    try await Task.sleep(for: .milliseconds(5))
                }
                let poll = try await pollAgent(job.jobId, from: offset)
                if unreachableSince != nil {
                    unreachableSince = nil
                    emit(.notice("reconnected to \(name)"))
                }
                guard poll.status == .ok else { throw Refused(error: .unavailable(runner: name, reason: "following the job failed (\(poll.status)): \(poll.errorText)")) }
                if let data = poll.data, !data.isEmpty {
                    offset += Int64(data.count)
                    emit(.log(data))
                    nap = .milliseconds(20)
                }
                switch poll.state ?? .running {
                case .running:
                    try await Task.sleep(for: nap)
                    nap = min(nap * 2, .milliseconds(200))
                case .exited(let code):
                    emit(.exited(code > 128 && code < 160 ? JobExit(code: code, signal: code - 128) : JobExit(code: code)))
                    emit(.released)  // the poll that saw the exit released the locks
                    return
                case .gone:
                    emit(.vanished("its process on \(name) vanished without an exit status (killed from outside, or the machine rebooted)"))
                    return
                case .missing:
                    emit(.lost("its folder on \(name) vanished"))
                    return
                }
            } catch let refused as Refused {
                throw refused.error
            } catch let error as RunnerError {
                guard case .unavailable(_, let reason) = error, sent else { throw error }
                let now = ContinuousClock.now
                if unreachableSince == nil {
                    unreachableSince = now
                    emit(.notice("connection to \(name) dropped (\(reason)); reconnecting, the job goes on there"))
                }
                if let since = unreachableSince, now - since > config.lostTimeout {
                    emit(.lost("\(name) unreachable for \(config.lostTimeout.components.seconds) s"))
                    return
                }
                try await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// A failure the runner's agent answered with (not a dropped connection): it ends the attempt at once.
    struct Refused: Error {
        let error: RunnerError
    }

    /// The agent `start` request of an attempt: its arguments and the payload that writes the job's files.
    func startRequest(_ request: JobStart) throws -> (arguments: [String], payload: Data) {
        let job = request.launch
        var env = ""
        for (key, value) in job.environment.sorted(by: { $0.key < $1.key }) where isEnvironmentName(key) {
            env += "export \(key)=\(shellQuote(value))\n"
        }
        // A container needs its GPUs on its command line: the ones granted, which env.sh exports.
        let run = try JobCommand.script(for: job, engine: request.engine, gpusFromEnvironment: job.image != nil && request.gpuCount > 0)
        // Evaluated by the agent in the job's folder, line by line in its own shell: printf is a builtin (no process
        // per file) and each text is one single-quoted word (data, never code); a line that fails returns 2.
        var files = [("commands.sh", job.script, false), ("env.sh", env, true)]
        if let run { files.append(("run.sh", run, false)) }
        // Secrets: created 0600, read and removed by the wrapper before any command runs.
        if !job.secretValues.isEmpty { files.append((SecretsFile.name, SecretsFile.text(job.secretValues), true)) }
        var payload = ""
        for (file, text, secret) in files {
            // env.sh and secrets.env hold the job's values: readable by the runner's user only.
            if secret { payload += "umask 077\n" }
            payload += "printf '%s' \(shellQuote(text)) > \(file) || return 2\n"
            if secret { payload += "umask 022\n" }
        }
        guard !payload.utf8.contains(0) else {
            throw RunnerError.job(jobId: job.jobId, reason: "its commands or environment hold a NUL byte, which a shell cannot carry")
        }
        let cleanup = request.cleanup.filter(Self.isPlainName).joined(separator: " ")
        let data = Data(payload.utf8)
        let arguments = [workdir, job.jobId, String(request.attempt), String(request.slots),
                         request.gpus.map(String.init).joined(separator: " "), String(request.gpuCount), request.owner,
                         request.snapshot.id, job.workingDir, request.exportGPUs ? "1" : "0", cleanup,
                         String(data.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) })]
        return (arguments, data)
    }

    /// True for a name that is one plain path component (a job id), safe to remove under `jobs/`.
    static func isPlainName(_ name: String) -> Bool {
        !name.isEmpty && name != "." && name != ".." && name.utf8.allSatisfy(isNameByte)
    }

    /// An ASCII letter or digit, `.`, `_` or `-`.
    static func isNameByte(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2E || c == 0x5F || c == 0x2D
    }

    public func withArtifacts<T: Sendable>(jobId: String, paths: [String], _ body: (URL) async throws -> T) async throws -> T {
        let staging = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-artifacts-\(jobId)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: staging) }
        try await surviving { try await fetchArtifacts(jobId: jobId, paths: paths, into: staging) }
        // The folder is ours and goes away below: storing may move its files rather than copy them.
        return try await ArtifactStaging.$disposableFolder.withValue(staging) { try await body(staging) }
    }

    /// Files at least this large are streamed on their own channel straight into their staging file; smaller
    /// files, folders and links travel together in one `tar` stream.
    static let directFetchMinimum: Int64 = 1 << 20

    func fetchArtifacts(jobId: String, paths: [String], into staging: URL) async throws {
        var seen = Set<String>()
        let paths = paths.map(normalizedRelativePath).filter { seen.insert($0).inserted }
        guard !paths.isEmpty else { return }
        // One command says which paths exist and which are plain files (with mode and size); a missing path (or a
        // missing repository: the command then prints nothing) is fetched by nobody and then reported by the
        // artifact scanner.
        let repo = jobDir(jobId) + "/repo"
        let check = try await script(.artifactsInspect, [repo] + paths)
        let entries = ArtifactEntry.parse(check.stdoutText, paths: paths)
        // A large plain file goes on its own channel (no tar on either side, no pipe, no extra copy), unless it
        // lies inside another requested path, which tar brings anyway.
        let treePaths = entries.filter { !$0.isLargeFile }.map(\.path)
        func insideTree(_ path: String) -> Bool { treePaths.contains { $0.isEmpty || path.hasPrefix($0 + "/") } }
        let direct = entries.filter { $0.isLargeFile && !insideTree($0.path) }
        let tree = entries.filter { !$0.isLargeFile || insideTree($0.path) }.map(\.path)
        let session = try await connection.session()
        // People see the bytes arrive: what has landed in the staging folder, every quarter second.
        var watch: Task<Void, Never>?
        if let observer = TransferObserver.current {
            observer.leg(.fromRunner, entries.reduce(0) { $0 + ($1.size ?? 0) })
            watch = FolderGrowth.watch(staging, observer.moved)
        }
        defer { watch?.cancel() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            if !tree.isEmpty {
                group.addTask { try await session.downloadTree(repo, paths: tree, to: staging.path) }
            }
            for entry in direct {
                group.addTask {
                    try await session.downloadFile(repo + "/" + entry.path, to: staging.appendingPathComponent(entry.path).path,
                                                   mode: entry.mode ?? 0o644)
                }
            }
            try await group.waitForAll()
        }
    }

    public func stop(jobId: String) async throws {
        _ = try await agent("stop", [jobDir(jobId)])
    }

    public func finish(jobIds: [String], release: Bool) async throws {
        let ids = jobIds.filter(Self.isPlainName)
        guard !ids.isEmpty else { return }
        _ = try await agent("finish", [workdir, release ? "1" : "0"] + ids)
    }

    /// Closes the connection.
    public func disconnect() async {
        await connection.close()
    }
}

/// The one connection to a runner: opened on first use, opened again (with backoff) once it dropped.
actor SSHConnection {
    let options: SSHOptions
    let logger: Logger
    let agentScript: String
    var current: (any RemoteSession)?
    var currentAgent: Agent?

    init(options: SSHOptions, logger: Logger, agentScript: String = RunnerScript.agentProgram) {
        self.options = options
        self.logger = logger
        self.agentScript = agentScript
    }

    /// A connection being opened: callers that come meanwhile (the actor is reentrant at every await) wait for
    /// it rather than open one each.
    var connecting: Task<any RemoteSession, any Error>?
    var startingAgent: Task<Agent, any Error>?

    func session() async throws -> any RemoteSession {
        if let current, current.isConnected { return current }
        if let connecting { return try await connecting.value }
        if let current { await current.close() }
        current = nil
        let (options, logger) = (self.options, self.logger)
        let task = Task {
            try await RemoteSessions.connect(options, retrying: RetryPolicy(attempts: 3, initialDelay: .milliseconds(300), maxDelay: .seconds(3)), logger: logger)
        }
        connecting = task
        defer { connecting = nil }
        let session = try await task.value
        current = session
        return session
    }

    /// The agent shell of the current connection, started (again) when there is none or it died.
    func agent(runner: String) async throws -> Agent {
        if let agent = currentAgent, agent.isAlive, let current, current.isConnected { return agent }
        if currentAgent != nil, let failure = current?.failure {
            // The connection dropped between two requests: say so once (the caller reconnects), rather than
            // reconnecting silently.
            currentAgent = nil
            await current?.close()
            current = nil
            throw failure
        }
        currentAgent?.close()
        currentAgent = nil
        if let startingAgent { return try await startingAgent.value }
        let session = try await session()
        let (logger, script) = (self.logger, self.agentScript)
        let task = Task { try await Agent.start(on: session, runner: runner, logger: logger, script: script) }
        startingAgent = task
        defer { startingAgent = nil }
        let agent = try await task.value
        currentAgent = agent
        return agent
    }

    func close() async {
        currentAgent?.close()
        currentAgent = nil
        await current?.close()
        current = nil
    }
}

/// One existing artifact path as `RunnerScripts.inspectArtifacts` describes it.
struct ArtifactEntry: Equatable {
    /// The path, relative to the job's repository.
    var path: String
    /// For a plain file: its permission bits and size; nil for a folder, a link or anything else.
    var mode: UInt32?
    /// A plain file's size, or about how much a folder holds (`du -sk`); nil when unknown.
    var size: Int64?

    /// Whether it is a plain file worth a channel of its own.
    var isLargeFile: Bool { mode != nil && (size ?? .max) >= SSHRunner.directFetchMinimum }

    /// Reads the script's lines (`f INDEX MODE-STRING SIZE` or `o INDEX`) for `paths`; unreadable lines count as
    /// "exists, not a plain file", so tar still fetches the path.
    static func parse(_ text: String, paths: [String]) -> [ArtifactEntry] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 2, let index = Int(fields[1]), paths.indices.contains(index) else { return nil }
            var entry = ArtifactEntry(path: paths[index])
            if fields[0] == "f", fields.count >= 4, let mode = permissions(fields[2]) {
                entry.mode = mode
                entry.size = Int64(fields[3])
            } else if fields[0] == "o", fields.count >= 3, let kib = Int64(fields[2]) {
                entry.size = kib * 1024
            }
            return entry
        }
    }

    /// The permission bits of an `ls -l` mode string such as `-rwxr-s--T` (a trailing `+` or `.` is ignored).
    static func permissions<S: StringProtocol>(_ text: S) -> UInt32? {
        let chars = Array(text.utf8.prefix(10))
        guard chars.count == 10, chars[0] == UInt8(ascii: "-") else { return nil }
        var mode: UInt32 = 0
        for (i, bit) in [0o400, 0o200, 0o100, 0o040, 0o020, 0o010, 0o004, 0o002, 0o001].enumerated() {
            let c = chars[i + 1]
            let isExecute = i % 3 == 2
            switch c {
            case UInt8(ascii: "-"): continue
            case UInt8(ascii: "r") where i % 3 == 0, UInt8(ascii: "w") where i % 3 == 1, UInt8(ascii: "x") where isExecute:
                mode |= UInt32(bit)
            case UInt8(ascii: "s") where isExecute && i < 6, UInt8(ascii: "t") where i == 8:
                mode |= UInt32(bit) | (i == 2 ? 0o4000 : i == 5 ? 0o2000 : 0o1000)
            case UInt8(ascii: "S") where isExecute && i < 6, UInt8(ascii: "T") where i == 8:
                mode |= (i == 2 ? 0o4000 : i == 5 ? 0o2000 : 0o1000)
            default:
                return nil
            }
        }
        return mode
    }
}
