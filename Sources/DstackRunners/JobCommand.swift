import DstackModel

/// The `run.sh` of a job that runs in a container: what the launch wrapper runs instead of `commands.sh`, with `$1`
/// the job directory and `$2` the working directory inside `repo/`. A job on the host has none: the wrapper runs
/// `sh -e commands.sh` itself (one process less per job).
enum JobCommand {

    /// Runs the commands in a container: the job's `repo/` mounted and used as working directory, the job's
    /// environment passed by name (values never enter the command line), the held GPUs passed through, the
    /// runner user's uid and gid so artifacts stay owned by it, removed when it ends.
    /// With `gpusFromEnvironment`, the GPUs are the ones the job was granted on the runner, which its `env.sh`
    /// exports as `CUDA_VISIBLE_DEVICES` (known only once the slot is taken there).
    static func container(engine: String, job: JobLaunch, gpusFromEnvironment: Bool = false) -> String {
        let name = "dstack-" + job.jobId
        var line = "exec \(shellQuote(engine)) run --rm --name \(shellQuote(name))"
        line += " -v \"$1/repo:/workspace\" -v \"$1/commands.sh:/dstack/commands.sh:ro\""
        line += " -w " + shellQuote(job.workingDir.isEmpty ? "/workspace" : "/workspace/" + job.workingDir)
        line += " --user \"$(id -u):$(id -g)\""
        // Secrets too, by name: the wrapper read them into its environment, the engine passes them on.
        for key in Set(job.environment.keys).union(job.secretNames).sorted() where isEnvironmentName(key) {
            line += " -e " + key
        }
        if gpusFromEnvironment {
            line += " --gpus \"\\\"device=$CUDA_VISIBLE_DEVICES\\\"\""
        } else if !job.gpus.isEmpty {
            line += " --gpus " + shellQuote("\"device=" + job.gpus.map(String.init).joined(separator: ",") + "\"")
        }
        line += " " + shellQuote(job.image ?? "") + " /bin/sh -e /dstack/commands.sh"
        return "printf '%s %s\\n' \(shellQuote(engine)) \(shellQuote(name)) > \"$1/container\"\n" + line + "\n"
    }

    /// The `run.sh` for `job` on a runner whose container engine is `engine`; nil for a job that runs on the host.
    static func script(for job: JobLaunch, engine: String?, gpusFromEnvironment: Bool = false) throws -> String? {
        guard let image = job.image, !image.isEmpty else { return nil }
        guard let engine else {
            throw RunnerError.job(jobId: job.jobId, reason: "its workflow has 'image: \(image)' but the runner has no container engine (docker or podman)")
        }
        return container(engine: engine, job: job, gpusFromEnvironment: gpusFromEnvironment)
    }
}
