import DstackModel
import DstackStorage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: Helpers (private: this module also holds the S3 suites)

/// A directory storage in a fresh temporary directory.
private struct StorageBox {
    let url: URL
    let storage: DirectoryStorage

    init(_ name: String = #function) throws {
        let safe = name.filter { $0.isLetter || $0.isNumber }.prefix(40)
        url = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-dirstorage-\(safe)-\(UUID().uuidString.prefix(8))")
        storage = try DirectoryStorage(root: url.appendingPathComponent("storage"))
    }

    var root: URL { url.appendingPathComponent("storage") }

    /// Every path under the storage root (files and folders), relative, as the file system has it.
    func allPaths() -> [String] {
        guard let walker = FileManager.default.enumerator(atPath: root.path) else { return [] }
        return walker.compactMap { $0 as? String }.sorted()
    }

    /// Paths of temporary files or moved-aside trees left behind.
    func leftovers() -> [String] { allPaths().filter { $0.split(separator: "/").contains { $0.hasPrefix(".tmp-") } } }

    func remove() { try? FileManager.default.removeItem(at: url) }
}

/// Deterministic pseudo-random bytes.
private func noise(_ count: Int, seed: UInt64) -> Data {
    var state = seed | 1
    var bytes = [UInt8](repeating: 0, count: count)
    for i in 0..<count {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        bytes[i] = UInt8(truncatingIfNeeded: state)
    }
    return Data(bytes)
}

/// Expects `body` to throw `StorageError.invalidKey`.
private func expectInvalidKey(_ what: String, sourceLocation: SourceLocation = #_sourceLocation,
                              _ body: () async throws -> Void) async {
    do {
        try await body()
        Issue.record("\(what): expected StorageError.invalidKey, it succeeded", sourceLocation: sourceLocation)
    } catch StorageError.invalidKey {
    } catch {
        Issue.record("\(what): expected StorageError.invalidKey, got \(error)", sourceLocation: sourceLocation)
    }
}

/// Expects `body` to throw `StorageError.refused`; returns its message.
@discardableResult
private func expectRefused(sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void) async -> String {
    do {
        try await body()
        Issue.record("expected StorageError.refused, it succeeded", sourceLocation: sourceLocation)
    } catch StorageError.refused(let why) {
        return why
    } catch {
        Issue.record("expected StorageError.refused, got \(error)", sourceLocation: sourceLocation)
    }
    return ""
}

/// Makes `directory` unwritable even for root (mode 555, plus the immutable attribute as root); returns the undo,
/// or nil when this machine cannot make it so.
private func makeReadOnly(_ directory: URL) -> (() -> Void)? {
    chmod(directory.path, 0o555)
    if getuid() == 0 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["chattr", "+i", directory.path]
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return nil }
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { return nil }
    }
    guard access(directory.path, W_OK) != 0 else { return nil }
    return {
        if getuid() == 0 {
            let undo = Process()
            undo.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            undo.arguments = ["chattr", "-i", directory.path]
            try? undo.run()
            undo.waitUntilExit()
        }
        chmod(directory.path, 0o755)
    }
}

/// Expects `body` to throw `StorageError.unusable`.
private func expectUnusable(_ what: String, sourceLocation: SourceLocation = #_sourceLocation,
                            _ body: () async throws -> Void) async {
    do {
        try await body()
        Issue.record("\(what): expected StorageError.unusable, it succeeded", sourceLocation: sourceLocation)
    } catch StorageError.unusable {
    } catch {
        Issue.record("\(what): expected StorageError.unusable, got \(error)", sourceLocation: sourceLocation)
    }
}

/// DirectoryStorage and the RunStore layout on it (nested, so `--filter DirectoryStorage` runs all of it).
@Suite struct DirectoryStorageTests {}

// MARK: DirectoryStorage

extension DirectoryStorageTests {
    @Suite("DirectoryStorage objects") struct Objects {
        @Test func writeReadAndReplaceLeaveNoTemporaryFiles() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let s = box.storage
            #expect(try await s.read("p/runs/r/run.json") == nil)
            try await s.write("p/runs/r/run.json", data: Data("one".utf8))
            #expect(try await s.read("p/runs/r/run.json") == Data("one".utf8))
            try await s.write("p/runs/r/run.json", data: Data("two, longer".utf8))
            #expect(try await s.read("p/runs/r/run.json") == Data("two, longer".utf8))
            try await s.write("p/empty", data: Data())
            #expect(try await s.read("p/empty") == Data())
            #expect(box.leftovers() == [])
            #expect(s.location == box.root.path)
        }

