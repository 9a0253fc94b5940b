import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Storage in a directory on a local or network file system (NFS works: renames and `link` are atomic there).
///
/// Writes go to a temporary name beside the target and are renamed into place; `create` uses `link(2)`, which
/// fails if the name exists, so two coordinators can never both create the same record.
public struct DirectoryStorage: Storage {
    /// The directory everything lives under.
    public let root: URL
    public var location: String { root.path }

    /// Opens storage at `root`, creating the directory if needed; throws `.unusable` when it cannot be written.
    public init(root: URL) throws {
        self.root = root.standardizedFileURL
        do {
            try FileManager.default.createDirectory(at: self.root, withIntermediateDirectories: true)
        } catch {
            throw StorageError.unusable(location: root.path, reason: "cannot create the directory (\(Self.reason(error)))")
        }
        guard access(self.root.path, W_OK) == 0 else {
            throw StorageError.unusable(location: root.path, reason: "the directory is not writable (read-only file system or wrong permissions); point --storage somewhere writable")
        }
    }

    func url(_ key: String) throws -> URL {
        guard !key.isEmpty, !key.hasPrefix("/"), !key.split(separator: "/").contains(where: { $0 == ".." || $0 == "." }) else {
            throw StorageError.invalidKey(key)
        }
        return root.appendingPathComponent(key)
    }

    private func temporary(beside url: URL) -> URL {
        url.deletingLastPathComponent().appendingPathComponent(".tmp-\(url.lastPathComponent)-\(UUID().uuidString.prefix(8))")
    }

