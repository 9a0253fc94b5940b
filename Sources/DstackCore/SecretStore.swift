import DstackModel
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where secret values live: on the coordinator's machine only, per project, never in the shared storage.
public protocol SecretStore: Sendable {
    /// The names of the secrets set for `project`, sorted.
    func names(project: String) throws -> [String]

    /// The values of `project`'s secrets by name (every secret set, whatever the run needs).
    func values(project: String) throws -> [String: String]

    /// Sets (or replaces) the secret `name` of `project`.
    func set(_ name: String, value: String, project: String) throws

    /// Removes the secret `name` of `project`; false when it was not set.
    func delete(_ name: String, project: String) throws -> Bool
}

/// Secrets kept in one JSON file (`~/.dstack/secrets`, or `$DSTACK_SECRETS_FILE`) of mode 0600:
/// `{"projects": {"PROJECT": {"NAME": "VALUE"}}}`. A file that others can read is refused, as ssh refuses such a key.
/// Each change rewrites the file atomically (a new 0600 file renamed over it).
public struct FileSecretStore: SecretStore {
    /// The file.
    public let path: URL

    /// Creates a store kept in `path` (nothing is read or created until it is used).
    public init(path: URL) {
        self.path = path
    }

    struct Contents: Codable {
        var projects: [String: [String: String]] = [:]
    }

    public func names(project: String) throws -> [String] {
        try read().projects[project].map { $0.keys.sorted() } ?? []
    }

    public func values(project: String) throws -> [String: String] {
        try read().projects[project] ?? [:]
    }

    public func set(_ name: String, value: String, project: String) throws {
        var contents = try read()
        contents.projects[project, default: [:]][name] = value
        try write(contents)
    }

    public func delete(_ name: String, project: String) throws -> Bool {
        var contents = try read()
        guard contents.projects[project]?.removeValue(forKey: name) != nil else { return false }
        if contents.projects[project]?.isEmpty == true { contents.projects.removeValue(forKey: project) }
        try write(contents)
        return true
    }

    /// The file's contents; none when it does not exist.
    func read() throws -> Contents {
        var info = stat()
        guard stat(path.path, &info) == 0 else {
            if errno == ENOENT { return Contents() }
            throw CoreError.io("cannot read the secrets file \(path.path): \(String(cString: strerror(errno)))")
        }
        if info.st_mode & 0o077 != 0 {
            throw CoreError.io("the secrets file \(path.path) can be read by others (mode \(String(info.st_mode & 0o777, radix: 8))); run 'chmod 600 \(path.path)'")
        }
        let data: Data
        do {
            data = try Data(contentsOf: path)
        } catch {
            throw CoreError.io("cannot read the secrets file \(path.path): \(error.localizedDescription)")
        }
        if data.isEmpty { return Contents() }
        guard let contents = try? JSONDecoder().decode(Contents.self, from: data) else {
            // Never quote the file: it holds the values.
            throw CoreError.io("the secrets file \(path.path) is not in dstack's format ({\"projects\": {...}}); fix or remove it")
        }
        return contents
    }

    /// Replaces the file: a new file created 0600 beside it, renamed over it.
    func write(_ contents: Contents) throws {
        let folder = path.deletingLastPathComponent()
        if !FileManager.default.fileExists(atPath: folder.path) {
            do {
                try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw CoreError.io("cannot create \(folder.path) for the secrets file: \(error.localizedDescription)")
            }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(contents)
        let temporary = folder.appendingPathComponent(".\(path.lastPathComponent).\(UUID().uuidString.prefix(8))")
        let fd = open(temporary.path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            throw CoreError.io("cannot write the secrets file in \(folder.path): \(String(cString: strerror(errno)))")
        }
        do {
            fchmod(fd, 0o600)
            let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: false)
            try handle.write(contentsOf: data)
            try handle.synchronize()
            close(fd)
        } catch {
            close(fd)
            unlink(temporary.path)
            throw CoreError.io("cannot write the secrets file in \(folder.path): \(error.localizedDescription)")
        }
        guard rename(temporary.path, path.path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary.path)
            throw CoreError.io("cannot replace the secrets file \(path.path): \(reason)")
        }
    }
}