        @Test func readersSeeTheOldOrTheWholeNewObjectNeverAPart() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let s = box.storage
            let a = Data(repeating: UInt8(ascii: "A"), count: 1 << 20)
            let b = Data(repeating: UInt8(ascii: "B"), count: 1 << 20)
            try await s.write("k", data: a)
            let torn = try await withThrowingTaskGroup(of: Int.self) { group in
                group.addTask {
                    for i in 0..<40 { try await s.write("k", data: i.isMultiple(of: 2) ? b : a) }
                    return 0
                }
                for _ in 0..<2 {
                    group.addTask {
                        var bad = 0
                        for _ in 0..<60 {
                            let data = try await s.read("k") ?? Data()
                            if !(data == a || data == b) { bad += 1 }
                        }
                        return bad
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(torn == 0, "\(torn) reads saw a partial object")
            #expect(box.leftovers() == [])
        }

        @Test func createIsExclusiveUnderConcurrency() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let s = box.storage
            let winners = try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
                for i in 0..<20 {
                    group.addTask { (i, try await s.create("p/runs/busy-bee-1/claim", data: Data("owner \(i)".utf8))) }
                }
                var out: [Int] = []
                for try await (i, won) in group where won { out.append(i) }
                return out
            }
            #expect(winners.count == 1, "winners: \(winners)")
            let winner = try #require(winners.first)
            #expect(try await s.read("p/runs/busy-bee-1/claim") == Data("owner \(winner)".utf8))
            #expect(box.leftovers() == [])
        }

