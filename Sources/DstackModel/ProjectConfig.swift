/// `.dstack/config.yaml`: project-wide settings.
public struct ProjectConfig: Sendable, Hashable {
    /// The project's name in storage (default: the repository folder's name).
    public var project: String?
    /// Where runs are stored: a directory or `s3://bucket/prefix`.
    public var storage: String?
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`), for MinIO and friends.
    public var endpoint: String?
    /// The bucket's region.
    public var region: String?

    /// Creates a config.
    public init(project: String? = nil, storage: String? = nil, endpoint: String? = nil, region: String? = nil) {
        self.project = project
        self.storage = storage
        self.endpoint = endpoint
        self.region = region
    }

    /// The keys the file may hold.
    public static let keys = ["project", "storage", "endpoint", "region"]

    /// Parses the file strictly (unknown keys are errors).
    public static func parse(_ source: SourceFile) throws(ConfigError) -> ProjectConfig {
        var reader = NodeReader(source)
        var config = ProjectConfig()
        do {
            if let root = try YAMLReader.parse(source), let pairs = reader.mapping(root, what: "config.yaml", allowed: keys) {
                for (key, _, value) in pairs {
                    let text = reader.string(value, what: "'\(key)'")?.value
                    switch key {
                    case "project":
                        config.project = text
                        if let t = text, !isValidProjectName(t) {
                            reader.error(value.mark, "project name '\(t)' must hold only letters, digits, '.', '_' and '-'")
                        }
                    case "storage": config.storage = text
                    case "endpoint": config.endpoint = text
                    default: config.region = text
                    }
                }
            }
        } catch {
            reader.diagnostics.append(error)
        }
        guard reader.diagnostics.isEmpty else { throw ConfigError(reader.diagnostics) }
        return config
    }
}

/// True for a name usable as a storage folder: letters, digits, `.`, `_`, `-`, not starting with `.`.
public func isValidProjectName(_ name: String) -> Bool {
    guard let first = name.first, first != "." else { return false }
    return name.allSatisfy { $0.isLetter || $0.isNumber || $0 == "." || $0 == "_" || $0 == "-" }
}
