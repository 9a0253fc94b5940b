import DstackModel
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension RunStore {
    /// Stores the artifact `paths` found under `directory` for `cacheKey`: every file first, the manifest last.
    ///
    /// File modes are kept in the manifest. A symbolic link is kept when it points inside its artifact and refused
    /// (nothing is stored) when it points outside. A missing path is refused too.
    ///
    /// `storedElsewhere` names files (by path) that a runner already stored under their keys itself, checked (see
    /// `DirectStorage`): `directory` holds an empty stand-in for each, and the manifest takes the entry given here.
    public func storeArtifacts(cacheKey: String, run: String, job: String, paths: [String],
                               from directory: URL, storedElsewhere: [String: ArtifactFile] = [:]) async throws -> ArtifactManifest {
        var files = try ArtifactScanner.scan(paths: paths, in: directory)
        for index in files.indices {
            if let stored = storedElsewhere[files[index].path], files[index].link == nil, files[index].isDirectory != true {
                files[index] = stored
            }
        }
        guard Set(files.map(\.path)).isSuperset(of: storedElsewhere.keys) else {
            throw StorageError.refused("files stored directly are missing from the artifacts' listing: \(storedElsewhere.keys.filter { path in !files.contains { $0.path == path } }.sorted())")
        }
        // A runner's own staging folder (see `ArtifactStaging`) gives its files up: storage may move them.
        let consume = ArtifactStaging.isDisposable(directory)
        if let observer = TransferObserver.current {
            var paths = Set<String>()
            observer.leg(.toStorage, files.reduce(0) { total, file in
                file.link == nil && file.isDirectory != true && storedElsewhere[file.path] == nil && paths.insert(file.path).inserted
                    ? total + file.size : total
            })
        }
        var stored = Set<String>()
        for file in files where file.link == nil && file.isDirectory != true && storedElsewhere[file.path] == nil
            && stored.insert(file.path).inserted {
            let source = directory.appendingPathComponent(file.path)
            let key = artifactFileKey(cacheKey, file.path)
            if consume {
                try await storage.adopt(source, as: key)
            } else {
                try await storage.upload(from: source, to: key)
            }
        }
        let manifest = ArtifactManifest(cacheKey: cacheKey, run: run, job: job, paths: paths, files: files, createdAt: Date())
        try await storage.write(key("artifacts", cacheKey, "manifest.json"), data: encode(manifest))
        return manifest
    }

    /// Places the stored artifacts of `manifest` under `directory`, with their modes and links.
    public func downloadArtifacts(_ manifest: ArtifactManifest, into directory: URL) async throws {
        try await downloadArtifacts([manifest], into: directory)
    }

    /// Places the stored artifacts of every manifest under `directory`, with their modes (less setuid and
    /// setgid) and links.
    ///
    /// Manifests are data from a shared storage, so they are checked together before anything is written: no path
    /// may escape, no entry may sit below a link, and no link may resolve outside its artifact, following the
    /// links of every manifest (one manifest's `a/self -> .` and another's `a/up -> self/self/../..`). Then
    /// every entry is reached from `directory` one folder at a time without following a link (see `Folder`), each
    /// file arrives in a private folder and is moved into place, and modes are set through the file's own
    /// descriptor: nothing is ever written, moved or changed through a link. Links are created last.
    ///
    /// Files whose keys are in `leaving` are not fetched (a runner fetches them itself); their folders are made.
    public func downloadArtifacts(_ manifests: [ArtifactManifest], into directory: URL, leaving: Set<String> = []) async throws {
        if let problem = ArtifactPlacement.problem(manifests) { throw StorageError.refused(problem) }
        let target: Folder
        do { target = try Folder.open(directory.path, create: true) } catch { throw placementError(error) }
        let incomingName = ".dstack-incoming-\(UUID().uuidString.prefix(8))"
        guard mkdirat(target.fd, incomingName, 0o700) == 0 else {
            throw StorageError.unusable(location: directory.path, reason: "cannot create a folder in it: \(String(cString: strerror(errno)))")
        }
        defer { try? target.removeTree(incomingName) }
        TransferObserver.current?.leg(.fromStorage, manifests.reduce(0) { total, manifest in
            manifest.files.reduce(total) { total, file in
                file.link == nil && file.isDirectory != true && !leaving.contains(artifactFileKey(manifest.cacheKey, file.path))
                    ? total + file.size : total
            }
        })
        do {
            let incoming = try target.child(incomingName, create: false)
            let incomingURL = directory.appendingPathComponent(incomingName).appendingPathComponent("file")
            var folderModes: [(path: String, mode: UInt32)] = []
            for manifest in manifests {
                for file in manifest.files where file.link == nil {
                    let parts = file.path.split(separator: "/")
                    let parent = try target.folder(parts.dropLast(), create: true)
                    let name = String(parts[parts.count - 1])
                    if file.isDirectory == true {
                        _ = try parent.child(name, create: true)
                        folderModes.append((file.path, file.mode))
                        continue
                    }
                    if leaving.contains(artifactFileKey(manifest.cacheKey, file.path)) { continue }
                    try await storage.download(artifactFileKey(manifest.cacheKey, file.path), to: incomingURL)
                    let fd = try incoming.openFile("file", O_RDONLY)
                    let changed = fchmod(fd, Self.safeMode(file.mode))
                    close(fd)
                    guard changed == 0 else { throw FolderError.posix(path: directory.path + "/" + file.path, code: errno) }
                    if let existing = parent.status(name), existing.st_mode & S_IFMT == S_IFLNK { unlinkat(parent.fd, name, 0) }
                    try incoming.move("file", to: parent, as: name)
                }
            }
            for manifest in manifests {
                for file in manifest.files {
                    guard let link = file.link else { continue }
                    let parts = file.path.split(separator: "/")
                    try target.folder(parts.dropLast(), create: true).makeLink(String(parts[parts.count - 1]), to: link)
                }
            }
            // Folder modes last: a folder without write permission could not have been filled.
            for (path, mode) in folderModes {
                let folder = try target.folder(at: path, create: false)
                fchmod(folder.fd, Self.safeMode(mode))
            }
        } catch {
            throw placementError(error)
        }
    }

    /// Permission bits as placed: setuid, setgid and sticky bits are dropped, since the files come from anyone
    /// who can write the storage.
    static func safeMode(_ mode: UInt32) -> mode_t {
        mode_t(mode & 0o777)
    }

    private func placementError(_ error: Error) -> Error {
        switch error {
        case FolderError.link(let path):
            return StorageError.refused("'\(path)' is a symbolic link: artifacts are never placed through a link; remove it, or download into an empty folder")
        case let error as FolderError:
            return StorageError.unusable(location: storage.location, reason: "cannot place artifacts: \(error.reason)")
        default:
            return error
        }
    }
}

