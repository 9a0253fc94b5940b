import DstackModel
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension JobLaunch {
    /// Reads a launch description; plans stored before secrets existed have no `secret_names`.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        jobId = try c.decode(String.self, forKey: .jobId)
        commands = try c.decode([String].self, forKey: .commands)
        environment = try c.decode([String: String].self, forKey: .environment)
        workingDir = try c.decode(String.self, forKey: .workingDir)
        image = try c.decodeIfPresent(String.self, forKey: .image)
        gpus = try c.decodeIfPresent([Int].self, forKey: .gpus) ?? []
        secretNames = try c.decodeIfPresent([String].self, forKey: .secretNames) ?? []
        slurm = try c.decodeIfPresent(SlurmRequest.self, forKey: .slurm)
    }
}

/// The job's `secrets.env`: how secret values reach a job on its runner. It is created 0600 in the job's
/// directory, sourced by the launch wrapper (`RunnerScripts.launch`) before anything of the job runs, and removed
/// right after, so the values live on only in the job's environment. Values never travel on a command line: the
/// local runner writes the file itself, the SSH runner sends it inside a script read from stdin.
public enum SecretsFile {
    /// The file's name in the job directory.
    public static let name = "secrets.env"

    /// The file's text: one `export NAME='value'` per secret (values quoted as data, never code).
    public static func text(_ secrets: SecretValues) -> String {
        secrets.entries.filter { isEnvironmentName($0.name) }.map { "export \($0.name)=\(shellQuote($0.value))\n" }.joined()
    }

    /// Writes the file into the job directory `directory`, created with mode 0600 from the start (never readable
    /// by others, not even for a moment); does nothing when there are no secrets.
    public static func write(_ secrets: SecretValues, into directory: URL) throws {
        guard !secrets.isEmpty else { return }
        let path = directory.appendingPathComponent(name).path
        unlink(path)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            throw RunnerError.job(jobId: directory.lastPathComponent, reason: "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        // umask may have narrowed the mode further, never widened it; set it exactly all the same.
        fchmod(fd, 0o600)
        do {
            try FileHandle(fileDescriptor: fd, closeOnDealloc: false).write(contentsOf: Data(text(secrets).utf8))
        } catch {
            throw RunnerError.job(jobId: directory.lastPathComponent, reason: "cannot write \(path): \(error.localizedDescription)")
        }
    }
}
