import DstackModel
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs jobs as detached processes on this machine, in job directories under `baseDirectory/jobs/`.
///
/// The layout and the launch protocol are the SSH runner's: a wrapper writes the log and, at the end, the exit
/// code atomically, so a job outlives the coordinator and can be followed again later.
public struct LocalRunner: Runner {
    public let name = "local"
    /// Where job directories live (`~/.dstack/runner` unless `$DSTACK_RUNNER_DIR` says otherwise).
    public let baseDirectory: URL
    /// Jobs it runs at once.
    public let maxJobs: Int

    /// Creates a local runner keeping its job directories under `baseDirectory`.
    public init(baseDirectory: URL, maxJobs: Int = ProcessInfo.processInfo.activeProcessorCount) {
        self.baseDirectory = baseDirectory
        self.maxJobs = max(1, maxJobs)
    }

    /// The job's directory.
    public func jobDirectory(_ jobId: String) -> URL {
        baseDirectory.appendingPathComponent("jobs").appendingPathComponent(jobId)
    }

    public func probe() async throws -> RunnerInfo {
        var gpus: [GPU] = []
        if let result = try? await Subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]),
           result.status == 0 {
            gpus = parseNvidiaSMI(result.output)
        }
        var uts = utsname()
        uname(&uts)
        let os = withUnsafeBytes(of: &uts.sysname) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let arch = withUnsafeBytes(of: &uts.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        var info = RunnerInfo(name: name, os: "\(os) \(arch)", cpus: ProcessInfo.processInfo.activeProcessorCount,
                              memory: Int64(ProcessInfo.processInfo.physicalMemory), gpus: gpus, maxJobs: maxJobs)
        for engine in ["docker", "podman"] where (try? await Subprocess.run(["sh", "-c", "command -v \(engine) >/dev/null && \(engine) version"]))?.status == 0 {
            info.engine = engine
            break
        }
        try? FileManager.default.createDirectory(at: baseDirectory, withIntermediateDirectories: true)
        if let attributes = try? FileManager.default.attributesOfFileSystem(forPath: baseDirectory.path),
           let free = attributes[.systemFreeSize] as? NSNumber {
            info.diskFree = free.int64Value
        }
        info.pythons = PythonEnvironment.versions(onPath: ProcessInfo.processInfo.environment["PATH"])
        let locks = baseDirectory.appendingPathComponent("locks")
        for name in ((try? FileManager.default.contentsOfDirectory(atPath: locks.path)) ?? []).sorted()
            where name.hasPrefix("slot-") || name.hasPrefix("gpu-") {
            // A lock file holds `JOB OWNER`; an older dstack's lock folder, an `owner` file.
            let lock = locks.appendingPathComponent(name)
            let owner = (try? String(contentsOf: lock, encoding: .utf8))
                ?? (try? String(contentsOf: lock.appendingPathComponent("owner"), encoding: .utf8)) ?? ""
            info.locks.append("\(name) \(owner.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return info
    }

    /// Where file contents are kept by hash, so a job runs the code as it was when the run was submitted (SSH
    /// runners are synced from here too).
    public var objects: URL { baseDirectory.appendingPathComponent("objects") }

    public func sync(_ snapshot: Snapshot) async throws -> Int {
        let fm = FileManager.default
        let root = URL(fileURLWithPath: snapshot.root)
        var sent = 0
        do {
            try fm.createDirectory(at: objects, withIntermediateDirectories: true)
            let base = objects.path + "/"
            for file in snapshot.files {
                // Plain paths and access(2): URL building and FileManager's check cost ten times as much.
                if access(base + file.hash, F_OK) == 0 { continue }
                let object = objects.appendingPathComponent(file.hash)
                let tmp = objects.appendingPathComponent(".tmp-\(file.hash)-\(UUID().uuidString.prefix(8))")
                try fm.copyItem(at: root.appendingPathComponent(file.path), to: tmp)
                guard rename(tmp.path, object.path) == 0 else {
                    throw RunnerError.unavailable(runner: name, reason: "cannot store object \(file.hash): \(String(cString: strerror(errno)))")
                }
                sent += 1
            }
        } catch let error as RunnerError {
            throw error
        } catch {
            throw RunnerError.unavailable(runner: name, reason: "cannot copy the code into \(objects.path): \(error.localizedDescription)")
        }
        return sent
    }

    var locks: LocalLocks { LocalLocks(base: baseDirectory.path) }

    public func run(_ request: JobStart) -> AsyncThrowingStream<JobEvent, any Error> {
        .attempt { emit in try await self.attempt(request, emit: emit) }
    }

    /// One attempt, as the agent's `start` and `poll` do it on SSH runners, in this process.
    func attempt(_ request: JobStart, emit: @Sendable (JobEvent) -> Void) async throws {
        let jobId = request.launch.jobId
        let dir = jobDirectory(jobId)
        let attemptFile = dir.appendingPathComponent("attempt").path
        let was = (try? String(contentsOfFile: attemptFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        if was != String(request.attempt), FileManager.default.fileExists(atPath: dir.path) {
            // Another attempt's folder: it is over (the coordinator moved on); stop what may still run there.
            try? await stop(jobId: jobId)
            locks.release(job: jobId)
            try? FileManager.default.removeItem(at: dir)
        }
        for old in request.cleanup where old != jobId { try? FileManager.default.removeItem(at: jobDirectory(old)) }
        if was == String(request.attempt), FileManager.default.fileExists(atPath: dir.appendingPathComponent("pid").path) {
            // This attempt was launched already (attach): report it, whatever the slots are now.
            emit(.granted(SlotGrant(slot: 0, gpus: [])))
        } else {
            guard let grant = try locks.acquire(job: jobId, slots: request.slots, gpus: request.gpus,
                                                need: request.gpuCount, owner: request.owner) else {
                emit(.busy)
                return
            }
            emit(.granted(grant))
            try await launchAttempt(request, grant: grant)
        }
        emit(.launched)
        let exit = try await follow(jobId: jobId, from: request.logOffset) { emit(.log($0)) }
        locks.release(job: jobId)
        if let exit {
            emit(.exited(exit))
            emit(.released)
        } else {
            emit(.vanished("its process vanished without an exit status (killed from outside, or the machine rebooted)"))
        }
    }

    /// Fills the job's folder and starts its wrapper, detached.
    private func launchAttempt(_ request: JobStart, grant: SlotGrant) async throws {
        let jobId = request.launch.jobId
        let dir = jobDirectory(jobId)
        let attemptFile = dir.appendingPathComponent("attempt").path
        if !FileManager.default.fileExists(atPath: dir.appendingPathComponent("pid").path) {
            do {
                try prepare(jobId: jobId, snapshot: request.snapshot)
                try LocalLocks.writeFile("\(request.attempt)\n", to: attemptFile)
                if let dependencies = request.dependencies { try await place(jobId: jobId, from: dependencies) }
                var launch = request.launch
                launch.gpus = grant.gpus
                // On a machine with GPUs, a job that holds none must not see (and grab) the others' GPUs.
                if request.exportGPUs {
                    launch.environment["CUDA_VISIBLE_DEVICES"] = grant.gpus.map(String.init).joined(separator: ",")
                }
                try self.launch(launch, engine: request.engine, attempt: request.attempt)
            } catch {
                locks.release(job: jobId)
                throw error
            }
        }
    }

    public func release(jobId: String) async throws {
        locks.release(job: jobId)
    }

    public func finish(jobIds: [String], release: Bool) async throws {
        for id in jobIds where !id.isEmpty && !id.contains("/") && id != "." && id != ".." {
            if release { locks.release(job: id) }
            try? FileManager.default.removeItem(at: jobDirectory(id))
        }
    }

    func prepare(jobId: String, snapshot: Snapshot) throws {
        let dir = jobDirectory(jobId)
        let fm = FileManager.default
        try? fm.removeItem(at: dir)
        let repo = dir.appendingPathComponent("repo")
        do {
            try fm.createDirectory(at: repo, withIntermediateDirectories: true)
            let root = objects
            var made: Set<String> = [""]
            for file in snapshot.files {
                let parent = (file.path as NSString).deletingLastPathComponent
                if !made.contains(parent) {
                    try fm.createDirectory(at: repo.appendingPathComponent(parent), withIntermediateDirectories: true)
                    made.insert(parent)
                }
                let target = repo.appendingPathComponent(file.path)
                try fm.copyItem(at: root.appendingPathComponent(file.hash), to: target)
                chmod(target.path, mode_t(file.mode & 0o7777))
            }
        } catch {
            throw RunnerError.job(jobId: jobId, reason: "cannot prepare its directory \(dir.path): \(error.localizedDescription)")
        }
    }

    func place(jobId: String, from staging: URL) async throws {
        let repo = jobDirectory(jobId).appendingPathComponent("repo")
        // `cp -a` keeps modes and links; the staging directory is ours, so nothing here is user input.
        let result = try await Subprocess.run(["cp", "-a", staging.path + "/.", repo.path])
        guard result.status == 0 else {
            throw RunnerError.job(jobId: jobId, reason: "cannot place dependency artifacts: \(result.errorText)")
        }
    }

    func launch(_ job: JobLaunch, engine: String?, attempt: Int) throws {
        let dir = jobDirectory(job.jobId)
        try LocalLocks.writeFile(job.script, to: dir.path + "/commands.sh")
        let wrapper = baseDirectory.appendingPathComponent(RunnerScript.wrapperFileName).path
        if access(wrapper, F_OK) != 0 {
            // Written once per work folder (under a name holding a hash of its text), whole before it is used.
            let partial = wrapper + ".\(getpid())"
            try LocalLocks.writeFile(RunnerScript.wrapper.text, to: partial)
            rename(partial, wrapper)
        }
        if let run = try JobCommand.script(for: job, engine: engine) { try LocalLocks.writeFile(run, to: dir.path + "/run.sh") }
        try LocalLocks.writeFile("", to: dir.path + "/log")
        try SecretsFile.write(job.secretValues, into: dir)  // 0600, sourced and removed by wrapper.sh
        var environment = InheritedEnvironment.forJobs(ProcessInfo.processInfo.environment)  // issue 16: no credentials
        for (key, value) in job.environment { environment[key] = value }
        // Paths travel as arguments, never inside the script text; values through the environment.
        _ = try Subprocess.spawnDetached(["/bin/sh", wrapper, dir.path, job.workingDir,
                                          baseDirectory.path, LocalLocks.bootID, String(attempt)], environment: environment)
    }

    /// Delivers the job's log from byte `offset` as it grows; returns how the job ended, or nil when its wrapper
    /// vanished without an exit code.
    func follow(jobId: String, from offset: Int64, output: (Data) -> Void) async throws -> JobExit? {
        let dir = jobDirectory(jobId)
        let logPath = dir.appendingPathComponent("log").path
        let exitPath = dir.appendingPathComponent("exit").path
        var position = offset
        var delay: UInt64 = 1_000_000
        var polls = 0
        while true {
            let exited = Self.exitCode(exitPath) != nil
            let chunk = readFrom(logPath, offset: position)
            if !chunk.isEmpty {
                position += Int64(chunk.count)
                output(chunk)
                delay = 1_000_000
                continue
            }
            if exited { return parseExit(dir, exitPath) }
            if let pid = LocalLocks.readPid(dir.path), !pid.alive {
                // The wrapper may have written `exit` between the two checks (a file it began but never finished
                // writing, killed in between, is no exit status).
                if Self.exitCode(exitPath) != nil { continue }
                return nil
            }
            try await Task.sleep(nanoseconds: delay)
            // Every millisecond for the first 50: most jobs that end soon end within them (a no-op job takes a
            // few ms), and a look costs a few system calls; then less and less often.
            polls += 1
            if polls > 50 { delay = min(delay * 2, 100_000_000) }
        }
    }

    public func withArtifacts<T: Sendable>(jobId: String, paths: [String], _ body: (URL) async throws -> T) async throws -> T {
        try await body(jobDirectory(jobId).appendingPathComponent("repo"))
    }

    public func stop(jobId: String) async throws {
        let dir = jobDirectory(jobId).path
        if access(dir + "/exit", F_OK) == 0 { return }
        if let container = try? String(contentsOfFile: dir + "/container", encoding: .utf8) {
            let words = container.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
            if words.count == 2 { _ = try? await Subprocess.run([words[0], "stop", "-t", "5", words[1]]) }
        }
        // Nothing is signalled once the job wrote its exit code: its pid may be another process's by then.
        guard let (pid, alive) = LocalLocks.readPid(dir), alive, access(dir + "/exit", F_OK) != 0 else { return }
        if kill(-pid, SIGTERM) != 0 { kill(pid, SIGTERM) }
        for _ in 0..<50 {
            guard LocalLocks.readPid(dir)?.alive == true, access(dir + "/exit", F_OK) != 0 else { return }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        if access(dir + "/exit", F_OK) != 0 { kill(-pid, SIGKILL) }
    }

    private func parseExit(_ dir: URL, _ path: String) -> JobExit {
        var status: Int32 = 0
        // The wrapper exits right after writing `exit`; reap it (if it is our child) so no zombie is left: now if
        // it is gone already, else on the reaper's own thread (a blocking wait never runs on the tasks' threads,
        // and the next job need not wait for it).
        if let pid = LocalLocks.readPid(dir.path)?.pid, waitpid(pid, &status, WNOHANG) == 0 {
            Self.reaper.async {
                var status: Int32 = 0
                _ = waitpid(pid, &status, 0)
            }
        }
        let text = Self.exitCode(path) ?? ""
        guard let code = Int32(text) else { return JobExit(code: nil, reason: "unreadable exit status '\(text)'") }
        if code > 128, code < 160 { return JobExit(code: code, signal: code - 128) }
        return JobExit(code: code)
    }

    /// Where wrappers that wrote their exit code but have not ended yet are waited for.
    private static let reaper = DispatchQueue(label: "dstack.local-runner.reaper")

    /// The text of the job's `exit` file once it holds a whole line (the wrapper writes it in place, so an empty or
    /// partial file is not written yet); nil before.
    static func exitCode(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = read(fd, &buffer, buffer.count)
        guard n > 0, buffer[n - 1] == UInt8(ascii: "\n") else { return nil }
        return String(decoding: buffer[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private func readFrom(_ path: String, offset: Int64) -> Data {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return Data() }
        defer { close(fd) }
        var out = Data()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var position = off_t(offset)
        while out.count < 4 << 20 {
            let n = pread(fd, &buffer, buffer.count, position)
            if n <= 0 { break }
            out.append(contentsOf: buffer[0..<n])
            position += off_t(n)
        }
        return out
    }
}

/// Parses `nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits` (memory in MiB).
public func parseNvidiaSMI(_ text: String) -> [GPU] {
    text.split(separator: "\n").compactMap { line in
        let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard fields.count >= 3, let index = Int(fields[0]), let mib = Int64(fields[2]) else { return nil }
        return GPU(index: index, name: fields[1], memory: mib * 1024 * 1024)
    }
}
