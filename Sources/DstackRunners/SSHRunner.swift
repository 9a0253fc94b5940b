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
    public init(_ config: SSHRunnerConfig, logger: Logger = Logger(label: "dstack.runner")) {
        self.name = config.name
        self.config = config
        self.connection = SSHConnection(options: config.ssh, logger: logger)
        self.logger = logger
    }

    var workdir: String { config.workdir.isEmpty ? "." : config.workdir }
    var objects: String { workdir + "/objects" }
    func jobDir(_ jobId: String) -> String { workdir + "/jobs/" + jobId }

    /// Runs one of the runner scripts with `arguments` as its positional parameters.
    func script(_ text: String, _ arguments: [String], stdin: Data? = nil) async throws -> ExecResult {
        if let stdin {
            return try await connection.session().exec(Self.commandLine(text, arguments), stdin: stdin)
        }
        let (command, input) = Self.remoteScript(text, arguments)
        return try await connection.session().exec(command, stdin: input)
    }

    /// `sh -c TEXT dstack ARGUMENTS...`, each quoted.
    static func commandLine(_ text: String, _ arguments: [String]) -> String {
        "sh -c " + shellQuote(text) + " dstack " + arguments.map(shellQuote).joined(separator: " ")
    }

    /// The longest command line sent as one: sshd hands the whole line to the login shell as a single argument,
    /// which Linux caps at 128 KiB (MAX_ARG_STRLEN), and `sh -c` gets the script as another.
    static let longestCommandLine = 64 * 1024

    /// How to run `text` with `arguments` as `$1`...: as one command line, or, past `longestCommandLine` (a job
    /// with long commands or a large environment), a short one that reads the script and its arguments from stdin.
    static func remoteScript(_ text: String, _ arguments: [String]) -> (command: String, stdin: Data?) {
        let command = commandLine(text, arguments)
        guard command.utf8.count > longestCommandLine else { return (command, nil) }
        let script = "set -- " + arguments.map(shellQuote).joined(separator: " ") + "\n" + text
        return (commandLine("eval \"$(cat)\"", []), Data(script.utf8))
    }

    func failure(_ what: String, _ result: ExecResult) -> RunnerError {
        let detail = result.stderrText.trimmingCharacters(in: .whitespacesAndNewlines)
        return .unavailable(runner: name, reason: "\(what) failed (\(result.statusDescription))\(detail.isEmpty ? "" : ": \(detail)")")
    }

    public func probe() async throws -> RunnerInfo {
        let result: ExecResult
        do {
            result = try await script(RunnerScripts.probe, [workdir])
        } catch {
            throw RunnerError.unavailable(runner: name, reason: "\(error)")
        }
        var info = RunnerInfo(name: name, os: "?", cpus: 1, memory: 0, gpus: [], maxJobs: 1, labels: config.labels)
        var locks: [String] = []
        for line in result.stdoutText.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "os": info.os = parts[1]
            case "cpus": info.cpus = Int(parts[1]) ?? 1
            case "memory_kb": info.memory = (Int64(parts[1]) ?? 0) * 1024
            case "gpu": info.gpus += parseNvidiaSMI(parts[1])
            case "engine": info.engine = parts[1]
            case "disk_free_kb": info.diskFree = (Int64(parts[1]) ?? 0) * 1024
            case "lock": locks.append(parts[1])
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

    public func acquire(jobId: String, gpus: [Int], count: Int, slots: Int, owner: String) async throws -> SlotGrant? {
        let result = try await script(RunnerScripts.acquire,
                                      [workdir, jobId, String(slots), gpus.map(String.init).joined(separator: " "), String(count), owner])
        return try SlotGrant.parse(status: result.exitStatus, output: result.stdoutText, stderr: result.stderrText, runner: name)
    }

    public func release(jobId: String) async throws {
        _ = try await script(RunnerScripts.release, [workdir, jobId])
    }

    public func sync(_ snapshot: Snapshot) async throws -> Int {
        try await sync(snapshot, trustRecord: true)
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
            let listing = try await script(RunnerScripts.listObjects, [objects])
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
        let adopt = Self.commandLine(RunnerScripts.adoptObjects, [incoming])
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

    public func prepare(jobId: String, snapshot: Snapshot) async throws {
        let manifest = Self.manifest(snapshot.files)
        let result = try await script(RunnerScripts.materialize, [jobDir(jobId), objects, workdir + "/trees/" + snapshot.id],
                                      stdin: Data(manifest.utf8))
        guard result.succeeded else { throw RunnerError.job(jobId: jobId, reason: "preparing its directory on \(name) failed: \(result.stderrText)") }
    }

    /// `hash mode path` lines, as the tree scripts read them.
    static func manifest(_ files: [SnapshotFile]) -> String {
        files.map { "\($0.hash) \(String($0.mode, radix: 8)) \($0.path)\n" }.joined()
    }

    /// Builds the runner's tree of the snapshot, unless it has it: from the latest tree it has, changing only the
    /// files that differ (so a one-file edit costs a `cp -R` and one copy), or file by file the first time.
    public func prepareTree(_ snapshot: Snapshot) async throws {
        let status = try await script(RunnerScripts.treeStatus, [workdir, snapshot.id])
        guard status.succeeded else { throw failure("looking for the code tree", status) }
        let text = status.stdoutText
        if text.hasPrefix("present") { return }
        var base = ""
        var ops = ""
        if text.hasPrefix("base ") {
            let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
            base = String(lines[0].dropFirst(5))
            var old: [Substring: (hash: Substring, mode: Substring)] = [:]
            for line in lines.dropFirst() {
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
        var built = try await script(RunnerScripts.buildTree, [workdir, snapshot.id, String(UUID().uuidString.prefix(8)), base], stdin: input)
        if built.exitStatus == 3 {
            // An object is missing: the runner lost some since this machine recorded them. List and send again.
            forgetObjects()
            _ = try await sync(snapshot, trustRecord: false)
            built = try await script(RunnerScripts.buildTree, [workdir, snapshot.id, String(UUID().uuidString.prefix(8)), base], stdin: input)
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
        let command = Self.commandLine(RunnerScripts.buildTreeFromTar, [workdir, snapshot.id, token, ""])
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

    public func start(_ request: JobStart, events: @escaping @Sendable (StartEvent) async -> Void,
                      output: @escaping @Sendable (Data) async throws -> Void) async throws -> StartOutcome {
        try await start(request, events: events, output: output, treeBuilt: false)
    }

    func start(_ request: JobStart, events: @escaping @Sendable (StartEvent) async -> Void,
               output: @escaping @Sendable (Data) async throws -> Void, treeBuilt: Bool) async throws -> StartOutcome {
        let job = request.launch
        // A container's `--gpus` needs the GPUs before the script runs: such jobs go step by step.
        if job.image != nil, request.gpuCount > 0 { return try await startStepwise(self, request, events: events, output: output) }
        let session = try await connection.session()
        var env = ""
        for (key, value) in job.environment.sorted(by: { $0.key < $1.key }) where isEnvironmentName(key) {
            env += "export \(key)=\(shellQuote(value))\n"
        }
        let run = try JobCommand.script(for: job, engine: request.engine)
        let text = RunnerScripts.start(files: [("commands.sh", job.script), ("env.sh", env), ("run.sh", run),
                                               ("launch.sh", RunnerScripts.launch)])
        let cleanup = request.cleanup.filter(Self.isPlainName).joined(separator: " ")
        let arguments = [workdir, job.jobId, String(request.slots), request.gpus.map(String.init).joined(separator: " "),
                         String(request.gpuCount), request.owner, request.snapshot.id, job.workingDir,
                         request.exportGPUs ? "1" : "0", cleanup]
        let (command, input) = Self.remoteScript(text, arguments)
        await events(.sending)
        if let dependencies = request.dependencies {
            try await session.uploadTree(dependencies.path, paths: ["."], to: jobDir(job.jobId) + ".deps")
        }
        var status: Int32 = 0
        var control = Data()
        var granted = false
        var exitCode: String?
        var released = false
        var errors: [String] = []
        for try await event in session.execStream(command, stdin: input, idleTimeout: .some(nil)) {
            switch event {
            case .output(.stdout, let data):
                try await output(data)
            case .output(.stderr, let data):
                control.append(data)
                while let newline = control.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: control[control.startIndex..<newline], as: UTF8.self)
                    control.removeSubrange(control.startIndex...newline)
                    if line.hasPrefix("dstack:granted ") {
                        let parts = line.dropFirst("dstack:granted ".count).split(separator: " ", omittingEmptySubsequences: false)
                        let gpus = parts.count > 1 ? parts[1].split(separator: ",").compactMap { Int($0) } : []
                        granted = true
                        await events(.granted(SlotGrant(slot: parts.first.flatMap { Int($0) } ?? 0, gpus: gpus)))
                    } else if line == "dstack:launched" {
                        await events(.launched)
                    } else if line.hasPrefix("dstack:exit ") {
                        exitCode = String(line.dropFirst("dstack:exit ".count))
                    } else if line == "dstack:released" {
                        released = true
                    } else if line.hasPrefix("dstack:error ") {
                        errors.append(String(line.dropFirst("dstack:error ".count)))
                    } else {
                        errors.append(line)
                    }
                }
            case .exit(let result):
                status = result.exitStatus
            }
        }
        if !control.isEmpty { errors.append(String(decoding: control, as: UTF8.self)) }
        let detail = errors.joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines)
        switch status {
        case 3 where !granted, 4 where !granted:
            return .busy
        case 5 where !granted && !treeBuilt:
            // The tree went (removed as unused, or never built by this coordinator): build it, then go on.
            try await prepareTree(request.snapshot)
            var again = request
            again.cleanup = []
            return try await start(again, events: events, output: output, treeBuilt: true)
        case 0:
            guard let exitCode, let code = Int32(exitCode) else {
                throw RunnerError.job(jobId: job.jobId, reason: "cannot read its exit status on \(name): \(detail)")
            }
            if code > 128, code < 160 { return .exited(JobExit(code: code, signal: code - 128), released: released) }
            return .exited(JobExit(code: code), released: released)
        case 99:
            return .exited(JobExit(code: nil, reason: "the job's process on \(name) disappeared without an exit status (killed)"), released: false)
        default:
            let why = "starting it failed (exit status \(status))\(detail.isEmpty ? "" : ": \(detail)")"
            if !granted { throw RunnerError.unavailable(runner: name, reason: why) }
            throw RunnerError.job(jobId: job.jobId, reason: "on \(name): \(why)")
        }
    }

    /// True for a name that is one plain path component (a job id), safe to remove under `jobs/`.
    static func isPlainName(_ name: String) -> Bool {
        !name.isEmpty && name != "." && name != ".." && name.utf8.allSatisfy(isNameByte)
    }

    /// An ASCII letter or digit, `.`, `_` or `-`.
    static func isNameByte(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2E || c == 0x5F || c == 0x2D
    }

    public func cleanup(jobIds: [String]) async throws {
        let ids = jobIds.filter(Self.isPlainName)
        guard !ids.isEmpty else { return }
        _ = try await script("cd \"$1\" || exit 0; shift; for j; do rm -rf \"jobs/$j\"; done", [workdir] + ids)
    }

    public func place(jobId: String, from staging: URL) async throws {
        try await connection.session().uploadTree(staging.path, paths: ["."], to: jobDir(jobId) + "/repo")
    }

    public func launch(_ job: JobLaunch) async throws {
        let dir = jobDir(job.jobId)
        var env = ""
        for (key, value) in job.environment.sorted(by: { $0.key < $1.key }) where isEnvironmentName(key) {
            env += "export \(key)=\(shellQuote(value))\n"
        }
        let session = try await connection.session()
        let engine = job.image == nil ? nil : try await probe().engine
        let run = try JobCommand.script(for: job, engine: engine)
        // One exec writes the four files (quoted here-documents: nothing in them is expanded) and starts the
        // wrapper: each exec costs a remote shell, and this used to be five of them per job.
        var command = "cd " + shellQuote(dir) + " || exit 2\n"
        for (file, text) in [("commands.sh", job.script), ("env.sh", env), ("run.sh", run), ("launch.sh", RunnerScripts.launch)] {
            var delimiter = "DSTACK_EOF_" + UUID().uuidString.replacingOccurrences(of: "-", with: "")
            while text.contains(delimiter) { delimiter += "_" }
            command += "cat > \(file) <<'\(delimiter)'\n\(text)\(text.isEmpty || text.hasSuffix("\n") ? "" : "\n")\(delimiter)\n"
        }
        // setsid: the job gets its own session and process group, so a dropped connection does not kill it.
        // Only the wrapper goes to the background (the braces): a backgrounded `a && b &` list would keep the
        // channel open, and this exec waiting, until the whole job ended.
        command += ": > log && { setsid /bin/sh launch.sh \"$PWD\" " + shellQuote(job.workingDir) + " </dev/null >/dev/null 2>&1 & }\n"
        let (line, input) = Self.remoteScript(command, [])
        let result = try await session.exec(line, stdin: input)
        guard result.succeeded else { throw RunnerError.job(jobId: job.jobId, reason: "cannot start it on \(name): \(result.stderrText)") }
    }

    public func finish(jobId: String, release: Bool, cleanup: Bool) async throws {
        let text = (release ? RunnerScripts.release + "\n" : "") + (cleanup ? "rm -rf \"$1/jobs/$2\"\n" : "")
        guard !text.isEmpty else { return }
        _ = try await script(text, [workdir, jobId])
    }

    public func launched(jobId: String) async throws -> Bool {
        try await connection.session().exec("test -f " + shellQuote(jobDir(jobId) + "/pid")).succeeded
    }

    public func follow(jobId: String, from offset: Int64, output: @Sendable (Data) async throws -> Void) async throws -> JobExit {
        let command = Self.commandLine(RunnerScripts.follow, [jobDir(jobId), String(offset)])
        var exitText = Data()
        var status: Int32 = 0
        for try await event in try await connection.session().execStream(command, idleTimeout: .some(nil)) {
            switch event {
            case .output(.stdout, let data): try await output(data)
            case .output(.stderr, let data): exitText.append(data)
            case .exit(let result): status = result.exitStatus
            }
        }
        if status == 99 { return JobExit(code: nil, reason: "the job's process on \(name) disappeared without an exit status (killed)") }
        let text = String(decoding: exitText, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard status == 0, let code = Int32(text) else {
            return JobExit(code: nil, reason: "cannot read the job's exit status on \(name): \(text)")
        }
        if code > 128, code < 160 { return JobExit(code: code, signal: code - 128) }
        return JobExit(code: code)
    }

    public func withArtifacts<T: Sendable>(jobId: String, paths: [String], _ body: (URL) async throws -> T) async throws -> T {
        let staging = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-artifacts-\(jobId)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: staging) }
        try await fetchArtifacts(jobId: jobId, paths: paths, into: staging)
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
        let check = try await script(ArtifactEntry.script, [repo] + paths)
        let entries = ArtifactEntry.parse(check.stdoutText, paths: paths)
        // A large plain file goes on its own channel (no tar on either side, no pipe, no extra copy), unless it
        // lies inside another requested path, which tar brings anyway.
        let treePaths = entries.filter { !$0.isLargeFile }.map(\.path)
        func insideTree(_ path: String) -> Bool { treePaths.contains { $0.isEmpty || path.hasPrefix($0 + "/") } }
        let direct = entries.filter { $0.isLargeFile && !insideTree($0.path) }
        let tree = entries.filter { !$0.isLargeFile || insideTree($0.path) }.map(\.path)
        let session = try await connection.session()
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
        _ = try await script(RunnerScripts.stop, [jobDir(jobId)])
    }

    public func cleanup(jobId: String) async throws {
        _ = try await connection.session().exec("rm -rf " + shellQuote(jobDir(jobId)))
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
    var current: SSHSession?

    init(options: SSHOptions, logger: Logger) {
        self.options = options
        self.logger = logger
    }

    func session() async throws -> SSHSession {
        if let current, current.isConnected { return current }
        if let current { await current.close() }
        current = nil
        let session = try await SSHSession.connect(options, retrying: RetryPolicy(attempts: 3, initialDelay: .milliseconds(300), maxDelay: .seconds(3)), logger: logger)
        current = session
        return session
    }

    func close() async {
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
    var size: Int64?

    /// Run in the job's repository (`$1`) with the artifact paths after it: for each path that exists, prints
    /// `f INDEX MODE SIZE` for a plain file (not a link; MODE and SIZE as `ls -ldn` shows them) or `o INDEX` for
    /// anything else. POSIX `sh` and `ls` only.
    static let script = #"""
        cd "$1" || exit 2
        shift
        i=0
        set -f
        for p; do
            if [ -f "$p" ] && [ ! -L "$p" ]; then
                if l=$(ls -ldn -- "$p"); then
                    # shellcheck disable=SC2086
                    set -- $l
                    printf 'f %d %s %s\n' "$i" "$1" "$5"
                else
                    printf 'o %d\n' "$i"
                fi
            elif [ -e "$p" ] || [ -L "$p" ]; then
                printf 'o %d\n' "$i"
            fi
            i=$((i + 1))
        done
        """#

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