        @Test func createNeverReplacesAnExistingObject() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let s = box.storage
            try await s.write("p/tags/best.json", data: Data("written".utf8))
            #expect(try await s.create("p/tags/best.json", data: Data("created".utf8)) == false)
            #expect(try await s.read("p/tags/best.json") == Data("written".utf8))
            #expect(try await s.create("p/tags/new.json", data: Data("created".utf8)))
            #expect(try await s.read("p/tags/new.json") == Data("created".utf8))
        }

        @Test func appendCreatesThenAddsAtTheEnd() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let s = box.storage
            try await s.append("p/runs/r/jobs/j/log", data: Data("line 1\n".utf8))
            try await s.append("p/runs/r/jobs/j/log", data: Data("line 2\n".utf8))
            try await s.append("p/runs/r/jobs/j/log", data: Data())
            #expect(try await s.read("p/runs/r/jobs/j/log") == Data("line 1\nline 2\n".utf8))
        }

        @Test func uploadAndDownloadAMultiMegabyteFileByteForByte() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let s = box.storage
            let bytes = noise(5 << 20 + 123, seed: 42)
            let source = box.url.appendingPathComponent("source.bin")
            try bytes.write(to: source)
            try await s.upload(from: source, to: "p/artifacts/k/files/model.bin")
            #expect(try await s.list(prefix: "p/artifacts/k/") == [StorageObject(key: "p/artifacts/k/files/model.bin", size: Int64(bytes.count))])

            let target = box.url.appendingPathComponent("out/deeper/model.bin")
            try await s.download("p/artifacts/k/files/model.bin", to: target)
            #expect(try Data(contentsOf: target) == bytes)
            // Downloading again replaces the file.
            try Data("stale".utf8).write(to: target)
            try await s.download("p/artifacts/k/files/model.bin", to: target)
            #expect(try Data(contentsOf: target) == bytes)
            #expect(try FileManager.default.contentsOfDirectory(atPath: target.deletingLastPathComponent().path) == ["model.bin"])
            #expect(box.leftovers() == [])

            do {
                try await s.download("p/artifacts/k/files/absent.bin", to: target)
                Issue.record("downloading an absent object succeeded")
            } catch StorageError.notFound(let key) {
                #expect(key == "p/artifacts/k/files/absent.bin")
            }
            #expect(try Data(contentsOf: target) == bytes, "a failed download leaves the file alone")
        }

        @Test func adoptMovesALoneFileIntoPlaceAndCopiesOneWithAnotherName() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let s = box.storage
            let fm = FileManager.default
            func mode(_ key: String) throws -> Int? {
                try fm.attributesOfItem(atPath: box.root.appendingPathComponent(key).path)[.posixPermissions] as? Int
            }
            let bytes = noise(3 << 20 + 5, seed: 9)
            let copied = box.url.appendingPathComponent("copied.bin")
            try bytes.write(to: copied)
            try await s.upload(from: copied, to: "p/x/copied.bin")

            let lone = box.url.appendingPathComponent("lone.bin")
            try bytes.write(to: lone)
            chmod(lone.path, 0o700)
            try await s.adopt(lone, as: "p/x/lone.bin")
            #expect(!fm.fileExists(atPath: lone.path), "moved, not copied")
            #expect(try await s.read("p/x/lone.bin") == bytes)
            #expect(try mode("p/x/lone.bin") == mode("p/x/copied.bin"), "the mode of any object, not the file's own")

            let named = box.url.appendingPathComponent("named.bin")
            try Data("other bytes".utf8).write(to: named)
            #expect(link(named.path, box.url.appendingPathComponent("second-name.bin").path) == 0)
            try await s.adopt(named, as: "p/x/lone.bin")  // replaces the object
            #expect(fm.fileExists(atPath: named.path), "a file with a second name is copied")
            #expect(try await s.read("p/x/lone.bin") == Data("other bytes".utf8))
            #expect(box.leftovers() == [])
        }

        @Test func listIsByKeyPrefixSortedWithSizes() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let s = box.storage
            for (key, size) in [("p/b/4", 4), ("p/a/2", 2), ("p/ab/3", 3), ("p/a/1", 1), ("q/5", 5), ("p/a/deep/er/6", 6)] {
                try await s.write(key, data: Data(count: size))
            }
            #expect(try await s.list(prefix: "p/a/").map(\.key) == ["p/a/1", "p/a/2", "p/a/deep/er/6"])
            #expect(try await s.list(prefix: "p/a").map(\.key) == ["p/a/1", "p/a/2", "p/a/deep/er/6", "p/ab/3"])
            #expect(try await s.list(prefix: "").map(\.key) == ["p/a/1", "p/a/2", "p/a/deep/er/6", "p/ab/3", "p/b/4", "q/5"])
            #expect(try await s.list(prefix: "p/").map(\.size) == [1, 2, 6, 3, 4])
            #expect(try await s.list(prefix: "nothing/here/") == [])
            #expect(try await s.list(prefix: "p/a/1") == [StorageObject(key: "p/a/1", size: 1)])
        }

        @Test func listChildrenNamesTheFoldersOneLevelDown() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let s = box.storage
            for key in ["p/runs/b-b-2/run.json", "p/runs/a-a-1/run.json", "p/runs/a-a-1/jobs/x/log", "q/x"] {
                try await s.write(key, data: Data("x".utf8))
            }
            #expect(try await s.listChildren(prefix: "p/runs/") == ["a-a-1", "b-b-2"])
            #expect(try await s.listChildren(prefix: "p/runs") == ["a-a-1", "b-b-2"])
            #expect(try await s.listChildren(prefix: "") == ["p", "q"])
            #expect(try await s.listChildren(prefix: "p/none/") == [])
        }

        @Test func listChildrenListsFoldersOnlyAsS3Does() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let s = box.storage
            try await s.write("p/runs/a-a-1/run.json", data: Data())
            try await s.write("p/runs/notes.txt", data: Data())
            let children = try await s.listChildren(prefix: "p/runs/")
            #expect(children == ["a-a-1"])
        }

        @Test func deleteAndDeleteAll() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let s = box.storage
            for key in ["p/a/1", "p/a/sub/2", "p/ab/3", "p/b"] { try await s.write(key, data: Data("x".utf8)) }
            try await s.delete("p/b")
            try await s.delete("p/b")  // absent: not an error
            try await s.delete("p/never/was")
            #expect(try await s.read("p/b") == nil)
            try await s.deleteAll(prefix: "p/a/")
            #expect(try await s.list(prefix: "").map(\.key) == ["p/ab/3"], "only the folder named, not its prefix siblings")
            try await s.deleteAll(prefix: "p/a/")  // absent: not an error
            try await s.deleteAll(prefix: "p/nothing/")
            #expect(box.leftovers() == [])
        }

        @Test(arguments: ["../escape", "p/../../escape", "/etc/passwd", "", "p/./x", "..", "p/.."])
        func keysThatLeaveTheRootOrAreMalformedAreRefused(_ key: String) async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let s = box.storage
            let file = box.url.appendingPathComponent("f")
            try Data("x".utf8).write(to: file)
            await expectInvalidKey("read") { _ = try await s.read(key) }
            await expectInvalidKey("write") { try await s.write(key, data: Data("x".utf8)) }
            await expectInvalidKey("create") { _ = try await s.create(key, data: Data("x".utf8)) }
            await expectInvalidKey("append") { try await s.append(key, data: Data("x".utf8)) }
            await expectInvalidKey("upload") { try await s.upload(from: file, to: key) }
            await expectInvalidKey("download") { try await s.download(key, to: file) }
            await expectInvalidKey("delete") { try await s.delete(key) }
            if !key.isEmpty {
                await expectInvalidKey("deleteAll") { try await s.deleteAll(prefix: key + "/") }
            }
            #expect(!FileManager.default.fileExists(atPath: box.url.appendingPathComponent("escape").path))
            #expect(!FileManager.default.fileExists(atPath: box.url.deletingLastPathComponent().appendingPathComponent("escape").path))
        }

        @Test(arguments: ["../", "/etc/", "p/../../"])
        func listingOutsideTheRootIsRefused(_ prefix: String) async throws {
            let box = try StorageBox()
            defer { box.remove() }
            await expectInvalidKey("list") { _ = try await box.storage.list(prefix: prefix) }
            await expectInvalidKey("listChildren") { _ = try await box.storage.listChildren(prefix: prefix) }
        }

        @Test func aReadOnlyDirectoryIsUnusable() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let readOnly = box.url.appendingPathComponent("ro")
            try FileManager.default.createDirectory(at: readOnly, withIntermediateDirectories: true)
            guard let undo = makeReadOnly(readOnly) else {
                Issue.record("cannot make a directory read-only on this machine")
                return
            }
            defer { undo() }
            await expectUnusable("open") { _ = try DirectoryStorage(root: readOnly) }
            await expectUnusable("open below") { _ = try DirectoryStorage(root: readOnly.appendingPathComponent("below")) }
        }

        @Test func aDirectoryThatBecomesReadOnlyFailsWritesAsUnusable() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            try await box.storage.write("p/x", data: Data("x".utf8))
            guard let undo = makeReadOnly(box.root.appendingPathComponent("p")) else {
                Issue.record("cannot make a directory read-only on this machine")
                return
            }
            defer { undo() }
            let s = box.storage
            await expectUnusable("write") { try await s.write("p/y", data: Data()) }
            await expectUnusable("replace") { try await s.write("p/x", data: Data("replaced".utf8)) }
            await expectUnusable("create") { _ = try await s.create("p/z", data: Data()) }
            await expectUnusable("append") { try await s.append("p/log", data: Data()) }
            await expectUnusable("delete") { try await s.delete("p/x") }
            #expect(try await s.read("p/x") == Data("x".utf8))
        }

        @Test func aPathUnderAFileIsUnusable() throws {
            let box = try StorageBox()
            defer { box.remove() }
            let blocker = box.url.appendingPathComponent("blocker")
            try Data("a file".utf8).write(to: blocker)
            do {
                _ = try DirectoryStorage(root: blocker.appendingPathComponent("storage"))
                Issue.record("opened storage below a regular file")
            } catch StorageError.unusable(let location, let reason) {
                #expect(location == blocker.appendingPathComponent("storage").path)
                #expect(!reason.isEmpty)
            }
        }
}

}

