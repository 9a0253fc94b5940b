import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An open directory below which names are reached one component at a time, never through a symbolic link.
///
/// Storage folders and download targets are shared with people and runners that may plant links in them
/// (`log -> ~/.bashrc`, `a/up -> ../..`). Resolving a path by its text would follow such a link; here every
/// component is opened with `O_NOFOLLOW` relative to its parent's descriptor (`openat`), so a link anywhere on
/// the way is found and refused, and what is written, read, moved or removed is always below the folder. The
/// folder itself is opened by its path as given: that path is the user's own choice.
final class Folder {
    /// The open directory.
    let fd: Int32
    /// Its path, for messages only: it is never used to reach anything.
    let path: String

    private init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }

    /// Opens the folder at `path` (following links in `path` itself), creating it and its parents when asked.
    static func open(_ path: String, create: Bool) throws(FolderError) -> Folder {
        if create { try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) }
        let fd = openPath(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .posix(path: path, code: errno) }
        return Folder(fd: fd, path: path)
    }

    /// The folder at `components` below this one, each reached without following a link; missing ones are
    /// created (mode 0755 less the umask) when `create` is set.
    func folder<S: Sequence>(_ components: S, create: Bool) throws(FolderError) -> Folder where S.Element: StringProtocol {
        var current = self
        for component in components {
            current = try current.child(String(component), create: create)
        }
        return current
    }

    /// The folder at `relative` (a `/`-separated path without `.` or `..`) below this one; see `folder(_:create:)`.
    func folder(at relative: String, create: Bool) throws(FolderError) -> Folder {
        try folder(relative.split(separator: "/"), create: create)
    }

    /// The immediate subfolder `name`, which must be a real directory (not a link to one).
    func child(_ name: String, create: Bool) throws(FolderError) -> Folder {
        try Self.checkName(name, in: path)
        let childPath = path + "/" + name
        var fd = openat(self.fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if fd < 0, errno == ENOENT, create {
            if mkdirat(self.fd, name, 0o755) != 0, errno != EEXIST { throw .posix(path: childPath, code: errno) }
            fd = openat(self.fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        }
        guard fd >= 0 else { throw classify(name, errno) }
        return Folder(fd: fd, path: childPath)
    }

    /// Opens the entry `name` of this folder with `flags` (plus `O_NOFOLLOW` and `O_CLOEXEC`); a link is refused.
    func openFile(_ name: String, _ flags: Int32, mode: mode_t = 0o644) throws(FolderError) -> Int32 {
        try Self.checkName(name, in: path)
        let fd = openat(self.fd, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { throw classify(name, errno) }
        return fd
    }

    /// The entry's own status (a link is described, not followed); nil when there is no such entry.
    func status(_ name: String) -> stat? {
        var info = stat()
        return fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 ? info : nil
    }

    /// The text of the link `name`.
    func linkTarget(_ name: String) throws(FolderError) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlinkat(fd, name, &buffer, buffer.count - 1)
        guard n >= 0 else { throw .posix(path: path + "/" + name, code: errno) }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The names in this folder, without `.` and `..`, sorted.
    func names() throws(FolderError) -> [String] {
        let copy = dup(fd)
        guard copy >= 0, let dir = fdopendir(copy) else {
            let code = errno
            if copy >= 0 { close(copy) }
            throw .posix(path: path, code: code)
        }
        defer { closedir(dir) }
        rewinddir(dir)
        var out: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { out.append(name) }
        }
        return out.sorted()
    }

    /// Makes a link `name -> target` here, replacing a file or link of that name (never a folder).
    func makeLink(_ name: String, to target: String) throws(FolderError) {
        try Self.checkName(name, in: path)
        if let existing = status(name), existing.st_mode & S_IFMT != S_IFDIR { unlinkat(fd, name, 0) }
        guard symlinkat(target, fd, name) == 0 else { throw .posix(path: path + "/" + name, code: errno) }
    }

    /// Moves the entry `name` to `newName` in `folder` (which may be this one), replacing a file or link there.
    func move(_ name: String, to folder: Folder, as newName: String) throws(FolderError) {
        try Self.checkName(name, in: path)
        try Self.checkName(newName, in: folder.path)
        guard renameat(fd, name, folder.fd, newName) == 0 else { throw .posix(path: folder.path + "/" + newName, code: errno) }
    }

    /// Removes the entry `name` and, for a folder, everything below it; links are removed, never followed.
    /// An absent entry is not an error.
    func removeTree(_ name: String) throws(FolderError) {
        guard let info = status(name) else { return }
        if info.st_mode & S_IFMT == S_IFDIR {
            let sub = try child(name, create: false)
            for entry in try sub.names() { try sub.removeTree(entry) }
            guard unlinkat(fd, name, AT_REMOVEDIR) == 0 || errno == ENOENT else { throw .posix(path: path + "/" + name, code: errno) }
        } else {
            guard unlinkat(fd, name, 0) == 0 || errno == ENOENT else { throw .posix(path: path + "/" + name, code: errno) }
        }
    }

    /// Tells a link (or a file where a folder was expected) from other failures.
    private func classify(_ name: String, _ code: Int32) -> FolderError {
        let full = path + "/" + name
        if code == ELOOP || code == ENOTDIR || code == EMLINK, let info = status(name) {
            if info.st_mode & S_IFMT == S_IFLNK { return .link(path: full) }
            if code == ENOTDIR { return .notFolder(path: full) }
        }
        return .posix(path: full, code: code)
    }

    /// One component: not empty, no `/`, not `.` or `..`.
    private static func checkName(_ name: String, in folder: String) throws(FolderError) {
        guard !name.isEmpty, name != ".", name != "..", !name.contains("/"), !name.contains("\0") else {
            throw .badName(name, folder: folder)
        }
    }
}

/// Why a `Folder` operation failed.
enum FolderError: Error, Sendable {
    /// A symbolic link stands where a file or folder was to be reached.
    case link(path: String)
    /// A file stands where a folder was expected.
    case notFolder(path: String)
    /// A name that is not one plain path component.
    case badName(String, folder: String)
    /// Any other failure of the system call.
    case posix(path: String, code: Int32)

    /// The errno value for `.posix`, nil otherwise.
    var code: Int32? {
        if case .posix(_, let code) = self { return code }
        return nil
    }

    /// A short phrase for messages.
    var reason: String {
        switch self {
        case .link(let path): return "'\(path)' is a symbolic link, and dstack follows none there"
        case .notFolder(let path): return "'\(path)' is a file where a folder was expected"
        case .badName(let name, let folder): return "'\(name)' is not a plain name inside '\(folder)'"
        case .posix(let path, let code): return "\(path): \(String(cString: strerror(code)))"
        }
    }
}

/// `open(2)` under a name that does not clash with `Folder.open`.
private func openPath(_ path: String, _ flags: Int32) -> Int32 {
    #if canImport(Glibc)
    return Glibc.open(path, flags)
    #else
    return Darwin.open(path, flags)
    #endif
}
