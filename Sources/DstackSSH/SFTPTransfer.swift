internal import CLibSSH2
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Copies one file over SFTP, either way, streaming through a ~1 MiB buffer and preserving the file's mode and
/// modification time. The destination appears whole or not at all: data goes to a temporary name in the same
/// folder, renamed at the end. Each transfer opens its own SFTP channel, so transfers run side by side.
final class SFTPTransfer: OperationBase<Int64>, LoopOperation, @unchecked Sendable {
    /// Which way the bytes go.
    enum Direction { case upload, download }

    private enum Phase {
        case start, initSFTP, openRemote, transfer, setAttributes, closeHandle, rename, replaceTarget, shutdown
        case cleanupHandle, cleanupTemporary, cleanupShutdown, done
    }

    let usesChannel = true
    private let direction: Direction
    private let localPath: String
    private let remotePath: String
    private let chunk = 1024 * 1024
    private let buffer: UnsafeMutableRawBufferPointer
    private var start = 0
    private var end = 0
    private var localEOF = false
    private var phase = Phase.start
    private var sftp: OpaquePointer?
    private var handle: OpaquePointer?
    private var localFD: Int32 = -1
    private var mode: UInt = 0o644
    private var accessTime: UInt = 0
    private var modificationTime: UInt = 0
    private var bytes: Int64 = 0
    private let remoteTemporary: String
    private let localTemporary: String
    private var temporaryCreated = false
    private var replacedTarget = false

    init(
        direction: Direction, localPath: String, remotePath: String, idleTimeout: Duration?,
        completion: @escaping @Sendable (Result<Int64, SSHError>) -> Void
    ) {
        self.direction = direction
        self.localPath = localPath
        self.remotePath = remotePath
        let suffix = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        remoteTemporary = Self.temporaryName(for: remotePath, suffix: suffix)
        localTemporary = Self.temporaryName(for: localPath, suffix: suffix)
        buffer = .allocate(byteCount: 2 * chunk, alignment: 16)
        let verb = direction == .upload ? "uploading \(localPath) to \(remotePath)" : "downloading \(remotePath) to \(localPath)"
        super.init(label: verb, idleTimeout: idleTimeout, completion: completion)
    }

    deinit {
        buffer.deallocate()
        if localFD >= 0 { close(localFD) }
        if direction == .download && temporaryCreated { unlink(localTemporary) }
    }

    /// `dir/.name.dstack-SUFFIX` beside `path`.
    static func temporaryName(for path: String, suffix: String) -> String {
        let url = URL(fileURLWithPath: path)
        let folder = (path as NSString).deletingLastPathComponent
        let name = ".\(url.lastPathComponent).dstack-\(suffix)"
        return folder.isEmpty ? name : "\(folder)/\(name)"
    }

    func abort(_ error: SSHError) {
        fail(error)
        switch phase {
        case .start, .initSFTP: phase = .done
        case .done, .cleanupHandle, .cleanupTemporary, .cleanupShutdown: break
        default: phase = .cleanupHandle
        }
    }

    /// Fails the caller and starts releasing what the transfer holds.
    private func failed(_ error: SSHError) {
        abort(error)
    }

    /// The error for a failed SFTP call: the server's SFTP status when it sent one, else libssh2's error.
    private func sftpError(_ loop: SSHEventLoop, _ rc: Int, path: String, _ verb: String) -> SSHError {
        if rc == Int(LIBSSH2_ERROR_SFTP_PROTOCOL), let sftp {
            return .remoteFile(path: path, reason: "cannot \(verb): \(LibSSH2.describeSFTP(libssh2_sftp_last_error(sftp)))")
        }
        return loop.error(rc, "trying to \(verb) \(path) over sftp")
    }