// MARK: RunStore on a directory

extension DirectoryStorageTests {
    @Suite("RunStore records on a directory") struct RunStoreRecords {
        static let t0 = Date(timeIntervalSince1970: 1_780_000_000)

        func run(_ name: String, at offset: TimeInterval = 0, status: RunState = .done) -> RunRecord {
            var job = JobRecord(id: "\(name)-train", workflow: "train", cacheKey: "key-\(name)", dependsOn: ["\(name)-prep"],
                                artifacts: ["model"])
            job.status = .done
            job.exitCode = 0
            job.startedAt = Self.t0.addingTimeInterval(offset + 1)
            job.finishedAt = Self.t0.addingTimeInterval(offset + 2)
            var attempt = Attempt(runner: "local", startedAt: Self.t0.addingTimeInterval(offset + 1))
            attempt.exitCode = 0
            job.attempts = [attempt]
            var record = RunRecord(name: name, project: "proj", workflow: "train", overrides: ["epochs": "3"],
                                   snapshotId: "snap", submittedAt: Self.t0.addingTimeInterval(offset), jobs: [job])
            record.status = status
            return record
        }

        @Test func claimRunNameIsExclusive() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let store = RunStore(storage: box.storage, project: "proj")
            let won = try await withThrowingTaskGroup(of: Bool.self) { group in
                for i in 0..<20 { group.addTask { try await store.claimRunName("grumpy-zebra-1", by: "host:\(i)") } }
                return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            #expect(won == 1)
            #expect(try await store.claimRunName("grumpy-zebra-1", by: "late") == false)
            #expect(try await store.claimRunName("grumpy-zebra-2", by: "late"))
            #expect(try await store.runNames().sorted() == ["grumpy-zebra-1", "grumpy-zebra-2"])
        }

        @Test func runsAndJobsRoundTrip() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let store = RunStore(storage: box.storage, project: "proj")
            let record = run("calm-otter-1")
            try await store.saveRun(record)
            #expect(try await store.loadRun("calm-otter-1") == record)
            #expect(try await store.loadRun("absent-run-1") == nil)
            try await store.saveJob(record.jobs[0], run: record.name)
            let data = try #require(try await box.storage.read("proj/runs/calm-otter-1/jobs/train/job.json"))
            #expect(try RecordCoding.decoder().decode(JobRecord.self, from: data) == record.jobs[0])
            #expect(String(decoding: data, as: UTF8.self).contains("\"exit_code\""), "records use snake_case keys")

