@testable import DstackSSH
import Foundation
import Testing

/// Throughput side by side with OpenSSH's scp on the same loopback runner; run with DSTACK_SSH_BENCH=1.
@Suite(
    "transfer throughput (benchmark)", .serialized, .testbed(),
    .enabled(if: ProcessInfo.processInfo.environment["DSTACK_SSH_BENCH"] != nil))
struct ThroughputTests {
    @Test("200 MB over SFTP, tar and `cat`, next to scp")
    func throughput() async throws {
        let bed = try testbed()
        let runner = bed.runners[0]
        let session = try await bed.connect()
        defer { Task { await session.close() } }
        let folder = try makeTemporaryFolder("bench")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let size = 200_000_000
        try await shell("head -c \(size) /dev/urandom > \(folder)/src && mkdir \(folder)/tree && cp \(folder)/src \(folder)/tree/")
        func rate(_ label: String, _ body: () async throws -> Void) async rethrows {
            let start = ContinuousClock.now
            try await body()
            let time = ContinuousClock.now - start
            let seconds = Double(time.components.seconds) + Double(time.components.attoseconds) / 1e18
            print("throughput: \(label): \(String(format: "%.0f", Double(size) / seconds / 1e6)) MB/s")
        }
        let scp = "scp -q -i \(bed.clientKey) -o UserKnownHostsFile=\(bed.knownHosts) -P \(runner.port)"
        try await rate("sftp upload") { try await session.upload(folder + "/src", to: folder + "/up") }
        try await rate("sftp download") { try await session.download(folder + "/up", to: folder + "/down") }
        try await rate("tar upload") { try await session.uploadTree(folder + "/tree", paths: ["src"], to: folder + "/tarup") }
        try await rate("tar download") { try await session.downloadTree(folder + "/tree", paths: ["src"], to: folder + "/tardown") }
        try await rate("exec cat > /dev/null (stdin from a file)") {
            let input = try FileHandle(forReadingFrom: URL(fileURLWithPath: folder + "/src"))
            _ = try await session.exec("cat > /dev/null", stdinFrom: input, stdoutTo: nil).check("cat")
        }
        try await rate("scp upload") { try await shell("\(scp) \(folder)/src root@\(runner.host):\(folder)/scpup") }
        try await rate("scp download") { try await shell("\(scp) root@\(runner.host):\(folder)/scpup \(folder)/scpdown") }
        #expect(FileManager.default.contentsEqual(atPath: folder + "/src", andPath: folder + "/down"))
        #expect(FileManager.default.contentsEqual(atPath: folder + "/src", andPath: folder + "/tardown/src"))
    }

    @Test("200 MB download: cat stream, SFTP and tar, next to ssh cat, interleaved")
    func downloadVariants() async throws {
        let bed = try testbed()
        let runner = bed.runners[0]
        let session = try await bed.connect()
        defer { Task { await session.close() } }
        let folder = try makeTemporaryFolder("bench")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let size = 200_000_000
        try await shell("head -c \(size) /dev/urandom > \(folder)/src")
        func seconds(_ body: () async throws -> Void) async rethrows -> Double {
            let start = ContinuousClock.now
            try await body()
            let time = ContinuousClock.now - start
            return Double(time.components.seconds) + Double(time.components.attoseconds) / 1e18
        }
        let ssh = "ssh -F /dev/null -i \(bed.clientKey) -o UserKnownHostsFile=\(bed.knownHosts) -p \(runner.port) root@\(runner.host)"
        var best: [String: Double] = [:]
        let rounds = Int(ProcessInfo.processInfo.environment["DSTACK_SSH_BENCH_ROUNDS"] ?? "3") ?? 3
        for _ in 0..<rounds {
            if let only = ProcessInfo.processInfo.environment["DSTACK_SSH_BENCH_ONLY"] {
                func cpu() -> Double {
                    var usage = rusage()
                    getrusage(RUSAGE_SELF.rawValue, &usage)
                    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
                        + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
                }
                /// Nanoseconds on a CPU and waiting for one, summed over this process's threads.
                func sched() -> (run: Double, wait: Double) {
                    var run = 0.0, wait = 0.0
                    for task in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? [] {
                        let fields = ((try? String(contentsOfFile: "/proc/self/task/\(task)/schedstat", encoding: .utf8)) ?? "")
                            .split(separator: " ")
                        if fields.count >= 2 { run += Double(fields[0]) ?? 0; wait += Double(fields[1]) ?? 0 }
                    }
                    return (run / 1e9, wait / 1e9)
                }
                let schedBefore = sched()
                let cpuBefore = cpu()
                let t = try await seconds {
                    switch only {
                    case "sftp": try await session.download(folder + "/src", to: folder + "/sftp")
                    case "tar": try await session.downloadTree(folder, paths: ["src"], to: folder + "/tar")
                    default: try await session.downloadFile(folder + "/src", to: folder + "/cat")
                    }
                }
                let schedAfter = sched()
                print("download: only \(only): \(String(format: "%.3f s, CPU of this process %.3f s, on CPU %.3f s, waiting for a CPU %.3f s", t, cpu() - cpuBefore, schedAfter.run - schedBefore.run, schedAfter.wait - schedBefore.wait))")
                try? FileManager.default.removeItem(atPath: folder + "/tar")
                continue
            }
            let login = try await seconds { try await shell("\(ssh) true") }
            let times: [(String, Double)] = [
                ("ssh cat (less login)", try await seconds { try await shell("\(ssh) cat \(folder)/src > \(folder)/sshcat") } - login),
                ("downloadFile (cat)", try await seconds { try await session.downloadFile(folder + "/src", to: folder + "/cat") }),
                ("download (sftp)", try await seconds { try await session.download(folder + "/src", to: folder + "/sftp") }),
                ("downloadTree (tar)", try await seconds {
                    try await session.downloadTree(folder, paths: ["src"], to: folder + "/tar")
                }),
            ]
            for (label, t) in times { best[label] = min(best[label] ?? .infinity, t) }
            try FileManager.default.removeItem(atPath: folder + "/tar")
        }
        for (label, t) in best.sorted(by: { $0.value < $1.value }) {
            print("download: \(label): \(String(format: "%.3f s, %.0f MB/s", t, Double(size) / t / 1e6))")
        }
        if FileManager.default.fileExists(atPath: folder + "/cat") {
            #expect(FileManager.default.contentsEqual(atPath: folder + "/src", andPath: folder + "/cat"))
        }
    }
}
