import DstackModel
import DstackRunners

/// One job of a plan: a workflow with everything substituted, ready to launch.
public struct PlannedJob: Sendable, Hashable, Codable {
    /// The workflow it runs.
    public var workflow: String
    /// The job's id (`<run>-<workflow>`).
    public var id: String
    /// Workflows of this run it waits for.
    public var dependsOn: [String]
    /// Tagged results it uses.
    public var tagDependencies: [TagDependency]
    /// What the runner starts.
    public var launch: JobLaunch
    /// Artifact paths (normalised, relative to the repository root).
    public var artifacts: [String]
    /// What it needs from a runner.
    public var resources: Resources
    /// Labels a runner must carry.
    public var labels: [String] = []
    /// Reruns allowed when the commands fail.
    public var retryLimit: Int = 0
    /// The longest the job may run, in seconds.
    public var maxDuration: Double?
    /// The variables it sees, resolved.
    public var variables: [String: String]
    /// Its cache key.
    public var cacheKey: String
    /// The stored result it reuses, when its key is already done in storage.
    public var cached: CacheEntry?
    /// The Python it needs (`requirements`, `python:`, `provider: python`), if any.
    public var python: PythonNeed? = nil
}

/// The jobs one run executes, in dependency order (every job after the jobs it depends on).
public struct Plan: Sendable, Hashable, Codable {
    /// The workflow asked for.
    public var target: String
    /// The jobs, dependencies first.
    public var jobs: [PlannedJob]

    /// The job for `workflow`.
    public func job(_ workflow: String) -> PlannedJob? {
        jobs.first { $0.workflow == workflow }
    }
}