            try await store.saveRunInputs("calm-otter-1", plan: Data("plan".utf8), snapshot: Data("snap".utf8))
            let inputs = try #require(try await store.loadRunInputs("calm-otter-1"))
            #expect(inputs.plan == Data("plan".utf8) && inputs.snapshot == Data("snap".utf8))
            #expect(try await store.loadRunInputs("absent-run-1") == nil)

            #expect(try await store.stopRequested("calm-otter-1") == nil)
            try await store.requestStop("calm-otter-1")
            #expect(try await store.stopRequested("calm-otter-1") == true)

            try await store.appendLog(run: "calm-otter-1", workflow: "train", Data("a\n".utf8))
            try await store.appendLog(run: "calm-otter-1", workflow: "train", Data("b\n".utf8))
            #expect(try await store.readLog(run: "calm-otter-1", workflow: "train") == Data("a\nb\n".utf8))
            #expect(try await store.readLog(run: "calm-otter-1", workflow: "other") == Data())
            #expect(store.logKey(run: "calm-otter-1", workflow: "train") == "proj/runs/calm-otter-1/jobs/train/log")
        }

        @Test func loadRunsIsNewestFirstAndSkipsWhatItCannotRead() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let store = RunStore(storage: box.storage, project: "proj")
            // More runs than reads in flight (16), submitted in a scrambled order.
            let offsets = (0..<40).map { ($0 * 17) % 40 }
            for (i, offset) in offsets.enumerated() {
                try await store.saveRun(run("run-\(i)-\(i)", at: TimeInterval(offset) * 60))
            }
            // Two runs submitted in the same millisecond are ordered by name, newest-looking first.
            try await store.saveRun(run("tie-a-1", at: 100 * 60))
            try await store.saveRun(run("tie-b-1", at: 100 * 60))
            try await box.storage.write("proj/runs/broken-run-1/run.json", data: Data("{not json".utf8))
            #expect(try await store.claimRunName("claimed-only-1", by: "x"))

            let runs = try await store.loadRuns()
            #expect(runs.count == 42)
            #expect(runs.prefix(2).map(\.name) == ["tie-b-1", "tie-a-1"])
            let dates = runs.map(\.submittedAt)
            #expect(dates == dates.sorted(by: >))
            #expect(!runs.contains { $0.name == "broken-run-1" || $0.name == "claimed-only-1" })

            do {
                _ = try await store.loadRun("broken-run-1")
                Issue.record("an unreadable run record loaded")
            } catch StorageError.unusable(_, let reason) {
                #expect(reason.contains("run record 'broken-run-1' is unreadable"))
                #expect(reason.contains("dstack delete broken-run-1"))
            }
        }

        @Test func tagsCanBeSavedMovedListedAndDeleted() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let store = RunStore(storage: box.storage, project: "proj")
            try await store.saveTag(TagRecord(tag: "best", run: "a-a-1", createdAt: Self.t0))
            try await store.saveTag(TagRecord(tag: "baseline", run: "b-b-1", createdAt: Self.t0))
            try await store.saveTag(TagRecord(tag: "best", run: "c-c-1", createdAt: Self.t0))
            try await box.storage.write("proj/tags/garbage.json", data: Data("nope".utf8))
            #expect(try await store.tag("best")?.run == "c-c-1")
            #expect(try await store.tag("absent") == nil)
            #expect(try await store.tags().map(\.tag) == ["baseline", "best"])
            try await store.deleteTag("best")
            #expect(try await store.tag("best") == nil)
            try await store.deleteTag("best")
            #expect(try await store.tags().map(\.tag) == ["baseline"])
        }

        @Test func cacheEntriesCanBeRecordedListedAndForgotten() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let store = RunStore(storage: box.storage, project: "proj")
            let entry = CacheEntry(run: "a-a-1", job: "a-a-1-train", finishedAt: Self.t0)
            try await store.recordCache("k1", entry)
            try await store.recordCache("k2", CacheEntry(run: "b-b-1", job: "b-b-1-train", finishedAt: Self.t0))
            #expect(try await store.cacheEntry("k1") == entry)
            #expect(try await store.cacheEntry("k3") == nil)
            #expect(try await store.cachedKeys() == ["k1", "k2"])
            try await store.deleteCacheEntry("k1")
            #expect(try await store.cachedKeys() == ["k2"])
            #expect(try await store.cacheEntry("k1") == nil)
        }

        @Test func deleteRunAndDeleteArtifactsRemoveOnlyWhatTheyName() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let store = RunStore(storage: box.storage, project: "proj")
            for name in ["old-run-1", "kept-run-1"] {
                #expect(try await store.claimRunName(name, by: "x"))
                try await store.saveRun(run(name))
                try await store.appendLog(run: name, workflow: "train", Data("log".utf8))
            }
            let work = box.url.appendingPathComponent("work")
            for key in ["k-old", "k-kept"] {
                try FileManager.default.createDirectory(at: work.appendingPathComponent("model"), withIntermediateDirectories: true)
                try Data(key.utf8).write(to: work.appendingPathComponent("model/w.bin"))
                _ = try await store.storeArtifacts(cacheKey: key, run: "r", job: "j", paths: ["model"], from: work)
            }
            #expect(try await store.artifactKeys() == ["k-kept", "k-old"])

            try await store.deleteRun("old-run-1")
            #expect(try await store.loadRun("old-run-1") == nil)
            #expect(try await store.runNames() == ["kept-run-1"])
            #expect(try await box.storage.list(prefix: "proj/runs/old-run-1/") == [])
            #expect(try await store.loadRun("kept-run-1") != nil)

            try await store.deleteArtifacts("k-old")
            #expect(try await store.manifest("k-old") == nil)
            #expect(try await box.storage.list(prefix: "proj/artifacts/k-old/") == [])
            #expect(try await store.artifactKeys() == ["k-kept"])
            #expect(try await store.manifest("k-kept") != nil)
            #expect(box.leftovers() == [])
        }
}

}

