@testable import DstackSSH
import Foundation
import Testing

@Suite("file transfer over a real sshd", .serialized, .testbed())
struct TransferTests {
    @Test("SFTP upload and download of a 20 MB file round-trip byte for byte, mode and mtime kept")
    func sftpRoundTrip() async throws {
        let session = try await testbed().connect()
        defer { Task { await session.close() } }
        let local = try makeTemporaryFolder("sftp")
        let remote = try makeTemporaryFolder("sftp-remote")  // the runner is this machine
        defer {
            try? FileManager.default.removeItem(atPath: local)
            try? FileManager.default.removeItem(atPath: remote)
        }
        let source = local + "/model.bin"
        try await shell("head -c 20000000 /dev/urandom > \(source) && chmod 750 \(source) && touch -d '2024-01-02 03:04:05' \(source)")

        var start = ContinuousClock.now
        let sent = try await session.upload(source, to: remote + "/model.bin")
        let uploadTime = ContinuousClock.now - start
        #expect(sent == 20_000_000)
        let remoteInfo = try await session.exec("stat -c '%a %s %Y' \(remote)/model.bin; ls -a \(remote)").stdoutText
        #expect(remoteInfo == "750 20000000 1704164645\n.\n..\nmodel.bin\n", "mode, size and mtime kept; no temporary left")

        let back = local + "/nested/dir/model.back"
        start = ContinuousClock.now
        let received = try await session.download(remote + "/model.bin", to: back)
        let downloadTime = ContinuousClock.now - start
        #expect(received == 20_000_000)
        #expect(FileManager.default.contentsEqual(atPath: source, andPath: back))
        let mode = try FileManager.default.attributesOfItem(atPath: back)[.posixPermissions] as? Int
        #expect(mode == 0o750)
        let modified = try FileManager.default.attributesOfItem(atPath: back)[.modificationDate] as? Date
        #expect(modified == Date(timeIntervalSince1970: 1_704_164_645))
        #expect(try FileManager.default.contentsOfDirectory(atPath: local + "/nested/dir") == ["model.back"])
        let mbps = { (time: Duration) in String(format: "%.0f", 20.0 / (Double(time.components.seconds) + Double(time.components.attoseconds) / 1e18)) }
        print("sftp 20 MB: upload \(uploadTime) (\(mbps(uploadTime)) MB/s), download \(downloadTime) (\(mbps(downloadTime)) MB/s)")
    }

