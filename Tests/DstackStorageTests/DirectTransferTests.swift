import Crypto
import Foundation
import Testing

@testable import DstackStorage

/// The runner's transfer script (`Sources/DstackRunners/Scripts/transfer.sh`), run here with a `PATH` that holds only
/// the tool under test, against moto with URLs this storage presigned: what a runner does, without a runner.
@Suite("direct transfers: presigned URLs and the runner's transfer script", MotoServerTrait(), .serialized)
struct DirectTransferTests {
    static let script = s3RepositoryRoot.appendingPathComponent("Sources/DstackRunners/Scripts/transfer.sh").path
    /// Parts of 5 MiB (S3's smallest) so that a 12 MiB file goes in three.
    static let tuning: S3Tuning = {
        var tuning = S3Tuning.fastTests
        tuning.minimumPartSize = 5 * 1024 * 1024
        return tuning
    }()

    /// A folder of links to the programs the script uses, plus `tools` (curl, wget, python3): a runner that has
    /// exactly those.
    static func bin(_ tools: [String], in directory: URL) throws -> String {
        let bin = directory.appendingPathComponent("bin")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        let basics = ["sh", "dd", "md5sum", "sha256sum", "cut", "sed", "tr", "wc", "tail", "head", "grep", "mktemp", "rm",
                      "cat", "chmod", "mv", "mkdir", "mkfifo", "sleep", "ls", "find", "tar"]
        for name in basics + tools {
            var target = ["/usr/bin/", "/bin/"].map { $0 + name }.first { FileManager.default.isExecutableFile(atPath: $0) }
            if name == "python3" {
                // The real interpreter, not a version manager's shim that needs its own PATH.
                let (_, output) = try await_(["/usr/bin/env", "python3", "-c", "import sys; print(sys.executable)"])
                target = output.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            guard let target else { throw S3TestFailure("no \(name) on this machine") }
            try FileManager.default.createSymbolicLink(atPath: bin.appendingPathComponent(name).path, withDestinationPath: target)
        }
        return bin.path
    }

    /// Runs a program synchronously (for set-up only).
    static func await_(_ arguments: [String]) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Runs the transfer script with `input` on its standard input and only `path` to find programs in.
    static func transfer(_ arguments: [String], input: String, path: String) async throws -> (Int32, String) {
        let inputFile = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-transfer-in-\(UUID().uuidString)")
        let outputFile = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-transfer-out-\(UUID().uuidString)")
        try Data(input.utf8).write(to: inputFile)
        _ = FileManager.default.createFile(atPath: outputFile.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: inputFile)
            try? FileManager.default.removeItem(at: outputFile)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = [script] + arguments
        process.environment = ["PATH": path, "DSTACK_TRANSFER_NAP": "0", "TMPDIR": FileManager.default.temporaryDirectory.path]
        process.standardInput = try FileHandle(forReadingFrom: inputFile)
        let output = try FileHandle(forWritingTo: outputFile)
        defer { try? output.close() }
        process.standardOutput = output
        process.standardError = output
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do { try process.run() } catch {
                process.terminationHandler = nil
                continuation.resume(throwing: error)
            }
        }
        return (status, String(decoding: (try? Data(contentsOf: outputFile)) ?? Data(), as: UTF8.self))
    }

    /// The `put` orders for `files` (path, upload), as the coordinator writes them.
    static func putOrders(_ files: [(String, DirectUpload)]) -> String {
        var text = ""
        for (index, (path, _)) in files.enumerated() { text += "f \(index) \(path)\n" }
        for (index, (_, upload)) in files.enumerated() {
            for (number, url) in upload.urls.enumerated() {
                let offset = Int64(number) * upload.partSize
                text += "p \(index) \(number + 1) \(offset) \(min(upload.partSize, upload.size - offset)) \(url)\n"
            }
        }
        return text
    }

    /// The `p` lines of the script's output for file `index`, as part reports.
    static func parts(_ output: String, index: Int) -> [DirectPart] {
        output.split(separator: "\n").compactMap { line in
            let words = line.split(separator: " ")
            guard words.count == 5, words[0] == "p", Int(words[1]) == index, let number = Int(words[2]) else { return nil }
            return DirectPart(number: number, md5: String(words[3]), etag: String(words[4]))
        }
    }

