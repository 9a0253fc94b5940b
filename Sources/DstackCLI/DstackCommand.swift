import ArgumentParser
import DstackCore
import DstackModel
import DstackRunners
import DstackStorage
import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The `dstack` command: a namespace for the subcommands.
public struct DstackCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "dstack",
        abstract: "Run ML workflows on machines you already own, over SSH, with no server.",
        discussion: """
        Workflows live in .dstack/workflows.yaml and their variables in .dstack/variables.yaml. Runs, logs, \
        artifacts, the cache and tags are kept in a storage directory (--storage, $DSTACK_STORAGE, 'storage:' in \
        .dstack/config.yaml, default ~/.dstack/storage). With no hosts inventory, jobs run on this machine.

        Exit status: 0 success, 1 the run failed, 2 invalid configuration, 3 infrastructure (storage or runners \
        unusable), 64 usage.
        """,
        version: dstackVersion,
        subcommands: [Init.self, Run.self, Status.self, Logs.self, Stop.self, Attach.self, Artifacts.self,
                      Tags.self, Dag.self, Runners.self, Delete.self, Prune.self, Secrets.self]
    )

    public init() {}

    /// Parses the command line, runs the command and exits with the status DESIGN.md §5 lists.
    public static func main() async {
        #if canImport(Glibc)
        // Transfer buffers (8-64 MB S3 parts, 1 MB copies) are mmapped and given back as soon as they are freed;
        // glibc would otherwise keep freed ones in its arenas, and a 1 GB upload peaked above 150 MB.
        // mallopt is not in the Glibc module (malloc.h); M_MMAP_THRESHOLD is -3 in glibc.
        typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
        if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") {
            _ = unsafeBitCast(symbol, to: Mallopt.self)(-3, 1 << 20)
        }
        #endif
        do {
            if let help = try await Run.workflowHelp(Array(CommandLine.arguments.dropFirst())) {
                Terminal.out(help)
                Foundation.exit(0)
            }
            var command = try parseAsRoot(Run.hoistingOptions(movingGlobalOptions(Array(CommandLine.arguments.dropFirst()))))
            if globalOptions(of: command)?.verbose == true {
                // Before any logger exists: storage and runners make theirs when the workspace opens.
                LoggingSystem.bootstrap { label in
                    var handler = StreamLogHandler.standardError(label: label)
                    handler.logLevel = .debug
                    return handler
                }
            }
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            exit(withError: nil)
        } catch let error as ExitStatus {
            Foundation.exit(error.code)
        } catch {
            if let (message, code) = describe(error) {
                Terminal.error(message)
                Foundation.exit(code)
            }
            exit(withError: error)
        }
    }

    /// The message and exit status for the errors dstack itself raises; nil for ArgumentParser's own.
    static func describe(_ error: Error) -> (String, Int32)? {
        switch error {
        case let e as ConfigError: return (e.diagnostics.isEmpty ? "error: \(e.messages.joined(separator: "\nerror: "))" : e.description, 2)
        case let e as StorageError:
            if case .unusable = e { return ("error: \(e)", 3) }
            return ("error: \(e)", 1)
        case let e as RunnerError:
            if case .unavailable = e { return ("error: \(e)", 3) }
            return ("error: \(e)", 1)
        case let e as CoreError:
            switch e {
            case .infrastructure: return ("error: \(e)", 3)
            case .notFound, .invalid: return ("error: \(e)", 64)
            case .io: return ("error: \(e)", 1)
            }
        case let e as DecodingError: return ("error: a stored record is unreadable: \(e)", 3)
        default: return nil
        }
    }
}

/// The options every command shares, as parsed into `command` (nil for the root, which has none).
func globalOptions(of command: any ParsableCommand) -> GlobalOptions? {
    for child in Mirror(reflecting: command).children {
        if let group = child.value as? OptionGroup<GlobalOptions> { return group.wrappedValue }
    }
    return nil
}

/// Lets global options stand before the subcommand (`dstack -C dir run train`), where ArgumentParser expects them
/// after it, by moving them to the end of the line.
func movingGlobalOptions(_ arguments: [String]) -> [String] {
    let arity = ["-C": 1, "--storage": 1, "--hosts": 1, "-v": 0, "--verbose": 0, "--accept-new-host-keys": 0]
    var leading: [String] = []
    var i = 0
    while i < arguments.count {
        let name = arguments[i].split(separator: "=", maxSplits: 1).first.map(String.init) ?? arguments[i]
        guard let n = arity[name] else { break }
        leading.append(arguments[i])
        if n == 1, !arguments[i].contains("="), i + 1 < arguments.count {
            leading.append(arguments[i + 1])
            i += 1
        }
        i += 1
    }
    if leading.isEmpty { return arguments }
    return Array(arguments[i...]) + leading
}

/// Ends the program with a given status without printing anything more.
struct ExitStatus: Error {
    let code: Int32
}

/// Options every command shares.
struct GlobalOptions: ParsableArguments {
    @Option(name: .customShort("C"), help: ArgumentHelp("Project directory; .dstack/ is found upward from it, like git.", valueName: "dir"))
    var directory: String?

    @Option(help: ArgumentHelp("Where runs are stored: a directory (or s3://bucket/prefix).", valueName: "path-or-url"))
    var storage: String?

    @Option(help: ArgumentHelp("Hosts inventory (default: $DSTACK_HOSTS, .dstack/hosts.yaml, ~/.dstack/hosts.yaml).", valueName: "file"))
    var hosts: String?

    @Flag(name: .customLong("accept-new-host-keys"), help: "Record the host keys of runners not yet in ~/.ssh/known_hosts (a changed key is always refused).")
    var acceptNewHostKeys = false

    @Flag(name: .shortAndLong, help: "Log what is being done to storage and runners (each S3 request, SSH connection...) on stderr.")
    var verbose = false

    func workspace(maxJobs: Int? = nil) throws -> Workspace {
        try Workspace.open(Workspace.Options(directory: directory, storage: storage, hosts: hosts,
                                             acceptNewHostKeys: acceptNewHostKeys), maxJobs: maxJobs)
    }

    /// Opens the workspace, runs `body`, and closes the runners' connections whatever happens.
    func withWorkspace<T>(maxJobs: Int? = nil, _ body: (Workspace) async throws -> T) async throws -> T {
        let workspace = try workspace(maxJobs: maxJobs)
        do {
            let result = try await body(workspace)
            await workspace.close()
            return result
        } catch {
            await workspace.close()
            throw error
        }
    }

    /// The same options as arguments, to hand to a detached coordinator.
    var arguments: [String] {
        var out: [String] = []
        if let directory { out += ["-C", URL(fileURLWithPath: directory).standardizedFileURL.path] }
        if let storage { out += ["--storage", storage] }
        if let hosts { out += ["--hosts", URL(fileURLWithPath: hosts).standardizedFileURL.path] }
        if acceptNewHostKeys { out.append("--accept-new-host-keys") }
        return out
    }
}