    private func makeParent(_ url: URL) throws {
        try wrap(url) { try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true) }
    }

    public func read(_ key: String) async throws -> Data? {
        let url = try url(key)
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        return try wrap(url) { try Data(contentsOf: url) }
    }

    public func write(_ key: String, data: Data) async throws {
        let url = try url(key)
        try makeParent(url)
        let tmp = temporary(beside: url)
        try writeFile(data, to: tmp)
        try rename(tmp, to: url)
    }

    public func create(_ key: String, data: Data) async throws -> Bool {
        let url = try url(key)
        try makeParent(url)
        let tmp = temporary(beside: url)
        try writeFile(data, to: tmp)
        defer { unlink(tmp.path) }
        if link(tmp.path, url.path) == 0 { return true }
        if errno == EEXIST { return false }
        throw StorageError.unusable(location: location, reason: "cannot create '\(key)': \(String(cString: strerror(errno)))")
    }

    public func append(_ key: String, data: Data) async throws {
        let url = try url(key)
        try makeParent(url)
        let fd = open(url.path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        guard fd >= 0 else { throw posixError("cannot open '\(key)' for appending") }
        defer { close(fd) }
        try data.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Foundation.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 { throw posixError("cannot append to '\(key)'") }
                offset += n
            }
        }
    }

    public func upload(from file: URL, to key: String) async throws {
        let url = try url(key)
        try makeParent(url)
        let tmp = temporary(beside: url)
        try copyFile(from: file, to: tmp)
        try rename(tmp, to: url)
    }

    /// Moves the file into place with `rename(2)` when it is a plain file with no other name on the same file
    /// system (atomic, no byte copied), giving it the mode a copied object gets; otherwise copies it as `upload`.
    public func adopt(_ file: URL, as key: String) async throws {
        let url = try url(key)
        var info = stat()
        guard lstat(file.path, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_nlink == 1 else {
            return try await upload(from: file, to: key)
        }
        try makeParent(url)
        guard chmod(file.path, Self.objectMode) == 0, Foundation.rename(file.path, url.path) == 0 else {
            // Another file system (EXDEV), or anything else: copy.
            return try await upload(from: file, to: key)
        }
    }

    /// The mode of a file this storage creates: 0644 less the process's umask (read without changing it).
    static let objectMode: mode_t = {
        var mask: mode_t = 0o022
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
           let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Umask:") }),
           let value = mode_t(line.dropFirst("Umask:".count).trimmingCharacters(in: .whitespaces), radix: 8) {
            mask = value
        }
        return 0o644 & ~mask
    }()

    public func download(_ key: String, to file: URL) async throws {
        let url = try url(key)
        guard FileManager.default.fileExists(atPath: url.path) else { throw StorageError.notFound(key: key) }
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        let tmp = temporary(beside: file)
        try copyFile(from: url, to: tmp)
        try rename(tmp, to: file)
    }

    public func list(prefix: String) async throws -> [StorageObject] {
        // Walk only the deepest directory the prefix names, then filter by the rest of the prefix.
        let dirPart = prefix.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let base = dirPart.isEmpty ? root : try url(dirPart)
        var out: [StorageObject] = []
        guard let walker = FileManager.default.enumerator(at: base, includingPropertiesForKeys: [.fileSizeKey, .isRegularFileKey]) else { return [] }
        let rootPath = root.path.hasSuffix("/") ? root.path : root.path + "/"
        for case let file as URL in walker {
            let values = try? file.resourceValues(forKeys: [.fileSizeKey, .isRegularFileKey])
            guard values?.isRegularFile == true else { continue }
            let path = file.standardizedFileURL.path
            guard path.hasPrefix(rootPath) else { continue }
            let key = String(path.dropFirst(rootPath.count))
            if key.hasPrefix(prefix), !file.lastPathComponent.hasPrefix(".tmp-") {
                out.append(StorageObject(key: key, size: Int64(values?.fileSize ?? 0)))
            }
        }
        return out.sorted { $0.key < $1.key }
    }

    public func listChildren(prefix: String) async throws -> [String] {
        let dir = prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix
        let url = dir.isEmpty ? root : try url(dir)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
        return names.filter { name in
            var isDirectory: ObjCBool = false
            return !name.hasPrefix(".tmp-")
                && FileManager.default.fileExists(atPath: url.appendingPathComponent(name).path, isDirectory: &isDirectory)
                && isDirectory.boolValue
        }.sorted()
    }

    public func delete(_ key: String) async throws {
        let url = try url(key)
        if unlink(url.path) != 0, errno != ENOENT { throw posixError("cannot delete '\(key)'") }
    }

    public func deleteAll(prefix: String) async throws {
        let dir = prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix
        let url = try url(dir)
        // Move the tree aside first so readers never see it half-deleted, then remove it.
        let trash = temporary(beside: url)
        guard Foundation.rename(url.path, trash.path) == 0 else {
            if errno == ENOENT { return }
            throw posixError("cannot delete '\(prefix)'")
        }
        try wrap(url) { try FileManager.default.removeItem(at: trash) }
    }

    /// Writes a new file with plain `write(2)`s. Not fsync'ed: records are replaced by rename, so a killed process
    /// never leaves one half-written, and Foundation's `Data.write`, which syncs every file, made each job's few
    /// record updates a quarter of a short job's cost. A power cut can lose the last records (the run is then
    /// attached again).
    private func writeFile(_ data: Data, to url: URL) throws {
        let fd = open(url.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw posixError("cannot create '\(url.path)'") }
        var failure: StorageError?
        data.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Foundation.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = posixError("cannot write '\(url.path)'")
                    return
                }
                offset += n
            }
        }
        close(fd)
        if let failure {
            unlink(url.path)
            throw failure
        }
    }

    private func rename(_ from: URL, to: URL) throws {
        if Foundation.rename(from.path, to.path) != 0 {
            let error = posixError("cannot rename into '\(to.path)'")
            unlink(from.path)
            throw error
        }
    }

    /// Copies in the kernel where it can (`sendfile(2)`: no pass through this process's memory), else in 1 MiB
    /// blocks, so memory stays flat whatever the size.
    private func copyFile(from: URL, to: URL) throws {
        let input = open(from.path, O_RDONLY)
        guard input >= 0 else { throw posixError("cannot read '\(from.path)'") }
        defer { close(input) }
        let output = open(to.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard output >= 0 else { throw posixError("cannot write '\(to.path)'") }
        var ok = false
        defer {
            close(output)
            if !ok { unlink(to.path) }
        }
        #if canImport(Glibc)
        switch kernelCopy(from: input, to: output) {
        case .done:
            ok = true
            return
        case .failed(let code):
            errno = code
            throw posixError("cannot copy '\(from.path)' to '\(to.path)'")
        case .unsupported:
            break  // nothing was written: copy through a buffer instead
        }
        #endif
        let size = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = Foundation.read(input, buffer, size)
            if n < 0 { throw posixError("cannot read '\(from.path)'") }
            if n == 0 { break }
            var written = 0
            while written < n {
                let w = Foundation.write(output, buffer + written, n - written)
                if w < 0 { throw posixError("cannot write '\(to.path)'") }
                written += w
            }
        }
        ok = true
    }

    #if canImport(Glibc)
    private enum KernelCopy { case done, unsupported, failed(Int32) }

    /// Copies all of `input` (from its start) to `output` with `sendfile(2)`; `.unsupported` when the kernel
    /// refuses the pair of files before anything was written.
    private func kernelCopy(from input: Int32, to output: Int32) -> KernelCopy {
        var copied = 0
        while true {
            let n = sendfile(output, input, nil, 1 << 30)
            if n > 0 {
                copied += n
                continue
            }
            if n == 0 { return .done }
            if errno == EINTR { continue }
            if copied == 0 && (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) { return .unsupported }
            return .failed(errno)
        }
    }
    #endif

    private func posixError(_ what: String) -> StorageError {
        let code = errno
        return .unusable(location: location, reason: "\(what): \(String(cString: strerror(code)))")
    }

    private func wrap<T>(_ url: URL, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as StorageError { throw error } catch {
            throw StorageError.unusable(location: location, reason: "\(url.path): \(Self.reason(error))")
        }
    }

    static func reason(_ error: Error) -> String {
        let ns = error as NSError
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        return ns.localizedDescription
    }
}
