import Foundation

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

    /// Copies `paths` (relative to `remoteDirectory`) into `localDirectory`, streaming `tar -cf -` on the server
    /// into a local `tar -xf -`; memory stays flat whatever the size.
    public func downloadTree(
        _ remoteDirectory: String, paths: [String] = ["."], to localDirectory: String, idleTimeout: Duration?? = nil
    ) async throws {
        let local = expandTilde(localDirectory)
        do {
            try FileManager.default.createDirectory(atPath: local, withIntermediateDirectories: true)
        } catch {
            throw SSHError.localIO(path: local, reason: "cannot create the folder: \(error.localizedDescription)")
        }
        let command = "tar -C \(shellQuote(remoteDirectory)) -cf - -- " + paths.map(shellQuote).joined(separator: " ")
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
    /// `tar -cf -` into `tar -xf -` on the server.
    public func uploadTree(
        _ localDirectory: String, paths: [String] = ["."], to remoteDirectory: String, idleTimeout: Duration?? = nil,
        then followUp: String? = nil
    ) async throws {
        let local = expandTilde(localDirectory)
        let archiver = try LocalProcess(arguments: ["tar", "-C", local, "-cf", "-", "--"] + paths, pipeStandardOutput: true)
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
