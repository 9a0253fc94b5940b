@testable import DstackRunners
import Foundation
import Testing

/// How the SSH runner reads the remote listing that decides which artifacts travel on channels of their own.
@Suite struct ArtifactEntryTests {
    @Test func modeStringsBecomePermissionBits() {
        #expect(ArtifactEntry.permissions("-rw-r--r--") == 0o644)
        #expect(ArtifactEntry.permissions("-rwxr-x---") == 0o750)
        #expect(ArtifactEntry.permissions("-rwsr-x--x") == 0o4751)
        #expect(ArtifactEntry.permissions("-rwSr-sr-T") == 0o7654)
        #expect(ArtifactEntry.permissions("-rw-------.") == 0o600)
        #expect(ArtifactEntry.permissions("-rw-r--r--+") == 0o644)
        #expect(ArtifactEntry.permissions("drwxr-xr-x") == nil, "not a plain file")
        #expect(ArtifactEntry.permissions("-rwx") == nil)
        #expect(ArtifactEntry.permissions("-rwxq-----") == nil)
    }

    @Test func theListingNamesPathsByIndexAndSkipsMissingOnes() {
        let paths = ["big.bin", "out", "small.txt", "missing", "odd"]
        let listing = "f 0 -rwxr-x--- 3000001\no 1\nf 2 -rw-r--r-- 6\nf 4 ?????????? 12\nf 9 -rw-r--r-- 1\ngarbage\n"
        let entries = ArtifactEntry.parse(listing, paths: paths)
        #expect(entries == [
            ArtifactEntry(path: "big.bin", mode: 0o750, size: 3_000_001),
            ArtifactEntry(path: "out"),
            ArtifactEntry(path: "small.txt", mode: 0o644, size: 6),
            ArtifactEntry(path: "odd"),  // an unreadable mode: fetched with tar, which keeps whatever it is
        ])
        #expect(entries.map(\.isLargeFile) == [true, false, false, false])
    }
}