/// Walks artifact paths in a job directory and describes every entry, refusing links that leave the artifact.
///
/// Every entry is reached from `directory` one folder at a time without following a link (see `Folder`): an
/// artifact that is itself a link, or lies below one (a runner's `out -> /home/you`), is refused rather than read.
enum ArtifactScanner {
    static func scan(paths: [String], in directory: URL) throws -> [ArtifactFile] {
        let base: Folder
        do { base = try Folder.open(directory.path, create: false) } catch {
            throw StorageError.refused("artifacts cannot be read from '\(directory.path)': \(error.reason)")
        }
        var out: [ArtifactFile] = []
        var links: [(path: String, target: String, root: String)] = []
        for path in paths {
            let artifact = normalizedRelativePath(path)
            let parts = artifact.split(separator: "/")
            guard let last = parts.last else {
                throw StorageError.refused("artifact '\(path)' names the whole repository; name the folders to keep instead")
            }
            let parent: Folder
            do {
                parent = try base.folder(parts.dropLast(), create: false)
            } catch FolderError.link(let linkPath) {
                throw StorageError.refused("artifact '\(artifact)' lies below a symbolic link ('\(linkPath)'); artifacts are read without following links, so store the real folder instead")
            } catch {
                throw StorageError.refused("artifact '\(artifact)' was not produced: no such file or directory after the commands ran")
            }
            try visit(parent, String(last), relative: artifact, artifactRoot: artifact, into: &out, links: &links)
        }
        let resolver = LinkResolver(links: Dictionary(links.map { ($0.path, $0.target) }, uniquingKeysWith: { first, _ in first }))
        for link in links where !resolver.staysInside(link: link.path, target: link.target, artifactRoot: link.root) {
            throw StorageError.refused("artifact '\(link.root)' holds a symbolic link '\(link.path)' -> '\(link.target)' that points outside it; artifacts must be self-contained (copy the file in, or make the link relative inside '\(link.root)')")
        }
        return out
    }

