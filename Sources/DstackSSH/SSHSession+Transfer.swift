import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension SSHSession {
    /// Uploads the local file at `localPath` to `remotePath` over SFTP, keeping its mode and modification time;
    /// the remote file appears whole or not at all. Returns the number of bytes sent.
    @discardableResult
    public func upload(_ localPath: String, to remotePath: String, idleTimeout: Duration?? = nil) async throws -> Int64 {
        let timeout = idleTimeout ?? options.idleTimeout
        logger.debug("ssh \(options.hostKeyName): upload \(localPath) -> \(remotePath)")
        return try await submit { completion in
            SFTPTransfer(
                direction: .upload, localPath: expandTilde(localPath), remotePath: remotePath, idleTimeout: timeout,
                completion: completion)
        }
    }

    /// Downloads `remotePath` over SFTP to `localPath` (written under a temporary name, then renamed), keeping its
    /// mode and modification time and creating missing local folders. Returns the number of bytes received.
    @discardableResult
    public func download(_ remotePath: String, to localPath: String, idleTimeout: Duration?? = nil) async throws -> Int64 {
        let timeout = idleTimeout ?? options.idleTimeout
        logger.debug("ssh \(options.hostKeyName): download \(remotePath) -> \(localPath)")
        return try await submit { completion in
            SFTPTransfer(
                direction: .download, localPath: expandTilde(localPath), remotePath: remotePath, idleTimeout: timeout,
                completion: completion)
        }
    }
}

// Built on exec alone, so they work over every transport (libssh2 channels or `ssh` children).
extension RemoteSession {
    /// Copies the remote file `remotePath` to `localPath` by streaming `cat` on the server straight into the local
    /// file: no SFTP request framing, no local helper process, one copy of each byte after decryption. The file is
    /// written under a temporary name beside `localPath`, given `mode`, then renamed into place, so it appears whole
    /// or not at all; missing local folders are created. Returns the number of bytes received.
    ///
    /// With libssh2 1.10 this moves a large file faster than `download` (SFTP) or `downloadTree` (tar into a local
    /// `tar -x`). The remote file's mode is not read: the caller passes the one it wants.
    @discardableResult
    public func downloadFile(
        _ remotePath: String, to localPath: String, mode: UInt32 = 0o644, idleTimeout: Duration?? = nil
    ) async throws -> Int64 {
        let local = expandTilde(localPath)
        let folder = (local as NSString).deletingLastPathComponent
        if !folder.isEmpty {
            do {
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            } catch {
                throw SSHError.localIO(path: folder, reason: "cannot create the folder: \(error.localizedDescription)")
            }
        }
        let temporary = SFTPTransfer.temporaryName(for: local, suffix: String(UInt32.random(in: 0...UInt32.max), radix: 16))
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SSHError.localIO(path: temporary, reason: errnoDescription(errno)) }
        var placed = false
        var descriptorOpen = true
        defer {
            if descriptorOpen { Posix.close(fd) }
            if !placed { unlink(temporary) }
        }
        logger.debug("ssh \(options.hostKeyName): download (cat) \(remotePath) -> \(local)")
        let command = "cat -- " + shellQuote(remotePath)
        let result = try await exec(
            command, stdinFrom: nil, stdoutTo: FileHandle(fileDescriptor: fd, closeOnDealloc: false), idleTimeout: idleTimeout)
        guard result.succeeded else {
            let detail = result.stderrText.trimmingCharacters(in: .whitespacesAndNewlines)
            throw SSHError.remoteFile(path: remotePath, reason: "cannot read it: cat \(result.statusDescription)\(detail.isEmpty ? "" : ": \(detail)")")
        }
        var info = stat()
        guard fchmod(fd, mode_t(mode & 0o7777)) == 0, fstat(fd, &info) == 0 else {
            throw SSHError.localIO(path: temporary, reason: errnoDescription(errno))
        }
        descriptorOpen = false
        guard Posix.close(fd) == 0 else { throw SSHError.localIO(path: temporary, reason: errnoDescription(errno)) }
        guard rename(temporary, local) == 0 else {
            throw SSHError.localIO(path: local, reason: "cannot rename the download into place: \(errnoDescription(errno))")
        }
        placed = true
        return Int64(info.st_size)
    }

    /// Copies `paths` (relative to `remoteDirectory`) into `localDirectory`, streaming `tar -cf -` on the server
    /// into a local `tar -xf -`; memory stays flat whatever the size. `remoteOptions` (already quoted) go to the
    /// remote `tar` before the paths (`--exclude-from`...).
    public func downloadTree(
        _ remoteDirectory: String, paths: [String] = ["."], to localDirectory: String, remoteOptions: String = "",
        idleTimeout: Duration?? = nil
    ) async throws {
        let local = expandTilde(localDirectory)
        do {
            try FileManager.default.createDirectory(atPath: local, withIntermediateDirectories: true)
        } catch {
            throw SSHError.localIO(path: local, reason: "cannot create the folder: \(error.localizedDescription)")
        }
        let options = remoteOptions.isEmpty ? "" : remoteOptions + " "
        let command = "tar -C \(shellQuote(remoteDirectory)) \(options)-cf - -- " + paths.map(shellQuote).joined(separator: " ")
        let extractor = try LocalProcess(arguments: ["tar", "-C", local, "-xf", "-"], pipeStandardInput: true)
        let result: ExecResult
        do {
            result = try await exec(command, stdinFrom: nil, stdoutTo: extractor.standardInput, idleTimeout: idleTimeout)
        } catch {
            extractor.closeStandardInput()
            _ = await extractor.wait()
            throw error
        }
        extractor.closeStandardInput()
        let local_ = await extractor.wait()
        try result.check(command)
        guard local_.status == 0 else {
            throw SSHError.localIO(path: local, reason: "tar -xf - exited with status \(local_.status): \(local_.stderr)")
        }
    }

    /// Copies `paths` (relative to `localDirectory`) into `remoteDirectory` (created if missing), streaming a local
    /// `tar -cf -` into `tar -xf -` on the server. `progress`, when given, hears of the bytes read for the archive
    /// about every quarter second (Linux only).
    public func uploadTree(
        _ localDirectory: String, paths: [String] = ["."], to remoteDirectory: String, idleTimeout: Duration?? = nil,
        then followUp: String? = nil, progress: (@Sendable (Int64) -> Void)? = nil
    ) async throws {
        let local = expandTilde(localDirectory)
        let archiver = try LocalProcess(arguments: ["tar", "-C", local, "-cf", "-", "--"] + paths, pipeStandardOutput: true)
        let watch = progress.map { archiver.watchReads($0) }
        defer { watch?.cancel() }
        let quoted = shellQuote(remoteDirectory)
        // `followUp`, a command run on the remote side once everything arrived, saves a round trip.
        let command = "mkdir -p \(quoted) && tar -C \(quoted) -xf -" + (followUp.map { " && " + $0 } ?? "")
        let result: ExecResult
        do {
            result = try await exec(command, stdinFrom: archiver.standardOutput, stdoutTo: nil, idleTimeout: idleTimeout)
        } catch {
            archiver.terminate()
            _ = await archiver.wait()
            throw error
        }
        let local_ = await archiver.wait()
        guard local_.status == 0 else {
            throw SSHError.localIO(path: local, reason: "tar -cf - exited with status \(local_.status): \(local_.stderr)")
        }
        try result.check(command)
    }
}
