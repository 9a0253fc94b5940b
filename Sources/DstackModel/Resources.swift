/// What a workflow asks of a runner, as written (each value may be a template).
public struct ResourceSpec: Sendable, Hashable {
    /// GPU count (`gpu: 1` or `gpu: {count: 1}`).
    public var gpuCount: Located<String>?
    /// GPU model name to match (`A100`).
    public var gpuName: Located<String>?
    /// Memory per GPU (`40GB`).
    public var gpuMemory: Located<String>?
    /// CPU count.
    public var cpu: Located<String>?
    /// Memory (`16GB`).
    public var memory: Located<String>?

    /// Creates an empty spec (no requirement).
    public init(gpuCount: Located<String>? = nil, gpuName: Located<String>? = nil, gpuMemory: Located<String>? = nil,
                cpu: Located<String>? = nil, memory: Located<String>? = nil) {
        self.gpuCount = gpuCount
        self.gpuName = gpuName
        self.gpuMemory = gpuMemory
        self.cpu = cpu
        self.memory = memory
    }

    var templatedValues: [Located<String>] {
        [gpuCount, gpuName, gpuMemory, cpu, memory].compactMap { $0 }
    }
}

/// Resolved requirements of a job: numbers, ready for matching against runners.
public struct Resources: Sendable, Hashable, Codable {
    /// GPUs needed.
    public var gpu: Int
    /// A GPU model the GPUs must match (substring, case-insensitive), if any.
    public var gpuName: String?
    /// Minimum memory per GPU, in bytes.
    public var gpuMemory: Int64?
    /// CPUs needed.
    public var cpu: Int?
    /// Memory needed, in bytes.
    public var memory: Int64?

    /// Creates resolved requirements.
    public init(gpu: Int = 0, gpuName: String? = nil, gpuMemory: Int64? = nil, cpu: Int? = nil, memory: Int64? = nil) {
        self.gpu = gpu
        self.gpuName = gpuName
        self.gpuMemory = gpuMemory
        self.cpu = cpu
        self.memory = memory
    }

    /// Resolves a spec with variable values, or explains which value is wrong and where.
    public static func resolve(_ spec: ResourceSpec, values: [String: String], sources: SourceSet) throws(ConfigError) -> Resources {
        var out = Resources()
        func text(_ l: Located<String>) throws(ConfigError) -> String {
            do { return try Template(l.value, declared: Set(values.keys), shell: false).render(values).trimmingWhitespace() } catch {
                throw ConfigError([sources.diagnostic(l, error.message)])
            }
        }
        if let g = spec.gpuCount {
            let t = try text(g)
            guard let n = Int(t), n >= 0 else {
                throw ConfigError([sources.diagnostic(g, "gpu count must be a whole number, got '\(t)'")])
            }
            out.gpu = n
        }
        if let n = spec.gpuName { out.gpuName = try text(n) }
        if let m = spec.gpuMemory {
            let t = try text(m)
            guard let bytes = parseByteSize(t) else {
                throw ConfigError([sources.diagnostic(m, "gpu memory must be a size like 40GB, got '\(t)'")])
            }
            out.gpuMemory = bytes
            if out.gpu == 0 { out.gpu = 1 }
        }
        if out.gpuName != nil, out.gpu == 0 { out.gpu = 1 }
        if let c = spec.cpu {
            let t = try text(c)
            guard let n = Int(t), n >= 1 else {
                throw ConfigError([sources.diagnostic(c, "cpu must be a whole number of CPUs (1 or more), got '\(t)'")])
            }
            out.cpu = n
        }
        if let m = spec.memory {
            let t = try text(m)
            guard let bytes = parseByteSize(t) else {
                throw ConfigError([sources.diagnostic(m, "memory must be a size like 16GB or 512MB, got '\(t)'")])
            }
            out.memory = bytes
        }
        return out
    }
}

/// Parses sizes like `16GB`, `512MB`, `1.5GiB`, `2048` (bytes); units are powers of 1024, as `free` shows them.
public func parseByteSize(_ text: String) -> Int64? {
    let t = text.trimmingWhitespace().uppercased()
    let k = 1024.0
    let units: [(String, Double)] = [("TIB", k * k * k * k), ("GIB", k * k * k), ("MIB", k * k), ("KIB", k),
                                     ("TB", k * k * k * k), ("GB", k * k * k), ("MB", k * k), ("KB", k),
                                     ("T", k * k * k * k), ("G", k * k * k), ("M", k * k), ("K", k), ("B", 1)]
    for (suffix, factor) in units where t.hasSuffix(suffix) {
        // `Double` also reads "inf" and "nan", and a huge number would trap when converted: refuse both.
        guard let n = Double(String(t.dropLast(suffix.count)).trimmingWhitespace()), n >= 0,
              n * factor < Double(Int64.max) else { return nil }
        return Int64(n * factor)
    }
    guard let n = Int64(t), n >= 0 else { return nil }
    return n
}

/// Formats bytes for people: `1.5 GB`, `12 MB`, `900 B`.
public func formatBytes(_ bytes: Int64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
    if unit == 0 { return "\(bytes) B" }
    return value >= 10 ? "\(Int(value.rounded())) \(units[unit])" : "\((value * 10).rounded() / 10) \(units[unit])"
}
