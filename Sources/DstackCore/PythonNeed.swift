import DstackModel
import DstackRunners

/// The Python a job needs from its runner: an interpreter version on the host, unless the runner has a container
/// engine and the job has a default image to run in instead.
public struct PythonNeed: Sendable, Hashable, Codable {
    /// The `python3.X` version asked for, or nil for any `python3`.
    public var version: String?
    /// The image it runs in where the runner has a container engine (a GPU job with no `image:`), if any.
    public var image: String?

    /// Creates a need.
    public init(version: String?, image: String?) {
        self.version = version
        self.image = image
    }

    /// The words for it in messages: `Python 3.10`, `Python 3`.
    public var spelled: String { "Python \(version ?? "3")" }
}

extension PlannedJob {
    /// Why the runner described by `info` can never run this job (resources, labels, engine, Python), or nil.
    public func misfit(on info: RunnerInfo) -> String? {
        if let base = info.misfit(resources, labels: labels, needsEngine: launch.image != nil) { return base }
        guard let python, launch.image == nil, python.image == nil || info.engine == nil else { return nil }
        if let version = python.version, !info.pythons.contains(version) {
            let has = info.pythons.isEmpty ? "none" : info.pythons.joined(separator: ", ")
            return "\(python.spelled) (python\(version) on its PATH; it has \(has))"
        }
        if python.version == nil, info.pythons.isEmpty { return "\(python.spelled) (python3 on its PATH; it has none)" }
        return nil
    }

    /// What to start on the runner described by `info`: in the job's default image where that runner has a
    /// container engine, as it was planned otherwise.
    public func launch(on info: RunnerInfo) -> JobLaunch {
        var launch = self.launch
        if launch.image == nil, info.engine != nil, let image = python?.image { launch.image = image }
        return launch
    }
}