    @Test("an upload replaces an existing file; a missing remote file fails naming it")
    func replaceAndMissing() async throws {
        let session = try await testbed().connect()
        defer { Task { await session.close() } }
        let folder = try makeTemporaryFolder("sftp-replace")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try "new".write(toFile: folder + "/a", atomically: true, encoding: .utf8)
        try "old contents".write(toFile: folder + "/b", atomically: true, encoding: .utf8)
        try await session.upload(folder + "/a", to: folder + "/b")
        #expect(try String(contentsOfFile: folder + "/b", encoding: .utf8) == "new")
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder).sorted() == ["a", "b"])

        await #expect(throws: SSHError.remoteFile(path: folder + "/missing", reason: "cannot open: no such file or directory")) {
            try await session.download(folder + "/missing", to: folder + "/c")
        }
        #expect(!FileManager.default.fileExists(atPath: folder + "/c"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder).sorted() == ["a", "b"], "no temporary left")
    }

    @Test("downloadFile streams a 20 MB file byte for byte into place with the given mode; a missing one leaves nothing")
    func downloadFileByStream() async throws {
        let session = try await testbed().connect()
        defer { Task { await session.close() } }
        let folder = try makeTemporaryFolder("cat-download")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let source = folder + "/it's a model.bin"
        try await shell("head -c 20000001 /dev/urandom > \"\(source)\"")
        let target = folder + "/nested/dir/model.back"
        let received = try await session.downloadFile(source, to: target, mode: 0o4750)
        #expect(received == 20_000_001)
        #expect(FileManager.default.contentsEqual(atPath: source, andPath: target))
        #expect(try FileManager.default.attributesOfItem(atPath: target)[.posixPermissions] as? Int == 0o4750)
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder + "/nested/dir") == ["model.back"])

        // Replacing an existing file, and several at once on one session.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<3 { group.addTask { try await session.downloadFile(source, to: target) } }
            try await group.waitForAll()
        }
        #expect(FileManager.default.contentsEqual(atPath: source, andPath: target))
        #expect(try FileManager.default.attributesOfItem(atPath: target)[.posixPermissions] as? Int == 0o644)
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder + "/nested/dir") == ["model.back"])

        do {
            try await session.downloadFile(folder + "/missing", to: folder + "/nested/dir/missing")
            Issue.record("a missing remote file must fail")
        } catch let SSHError.remoteFile(path, reason) {
            #expect(path == folder + "/missing")
            #expect(reason.contains("No such file"), "\(reason)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder + "/nested/dir") == ["model.back"], "no temporary left")
    }

    @Test("uploads and downloads run side by side on one session")
    func concurrentTransfers() async throws {
        let session = try await testbed().connect()
        defer { Task { await session.close() } }
        let folder = try makeTemporaryFolder("sftp-parallel")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try await shell("cd \(folder) && for i in 1 2 3 4; do head -c 3000000 /dev/urandom > src$i; done")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 1...4 {
                group.addTask {
                    try await session.upload("\(folder)/src\(index)", to: "\(folder)/up\(index)")
                    try await session.download("\(folder)/up\(index)", to: "\(folder)/down\(index)")
                }
                group.addTask { _ = try await session.exec("head -c 2000000 /dev/zero") }
            }
            try await group.waitForAll()
        }
        for index in 1...4 {
            #expect(FileManager.default.contentsEqual(atPath: "\(folder)/src\(index)", andPath: "\(folder)/down\(index)"))
        }
    }

    @Test("a tree of many files downloads through tar, names with spaces and quotes included")
    func treeDownload() async throws {
        let session = try await testbed().connect()
        defer { Task { await session.close() } }
        let remote = try makeTemporaryFolder("tree-remote")
        let local = try makeTemporaryFolder("tree-local")
        defer {
            try? FileManager.default.removeItem(atPath: remote)
            try? FileManager.default.removeItem(atPath: local)
        }
        let setup = """
            mkdir -p \(remote)/run/checkpoints/sub "\(remote)/run/it's here" \(remote)/other
            i=0; while [ $i -lt 600 ]; do echo "file $i" > \(remote)/run/checkpoints/sub/f$i.txt; i=$((i+1)); done
            echo quoted > "\(remote)/run/it's here/a b.txt"; chmod 640 "\(remote)/run/it's here/a b.txt"
            head -c 3000000 /dev/urandom > \(remote)/run/checkpoints/big.bin
            echo no > \(remote)/other/skip
            """
        _ = try await session.exec(setup).check("setup")
        try await session.downloadTree(remote + "/run", paths: ["checkpoints", "it's here"], to: local + "/out")
        let listing = try await shell("cd \(local)/out && find . -type f | wc -l && cat \"it's here/a b.txt\" && stat -c %a \"it's here/a b.txt\"")
        #expect(listing == "602\nquoted\n640\n")
        #expect(FileManager.default.contentsEqual(
            atPath: remote + "/run/checkpoints/big.bin", andPath: local + "/out/checkpoints/big.bin"))
        #expect(try String(contentsOfFile: local + "/out/checkpoints/sub/f599.txt", encoding: .utf8) == "file 599\n")

        await #expect(throws: SSHError.self) {
            try await session.downloadTree(remote + "/run", paths: ["no-such-thing"], to: local + "/bad")
        }
    }

    @Test("a tree uploads through tar into a folder that is created")
    func treeUpload() async throws {
        let session = try await testbed().connect()
        defer { Task { await session.close() } }
        let local = try makeTemporaryFolder("tree-up")
        let remote = try makeTemporaryFolder("tree-up-remote")
        defer {
            try? FileManager.default.removeItem(atPath: local)
            try? FileManager.default.removeItem(atPath: remote)
        }
        try await shell("""
            cd \(local) && mkdir -p src/pkg data && i=0; while [ $i -lt 300 ]; do echo $i > src/pkg/m$i.py; i=$((i+1)); done
            head -c 4000000 /dev/urandom > data/blob && chmod 700 data/blob
            """)
        try await session.uploadTree(local, paths: ["src", "data"], to: remote + "/job 1/repo")
        let check = try await session.exec("cd '\(remote)/job 1/repo' && find . -type f | wc -l && stat -c %a data/blob").stdoutText
        #expect(check == "301\n700\n")
        #expect(FileManager.default.contentsEqual(atPath: local + "/data/blob", andPath: remote + "/job 1/repo/data/blob"))
    }
}
