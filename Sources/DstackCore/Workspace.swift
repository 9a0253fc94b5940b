import DstackModel
import DstackRunners
import DstackStorage
import Foundation

/// Where a command runs: the project directory, its settings, its storage and its runner.
public struct Workspace: Sendable {
    /// The directory holding `.dstack/`.
    public let root: URL
    /// `.dstack/config.yaml`, or defaults.
    public let config: ProjectConfig
    /// The project's name in storage.
    public let projectName: String
    /// The project's records.
    public let store: RunStore
    /// The local runner: where jobs run when there is no inventory, and where submitted code is kept.
    public let localRunner: LocalRunner
    /// The runners jobs go to: the inventory's SSH runners, or the local runner alone.
    public let runners: [any Runner]
    /// The environment the command runs in.
    public let environment: [String: String]

    /// Global options every command shares.
    public struct Options: Sendable {
        /// `-C DIR`: where to look for `.dstack/` (upward).
        public var directory: String?
        /// `--storage`.
        public var storage: String?
        /// `--hosts`.
        public var hosts: String?
        /// The process environment.
        public var environment: [String: String]
        /// `--accept-new-host-keys`: record the keys of runners not yet in known_hosts (changed keys are refused).
        public var acceptNewHostKeys: Bool

        /// Creates options.
        public init(directory: String? = nil, storage: String? = nil, hosts: String? = nil,
                    environment: [String: String] = ProcessInfo.processInfo.environment, acceptNewHostKeys: Bool = false) {
            self.directory = directory
            self.storage = storage
            self.hosts = hosts
            self.environment = environment
            self.acceptNewHostKeys = acceptNewHostKeys
        }
    }

    /// Finds the project from `options.directory` (or the current directory) upward and opens its storage.
    public static func open(_ options: Options, maxJobs: Int? = nil) throws -> Workspace {
        let start = URL(fileURLWithPath: options.directory ?? FileManager.default.currentDirectoryPath).standardizedFileURL
        guard let root = findRoot(from: start) else {
            throw ConfigError(message: "no .dstack/ directory in \(start.path) or any folder above it; run 'dstack init' to create one, or pass -C DIR")
        }
        let config = try loadConfig(root)
        let projectName = config.project ?? sanitizedProjectName(root.lastPathComponent)
        let home = options.environment["HOME"] ?? NSHomeDirectory()
        let spec = options.storage ?? options.environment["DSTACK_STORAGE"] ?? config.storage ?? "\(home)/.dstack/storage"
        let storage = try openStorage(spec, root: root, home: home, endpoint: config.endpoint, environment: options.environment)
        let runnerDir = options.environment["DSTACK_RUNNER_DIR"].map { URL(fileURLWithPath: $0) }
            ?? URL(fileURLWithPath: home).appendingPathComponent(".dstack/runner")
        let local = LocalRunner(baseDirectory: runnerDir, maxJobs: maxJobs ?? ProcessInfo.processInfo.activeProcessorCount)
        let ssh = try RunnerInventory.load(options, root: root, home: home, localObjects: local.objects)
        if let ssh, ssh.count > 64 { OpenFileLimit.raise() }  // a socket per runner
        return Workspace(root: root, config: config, projectName: projectName,
                         store: RunStore(storage: storage, project: projectName), localRunner: local,
                         runners: ssh ?? [local], environment: options.environment)
    }

    /// Where the file hashes of this project's last snapshot are kept (with the local runner, one file per project
    /// directory), so an unchanged file is not read again.
    var snapshotCache: URL {
        let digest = root.path.utf8.reduce(UInt64(14695981039346656037)) { ($0 ^ UInt64($1)) &* 1099511628211 }
        return localRunner.baseDirectory.appendingPathComponent("snapshot-cache/\(String(digest, radix: 16)).json")
    }

    /// Closes every runner's connection; commands call it before they return.
    public func close() async {
        for runner in runners { await runner.disconnect() }
    }

    static func findRoot(from start: URL) -> URL? {
        var dir = start
        while true {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent(".dstack").path, isDirectory: &isDirectory),
               isDirectory.boolValue {
                return dir
            }
            let parent = dir.deletingLastPathComponent()
            if parent.path == dir.path { return nil }
            dir = parent
        }
    }

    static func loadConfig(_ root: URL) throws -> ProjectConfig {
        let url = root.appendingPathComponent(".dstack/config.yaml")
        guard let text = try? String(contentsOf: url, encoding: .utf8) else { return ProjectConfig() }
        return try ProjectConfig.parse(SourceFile(displayName: ".dstack/config.yaml", text: text))
    }

    static func sanitizedProjectName(_ name: String) -> String {
        let cleaned = String(name.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." ? $0 : "-" })
        return isValidProjectName(cleaned) ? cleaned : "project"
    }

    static func openStorage(_ spec: String, root: URL, home: String, endpoint: String?,
                            environment: [String: String]) throws -> any Storage {
        if spec.hasPrefix("s3://") {
            return try S3Storage(url: spec, endpoint: endpoint, environment: environment,
                                 homeDirectory: URL(fileURLWithPath: home))
        }
        var path = spec
        if path.hasPrefix("~/") { path = home + path.dropFirst(1) }
        let url = path.hasPrefix("/") ? URL(fileURLWithPath: path) : root.appendingPathComponent(path)
        return try DirectoryStorage(root: url)
    }

    /// Reads and validates `.dstack/workflows.yaml` and `.dstack/variables.yaml`.
    public func loadProject() throws -> Project {
        let workflowsURL = root.appendingPathComponent(".dstack/workflows.yaml")
        guard let text = try? String(contentsOf: workflowsURL, encoding: .utf8) else {
            throw ConfigError(message: "cannot read .dstack/workflows.yaml in \(root.path); run 'dstack init' to create one")
        }
        let variablesURL = root.appendingPathComponent(".dstack/variables.yaml")
        let variables = (try? String(contentsOf: variablesURL, encoding: .utf8)).map {
            SourceFile(displayName: ".dstack/variables.yaml", text: $0)
        }
        return try Project.load(workflows: SourceFile(displayName: ".dstack/workflows.yaml", text: text), variables: variables)
    }
}