    @Test("each tool (curl, wget, python3) stores a multipart file and a small one, and fetches them back, checked",
          arguments: ["curl", "wget", "python3"])
    func roundTrip(tool: String) async throws {
        let server = try await motoServers.server()
        let storage = try server.storage(bucket: try await server.makeBucket(), prefix: "team", tuning: Self.tuning)
        try await withS3TemporaryDirectory { directory in
            let path = try Self.bin([tool], in: directory)
            let (_, probe) = try await Self.transfer(["tool"], input: "", path: path)
            #expect(probe == "K tool \(tool)\nK hash 1\n")
            let missing = try storage.directDownloadURL("p/nothing-here", lifetime: .seconds(60))
            let (_, reach) = try await Self.transfer(["reach", tool], input: missing + "\n", path: path)
            #expect(reach == "K reach 404\n")

            let repo = directory.appendingPathComponent("repo")
            try FileManager.default.createDirectory(at: repo.appendingPathComponent("ckpt"), withIntermediateDirectories: true)
            try writeS3RandomFile(repo.appendingPathComponent("ckpt/model.bin"), size: 12 * 1024 * 1024 + 123)
            try writeS3RandomFile(repo.appendingPathComponent("ckpt/head.bin"), size: 1_500_000)
            let big = try await storage.beginDirectUpload("p/artifacts/k/files/ckpt/model.bin", size: 12 * 1024 * 1024 + 123, lifetime: .seconds(600))
            let small = try await storage.beginDirectUpload("p/artifacts/k/files/ckpt/head.bin", size: 1_500_000, lifetime: .seconds(600))
            #expect(big.urls.count == 3 && big.uploadId != nil)
            #expect(small.urls.count == 1 && small.uploadId == nil)

            let (status, output) = try await Self.transfer(["put", tool, repo.path, "4"],
                                                           input: Self.putOrders([("ckpt/model.bin", big), ("ckpt/head.bin", small)]), path: path)
            #expect(status == 0, "\(output)")
            #expect(output.contains("h 0 \(try s3SHA256(ofFile: repo.appendingPathComponent("ckpt/model.bin")))"))
            #expect(output.contains("h 1 \(try s3SHA256(ofFile: repo.appendingPathComponent("ckpt/head.bin")))"))
            let landed: [Int64] = output.split(separator: "\n").filter { $0.hasPrefix("b ") }.compactMap { Int64($0.dropFirst(2)) }
            #expect(landed.reduce(0, +) == Int64(12 * 1024 * 1024 + 123 + 1_500_000))
            try await storage.finishDirectUpload(big, parts: Self.parts(output, index: 0))
            try await storage.finishDirectUpload(small, parts: Self.parts(output, index: 1))
            #expect(try await storage.multipartUploads(underFullPrefix: "").isEmpty)
            let back = directory.appendingPathComponent("back.bin")
            try await storage.download("p/artifacts/k/files/ckpt/model.bin", to: back)
            #expect(try s3SHA256(ofFile: back) == (try s3SHA256(ofFile: repo.appendingPathComponent("ckpt/model.bin"))))
            // Nothing of the transfer is left beside the files.
            #expect(try FileManager.default.contentsOfDirectory(atPath: repo.path) == ["ckpt"])

            // And back down, into a fresh folder, with the mode asked for.
            let deps = directory.appendingPathComponent("deps")
            let sha = try s3SHA256(ofFile: repo.appendingPathComponent("ckpt/model.bin"))
            let url = try storage.directDownloadURL("p/artifacts/k/files/ckpt/model.bin", lifetime: .seconds(600))
            let (got, gotOutput) = try await Self.transfer(["get", tool, deps.path, "4"],
                                                           input: "g \(12 * 1024 * 1024 + 123) 640 \(sha) \(url) ckpt/model.bin\n", path: path)
            #expect(got == 0, "\(gotOutput)")
            #expect(gotOutput.contains("d ckpt/model.bin"))
            #expect(try s3SHA256(ofFile: deps.appendingPathComponent("ckpt/model.bin")) == sha)
            let mode = try FileManager.default.attributesOfItem(atPath: deps.appendingPathComponent("ckpt/model.bin").path)[.posixPermissions] as? Int
            #expect(mode == 0o640)
        }
    }

    @Test("a part that never lands fails the storing with the part's number and why, after 4 tries")
    func partThatNeverLands() async throws {
        let server = try await motoServers.server()
        let storage = try server.storage(bucket: try await server.makeBucket(), tuning: Self.tuning)
        try await withS3TemporaryDirectory { directory in
            let path = try Self.bin(["curl"], in: directory)
            try writeS3RandomFile(directory.appendingPathComponent("big.bin"), size: 11 * 1024 * 1024)
            var upload = try await storage.beginDirectUpload("p/big.bin", size: 11 * 1024 * 1024, lifetime: .seconds(600))
            // Part 2 goes to a port nothing listens on.
            let closed = try await MotoServer.freeLoopbackPort()
            upload.urls[1] = upload.urls[1].replacingOccurrences(of: ":\(server.port)/", with: ":\(closed)/")
            let (status, output) = try await Self.transfer(["put", "curl", directory.path, "4"],
                                                           input: Self.putOrders([("big.bin", upload)]), path: path)
            #expect(status == 3)
            #expect(output.contains("x 0 2 part 2 of 'big.bin' never landed after 4 tries: the bucket refused it or did not answer: curl: (7)"), "\(output)")
            await storage.abortDirectUpload(upload)
            #expect(try await storage.multipartUploads(underFullPrefix: "").isEmpty)
        }
    }

