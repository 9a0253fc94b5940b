import DstackModel
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Python environments on runners (`Scripts/python-env.sh`): what a job's commands start with when its workflow
/// asks for a Python version or a requirements file, and what runners are probed for.
public enum PythonEnvironment {
    /// The script: shell functions that build, reuse and reap virtual environments under the runner's directory.
    public static let script = String(decoding: PackageResources.python_env_sh, as: UTF8.self)

    /// The text put ahead of a job's commands: the script, then one call whose arguments are quoted data.
    public static func prelude(version: String?, requirements: String?) -> String {
        script + "dstack_python_env " + shellQuote(version ?? "") + " " + shellQuote(requirements ?? "")
    }

    /// The image a `provider: python` job that asks for GPUs runs in where the runner has a container engine
    /// and the workflow names no image: early dstack's CUDA image for that Python version.
    public static func gpuImage(version: String?) -> String {
        "dstackai/python:\(version ?? "3.10")-cuda-11.1"
    }

    /// The `python3.X` versions found in the folders of `path` (a `PATH` value), sorted, each once, as the probe
    /// script lists them for SSH runners.
    public static func versions(onPath path: String?) -> [String] {
        var found = Set<String>()
        for folder in (path ?? "").split(separator: ":") {
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: String(folder)) else { continue }
            for name in names where name.hasPrefix("python") {
                let version = String(name.dropFirst("python".count))
                if isPythonVersion(version), access(String(folder) + "/" + name, X_OK) == 0 { found.insert(version) }
            }
        }
        return sortedVersions(found)
    }

    /// Versions in numeric order (3.9 before 3.10), each once.
    public static func sortedVersions<S: Sequence>(_ versions: S) -> [String] where S.Element == String {
        Set(versions).sorted { a, b in
            let x = a.split(separator: ".").compactMap { Int($0) }, y = b.split(separator: ".").compactMap { Int($0) }
            return x.lexicographicallyPrecedes(y)
        }
    }
}
