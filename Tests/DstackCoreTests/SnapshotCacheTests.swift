import Foundation
import Testing

@testable import DstackCore

/// The snapshot's hash cache: unchanged files are not read again, changed ones always are.
@Suite struct SnapshotCacheTests {
    @Test func anUnchangedFileKeepsItsRecordedHashAndAnEditedOneIsHashedAgain() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        try dir.write("a.txt", "alpha\n")
        try dir.write("b.txt", "beta\n")
        let cacheDir = try Scratch("cache")
        defer { cacheDir.remove() }
        let cache = cacheDir.at("hashes.json")
        let first = try await Snapshotter.snapshot(root: dir.url, cache: cache)
        #expect(FileManager.default.fileExists(atPath: cache.path))
        #expect(try await Snapshotter.snapshot(root: dir.url, cache: cache).id == first.id)

        // Plant a wrong hash for a.txt under its real stamp: it is used, which shows the file was not read again.
        var entries = try #require(HashCache.load(cache))
        entries["a.txt"]?.hash = String(repeating: "0", count: 64)
        HashCache.save(entries, to: cache)
        let cached = try await Snapshotter.snapshot(root: dir.url, cache: cache)
        #expect(cached.files.first { $0.path == "a.txt" }?.hash == String(repeating: "0", count: 64))

        // An edit of the same size changes the stamp (mtime, ctime), so the file is read again.
        try dir.write("a.txt", "ALPHA\n")
        let edited = try await Snapshotter.snapshot(root: dir.url, cache: cache)
        #expect(edited.files.first { $0.path == "a.txt" }?.hash == (try Snapshotter.hashFile(dir.at("a.txt").path)))
        #expect(edited.id != first.id)
        #expect(edited.files.first { $0.path == "b.txt" }?.hash == first.files.first { $0.path == "b.txt" }?.hash)
    }
}