    @Test("a download whose bytes differ from the manifest's checksum is refused and leaves nothing")
    func damagedDownload() async throws {
        let server = try await motoServers.server()
        let storage = try server.storage(bucket: try await server.makeBucket(), tuning: Self.tuning)
        try await storage.write("p/f.bin", data: Data(repeating: 7, count: 2_000_000))
        try await withS3TemporaryDirectory { directory in
            let path = try Self.bin(["curl"], in: directory)
            let url = try storage.directDownloadURL("p/f.bin", lifetime: .seconds(60))
            let wrong = String(repeating: "0", count: 64)
            let deps = directory.appendingPathComponent("deps")
            let (status, output) = try await Self.transfer(["get", "curl", deps.path, "4"], input: "g 2000000 644 \(wrong) \(url) a/f.bin\n", path: path)
            #expect(status == 3)
            #expect(output.contains("x 0 0 'a/f.bin' could not be downloaded after 4 tries: it arrived damaged (SHA-256 differs from the manifest's)"), "\(output)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: deps.appendingPathComponent("a").path).isEmpty)
        }
    }

    @Test("a part whose checksum the bucket does not confirm aborts the upload: nothing is stored")
    func mismatchAborts() async throws {
        let server = try await motoServers.server()
        let storage = try server.storage(bucket: try await server.makeBucket(), tuning: Self.tuning)
        try await withS3TemporaryDirectory { directory in
            let path = try Self.bin(["curl"], in: directory)
            try writeS3RandomFile(directory.appendingPathComponent("big.bin"), size: 11 * 1024 * 1024)
            let upload = try await storage.beginDirectUpload("p/big.bin", size: 11 * 1024 * 1024, lifetime: .seconds(600))
            let (status, output) = try await Self.transfer(["put", "curl", directory.path, "4"],
                                                           input: Self.putOrders([("big.bin", upload)]), path: path)
            #expect(status == 0, "\(output)")
            var parts = Self.parts(output, index: 0)
            parts[1].md5 = String(repeating: "a", count: 32)
            parts[1].etag = parts[1].md5
            await #expect(throws: StorageError.self) { try await storage.finishDirectUpload(upload, parts: parts) }
            #expect(try await storage.multipartUploads(underFullPrefix: "").isEmpty)
            #expect(try await storage.read("p/big.bin") == nil)
            // And a runner claiming the wrong ETag for a part it sent is caught before anything completes.
            do {
                try await storage.finishDirectUpload(upload, parts: [DirectPart(number: 1, md5: "ab", etag: "cd")])
                Issue.record("a short part list was accepted")
            } catch let error as StorageError {
                #expect("\(error)".contains("reported parts [1] of 3"))
            }
        }
    }

    @Test("temporary credentials hand out no URL: the session token would travel in it")
    func sessionTokenRefuses() async throws {
        let server = try await motoServers.server()
        var environment = server.environment
        environment["AWS_SESSION_TOKEN"] = "tOkEn-never-on-a-runner"
        let storage = try server.storage(bucket: "any", environment: environment)
        #expect(storage.directRefusal == "the bucket's credentials are temporary (AWS_SESSION_TOKEN), and every URL signed with them carries the token")
        #expect(try server.storage(bucket: "any").directRefusal == nil)
    }

    @Test("a presigned URL carries the access key id and a signature, never the secret; a part URL names its upload")
    func presignedURLs() async throws {
        let server = try await motoServers.server()
        let storage = try server.storage(bucket: try await server.makeBucket(), tuning: Self.tuning)
        let url = try storage.directDownloadURL("a key/with space", lifetime: .seconds(60))
        #expect(url.hasPrefix("\(server.endpoint)/\(storage.client.configuration.bucket)/a%20key/with%20space?"))
        #expect(url.contains("X-Amz-Credential=\(server.accessKeyId)%2F") && url.contains("X-Amz-Expires=60&"))
        #expect(url.hasSuffix("&X-Amz-SignedHeaders=host") && url.contains("X-Amz-Signature="))
        let upload = try await storage.beginDirectUpload("big", size: 11 * 1024 * 1024, lifetime: .seconds(60))
        #expect(upload.urls.enumerated().allSatisfy { $1.contains("partNumber=\($0 + 1)&") && $1.contains("uploadId=") })
        await storage.abortDirectUpload(upload)
        // Signed with a secret of its own, the URL shows none of it.
        var environment = server.environment
        environment["AWS_SECRET_ACCESS_KEY"] = "sEcReT-never-in-a-url-0123456789"
        let other = try server.storage(bucket: "any", environment: environment)
        #expect(!(try other.directDownloadURL("k", lifetime: .seconds(60))).contains("sEcReT"))
    }
}