    private static func visit(_ folder: Folder, _ name: String, relative: String, artifactRoot: String,
                              into out: inout [ArtifactFile], links: inout [(path: String, target: String, root: String)]) throws {
        guard let info = folder.status(name) else {
            if relative == artifactRoot {
                throw StorageError.refused("artifact '\(artifactRoot)' was not produced: no such file or directory after the commands ran")
            }
            return
        }
        let mode = UInt32(info.st_mode) & 0o777
        switch info.st_mode & S_IFMT {
        case S_IFLNK:
            let target = try linkTarget(folder, name)
            if relative == artifactRoot {
                throw StorageError.refused("artifact '\(artifactRoot)' is itself a symbolic link (-> '\(target)'); artifacts are read without following links, so store the real folder or file instead")
            }
            // Checked once every link of the artifact is known (see `LinkResolver`).
            guard linkStaysInside(link: relative, target: target, artifactRoot: artifactRoot) else {
                throw StorageError.refused("artifact '\(artifactRoot)' holds a symbolic link '\(relative)' -> '\(target)' that points outside it; artifacts must be self-contained (copy the file in, or make the link relative inside '\(artifactRoot)')")
            }
            links.append((relative, target, artifactRoot))
            out.append(ArtifactFile(path: relative, size: 0, mode: mode, link: target))
        case S_IFDIR:
            let sub: Folder
            let children: [String]
            do {
                sub = try folder.child(name, create: false)
                children = try sub.names()
            } catch {
                throw StorageError.refused("artifact '\(artifactRoot)' cannot be read at '\(relative)': \(error.reason)")
            }
            if children.isEmpty || relative == artifactRoot {
                out.append(ArtifactFile(path: relative, size: 0, mode: mode, isDirectory: true))
            }
            for child in children {
                try visit(sub, child, relative: relative + "/" + child, artifactRoot: artifactRoot, into: &out, links: &links)
            }
        case S_IFREG:
            out.append(ArtifactFile(path: relative, size: Int64(info.st_size), mode: mode))
        default:
            throw StorageError.refused("artifact '\(artifactRoot)' holds '\(relative)', which is neither a file, a directory nor a link")
        }
    }

    private static func linkTarget(_ folder: Folder, _ name: String) throws -> String {
        do { return try folder.linkTarget(name) } catch {
            throw StorageError.refused("cannot read the link '\(folder.path)/\(name)': \(error.reason)")
        }
    }

    /// True when a link at `link` (relative to the repository) pointing to `target` resolves inside `artifactRoot`
    /// by its text alone (the links it passes through are checked by `LinkResolver`).
    static func linkStaysInside(link: String, target: String, artifactRoot: String) -> Bool {
        LinkResolver(links: [:]).staysInside(link: link, target: target, artifactRoot: artifactRoot)
    }
}
