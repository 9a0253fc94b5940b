import Foundation
import Testing

@testable import DstackStorage

extension S3StorageTests {
    @Suite("big files, many objects, races, aborted uploads")
    struct Large {
        @Test("a 100 MiB file goes up in parts and comes back byte for byte")
        func hundredMegabytes() async throws {
            let server = try await motoServers.server()
            let storage = try server.storage(bucket: try await server.makeBucket(), prefix: "big")
            try await withS3TemporaryDirectory { directory in
                let source = directory.appendingPathComponent("weights.bin")
                let size = 100 * 1024 * 1024
                try writeS3RandomFile(source, size: size)
                let expected = try s3SHA256(ofFile: source)
                let memoryBefore = s3PeakResidentMiB()

                let clock = ContinuousClock()
                let up = try await clock.measure { try await storage.upload(from: source, to: "proj/artifacts/k/weights.bin") }
                let memoryAfterUpload = s3PeakResidentMiB()
                let target = directory.appendingPathComponent("back/weights.bin")
                let down = try await clock.measure { try await storage.download("proj/artifacts/k/weights.bin", to: target) }

                #expect(try s3SHA256(ofFile: target) == expected)
                #expect(try await storage.list(prefix: "proj/artifacts/k/") == [
                    StorageObject(key: "proj/artifacts/k/weights.bin", size: Int64(size))
                ])
                #expect(try await storage.multipartUploads(underFullPrefix: "").isEmpty)
                let mib = Double(size) / 1_048_576
                print(
                    "S3 100 MiB against moto: upload \(up) (\(Int(mib / s3Seconds(up))) MiB/s), download \(down) "
                        + "(\(Int(mib / s3Seconds(down))) MiB/s); peak RSS \(memoryBefore) MiB before, \(memoryAfterUpload) MiB after "
                        + "the upload, \(s3PeakResidentMiB()) MiB after the download")
            }
        }

        @Test("2,500 objects: list and listChildren follow continuation tokens; deleteAll batches by 1,000")
        func manyObjects() async throws {
            let server = try await motoServers.server()
            let capture = S3LogCapture()
            let storage = try server.storage(bucket: try await server.makeBucket(), prefix: "p", logger: capture.logger)
            let names = (0..<2_500).map { String(format: "run-%04d", $0) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, name) in names.enumerated() {
                    if index >= 16 { try await group.next() }
                    group.addTask { try await storage.write("many/\(name)/run.json", data: Data(name.utf8)) }
                }
                try await group.waitForAll()
            }

            let listed = try await storage.list(prefix: "many/")
            #expect(listed.count == 2_500)
            #expect(listed.map(\.key) == names.map { "many/\($0)/run.json" })
            #expect(try await storage.listChildren(prefix: "many/") == names)
            let listings = capture.all.filter { $0.contains("GET bucket '") }
            #expect(listings.count == 6, "3 pages for list, 3 for listChildren")

            try await storage.deleteAll(prefix: "many/")
            #expect(try await storage.list(prefix: "").isEmpty)
            #expect(capture.all.filter { $0.contains("POST bucket '") }.count == 3)
        }

        @Test("concurrent create of one key: exactly one caller wins, and its bytes are stored")
        func concurrentCreate() async throws {
            let server = try await motoServers.server()
            let storage = try server.storage(bucket: try await server.makeBucket())
            for round in 0..<5 {
                let key = "proj/runs/race-\(round)/run.json"
                let winners = try await withThrowingTaskGroup(of: Int?.self) { group in
                    for contender in 0..<10 {
                        group.addTask {
                            try await storage.create(key, data: Data("contender \(contender)".utf8)) ? contender : nil
                        }
                    }
                    return try await group.reduce(into: [Int]()) { if let winner = $1 { $0.append(winner) } }
                }
                #expect(winners.count == 1, "round \(round): winners \(winners)")
                if let winner = winners.first {
                    #expect(try await storage.read(key) == Data("contender \(winner)".utf8))
                }
            }
        }

        @Test("a failed part aborts the multipart upload: no object, no upload left behind")
        func failedPartAborts() async throws {
            let server = try await motoServers.server()
            let bucket = try await server.makeBucket()
            let probe = try server.storage(bucket: bucket)
            var tuning = S3Tuning.fastTests
            tuning.partsInFlight = 1
            tuning.beforePart = { part in
                if part == 2 {
                    // Part 1 is stored by now: the upload really exists and must be cleaned up.
                    #expect(try await probe.multipartUploads(underFullPrefix: "").count == 1)
                    throw S3TestFailure("injected failure before part 2")
                }
            }
            let storage = try server.storage(bucket: bucket, tuning: tuning)
            try await withS3TemporaryDirectory { directory in
                let source = directory.appendingPathComponent("data.bin")
                try writeS3RandomFile(source, size: 20 * 1024 * 1024)
                await #expect(throws: S3TestFailure.self) {
                    try await storage.upload(from: source, to: "proj/artifacts/k/data.bin")
                }
            }
            #expect(try await probe.multipartUploads(underFullPrefix: "").isEmpty)
            #expect(try await probe.read("proj/artifacts/k/data.bin") == nil)
        }

        @Test("cancelling an upload aborts it too")
        func cancelledUploadAborts() async throws {
            let server = try await motoServers.server()
            let bucket = try await server.makeBucket()
            let probe = try server.storage(bucket: bucket)
            let (started, startedContinuation) = AsyncStream<Void>.makeStream()
            var tuning = S3Tuning.fastTests
            tuning.partsInFlight = 1
            tuning.beforePart = { part in
                if part == 2 {
                    startedContinuation.yield()
                    try await Task.sleep(for: .seconds(60))
                }
            }
            let storage = try server.storage(bucket: bucket, tuning: tuning)
            try await withS3TemporaryDirectory { directory in
                let source = directory.appendingPathComponent("data.bin")
                try writeS3RandomFile(source, size: 20 * 1024 * 1024)
                let upload = Task { try await storage.upload(from: source, to: "k/data.bin") }
                for await _ in started { break }
                upload.cancel()
                await #expect(throws: CancellationError.self) { try await upload.value }
            }
            #expect(try await probe.multipartUploads(underFullPrefix: "").isEmpty)
            #expect(try await probe.read("k/data.bin") == nil)
        }

        static let partSizeCases: [(fileMiB: Int64, partMiB: Int)] = [
            (0, 8), (100, 8), (80_000, 8), (200_000, 20), (640_000, 64),
        ]

        @Test("part sizes: 8 MiB up to 80,000 MiB, then grown so that 10,000 parts suffice", arguments: partSizeCases)
        func partSizes(_ sizes: (fileMiB: Int64, partMiB: Int)) {
            let size = max(1, sizes.fileMiB * 1_048_576)
            let part = S3Storage.partSize(forFileSize: size, tuning: S3Tuning())
            #expect(part == sizes.partMiB * 1_048_576)
            #expect((size + Int64(part) - 1) / Int64(part) <= 10_000)
        }
    }
}

/// Writes `size` random bytes to `url`, 1 MiB at a time.
func writeS3RandomFile(_ url: URL, size: Int) throws {
    guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
        throw S3TestFailure("cannot create \(url.path)")
    }
    let output = try FileHandle(forWritingTo: url)
    defer { try? output.close() }
    let random = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/dev/urandom"))
    defer { try? random.close() }
    var left = size
    while left > 0 {
        let chunk = try random.read(upToCount: min(left, 1 << 20)) ?? Data()
        try output.write(contentsOf: chunk)
        left -= chunk.count
    }
}

/// The process's peak resident memory so far, in MiB (Linux; 0 elsewhere).
func s3PeakResidentMiB() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
        let kib = Int(line.split(separator: " ").dropFirst().first ?? "")
    else { return 0 }
    return kib / 1024
}

func s3Seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}
