import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The slot and GPU locks of a runner's work directory, taken in this process for the local runner: the same
/// files and rules as `dstack_acquire` in `Scripts/agent.sh` (a lock file made by an exclusive create, holding
/// `JOB OWNER`; a job's locks are those naming it; reclaim through a tombstone rename, only when too few locks are
/// free; an older dstack's lock folders with an `owner` file inside read alike), without a shell per job.
struct LocalLocks {
    /// The runner's work directory.
    let base: String

    var locks: String { base + "/locks" }

    /// This machine's boot id, recorded with pids (a pid from before a reboot is never taken for a live process).
    static let bootID: String = {
        (try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
    }()

    /// Serialises this process's own lock changes (jobs start and end on many threads at once); other processes
    /// are kept apart by the exclusive create and rename, as on SSH runners.
    private static let inProcess = NSLock()

    /// Takes a slot and `need` of `gpus` for `job`; nil when not enough is free now (nothing kept then).
    func acquire(job: String, slots: Int, gpus: [Int], need: Int, owner: String) throws -> SlotGrant? {
        try Self.inProcess.withLock { try acquireLocked(job: job, slots: slots, gpus: gpus, need: need, owner: owner) }
    }

    private func acquireLocked(job: String, slots: Int, gpus: [Int], need: Int, owner: String) throws -> SlotGrant? {
        if mkdir(locks, 0o755) != 0 && errno != EEXIST {
            try FileManager.default.createDirectory(atPath: locks, withIntermediateDirectories: true)
        }
        // The locks naming the job are its own (no record of them is kept: a file less per job).
        let held = heldLocks(job)
        if let slot = held.slot { return SlotGrant(slot: slot, gpus: held.gpus) }
        if !held.gpus.isEmpty { releaseLocked(job: job) }  // GPUs without a slot (it was reclaimed): afresh
        // Free locks first; the locks of jobs that are over only when too few are free.
        if let grant = take(job: job, slots: slots, gpus: gpus, need: need, owner: owner) { return grant }
        reclaim()
        return take(job: job, slots: slots, gpus: gpus, need: need, owner: owner)
    }

    /// A slot and `need` of `gpus`, all or nothing.
    private func take(job: String, slots: Int, gpus: [Int], need: Int, owner: String) -> SlotGrant? {
        guard let slot = (0..<max(1, slots)).first(where: { take("slot-\($0)", job: job, owner: owner) }) else { return nil }
        var got: [Int] = []
        for g in gpus where got.count < need && take("gpu-\(g)", job: job, owner: owner) {
            got.append(g)
        }
        if got.count < need {
            Self.remove(locks + "/slot-\(slot)")
            for g in got { Self.remove(locks + "/gpu-\(g)") }
            return nil
        }
        return SlotGrant(slot: slot, gpus: got)
    }

    /// The slot and GPUs whose locks name `job`.
    private func heldLocks(_ job: String) -> (slot: Int?, gpus: [Int]) {
        var slot: Int?
        var gpus: [Int] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: locks)) ?? []
            where (name.hasPrefix("slot-") || name.hasPrefix("gpu-")) && holder(of: locks + "/" + name) == job {
            if name.hasPrefix("slot-") { slot = Int(name.dropFirst(5)) }
            if name.hasPrefix("gpu-"), let g = Int(name.dropFirst(4)) { gpus.append(g) }
        }
        return (slot, gpus.sorted())
    }

    /// Releases what `acquire` took for `job`, only the locks that are still its own.
    func release(job: String) {
        Self.inProcess.withLock { releaseLocked(job: job) }
    }

    private func releaseLocked(job: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: locks)) ?? []
            where (name.hasPrefix("slot-") || name.hasPrefix("gpu-")) && holder(of: locks + "/" + name) == job {
            Self.remove(locks + "/" + name)
        }
        unlink(locks + "/held-" + job)  // an older dstack's record of them
    }

    private func take(_ name: String, job: String, owner: String) -> Bool {
        let fd = open(locks + "/" + name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let line = Array("\(job) \(owner)\n".utf8)
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
        return true
    }

    /// The job holding `lock` (a lock file, or an older dstack's lock folder with its `owner` file).
    private func holder(of lock: String) -> String? {
        var text = Self.readLine(lock)
        if text == nil, errno == EISDIR { text = Self.readLine(lock + "/owner") }
        return text?.split(separator: " ").first.map(String.init)
    }

    /// The first bytes of a small file, with plain system calls (nil when it cannot be read; errno says why).
    private static func readLine(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 512)
        let n = read(fd, &buffer, buffer.count)
        guard n >= 0 else { return nil }
        return String(decoding: buffer[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Removes a lock file (or an older dstack's lock folder).
    private static func remove(_ path: String) {
        if unlink(path) != 0, errno == EISDIR || errno == EPERM { try? FileManager.default.removeItem(atPath: path) }
    }

    /// Removes locks whose job is over (it wrote its exit code, its process is gone, or it never got a folder in
    /// 10 minutes): renamed to a tombstone first, and put back if another job took it meanwhile.
    private func reclaim() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: locks) else { return }
        for name in names where name.hasPrefix("slot-") || name.hasPrefix("gpu-") {
            let lock = locks + "/" + name
            guard let taker = holder(of: lock), !taker.isEmpty else {
                // No owner a minute after it was made: its taker died between making it and writing the owner.
                if let info = try? FileManager.default.attributesOfItem(atPath: lock),
                   let made = info[.modificationDate] as? Date, Date().timeIntervalSince(made) > 60 {
                    Self.remove(lock)
                }
                continue
            }
            let job = base + "/jobs/" + taker
            var over = false
            if access(job + "/exit", F_OK) == 0 {  // written, or being written by a wrapper about to end
                over = true
            } else if let pid = Self.readPid(job) {
                over = !pid.alive
            } else if access(job, F_OK) != 0, let info = try? FileManager.default.attributesOfItem(atPath: lock),
                      let made = info[.modificationDate] as? Date, Date().timeIntervalSince(made) > 600 {
                over = true
            }
            guard over else { continue }
            let tomb = locks + "/.reclaim-\(getpid())-" + name
            guard rename(lock, tomb) == 0 else { continue }
            if holder(of: tomb) == taker {
                Self.remove(tomb)
            } else if rename(tomb, lock) != 0 {
                Self.remove(tomb)
            }
        }
    }

    /// Writes `text` to `path` with plain write(2): Foundation's `Data.write` fsyncs each file, which cost a job
    /// on the local runner more than its commands (these files say how far a job got; a crash of the machine
    /// loses the job anyway).
    static func writeFile(_ text: String, to path: String, mode: mode_t = 0o644) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode)
        guard fd >= 0 else { throw RunnerError.unavailable(runner: "local", reason: "cannot write \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw RunnerError.unavailable(runner: "local", reason: "cannot write \(path): \(String(cString: strerror(errno)))") }
            done += n
        }
    }

    /// A job's recorded wrapper pid (`PID BOOTID`), and whether that process is alive on this boot.
    static func readPid(_ jobDirectory: String) -> (pid: pid_t, alive: Bool)? {
        guard let text = try? String(contentsOfFile: jobDirectory + "/pid", encoding: .utf8) else { return nil }
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard let first = words.first, let pid = pid_t(first) else { return nil }
        if words.count > 1, String(words[1]) != bootID { return (pid, false) }
        var status: Int32 = 0
        // Reap it if it is our child, so a finished job is not mistaken for a live zombie.
        if waitpid(pid, &status, WNOHANG) == pid { return (pid, false) }
        return (pid, kill(pid, 0) == 0 || errno == EPERM)
    }
}
