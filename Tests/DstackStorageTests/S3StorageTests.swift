import Foundation
import Testing

@testable import DstackStorage

/// `S3Storage` against a real moto server that this suite starts and stops (see `MotoServer`).
@Suite("S3Storage against moto", MotoServerTrait())
struct S3StorageTests {}

extension S3StorageTests {
    @Suite("every Storage method round-trips")
    struct RoundTrip {
        @Test("write, read, overwrite; reading a missing key gives nil")
        func writeRead() async throws {
            let server = try await motoServers.server()
            let storage = try server.storage(bucket: try await server.makeBucket(), prefix: "team/store")
            #expect(try await storage.read("proj/runs/r1/run.json") == nil)
            try await storage.write("proj/runs/r1/run.json", data: Data("{\"state\":\"running\"}".utf8))
            #expect(try await storage.read("proj/runs/r1/run.json") == Data("{\"state\":\"running\"}".utf8))
            try await storage.write("proj/runs/r1/run.json", data: Data("{\"state\":\"done\"}".utf8))
            #expect(try await storage.read("proj/runs/r1/run.json") == Data("{\"state\":\"done\"}".utf8))
            try await storage.write("proj/empty", data: Data())
            #expect(try await storage.read("proj/empty") == Data())
            #expect(storage.location == "s3://\(storage.client.configuration.bucket)/team/store")
        }

        @Test("keys with spaces, '+', '%', '=' and non-ASCII letters survive signing and listing")
        func oddKeys() async throws {
            let server = try await motoServers.server()
            let storage = try server.storage(bucket: try await server.makeBucket())
            let keys = ["p/a b.txt", "p/a+b=c&d", "p/100%", "p/ünï-ሴ", "p/tilde~(1)"]
            for (index, key) in keys.enumerated() {
                try await storage.write(key, data: Data("\(index)".utf8))
            }
            for (index, key) in keys.enumerated() {
                #expect(try await storage.read(key) == Data("\(index)".utf8), "key \(key)")
            }
            #expect(Set(try await storage.list(prefix: "p/").map(\.key)) == Set(keys))
        }

        @Test("create writes only when absent")
        func create() async throws {
            let server = try await motoServers.server()
            let storage = try server.storage(bucket: try await server.makeBucket())
            #expect(try await storage.create("proj/tags/best.json", data: Data("first".utf8)))
            #expect(try await storage.create("proj/tags/best.json", data: Data("second".utf8)) == false)
            #expect(try await storage.read("proj/tags/best.json") == Data("first".utf8))
            try await storage.write("proj/empty", data: Data())
            #expect(try await storage.create("proj/empty", data: Data("x".utf8)) == false)
        }

        @Test("the server honours conditional PUTs: If-None-Match: * and a stale If-Match answer 412")
        func conditionalWrites() async throws {
            let server = try await motoServers.server()
            let storage = try server.storage(bucket: try await server.makeBucket())
            let client = storage.client
            let first = try await client.send(
                S3Request(method: "PUT", key: "k", headers: [("If-None-Match", "*")], body: .data(Data("1".utf8))))
            let etag = try #require(first.headers["etag"])
            let again = try await client.send(
                S3Request(method: "PUT", key: "k", headers: [("If-None-Match", "*")], body: .data(Data("2".utf8))),
                accepting: ["PreconditionFailed"])
            #expect(again.status == 412)
            _ = try await client.send(S3Request(method: "PUT", key: "k", headers: [("If-Match", etag)], body: .data(Data("3".utf8))))
            let stale = try await client.send(
                S3Request(method: "PUT", key: "k", headers: [("If-Match", etag)], body: .data(Data("4".utf8))),
                accepting: ["PreconditionFailed"])
            #expect(stale.status == 412)
            #expect(try await storage.read("k") == Data("3".utf8))
        }

        @Test("append creates the object, then adds to its end")
        func append() async throws {
            let server = try await motoServers.server()
            let storage = try server.storage(bucket: try await server.makeBucket())
            try await storage.append("proj/runs/r/jobs/j/log", data: Data("line 1\n".utf8))
            try await storage.append("proj/runs/r/jobs/j/log", data: Data("line 2\n".utf8))
            #expect(try await storage.read("proj/runs/r/jobs/j/log") == Data("line 1\nline 2\n".utf8))
        }

        @Test("concurrent appends lose nothing (If-Match makes the losers retry)")
        func concurrentAppends() async throws {
            let server = try await motoServers.server()
            let storage = try server.storage(bucket: try await server.makeBucket())
            try await withThrowingTaskGroup(of: Void.self) { group in
                for writer in 0..<6 {
                    group.addTask { try await storage.append("log", data: Data("writer \(writer)\n".utf8)) }
                }
                try await group.waitForAll()
            }
            let lines = String(decoding: try await storage.read("log") ?? Data(), as: UTF8.self)
                .split(separator: "\n").map(String.init)
            #expect(lines.sorted() == (0..<6).map { "writer \($0)" })
        }