    func step(_ loop: SSHEventLoop) -> StepResult {
        guard let session = loop.session else { return .blocked }
        var progressed = false
        func blocked() -> StepResult { progressed ? .progressed : .blocked }
        while true {
            switch phase {
            case .start:
                if let error = openLocal() {
                    failed(error)
                    phase = .done
                    continue
                }
                phase = .initSFTP
            case .initSFTP:
                guard let opened = libssh2_sftp_init(session) else {
                    let code = libssh2_session_last_errno(session)
                    if code == LIBSSH2_ERROR_EAGAIN { return blocked() }
                    failed(loop.error(Int(code), "starting sftp"))
                    phase = .done
                    continue
                }
                sftp = opened
                phase = .openRemote
                progressed = true
            case .openRemote:
                let path = direction == .upload ? remoteTemporary : remotePath
                let flags = direction == .upload
                    ? UInt(LIBSSH2_FXF_WRITE | LIBSSH2_FXF_CREAT | LIBSSH2_FXF_TRUNC) : UInt(LIBSSH2_FXF_READ)
                let opened = path.withCString {
                    libssh2_sftp_open_ex(sftp, $0, UInt32(strlen($0)), flags, 0o600, LIBSSH2_SFTP_OPENFILE)
                }
                guard let opened else {
                    let code = libssh2_session_last_errno(session)
                    if code == LIBSSH2_ERROR_EAGAIN { return blocked() }
                    failed(sftpError(loop, Int(code), path: remotePath, "open"))
                    continue
                }
                handle = opened
                if direction == .upload { temporaryCreated = true }
                phase = direction == .upload ? .transfer : .setAttributes
                progressed = true
            case .transfer:
                switch direction == .upload ? uploadChunk(loop) : downloadChunk(loop) {
                case .failure(let error):
                    failed(error)
                case .success(let moved):
                    if moved { progressed = true }
                    if phase == .transfer { return blocked() }
                }
            case .setAttributes:
                // Upload: set the local file's mode and times on the remote file. Download: read the remote ones.
                var attributes = LIBSSH2_SFTP_ATTRIBUTES()
                if direction == .upload {
                    attributes.flags = UInt(LIBSSH2_SFTP_ATTR_PERMISSIONS | LIBSSH2_SFTP_ATTR_ACMODTIME)
                    attributes.permissions = mode
                    attributes.atime = accessTime
                    attributes.mtime = modificationTime
                }
                let rc = libssh2_sftp_fstat_ex(handle, &attributes, direction == .upload ? LIBSSH2_SFTP_SETSTAT : LIBSSH2_SFTP_STAT)
                if rc == LIBSSH2_ERROR_EAGAIN { return blocked() }
                if rc != 0 {
                    failed(sftpError(loop, Int(rc), path: remotePath, "set its mode"))
                    continue
                }
                if direction == .download {
                    mode = attributes.permissions & 0o7777
                    accessTime = attributes.atime
                    modificationTime = attributes.mtime
                    if let error = createLocalTemporary() {
                        failed(error)
                        continue
                    }
                    phase = .transfer
                } else {
                    phase = .closeHandle
                }
                progressed = true
            case .closeHandle:
                let rc = libssh2_sftp_close_handle(handle)
                if rc == LIBSSH2_ERROR_EAGAIN { return blocked() }
                handle = nil
                if rc != 0 {
                    failed(sftpError(loop, Int(rc), path: remotePath, "close"))
                    continue
                }
                if direction == .download, let error = finishLocal() {
                    failed(error)
                    continue
                }
                phase = direction == .upload ? .rename : .shutdown
                progressed = true
            case .replaceTarget:
                let rc = remotePath.withCString { libssh2_sftp_unlink_ex(sftp, $0, UInt32(strlen($0))) }
                if rc == LIBSSH2_ERROR_EAGAIN { return blocked() }
                replacedTarget = true
                phase = .rename
                progressed = true
            case .rename:
                let flags = Int(LIBSSH2_SFTP_RENAME_OVERWRITE | LIBSSH2_SFTP_RENAME_ATOMIC | LIBSSH2_SFTP_RENAME_NATIVE)
                let rc = remoteTemporary.withCString { from in
                    remotePath.withCString { to in
                        libssh2_sftp_rename_ex(sftp, from, UInt32(strlen(from)), to, UInt32(strlen(to)), flags)
                    }
                }
                if rc == LIBSSH2_ERROR_EAGAIN { return blocked() }
                if rc != 0 {
                    // OpenSSH's sftp-server (protocol 3) will not rename over an existing file: remove it first.
                    if !replacedTarget && rc == LIBSSH2_ERROR_SFTP_PROTOCOL {
                        phase = .replaceTarget
                        progressed = true
                        continue
                    }
                    failed(sftpError(loop, Int(rc), path: remotePath, "rename the upload onto it"))
                    continue
                }
                temporaryCreated = false
                phase = .shutdown
                progressed = true
            case .shutdown:
                let rc = libssh2_sftp_shutdown(sftp)
                if rc == LIBSSH2_ERROR_EAGAIN { return blocked() }
                sftp = nil
                phase = .done
                succeed(bytes)
                return .finished
            case .cleanupHandle:
                if handle != nil {
                    let rc = libssh2_sftp_close_handle(handle)
                    if rc == LIBSSH2_ERROR_EAGAIN { return blocked() }
                    handle = nil
                }
                phase = .cleanupTemporary
            case .cleanupTemporary:
                if direction == .upload && temporaryCreated && sftp != nil {
                    let rc = remoteTemporary.withCString { libssh2_sftp_unlink_ex(sftp, $0, UInt32(strlen($0))) }
                    if rc == LIBSSH2_ERROR_EAGAIN { return blocked() }
                    temporaryCreated = false
                }
                phase = .cleanupShutdown
            case .cleanupShutdown:
                if sftp != nil {
                    let rc = libssh2_sftp_shutdown(sftp)
                    if rc == LIBSSH2_ERROR_EAGAIN { return blocked() }
                    sftp = nil
                }
                phase = .done
            case .done:
                return .finished
            }
        }
    }

