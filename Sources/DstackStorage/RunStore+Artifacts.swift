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
    public func storeArtifacts(cacheKey: String, run: String, job: String, paths: [String],
                               from directory: URL) async throws -> ArtifactManifest {
        let files = try ArtifactScanner.scan(paths: paths, in: directory)
        // A runner's own staging folder (see `ArtifactStaging`) gives its files up: storage may move them.
        let consume = ArtifactStaging.isDisposable(directory)
        var stored = Set<String>()
        for file in files where file.link == nil && file.isDirectory != true && stored.insert(file.path).inserted {
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
    ///
    /// A manifest is data from a shared storage, so it is checked before anything is written: no path may escape,
    /// no link may point outside its artifact, and no entry may sit below a link. Links are created last.
    public func downloadArtifacts(_ manifest: ArtifactManifest, into directory: URL) async throws {
        let fm = FileManager.default
        let links = Set(manifest.files.filter { $0.link != nil }.map(\.path))
        for file in manifest.files {
            guard relativePathProblem(file.path) == nil else {
                throw StorageError.refused("artifact path '\(file.path)' in manifest \(manifest.cacheKey) escapes its directory; refusing to place it")
            }
            let parents = file.path.split(separator: "/").dropLast().indices.map { file.path.split(separator: "/")[...$0].joined(separator: "/") }
            if parents.contains(where: { links.contains($0) }) {
                throw StorageError.refused("artifact entry '\(file.path)' in manifest \(manifest.cacheKey) lies below a link; refusing to place it")
            }
            if let link = file.link {
                let root = manifest.paths.map(normalizedRelativePath).first { file.path == $0 || file.path.hasPrefix($0 + "/") } ?? ""
                guard ArtifactScanner.linkStaysInside(link: file.path, target: link, artifactRoot: root) else {
                    throw StorageError.refused("artifact link '\(file.path)' -> '\(link)' in manifest \(manifest.cacheKey) points outside its artifact; refusing to place it")
                }
            }
        }
        for file in manifest.files.sorted(by: { ($0.link == nil ? 0 : 1) < ($1.link == nil ? 0 : 1) }) {
            let target = directory.appendingPathComponent(file.path)
            try fm.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
            if file.isDirectory == true {
                try fm.createDirectory(at: target, withIntermediateDirectories: true)
            } else if let link = file.link {
                try? fm.removeItem(at: target)
                try fm.createSymbolicLink(atPath: target.path, withDestinationPath: link)
                continue
            } else {
                try await storage.download(artifactFileKey(manifest.cacheKey, file.path), to: target)
            }
            chmod(target.path, mode_t(file.mode & 0o7777))
        }
    }
}

/// Walks artifact paths in a job directory and describes every entry, refusing links that leave the artifact.
enum ArtifactScanner {
    static func scan(paths: [String], in directory: URL) throws -> [ArtifactFile] {
        var out: [ArtifactFile] = []
        for path in paths {
            let artifact = normalizedRelativePath(path)
            try visit(artifact, artifactRoot: artifact, directory: directory, into: &out)
        }
        return out
    }

    private static func visit(_ relative: String, artifactRoot: String, directory: URL, into out: inout [ArtifactFile]) throws {
        let full = directory.appendingPathComponent(relative).path
        var info = stat()
        guard lstat(full, &info) == 0 else {
            if relative == artifactRoot {
                throw StorageError.refused("artifact '\(artifactRoot)' was not produced: no such file or directory after the commands ran")
            }
            return
        }
        let mode = UInt32(info.st_mode) & 0o7777
        switch info.st_mode & S_IFMT {
        case S_IFLNK:
            let target = try FileManager.default.destinationOfSymbolicLink(atPath: full)
            // Lexically inside is not enough (`x -> self/self/../..` through an inside link `self -> .`): where the
            // target exists, its real path must lie inside the artifact's real path too.
            var resolvedInside = true
            if let real = realPath(full), let rootReal = realPath(directory.appendingPathComponent(artifactRoot).path) {
                resolvedInside = real == rootReal || real.hasPrefix(rootReal + "/")
            }
            guard resolvedInside, linkStaysInside(link: relative, target: target, artifactRoot: artifactRoot) else {
                throw StorageError.refused("artifact '\(artifactRoot)' holds a symbolic link '\(relative)' -> '\(target)' that points outside it; artifacts must be self-contained (copy the file in, or make the link relative inside '\(artifactRoot)')")
            }
            out.append(ArtifactFile(path: relative, size: 0, mode: mode, link: target))
        case S_IFDIR:
            let children = try FileManager.default.contentsOfDirectory(atPath: full).sorted()
            if children.isEmpty || relative == artifactRoot {
                out.append(ArtifactFile(path: relative, size: 0, mode: mode, isDirectory: true))
            }
            for child in children {
                try visit(relative + "/" + child, artifactRoot: artifactRoot, directory: directory, into: &out)
            }
        case S_IFREG:
            out.append(ArtifactFile(path: relative, size: Int64(info.st_size), mode: mode))
        default:
            throw StorageError.refused("artifact '\(artifactRoot)' holds '\(relative)', which is neither a file, a directory nor a link")
        }
    }

    /// The canonical path of an existing file (links resolved), or nil.
    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// True when a link at `link` (relative to the repository) pointing to `target` resolves inside `artifactRoot`.
    static func linkStaysInside(link: String, target: String, artifactRoot: String) -> Bool {
        if target.hasPrefix("/") { return false }
        var parts = link.split(separator: "/").dropLast().map(String.init)
        for component in target.split(separator: "/") {
            switch component {
            case ".": continue
            case "..":
                if parts.isEmpty { return false }
                parts.removeLast()
            default: parts.append(String(component))
            }
        }
        let resolved = parts.joined(separator: "/")
        return resolved == artifactRoot || resolved.hasPrefix(artifactRoot + "/")
    }
}