        @Test("upload and download a small file; download replaces the file; a missing key is notFound")
        func smallFile() async throws {
            let server = try await motoServers.server()
            let storage = try server.storage(bucket: try await server.makeBucket(), prefix: "p")
            try await withS3TemporaryDirectory { directory in
                let source = directory.appendingPathComponent("model.bin")
                let bytes = Data((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
                try bytes.write(to: source)
                try await storage.upload(from: source, to: "proj/artifacts/k/model.bin")

                let target = directory.appendingPathComponent("out/nested/model.bin")
                try await storage.download("proj/artifacts/k/model.bin", to: target)
                #expect(try Data(contentsOf: target) == bytes)

                try Data("old".utf8).write(to: target)
                try await storage.download("proj/artifacts/k/model.bin", to: target)
                #expect(try Data(contentsOf: target) == bytes)
                let leftovers = try FileManager.default.contentsOfDirectory(atPath: target.deletingLastPathComponent().path)
                #expect(leftovers == ["model.bin"])

                await #expect {
                    try await storage.download("proj/artifacts/k/missing", to: target)
                } throws: { error in
                    guard case StorageError.notFound(let key) = error else { return false }
                    return key == "proj/artifacts/k/missing"
                }
                #expect(try Data(contentsOf: target) == bytes)
            }
        }

        @Test("list: everything under a prefix, sorted, with sizes, relative to the storage prefix")
        func list() async throws {
            let server = try await motoServers.server()
            let bucket = try await server.makeBucket()
            let outside = try server.storage(bucket: bucket)
            try await outside.write("elsewhere/x", data: Data("not ours".utf8))
            let storage = try server.storage(bucket: bucket, prefix: "teams/ml")
            for key in ["proj/runs/b/run.json", "proj/runs/a/run.json", "proj/runs/a/jobs/j/log", "proj/cache/k.json"] {
                try await storage.write(key, data: Data(key.utf8))
            }
            let runs = try await storage.list(prefix: "proj/runs/")
            #expect(runs.map(\.key) == ["proj/runs/a/jobs/j/log", "proj/runs/a/run.json", "proj/runs/b/run.json"])
            #expect(runs.map(\.size) == runs.map { Int64($0.key.utf8.count) })
            #expect(try await storage.list(prefix: "").count == 4)
            #expect(try await storage.list(prefix: "proj/runs/a/r").map(\.key) == ["proj/runs/a/run.json"])
            #expect(try await storage.list(prefix: "nothing/").isEmpty)
            #expect(try await outside.list(prefix: "").count == 5)
        }

        @Test("listChildren: the folder names right under a prefix, sorted")
        func listChildren() async throws {
            let server = try await motoServers.server()
            let storage = try server.storage(bucket: try await server.makeBucket(), prefix: "root")
            for key in ["proj/runs/b-2/run.json", "proj/runs/a-1/run.json", "proj/runs/a-1/jobs/j/log", "proj/runs/file"] {
                try await storage.write(key, data: Data())
            }
            #expect(try await storage.listChildren(prefix: "proj/runs/") == ["a-1", "b-2"])
            #expect(try await storage.listChildren(prefix: "proj/runs") == ["a-1", "b-2"])
            #expect(try await storage.listChildren(prefix: "") == ["proj"])
            #expect(try await storage.listChildren(prefix: "proj/runs/a-1/jobs/") == ["j"])
            #expect(try await storage.listChildren(prefix: "nothing/").isEmpty)
        }

        @Test("delete removes one object and ignores absent ones; deleteAll removes a prefix only")
        func delete() async throws {
            let server = try await motoServers.server()
            let storage = try server.storage(bucket: try await server.makeBucket())
            for key in ["proj/runs/a/run.json", "proj/runs/a/log", "proj/runs/ab/run.json", "proj/tags/t.json"] {
                try await storage.write(key, data: Data("x".utf8))
            }
            try await storage.delete("proj/tags/t.json")
            try await storage.delete("proj/tags/t.json")
            #expect(try await storage.read("proj/tags/t.json") == nil)
            try await storage.deleteAll(prefix: "proj/runs/a/")
            #expect(try await storage.list(prefix: "").map(\.key) == ["proj/runs/ab/run.json"])
            try await storage.deleteAll(prefix: "nothing/")
        }

        @Test("keys that leave the storage root or are malformed are refused", arguments: [
            "", "/abs", "a/../b", "..", "a/./b", "a//b", "trailing/",
        ])
        func invalidKeys(_ key: String) async throws {
            let server = try await motoServers.server()
            let storage = try server.storage(bucket: "never-contacted")
            await #expect {
                try await storage.write(key, data: Data())
            } throws: { error in
                guard case StorageError.invalidKey = error else { return false }
                return true
            }
        }
    }
}