// MARK: Artifacts

extension DirectoryStorageTests {
    @Suite("RunStore artifacts on a directory") struct RunStoreArtifacts {
        /// A job directory with an artifact folder full of the things artifacts hold.
        fileprivate func jobDirectory(_ box: StorageBox) throws -> URL {
            let dir = box.url.appendingPathComponent("job/repo")
            let fm = FileManager.default
            try fm.createDirectory(at: dir.appendingPathComponent("out/sub/deeper"), withIntermediateDirectories: true)
            try fm.createDirectory(at: dir.appendingPathComponent("out/empty"), withIntermediateDirectories: true)
            try Data("#!/bin/sh\necho hi\n".utf8).write(to: dir.appendingPathComponent("out/run.sh"))
            chmod(dir.appendingPathComponent("out/run.sh").path, 0o750)
            try Data("data\n".utf8).write(to: dir.appendingPathComponent("out/sub/file.txt"))
            chmod(dir.appendingPathComponent("out/sub/file.txt").path, 0o640)
            try noise(2 << 20, seed: 7).write(to: dir.appendingPathComponent("out/sub/deeper/big.bin"))
            try fm.createSymbolicLink(atPath: dir.appendingPathComponent("out/link.txt").path, withDestinationPath: "sub/file.txt")
            try fm.createSymbolicLink(atPath: dir.appendingPathComponent("out/sub/up.txt").path, withDestinationPath: "../run.sh")
            try fm.createSymbolicLink(atPath: dir.appendingPathComponent("out/subdir").path, withDestinationPath: "./sub")
            try Data("single\n".utf8).write(to: dir.appendingPathComponent("model.bin"))
            chmod(dir.appendingPathComponent("model.bin").path, 0o600)
            try Data("not an artifact\n".utf8).write(to: dir.appendingPathComponent("other.txt"))
            return dir
        }

        func mode(_ url: URL) throws -> Int {
            try FileManager.default.attributesOfItem(atPath: url.path)[.posixPermissions] as? Int ?? -1
        }

