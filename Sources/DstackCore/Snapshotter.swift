import Crypto
import DstackModel
import DstackRunners
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Takes the code snapshot of a project: the files git would commit (tracked and untracked-but-not-ignored, with
/// uncommitted edits), or, without git, the directory minus `.dstackignore` patterns.
public enum Snapshotter {
    /// Snapshots the project at `root`.
    ///
    /// With a `cache` file, a file whose size, modification and change times and inode are unchanged since the last
    /// snapshot keeps its recorded hash instead of being read again (as git's index does).
    public static func snapshot(root: URL, cache: URL? = nil) async throws -> Snapshot {
        let known = cache.flatMap(HashCache.load) ?? [:]
        var fresh: [String: HashCache.Entry] = [:]
        let paths: [String]
        if let listed = try await gitFiles(root) {
            paths = listed
        } else {
            paths = walk(root, ignore: IgnoreRules.load(root))
        }
        var files: [SnapshotFile] = []
        files.reserveCapacity(paths.count)
        for path in paths.sorted() {
            let full = root.appendingPathComponent(path).path
            var info = stat()
            // Deleted-but-tracked files and directories (submodules) are not part of the snapshot.
            guard stat(full, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
            let stamp = HashCache.Entry(info, hash: "")
            let hash: String
            if let entry = known[path], entry.sameFile(as: stamp) { hash = entry.hash } else { hash = try hashFile(full) }
            fresh[path] = HashCache.Entry(info, hash: hash)
            files.append(SnapshotFile(path: path, hash: hash, mode: UInt32(info.st_mode) & 0o7777,
                                      size: Int64(info.st_size)))
        }
        if let cache { HashCache.save(fresh, to: cache) }
        var manifest = SHA256()
        for file in files {
            manifest.update(data: Data("\(String(file.mode, radix: 8)) \(file.hash) \(file.path)\n".utf8))
        }
        return Snapshot(root: root.path, files: files, id: hex(manifest.finalize()))
    }

    static func gitFiles(_ root: URL) async throws -> [String]? {
        guard let result = try? await Subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"], in: root),
              result.status == 0 else { return nil }
        var seen = Set<String>()
        return result.stdout.split(separator: 0).compactMap { bytes in
            let path = String(decoding: bytes, as: UTF8.self)
            return seen.insert(path).inserted ? path : nil
        }
    }

    static func walk(_ root: URL, ignore: IgnoreRules) -> [String] {
        var out: [String] = []
        func visit(_ relative: String) {
            let full = relative.isEmpty ? root.path : root.appendingPathComponent(relative).path
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: full) else { return }
            for name in names.sorted() {
                let path = relative.isEmpty ? name : relative + "/" + name
                var info = stat()
                guard lstat(root.appendingPathComponent(path).path, &info) == 0 else { continue }
                let isDirectory = (info.st_mode & S_IFMT) == S_IFDIR
                if name == ".git" || ignore.ignores(path, isDirectory: isDirectory) { continue }
                if isDirectory { visit(path) } else { out.append(path) }
            }
        }
        visit("")
        return out
    }

    /// The sha256 of a file's content, read in 1 MiB blocks.
    public static func hashFile(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw CoreError.io("cannot read '\(path)': \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var hasher = SHA256()
        let size = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = read(fd, buffer, size)
            if n < 0 { throw CoreError.io("cannot read '\(path)': \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(start: buffer, count: n))
        }
        return hex(hasher.finalize())
    }
}

/// Remembered file hashes, keyed by path, trusted only while a file's stat stamp is unchanged.
enum HashCache {
    struct Entry: Codable, Equatable {
        var size: Int64
        var mtime: Int64
        var ctime: Int64
        var inode: UInt64
        var hash: String

        init(_ info: stat, hash: String) {
            size = Int64(info.st_size)
            #if canImport(Darwin)
            mtime = Int64(info.st_mtimespec.tv_sec) * 1_000_000_000 + Int64(info.st_mtimespec.tv_nsec)
            ctime = Int64(info.st_ctimespec.tv_sec) * 1_000_000_000 + Int64(info.st_ctimespec.tv_nsec)
            #else
            mtime = Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
            ctime = Int64(info.st_ctim.tv_sec) * 1_000_000_000 + Int64(info.st_ctim.tv_nsec)
            #endif
            inode = UInt64(info.st_ino)
            self.hash = hash
        }

        func sameFile(as other: Entry) -> Bool {
            size == other.size && mtime == other.mtime && ctime == other.ctime && inode == other.inode
        }
    }

    static func load(_ url: URL) -> [String: Entry]? {
        guard let data = try? Data(contentsOf: url) else { return nil }
        return try? JSONDecoder().decode([String: Entry].self, from: data)
    }

    /// Written atomically; a cache that cannot be written only costs rehashing next time.
    static func save(_ entries: [String: Entry], to url: URL) {
        guard let data = try? JSONEncoder().encode(entries) else { return }
        try? FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try? data.write(to: url, options: .atomic)
    }
}

/// `.dstackignore`: gitignore-style patterns (`#` comments, `name`, `dir/`, `/anchored`, `*`, `?`, `[...]`).
public struct IgnoreRules: Sendable {
    struct Rule: Sendable {
        var pattern: String
        var anchored: Bool
        var directoryOnly: Bool
        var negated: Bool
    }
    var rules: [Rule] = []

    /// Reads `.dstackignore` at `root`, if there is one.
    public static func load(_ root: URL) -> IgnoreRules {
        guard let text = try? String(contentsOf: root.appendingPathComponent(".dstackignore"), encoding: .utf8) else {
            return IgnoreRules()
        }
        return IgnoreRules(text: text)
    }

    /// Parses patterns from `text`.
    public init(text: String = "") {
        // Split on every line ending (Swift reads "\r\n" as one character, so splitting on "\n" alone misses CRLF).
        for raw in text.split(whereSeparator: { $0.isNewline }) {
            var line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let negated = line.hasPrefix("!")
            if negated { line.removeFirst() }
            let directoryOnly = line.hasSuffix("/")
            if directoryOnly { line.removeLast() }
            let anchored = line.contains("/")
            if line.hasPrefix("/") { line.removeFirst() }
            rules.append(Rule(pattern: line, anchored: anchored, directoryOnly: directoryOnly, negated: negated))
        }
    }

    /// True when `path` (relative, `/`-separated) is ignored; the last matching pattern wins, as in git.
    public func ignores(_ path: String, isDirectory: Bool) -> Bool {
        var ignored = false
        let name = path.split(separator: "/").last.map(String.init) ?? path
        for rule in rules where !rule.directoryOnly || isDirectory {
            let subject = rule.anchored ? path : name
            // FNM_PATHNAME: as in git, `*` never matches across `/`.
            if fnmatch(rule.pattern, subject, FNM_PATHNAME) == 0 { ignored = !rule.negated }
        }
        return ignored
    }
}

/// Lowercase hex of a digest (by table: `String(format:)` made planning 10,000 jobs twice as slow).
func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
    let digits = Array("0123456789abcdef".utf8)
    var bytes: [UInt8] = []
    bytes.reserveCapacity(64)
    for byte in digest {
        bytes.append(digits[Int(byte >> 4)])
        bytes.append(digits[Int(byte & 0x0f)])
    }
    return String(decoding: bytes, as: UTF8.self)
}
