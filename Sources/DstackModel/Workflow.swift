/// One workflow of `.dstack/workflows.yaml`, as written (values are templates, substituted at plan time).
public struct Workflow: Sendable, Hashable {
    /// The workflow's name, unique in the file.
    public var name: Located<String>
    /// A line of help shown by `dstack run WF --help`.
    public var help: String?
    /// A container image to run the commands in, where a runner has an engine.
    public var image: Located<String>?
    /// Workflows (and tagged runs) this one needs first.
    public var dependsOn: [Dependency]
    /// Shell commands, run in order by `/bin/sh -e`.
    public var commands: [Located<String>]
    /// Paths, relative to the repository root, stored when the job succeeds.
    public var artifacts: [Located<String>]
    /// Extra environment variables, in the order written.
    public var environment: [EnvironmentEntry]
    /// Where the commands start, relative to the repository root.
    public var workingDir: Located<String>?
    /// What the job needs from a runner.
    public var resources: ResourceSpec
    /// Labels a runner must carry to take the job.
    public var labels: [String] = []
    /// How many more times a job whose commands fail is run again (`retry: {limit: N}`).
    public var retryLimit: Int = 0
    /// The longest the job may run, in seconds (`max_duration: 2h`); it is stopped and failed past it.
    public var maxDuration: Double?
    /// The early-dstack provider written (`bash`, `docker`, `python`), if any.
    public var provider: Located<String>?
    /// The Python the job runs with (`requirements`, `python`, a `provider: python` script), if any.
    public var python: PythonSpec?
    /// Secrets the job receives as environment variables, by name (`secrets: [HF_TOKEN]`); their values come
    /// from this machine's secret store when the run starts and are never written down.
    public var secrets: [Located<String>] = []
    /// What the job asks of Slurm when it runs on a runner of `kind: slurm` (ignored elsewhere).
    public var slurm: SlurmWorkflowOptions?

    /// Creates a workflow.
    public init(name: Located<String>, help: String? = nil, image: Located<String>? = nil,
                dependsOn: [Dependency] = [], commands: [Located<String>], artifacts: [Located<String>] = [],
                environment: [EnvironmentEntry] = [], workingDir: Located<String>? = nil,
                resources: ResourceSpec = ResourceSpec()) {
        self.name = name
        self.help = help
        self.image = image
        self.dependsOn = dependsOn
        self.commands = commands
        self.artifacts = artifacts
        self.environment = environment
        self.workingDir = workingDir
        self.resources = resources
    }

    /// Every templated string of the workflow, for checking references.
    public var templatedValues: [Located<String>] {
        var all: [Located<String>] = commands + artifacts + environment.map(\.value)
        if let image { all.append(image) }
        if let workingDir { all.append(workingDir) }
        all += resources.templatedValues
        all += python?.templatedValues ?? []
        return all
    }
}

/// One `environment:` entry.
public struct EnvironmentEntry: Sendable, Hashable {
    /// The variable's name.
    public var name: String
    /// Its value (a template).
    public var value: Located<String>

    /// Creates an entry.
    public init(name: String, value: Located<String>) {
        self.name = name
        self.value = value
    }
}

/// A `depends-on` item: a workflow of this file, or a tagged run of one (`train:best`).
public struct Dependency: Sendable, Hashable {
    /// The workflow depended on.
    public var workflow: String
    /// The tag whose stored results are reused, if any.
    public var tag: String?
    /// Where it was written.
    public var mark: Mark
    /// The file it was written in.
    public var file: String

    /// Creates a dependency.
    public init(workflow: String, tag: String?, mark: Mark, file: String) {
        self.workflow = workflow
        self.tag = tag
        self.mark = mark
        self.file = file
    }

    /// How it was written: `train` or `train:best`.
    public var spelled: String { tag.map { "\(workflow):\($0)" } ?? workflow }
}
