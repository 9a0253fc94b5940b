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
}
