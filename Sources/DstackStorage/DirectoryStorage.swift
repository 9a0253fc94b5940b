import DstackModel
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

    private static func temporaryName(_ name: String) -> String {
        ".tmp-\(name)-\(UUID().uuidString.prefix(8))"
    }

    private func temporary(beside url: URL) -> URL {
        url.deletingLastPathComponent().appendingPathComponent(Self.temporaryName(url.lastPathComponent))
    }

    /// The storage root, opened; every key is reached below it without following a link (see `Folder`).
    private func rootFolder() throws -> Folder {
        do { return try Folder.open(root.path, create: false) } catch { throw storageError(error, key: nil) }
    }

    /// The folder holding `key`'s object and the object's name in it; folders on the way are created when asked.
    /// A symbolic link anywhere on the way is refused: a teammate's planted `log -> ~/.bashrc` must not make this
    /// process write, read or remove anything outside the storage.
    private func locate(_ key: String, create: Bool) throws -> (folder: Folder, name: String) {
        _ = try url(key)
        let parts = key.split(separator: "/")
        let base = try rootFolder()
        do {
            return (try base.folder(parts.dropLast(), create: create), String(parts[parts.count - 1]))
        } catch {
            throw storageError(error, key: key)
        }
    }

    /// As `locate` without creating anything; nil when a folder on the way to `key` does not exist.
    /// The size of the plain file at `key` (never through a link), or nil when there is none.
    func fileSize(_ key: String) throws -> Int64? {
        guard let (folder, name) = try locateExisting(key), let info = folder.status(name), info.st_mode & S_IFMT == S_IFREG else {
            return nil
        }
        return Int64(info.st_size)
    }

    private func locateExisting(_ key: String) throws -> (folder: Folder, name: String)? {
        _ = try url(key)
        let parts = key.split(separator: "/")
        let base = try rootFolder()
        do {
            return (try base.folder(parts.dropLast(), create: false), String(parts[parts.count - 1]))
        } catch FolderError.posix(_, ENOENT), FolderError.notFolder {
            return nil
        } catch {
            throw storageError(error, key: key)
        }
    }

    private func storageError(_ error: Error, key: String?) -> StorageError {
        switch error {
        case let error as StorageError:
            return error
        case FolderError.link(let path):
            let shown = key.map { "'\($0)'" } ?? "a key"
            return .refused("storage object \(shown) leads through a symbolic link ('\(path)'); dstack follows no links in a storage, where anyone with write access could plant one: remove it")
        case let error as FolderError:
            return .unusable(location: location, reason: error.reason)
        default:
            return .unusable(location: location, reason: Self.reason(error))
        }
    }

    public func read(_ key: String) async throws -> Data? {
        guard let (folder, name) = try locateExisting(key) else { return nil }
        let fd: Int32
        do {
            fd = try folder.openFile(name, O_RDONLY)
        } catch FolderError.posix(_, ENOENT) {
            return nil
        } catch {
            throw storageError(error, key: key)
        }
        defer { close(fd) }
        var data = Data()
        let size = 1 << 16
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = Foundation.read(fd, buffer, size)
            if n < 0 {
                if errno == EINTR { continue }
                throw posixError("cannot read '\(key)'")
            }
            if n == 0 { break }
            data.append(buffer.assumingMemoryBound(to: UInt8.self), count: n)
        }
        return data
    }

    public func write(_ key: String, data: Data) async throws {
        let (folder, name) = try locate(key, create: true)
        let tmp = Self.temporaryName(name)
        try writeFile(data, in: folder, tmp)
        try move(tmp, in: folder, to: name)
    }

    public func create(_ key: String, data: Data) async throws -> Bool {
        let (folder, name) = try locate(key, create: true)
        let tmp = Self.temporaryName(name)
        try writeFile(data, in: folder, tmp)
        defer { unlinkat(folder.fd, tmp, 0) }
        // linkat with no flags never follows a link: it fails with EEXIST if the name exists in any form.
        if linkat(folder.fd, tmp, folder.fd, name, 0) == 0 { return true }
        if errno == EEXIST { return false }
        throw StorageError.unusable(location: location, reason: "cannot create '\(key)': \(String(cString: strerror(errno)))")
    }

    public func append(_ key: String, data: Data) async throws {
        let (folder, name) = try locate(key, create: true)
        let fd: Int32
        do { fd = try folder.openFile(name, O_WRONLY | O_CREAT | O_APPEND, mode: 0o644) } catch { throw storageError(error, key: key) }
        defer { close(fd) }
        try data.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Foundation.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw posixError("cannot append to '\(key)'")
                }
                offset += n
            }
        }
    }

    public func upload(from file: URL, to key: String) async throws {
        let (folder, name) = try locate(key, create: true)
        let input = open(file.path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard input >= 0 else { throw posixError("cannot read '\(file.path)'") }
        defer { close(input) }
        let tmp = Self.temporaryName(name)
        let output: Int32
        do { output = try folder.openFile(tmp, O_WRONLY | O_CREAT | O_EXCL, mode: 0o644) } catch { throw storageError(error, key: key) }
        try copy(input, to: output, from: file.path, to: key) { unlinkat(folder.fd, tmp, 0) }
        try move(tmp, in: folder, to: name)
        Self.report(input)
    }

    /// Tells the transfer's observer, if any, that the file open at `fd` arrived whole.
    static func report(_ fd: Int32) {
        guard let observer = TransferObserver.current else { return }
        var info = stat()
        if fstat(fd, &info) == 0 { observer.moved(Int64(info.st_size)) }
    }

    /// Moves the file into place with `rename(2)` when it is a plain file with no other name on the same file
    /// system (atomic, no byte copied), giving it the mode a copied object gets; otherwise copies it as `upload`.
    public func adopt(_ file: URL, as key: String) async throws {
        let (folder, name) = try locate(key, create: true)
        // The file is opened without following a link, and its mode is set through that descriptor: a link put in
        // its place is never followed, nor is the mode of whatever it points to changed.
        let fd = open(file.path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return try await upload(from: file, to: key) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_nlink == 1,
              fchmod(fd, Self.objectMode) == 0, renameat(AT_FDCWD, file.path, folder.fd, name) == 0 else {
            // Another file system (EXDEV), or anything else: copy.
            return try await upload(from: file, to: key)
        }
        TransferObserver.current?.moved(Int64(info.st_size))
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
        guard let (folder, name) = try locateExisting(key) else { throw StorageError.notFound(key: key) }
        let input: Int32
        do {
            input = try folder.openFile(name, O_RDONLY)
        } catch FolderError.posix(_, ENOENT) {
            throw StorageError.notFound(key: key)
        } catch {
            throw storageError(error, key: key)
        }
        defer { close(input) }
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        let tmp = temporary(beside: file)
        let output = open(tmp.path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard output >= 0 else { throw posixError("cannot write '\(tmp.path)'") }
        try copy(input, to: output, from: key, to: tmp.path) { unlink(tmp.path) }
        try rename(tmp, to: file)
        Self.report(input)
    }

    public func list(prefix: String) async throws -> [StorageObject] {
        // Walk only the deepest directory the prefix names, then filter by the rest of the prefix. Links are
        // neither listed nor walked into.
        let dirPart = prefix.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        if !dirPart.isEmpty { _ = try url(dirPart) }
        let base: Folder
        do {
            base = try rootFolder().folder(at: dirPart, create: false)
        } catch FolderError.posix(_, ENOENT), FolderError.notFolder {
            return []
        } catch {
            throw storageError(error, key: dirPart)
        }
        var out: [StorageObject] = []
        func visit(_ folder: Folder, _ keyPrefix: String) throws {
            for name in try folder.names() where !name.hasPrefix(".tmp-") {
                let key = keyPrefix + name
                guard let info = folder.status(name) else { continue }
                switch info.st_mode & S_IFMT {
                case S_IFREG:
                    if key.hasPrefix(prefix) { out.append(StorageObject(key: key, size: Int64(info.st_size))) }
                case S_IFDIR:
                    // Only folders that can hold keys with the prefix.
                    let folderKey = key + "/"
                    guard folderKey.hasPrefix(prefix) || prefix.hasPrefix(folderKey) else { continue }
                    guard let sub = try? folder.child(name, create: false) else { continue }
                    try visit(sub, folderKey)
                default:
                    continue
                }
            }
        }
        do {
            try visit(base, dirPart.isEmpty ? "" : dirPart + "/")
        } catch {
            throw storageError(error, key: prefix)
        }
        return out.sorted { $0.key < $1.key }
    }

    public func listChildren(prefix: String) async throws -> [String] {
        let dir = prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix
        if !dir.isEmpty { _ = try url(dir) }
        guard let folder = try? rootFolder().folder(at: dir, create: false), let names = try? folder.names() else { return [] }
        return names.filter { name in
            !name.hasPrefix(".tmp-") && folder.status(name).map { $0.st_mode & S_IFMT == S_IFDIR } == true
        }
    }

    public func delete(_ key: String) async throws {
        guard let (folder, name) = try locateExisting(key) else { return }
        if unlinkat(folder.fd, name, 0) != 0, errno != ENOENT { throw posixError("cannot delete '\(key)'") }
    }

    public func deleteAll(prefix: String) async throws {
        let dir = prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix
        guard let (folder, name) = try locateExisting(dir) else { return }
        // Move the tree aside first so readers never see it half-deleted, then remove it (links inside are removed,
        // never followed).
        let trash = Self.temporaryName(name)
        guard renameat(folder.fd, name, folder.fd, trash) == 0 else {
            if errno == ENOENT { return }
            throw posixError("cannot delete '\(prefix)'")
        }
        do { try folder.removeTree(trash) } catch { throw storageError(error, key: prefix) }
    }

    /// Writes a new file `name` in `folder` with plain `write(2)`s. Not fsync'ed: records are replaced by rename,
    /// so a killed process never leaves one half-written, and Foundation's `Data.write`, which syncs every file,
    /// made each job's few record updates a quarter of a short job's cost. A power cut can lose the last records
    /// (the run is then attached again).
    private func writeFile(_ data: Data, in folder: Folder, _ name: String) throws {
        let fd: Int32
        do { fd = try folder.openFile(name, O_WRONLY | O_CREAT | O_EXCL, mode: 0o644) } catch { throw storageError(error, key: nil) }
        var failure: StorageError?
        data.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Foundation.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = posixError("cannot write '\(folder.path)/\(name)'")
                    return
                }
                offset += n
            }
        }
        close(fd)
        if let failure {
            unlinkat(folder.fd, name, 0)
            throw failure
        }
    }

    /// Renames `from` to `to` in `folder`; `from` is removed if that fails.
    private func move(_ from: String, in folder: Folder, to: String) throws {
        if renameat(folder.fd, from, folder.fd, to) != 0 {
            let error = posixError("cannot rename into '\(folder.path)/\(to)'")
            unlinkat(folder.fd, from, 0)
            throw error
        }
    }

    private func rename(_ from: URL, to: URL) throws {
        if Foundation.rename(from.path, to.path) != 0 {
            let error = posixError("cannot rename into '\(to.path)'")
            unlink(from.path)
            throw error
        }
    }

    /// Copies all of `input` into `output` (closed here) in the kernel where it can (`sendfile(2)`: no pass
    /// through this process's memory), else in 1 MiB blocks, so memory stays flat whatever the size. On failure
    /// `discard` removes the half-written output.
    private func copy(_ input: Int32, to output: Int32, from source: String, to target: String, discard: () -> Void) throws {
        var ok = false
        defer {
            close(output)
            if !ok { discard() }
        }
        #if canImport(Glibc)
        switch kernelCopy(from: input, to: output) {
        case .done:
            ok = true
            return
        case .failed(let code):
            errno = code
            throw posixError("cannot copy '\(source)' to '\(target)'")
        case .unsupported:
            break  // nothing was written: copy through a buffer instead
        }
        #endif
        let size = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = Foundation.read(input, buffer, size)
            if n < 0 { throw posixError("cannot read '\(source)'") }
            if n == 0 { break }
            var written = 0
            while written < n {
                let w = Foundation.write(output, buffer + written, n - written)
                if w < 0 { throw posixError("cannot write '\(target)'") }
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
