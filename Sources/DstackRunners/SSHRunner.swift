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
        let command = "sh -c " + shellQuote(text) + " dstack " + arguments.map(shellQuote).joined(separator: " ")
        return try await connection.session().exec(command, stdin: stdin)
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
        let listing = try await script(RunnerScripts.listObjects, [objects])
        guard listing.succeeded else { throw failure("listing objects in \(objects)", listing) }
        let present = Set(listing.stdoutText.split(separator: "\n").map(String.init))
        var missing: [SnapshotFile] = []
        var seen = Set<String>()
        for file in snapshot.files where !present.contains(file.hash) && seen.insert(file.hash).inserted {
            missing.append(file)
        }
        guard !missing.isEmpty else { return 0 }
        // Stage the missing contents under their hashes, send them as one tar stream into an incoming folder,
        // and move them into place only once all arrived: a dropped transfer never leaves a truncated object.
        let staging = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-objects-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: staging) }
        let root = URL(fileURLWithPath: snapshot.root)
        for file in missing {
            var source = root.appendingPathComponent(file.path).path
            if let objects = config.localObjects?.appendingPathComponent(file.hash).path,
               FileManager.default.fileExists(atPath: objects) {
                source = objects
            }
            let target = staging.appendingPathComponent(file.hash).path
            // A copy, not a hard link: link(2) changes the source's ctime, and GNU tar syncing the same object to
            // another runner at that moment fails with "file changed as we read it".
            try FileManager.default.copyItem(atPath: source, toPath: target)
        }
        let incoming = objects + "/.incoming-" + UUID().uuidString.prefix(8)
        try await connection.session().uploadTree(staging.path, paths: missing.map(\.hash), to: incoming)
        let adopt = try await script(RunnerScripts.adoptObjects, [incoming])
        guard adopt.succeeded else { throw failure("storing objects", adopt) }
        return missing.count
    }

    public func prepare(jobId: String, snapshot: Snapshot) async throws {
        let manifest = snapshot.files.map { "\($0.hash) \(String($0.mode, radix: 8)) \($0.path)\n" }.joined()
        let result = try await script(RunnerScripts.materialize, [jobDir(jobId), objects], stdin: Data(manifest.utf8))
        guard result.succeeded else { throw RunnerError.job(jobId: jobId, reason: "preparing its directory on \(name) failed: \(result.stderrText)") }
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
        let result = try await session.exec("sh -c " + shellQuote(command))
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
        let command = "sh -c " + shellQuote(RunnerScripts.follow) + " dstack " + shellQuote(jobDir(jobId)) + " " + String(offset)
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
