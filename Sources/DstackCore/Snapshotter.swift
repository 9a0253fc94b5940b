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
        // One stat per file: the walk's lstat is kept (symlinks are stat'ed again, to their target).
        var entries: [(path: String, info: stat?)]
        if let listed = try await gitFiles(root) {
            entries = listed.map { ($0, nil) }
        } else {
            entries = walk(root, ignore: IgnoreRules.load(root))
        }
        entries.sort { $0.path < $1.path }
        // File names travel to runners in line-based scripts: refuse the ones they cannot carry, naming them all.
        let refused = entries.compactMap { entry in FileNames.problem(entry.path).map { (entry.path, $0) } }
        if !refused.isEmpty {
            throw ConfigError([], messages: refused.prefix(10).map { path, problem in
                "file name '\(FileNames.escaped(path))' holds \(problem); file names travel to runners as lines of text, so dstack cannot send it: rename the file, or leave it out of the snapshot (.gitignore, or .dstackignore without git)"
            })
        }
        var files: [SnapshotFile] = []
        files.reserveCapacity(entries.count)
        let base = root.path.hasSuffix("/") ? root.path : root.path + "/"
        for (path, walked) in entries {
            let full = base + path
            var info = stat()
            if let walked, (walked.st_mode & S_IFMT) != S_IFLNK {
                info = walked
            } else {
                guard stat(full, &info) == 0 else { continue }
            }
            // Deleted-but-tracked files and directories (submodules) are not part of the snapshot.
            guard (info.st_mode & S_IFMT) == S_IFREG else { continue }
            let stamp = HashCache.Entry(info, hash: "")
            let hash: String
            if let entry = known[path], entry.sameFile(as: stamp) { hash = entry.hash } else { hash = try hashFile(full) }
            fresh[path] = HashCache.Entry(info, hash: hash)
            files.append(SnapshotFile(path: path, hash: hash, mode: UInt32(info.st_mode) & 0o7777,
                                      size: Int64(info.st_size)))
        }
        if let cache, fresh != known { HashCache.save(fresh, to: cache) }
        var manifest = SHA256()
        for file in files {
            manifest.update(data: Data("\(String(file.mode, radix: 8)) \(file.hash) \(file.path)\n".utf8))
        }
        return Snapshot(root: root.path, files: files, id: hex(manifest.finalize()))
    }

    /// The files git would commit, or nil when `root` is not in a git work tree (git is not even started then:
    /// a process start is a good part of a re-sync's time).
    static func gitFiles(_ root: URL) async throws -> [String]? {
        var directory = root.standardizedFileURL
        while !FileManager.default.fileExists(atPath: directory.appendingPathComponent(".git").path) {
            let parent = directory.deletingLastPathComponent()
            if parent.path == directory.path { return nil }
            directory = parent
        }
        guard let result = try? await Subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"], in: root),
              result.status == 0 else { return nil }
        var seen = Set<String>()
        return result.stdout.split(separator: 0).compactMap { bytes in
            let path = String(decoding: bytes, as: UTF8.self)
            return seen.insert(path).inserted ? path : nil
        }
    }

    /// Every file under `root` not ignored, with its `lstat`, reading directories with `readdir`.
    static func walk(_ root: URL, ignore: IgnoreRules) -> [(path: String, info: stat?)] {
        var out: [(path: String, info: stat?)] = []
        let base = root.path.hasSuffix("/") ? root.path : root.path + "/"
        func visit(_ relative: String) {
            guard let dir = opendir(relative.isEmpty ? base : base + relative) else { return }
            var names: [String] = []
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                }
                if name != "." && name != ".." { names.append(name) }
            }
            closedir(dir)
            for name in names.sorted() {
                let path = relative.isEmpty ? name : relative + "/" + name
                var info = stat()
                guard lstat(base + path, &info) == 0 else { continue }
                let isDirectory = (info.st_mode & S_IFMT) == S_IFDIR
                if name == ".git" || ignore.ignores(path, isDirectory: isDirectory) { continue }
                if isDirectory { visit(path) } else { out.append((path, info)) }
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
    struct Entry: Equatable {
        var size: Int64
        var mtime: Int64
        var ctime: Int64
        var inode: UInt64
        var hash: String

        init(size: Int64, mtime: Int64, ctime: Int64, inode: UInt64, hash: String) {
            self.size = size
            self.mtime = mtime
            self.ctime = ctime
            self.inode = inode
            self.hash = hash
        }

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

    /// The first line of the cache file; a file without it (or of another version) is ignored.
    static let header = "dstack-hash-cache 1"

    /// Reads the cache: after the header, one `size mtime ctime inode hash path` line per file (a plain format:
    /// JSON decoding of 5,000 entries took longer than stat'ing the files).
    static func load(_ url: URL) -> [String: Entry]? {
        guard let data = try? Data(contentsOf: url) else { return nil }
        var entries: [String: Entry] = [:]
        var first = true
        for line in data.split(separator: UInt8(ascii: "\n")) {
            if first {
                guard String(decoding: line, as: UTF8.self) == header else { return nil }
                first = false
                continue
            }
            let fields = line.split(separator: UInt8(ascii: " "), maxSplits: 5, omittingEmptySubsequences: false)
            guard fields.count == 6,
                  let size = Int64(String(decoding: fields[0], as: UTF8.self)),
                  let mtime = Int64(String(decoding: fields[1], as: UTF8.self)),
                  let ctime = Int64(String(decoding: fields[2], as: UTF8.self)),
                  let inode = UInt64(String(decoding: fields[3], as: UTF8.self)) else { continue }
            entries[String(decoding: fields[5], as: UTF8.self)] =
                Entry(size: size, mtime: mtime, ctime: ctime, inode: inode, hash: String(decoding: fields[4], as: UTF8.self))
        }
        return entries
    }

    /// Written atomically; a cache that cannot be written only costs rehashing next time. Paths with a newline
    /// are left out (they are hashed every time).
    static func save(_ entries: [String: Entry], to url: URL) {
        var text = header + "\n"
        for (path, e) in entries where !path.contains("\n") {
            text += "\(e.size) \(e.mtime) \(e.ctime) \(e.inode) \(e.hash) \(path)\n"
        }
        try? FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try? Data(text.utf8).write(to: url, options: .atomic)
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