    // MARK: - Moving bytes

    private func uploadChunk(_ loop: SSHEventLoop) -> Result<Bool, SSHError> {
        var moved = false
        while true {
            if !localEOF && end - start < chunk {
                // Keep the unacknowledged bytes at the front: libssh2 resumes from them on the next call.
                if start > 0 {
                    memmove(buffer.baseAddress!, buffer.baseAddress! + start, end - start)
                    end -= start
                    start = 0
                }
                let n = Posix.read(localFD, buffer.baseAddress! + end, buffer.count - end)
                if n < 0 {
                    if errno == EINTR { continue }
                    return .failure(.localIO(path: localPath, reason: errnoDescription(errno)))
                }
                if n == 0 { localEOF = true } else { end += n }
            }
            if start == end && localEOF {
                phase = .setAttributes
                return .success(true)
            }
            let n = libssh2_sftp_write(handle, (buffer.baseAddress! + start).assumingMemoryBound(to: CChar.self), end - start)
            if n == LibSSH2.eagain { return .success(moved) }
            if n < 0 { return .failure(sftpError(loop, n, path: remotePath, "write")) }
            start += n
            bytes += Int64(n)
            moved = true
        }
    }

    private func downloadChunk(_ loop: SSHEventLoop) -> Result<Bool, SSHError> {
        var moved = false
        while true {
            let n = libssh2_sftp_read(handle, buffer.baseAddress!.assumingMemoryBound(to: CChar.self), chunk)
            if n == LibSSH2.eagain { return .success(moved) }
            if n < 0 { return .failure(sftpError(loop, n, path: remotePath, "read")) }
            if n == 0 {
                phase = .closeHandle
                return .success(true)
            }
            if let code = Posix.writeAll(localFD, UnsafeRawBufferPointer(rebasing: buffer[0..<n])) {
                return .failure(.localIO(path: localPath, reason: errnoDescription(code)))
            }
            bytes += Int64(n)
            moved = true
        }
    }

    // MARK: - Local files

    private func openLocal() -> SSHError? {
        guard direction == .upload else { return nil }
        localFD = open(localPath, O_RDONLY | O_CLOEXEC)
        guard localFD >= 0 else { return .localIO(path: localPath, reason: errnoDescription(errno)) }
        var info = stat()
        guard fstat(localFD, &info) == 0 else { return .localIO(path: localPath, reason: errnoDescription(errno)) }
        guard info.st_mode & S_IFMT == S_IFREG else { return .localIO(path: localPath, reason: "not a regular file") }
        mode = UInt(info.st_mode & 0o7777)
        #if canImport(Darwin)
        accessTime = UInt(info.st_atimespec.tv_sec)
        modificationTime = UInt(info.st_mtimespec.tv_sec)
        #else
        accessTime = UInt(info.st_atim.tv_sec)
        modificationTime = UInt(info.st_mtim.tv_sec)
        #endif
        return nil
    }

    private func createLocalTemporary() -> SSHError? {
        let folder = (localPath as NSString).deletingLastPathComponent
        if !folder.isEmpty {
            do {
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            } catch {
                return .localIO(path: folder, reason: "cannot create the folder: \(error.localizedDescription)")
            }
        }
        localFD = open(localTemporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard localFD >= 0 else { return .localIO(path: localTemporary, reason: errnoDescription(errno)) }
        temporaryCreated = true
        return nil
    }

    private func finishLocal() -> SSHError? {
        var times = [
            timespec(tv_sec: Int(accessTime), tv_nsec: 0), timespec(tv_sec: Int(modificationTime), tv_nsec: 0),
        ]
        if fchmod(localFD, mode_t(mode)) != 0 || futimens(localFD, &times) != 0 {
            return .localIO(path: localTemporary, reason: errnoDescription(errno))
        }
        let closed = close(localFD)
        localFD = -1
        if closed != 0 { return .localIO(path: localTemporary, reason: errnoDescription(errno)) }
        if rename(localTemporary, localPath) != 0 {
            return .localIO(path: localPath, reason: "cannot rename the download into place: \(errnoDescription(errno))")
        }
        temporaryCreated = false
        return nil
    }
}
