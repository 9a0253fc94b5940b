import DstackCore
import Foundation
import Testing

/// Without git: the whole directory minus `.dstackignore` patterns (gitignore-style).
@Suite struct IgnoreRulesTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let rules: String
        let path: String
        var isDirectory = false
        let ignored: Bool
        var testDescription: String {
            "\(rules.replacingOccurrences(of: "\n", with: " ⏎ ")) on \(path)\(isDirectory ? "/" : "") → \(ignored)"
        }
    }

    @Test(arguments: [
        Case(rules: "*.log", path: "debug.log", ignored: true),
        Case(rules: "*.log", path: "deep/dir/debug.log", ignored: true),
        Case(rules: "*.log", path: "log.txt", ignored: false),
        Case(rules: "build/", path: "build", isDirectory: true, ignored: true),
        Case(rules: "build/", path: "src/build", isDirectory: true, ignored: true),
        Case(rules: "build/", path: "build", isDirectory: false, ignored: false),
        Case(rules: "/top.txt", path: "top.txt", ignored: true),
        Case(rules: "/top.txt", path: "sub/top.txt", ignored: false),
        Case(rules: "docs/api", path: "docs/api", isDirectory: true, ignored: true),
        Case(rules: "docs/api", path: "x/docs/api", isDirectory: true, ignored: false),
        Case(rules: "*.log\n!keep.log", path: "keep.log", ignored: false),
        Case(rules: "*.log\n!keep.log", path: "other.log", ignored: true),
        Case(rules: "!keep.log\n*.log", path: "keep.log", ignored: true),
        Case(rules: "# a comment\n*.tmp", path: "# a comment", ignored: false),
        Case(rules: "# a comment\n*.tmp", path: "x.tmp", ignored: true),
        Case(rules: "#*.tmp", path: "x.tmp", ignored: false),
        Case(rules: "\n   \n*.tmp  \n", path: "x.tmp", ignored: true),
        Case(rules: "data?.csv", path: "data1.csv", ignored: true),
        Case(rules: "data?.csv", path: "data10.csv", ignored: false),
        Case(rules: "[ab].txt", path: "a.txt", ignored: true),
        Case(rules: "[ab].txt", path: "c.txt", ignored: false),
        Case(rules: "", path: "anything", ignored: false),
    ])
    func patterns(_ c: Case) {
        #expect(IgnoreRules(text: c.rules).ignores(c.path, isDirectory: c.isDirectory) == c.ignored)
    }

    @Test func aFileWrittenWithCRLFLineEndsWorks() {
        let rules = IgnoreRules(text: "*.log\r\n/top.txt\r\n")
        #expect(rules.ignores("debug.log", isDirectory: false))
        #expect(rules.ignores("top.txt", isDirectory: false))
    }

    @Test func aStarDoesNotCrossASlashAsInGit() {
        // git: "docs/*.md" ignores docs/a.md but not docs/sub/b.md (the pattern has a slash, so '*' stops at '/').
        let rules = IgnoreRules(text: "docs/*.md\n")
        #expect(rules.ignores("docs/a.md", isDirectory: false))
        #expect(!rules.ignores("docs/sub/b.md", isDirectory: false))
    }

    @Test func theSnapshotIsTheDirectoryMinusIgnoredPaths() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        try dir.write(".dstackignore", "# scratch files\n*.log\n!keep.log\ncache/\n/top.txt\n")
        for path in ["keep.txt", "debug.log", "keep.log", "cache/big.bin", "sub/cache/x.bin", "sub/top.txt", "top.txt",
                     "notdir/cache", "sub/deeper/trace.log"] {
            try dir.write(path, "content of \(path)\n")
        }
        let snapshot = try await Snapshotter.snapshot(root: dir.url)
        #expect(snapshot.files.map(\.path) == [".dstackignore", "keep.log", "keep.txt", "notdir/cache", "sub/top.txt"])

        let before = snapshot.id
        try dir.write("more.log", "ignored")
        #expect(try await Snapshotter.snapshot(root: dir.url).id == before)
        try dir.write("sub/top.txt", "changed\n")
        #expect(try await Snapshotter.snapshot(root: dir.url).id != before)
    }

    @Test func withNoIgnoreFileEverythingButDotGitIsSnapshotted() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        try dir.write("a.txt", "a")
        try dir.write("nested/b.log", "b")
        let snapshot = try await Snapshotter.snapshot(root: dir.url)
        #expect(snapshot.files.map(\.path) == ["a.txt", "nested/b.log"])
        #expect(snapshot.files.map(\.size) == [1, 1])
    }

    @Test func hashFileReadsLargeFilesInBlocks() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        var bytes = Data(count: 3 << 20 + 17)
        for i in stride(from: 0, to: bytes.count, by: 4093) { bytes[i] = UInt8(truncatingIfNeeded: i) }
        try bytes.write(to: dir.at("big.bin"))
        let expected = try await sha256Sum(bytes)
        #expect(try Snapshotter.hashFile(dir.at("big.bin").path) == expected)
        #expect(throws: CoreError.self) { try Snapshotter.hashFile(dir.at("missing").path) }
    }
}