        @Test func storeThenDownloadKeepsContentModesAndInsideLinks() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let store = RunStore(storage: box.storage, project: "proj")
            let job = try jobDirectory(box)
            let manifest = try await store.storeArtifacts(cacheKey: "key1", run: "r-r-1", job: "r-r-1-train",
                                                          paths: ["./out/", "model.bin"], from: job)
            #expect(manifest.paths == ["./out/", "model.bin"])
            #expect(manifest.files.map(\.path) == ["out", "out/empty", "out/link.txt", "out/run.sh", "out/sub/deeper/big.bin",
                                                   "out/sub/file.txt", "out/sub/up.txt", "out/subdir", "model.bin"])
            #expect(manifest.files.first { $0.path == "out/link.txt" }?.link == "sub/file.txt")
            #expect(manifest.files.first { $0.path == "out/sub/deeper/big.bin" }?.size == 2 << 20)
            let reread = try #require(try await store.manifest("key1"))
            #expect(reread.files == manifest.files && reread.paths == manifest.paths && reread.cacheKey == "key1")
            #expect(reread.run == "r-r-1" && reread.job == "r-r-1-train")
            #expect(abs(reread.createdAt.timeIntervalSince(manifest.createdAt)) < 0.01)
            let stored = try await box.storage.list(prefix: "proj/artifacts/key1/").map(\.key)
            #expect(stored.last == "proj/artifacts/key1/manifest.json")
            #expect(!stored.contains { $0.contains("other.txt") || $0.hasSuffix("link.txt") })

            let out = box.url.appendingPathComponent("download")
            try await store.downloadArtifacts(manifest, into: out)
            let fm = FileManager.default
            for path in ["out/run.sh", "out/sub/file.txt", "out/sub/deeper/big.bin", "model.bin"] {
                #expect(fm.contentsEqual(atPath: job.appendingPathComponent(path).path, andPath: out.appendingPathComponent(path).path), "\(path)")
            }
            #expect(try mode(out.appendingPathComponent("out/run.sh")) == 0o750)
            #expect(try mode(out.appendingPathComponent("out/sub/file.txt")) == 0o640)
            #expect(try mode(out.appendingPathComponent("model.bin")) == 0o600)
            #expect(try fm.destinationOfSymbolicLink(atPath: out.appendingPathComponent("out/link.txt").path) == "sub/file.txt")
            #expect(try fm.destinationOfSymbolicLink(atPath: out.appendingPathComponent("out/sub/up.txt").path) == "../run.sh")
            #expect(try fm.destinationOfSymbolicLink(atPath: out.appendingPathComponent("out/subdir").path) == "./sub")
            #expect(try String(contentsOf: out.appendingPathComponent("out/link.txt"), encoding: .utf8) == "data\n")
            var isDirectory: ObjCBool = false
            #expect(fm.fileExists(atPath: out.appendingPathComponent("out/empty").path, isDirectory: &isDirectory) && isDirectory.boolValue)
            #expect(!fm.fileExists(atPath: out.appendingPathComponent("other.txt").path))

            // Placing twice (a retry) works over what is there.
            try await store.downloadArtifacts(manifest, into: out)
            #expect(try fm.destinationOfSymbolicLink(atPath: out.appendingPathComponent("out/link.txt").path) == "sub/file.txt")
        }

        @Test func aRunnersDisposableStagingFolderIsMovedIntoStorageOthersAreCopied() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let store = RunStore(storage: box.storage, project: "proj")
            let fm = FileManager.default
            let job = try jobDirectory(box)
            let big = try Data(contentsOf: job.appendingPathComponent("out/sub/deeper/big.bin"))
            // Another folder is disposable: this one's files stay.
            _ = try await ArtifactStaging.$disposableFolder.withValue(box.url.appendingPathComponent("elsewhere")) {
                try await store.storeArtifacts(cacheKey: "kept", run: "r", job: "j", paths: ["out", "model.bin"], from: job)
            }
            #expect(fm.fileExists(atPath: job.appendingPathComponent("out/sub/deeper/big.bin").path))
            #expect(fm.fileExists(atPath: job.appendingPathComponent("model.bin").path))

            // This one is: its artifact files are moved (a file listed twice, also inside out/, is stored once).
            let manifest = try await ArtifactStaging.$disposableFolder.withValue(job) {
                try await store.storeArtifacts(cacheKey: "moved", run: "r", job: "j",
                                               paths: ["out", "model.bin", "out/sub/deeper/big.bin"], from: job)
            }
            #expect(!fm.fileExists(atPath: job.appendingPathComponent("out/sub/deeper/big.bin").path))
            #expect(!fm.fileExists(atPath: job.appendingPathComponent("model.bin").path))
            #expect(fm.fileExists(atPath: job.appendingPathComponent("other.txt").path), "not an artifact: untouched")
            let out = box.url.appendingPathComponent("download")
            try await store.downloadArtifacts(manifest, into: out)
            #expect(try Data(contentsOf: out.appendingPathComponent("out/sub/deeper/big.bin")) == big)
            #expect(try String(contentsOf: out.appendingPathComponent("model.bin"), encoding: .utf8) == "single\n")
            #expect(try mode(out.appendingPathComponent("out/run.sh")) == 0o750)
            #expect(try mode(out.appendingPathComponent("model.bin")) == 0o600)
            #expect(try fm.destinationOfSymbolicLink(atPath: out.appendingPathComponent("out/link.txt").path) == "sub/file.txt")
            #expect(box.leftovers() == [])
        }

        /// Targets of a link at out/sub/escape; each resolves outside out/.
        @Test(arguments: ["/etc/passwd", "../../other.txt", "./../../model.bin", "deeper/../../../x", "../../../../etc"])
        func aLinkThatEscapesItsArtifactIsRefusedAndNothingIsStored(_ target: String) async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let store = RunStore(storage: box.storage, project: "proj")
            let job = try jobDirectory(box)
            try FileManager.default.createSymbolicLink(atPath: job.appendingPathComponent("out/sub/escape").path,
                                                       withDestinationPath: target)
            let why = await expectRefused {
                _ = try await store.storeArtifacts(cacheKey: "bad", run: "r", job: "j", paths: ["model.bin", "out"], from: job)
            }
            #expect(why.contains("symbolic link 'out/sub/escape' -> '\(target)' that points outside it"), "\(why)")
            #expect(try await store.manifest("bad") == nil)
            #expect(try await box.storage.list(prefix: "proj/artifacts/bad/") == [], "files were stored for a refused artifact")
        }

        @Test func aLinkToAnotherArtifactOfTheSameJobIsRefused() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let store = RunStore(storage: box.storage, project: "proj")
            let job = try jobDirectory(box)
            try FileManager.default.createSymbolicLink(atPath: job.appendingPathComponent("out/model").path,
                                                       withDestinationPath: "../model.bin")
            await expectRefused {
                _ = try await store.storeArtifacts(cacheKey: "bad", run: "r", job: "j", paths: ["out", "model.bin"], from: job)
            }
            #expect(try await box.storage.list(prefix: "proj/artifacts/bad/") == [])
        }

        @Test func aLinkThatEscapesThroughAnotherInsideLinkIsRefused() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let store = RunStore(storage: box.storage, project: "proj")
            let job = try jobDirectory(box)
            // out/self -> "." is inside; out/x -> "self/self/../.." reads as "out" when resolved by text, but the file
            // system resolves each "self" to out/ first, so out/x is the folder above the repository.
            try FileManager.default.createSymbolicLink(atPath: job.appendingPathComponent("out/self").path, withDestinationPath: ".")
            try FileManager.default.createSymbolicLink(atPath: job.appendingPathComponent("out/x").path, withDestinationPath: "self/self/../..")
            func real(_ url: URL) -> String? {
                guard let p = realpath(url.path, nil) else { return nil }
                defer { free(p) }
                return String(cString: p)
            }
            #expect(real(job.appendingPathComponent("out/x")) == real(job.deletingLastPathComponent()),
                    "the file system's view: out/x is the folder above the repository")
            await expectRefused {
                _ = try await store.storeArtifacts(cacheKey: "sneaky", run: "r", job: "j", paths: ["out"], from: job)
            }
        }

        @Test func aMissingArtifactIsRefusedAndNothingIsStored() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let store = RunStore(storage: box.storage, project: "proj")
            let job = try jobDirectory(box)
            let why = await expectRefused {
                _ = try await store.storeArtifacts(cacheKey: "k", run: "r", job: "j", paths: ["out", "checkpoints"], from: job)
            }
            #expect(why.contains("artifact 'checkpoints' was not produced"))
            #expect(try await store.manifest("k") == nil)
            #expect(try await box.storage.list(prefix: "proj/artifacts/k/") == [])
        }

        @Test func aManifestPathThatEscapesIsRefusedOnDownload() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let store = RunStore(storage: box.storage, project: "proj")
            let manifest = ArtifactManifest(cacheKey: "evil", run: "r", job: "j", paths: ["out"],
                                            files: [ArtifactFile(path: "../planted.txt", size: 1, mode: 0o644)], createdAt: Date())
            let into = box.url.appendingPathComponent("download/here")
            await expectRefused { try await store.downloadArtifacts(manifest, into: into) }
            #expect(!FileManager.default.fileExists(atPath: box.url.appendingPathComponent("download/planted.txt").path))
        }

        @Test func aManifestLinkThatEscapesIsRefusedOnDownload() async throws {
            let box = try StorageBox()
            defer { box.remove() }
            let store = RunStore(storage: box.storage, project: "proj")
            let outside = box.url.appendingPathComponent("outside")
            try FileManager.default.createDirectory(at: outside, withIntermediateDirectories: true)
            // A manifest written by hand into a shared storage: a link out of the download directory, then a file
            // "inside" that link.
            let manifest = ArtifactManifest(cacheKey: "evil", run: "r", job: "j", paths: ["out"], files: [
                ArtifactFile(path: "out", size: 0, mode: 0o755, isDirectory: true),
                ArtifactFile(path: "out/x", size: 0, mode: 0o777, link: outside.path),
                ArtifactFile(path: "out/x/planted.txt", size: 7, mode: 0o644),
            ], createdAt: Date())
            try await box.storage.write("proj/artifacts/evil/files/out/x/planted.txt", data: Data("planted".utf8))
            try await box.storage.write("proj/artifacts/evil/manifest.json", data: try RecordCoding.encoder().encode(manifest))
            let stored = try #require(try await store.manifest("evil"))
            let into = box.url.appendingPathComponent("download")
            await expectRefused { try await store.downloadArtifacts(stored, into: into) }
            #expect(!FileManager.default.fileExists(atPath: outside.appendingPathComponent("planted.txt").path))
        }
}
}
