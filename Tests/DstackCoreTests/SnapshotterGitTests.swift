import DstackCore
import DstackModel
import Foundation
import Testing

/// With git: the snapshot is what `git ls-files -co --exclude-standard` lists, with the files as they are now.
@Suite(.enabled(if: gitAvailable, "needs git"))
struct SnapshotterGitTests {
    /// A repository with tracked, ignored, untracked, edited and deleted files.
    func repository(_ name: String = #function) async throws -> Scratch {
        let dir = try Scratch(name)
        try dir.write(".gitignore", "*.tmp\nbuild/\n")
        try dir.write("tracked.txt", "committed\n")
        try dir.write("gone.txt", "deleted after commit\n")
        try dir.write("sub/deep.txt", "deep\n")
        try dir.write("with space é.txt", "odd name\n")
        try await git("init", "-q", in: dir.url)
        try await git("add", ".", in: dir.url)
        try await git("commit", "-qm", "initial", in: dir.url)
        try dir.write("ignored.tmp", "ignored\n")
        try dir.write("build/out.bin", "ignored too\n")
        try dir.write("untracked.txt", "new\n")
        try dir.write("tracked.txt", "edited, not committed\n")
        try FileManager.default.removeItem(at: dir.at("gone.txt"))
        return dir
    }

    @Test func holdsTrackedUntrackedAndEditsButNotIgnoredOrDeletedFiles() async throws {
        let dir = try await repository()
        defer { dir.remove() }
        let snapshot = try await Snapshotter.snapshot(root: dir.url)
        #expect(snapshot.files.map(\.path) == [".gitignore", "sub/deep.txt", "tracked.txt", "untracked.txt", "with space é.txt"])
        let tracked = try #require(snapshot.files.first { $0.path == "tracked.txt" })
        #expect(tracked.hash == (try await sha256Sum(Data("edited, not committed\n".utf8))), "the uncommitted edit is what is snapshotted")
        #expect(tracked.size == Int64("edited, not committed\n".utf8.count))
        #expect(snapshot.root == dir.url.path)
        #expect(snapshot.id.count == 64)
    }

    @Test func theIdChangesWhenOneFileChangesAndNotOtherwise() async throws {
        let dir = try await repository()
        defer { dir.remove() }
        let base = try await Snapshotter.snapshot(root: dir.url).id
        #expect(try await Snapshotter.snapshot(root: dir.url).id == base, "snapshotting twice")

        // Rewriting the same bytes (a new mtime) or adding ignored files changes nothing.
        try dir.write("sub/deep.txt", "deep\n")
        try dir.write("more.tmp", "x")
        try dir.write("build/other.bin", "x")
        #expect(try await Snapshotter.snapshot(root: dir.url).id == base)

        try dir.write("sub/deep.txt", "deeper\n")
        let edited = try await Snapshotter.snapshot(root: dir.url).id
        #expect(edited != base)
        try dir.write("sub/deep.txt", "deep\n")
        #expect(try await Snapshotter.snapshot(root: dir.url).id == base, "restoring the content restores the id")

        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: dir.at("sub/deep.txt").path)
        #expect(try await Snapshotter.snapshot(root: dir.url).id != base, "the mode is part of the snapshot")
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: dir.at("sub/deep.txt").path)
        #expect(try await Snapshotter.snapshot(root: dir.url).id == base)

        try dir.write("another.txt", "untracked, not ignored\n")
        #expect(try await Snapshotter.snapshot(root: dir.url).id != base)
    }

    @Test func aSubdirectoryOfTheRepositoryIsSnapshottedRelativeToItself() async throws {
        let dir = try await repository()
        defer { dir.remove() }
        let snapshot = try await Snapshotter.snapshot(root: dir.at("sub"))
        #expect(snapshot.files.map(\.path) == ["deep.txt"])
    }
}
