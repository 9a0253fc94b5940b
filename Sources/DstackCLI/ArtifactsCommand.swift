import ArgumentParser
import DstackCore
import DstackModel
import Foundation

extension DstackCommand {
    struct Artifacts: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List or download what a run produced.",
            subcommands: [List.self, Download.self]
        )

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List a run's artifact files (RUN, or :TAG).")

            @OptionGroup var global: GlobalOptions

            @Argument(help: "The run, or :TAG.")
            var run: String

            @Flag(help: "Print a JSON array of {\"job\", \"path\", \"size\"}.")
            var json = false

            func run() async throws {
                let workspace = try global.workspace()
                let record = try await workspace.run(nameOrTag: run)
                let entries = try await workspace.artifacts(of: record)
                if json {
                    try Terminal.json(entries)
                    return
                }
                if entries.isEmpty {
                    Terminal.out("run \(record.name) stored no artifacts")
                    return
                }
                Terminal.out(Terminal.table(["JOB", "PATH", "SIZE"], entries.map { [$0.job, $0.path, formatBytes($0.size)] }))
            }
        }

        struct Download: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Download a run's artifacts, keeping their paths and modes.")

            @OptionGroup var global: GlobalOptions

            @Argument(help: "The run, or :TAG.")
            var run: String

            @Option(name: .shortAndLong, help: ArgumentHelp("Where to put them (default: ./RUN).", valueName: "dir"))
            var output: String?

            func run() async throws {
                let workspace = try global.workspace()
                let record = try await workspace.run(nameOrTag: run)
                let directory = URL(fileURLWithPath: output ?? record.name)
                let entries = try await workspace.downloadArtifacts(of: record, into: directory)
                Terminal.out("downloaded \(entries.count) file\(entries.count == 1 ? "" : "s") (\(formatBytes(entries.reduce(0) { $0 + $1.size }))) to \(directory.path)")
            }
        }
    }

    struct Tags: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Name a run's results, for 'depends-on: [workflow:TAG]'.",
            subcommands: [List.self, Add.self, Delete.self],
            defaultSubcommand: List.self
        )

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List tags.")
            @OptionGroup var global: GlobalOptions
            @Flag(help: "Print JSON.") var json = false

            func run() async throws {
                let workspace = try global.workspace()
                let tags = try await workspace.store.tags()
                if json { try Terminal.json(tags); return }
                if tags.isEmpty { Terminal.out("no tags; add one with 'dstack tags add TAG RUN'"); return }
                Terminal.out(Terminal.table(["TAG", "RUN", "CREATED"], tags.map { [$0.tag, $0.run, Terminal.ago($0.createdAt)] }))
            }
        }

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Tag a finished run (moves the tag if it exists).")
            @OptionGroup var global: GlobalOptions
            @Argument(help: "The tag.") var tag: String
            @Argument(help: "The run.") var run: String

            func run() async throws {
                try await global.workspace().addTag(tag, run: run)
                Terminal.out("tagged \(run) as '\(tag)'")
            }
        }

        struct Delete: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Remove a tag (the run stays).")
            @OptionGroup var global: GlobalOptions
            @Argument(help: "The tag.") var tag: String

            func run() async throws {
                try await global.workspace().deleteTag(tag)
                Terminal.out("deleted tag '\(tag)'")
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a finished run's records and logs.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The run.") var run: String

        func run() async throws {
            try await global.workspace().delete(run)
            Terminal.out("deleted run \(run)")
        }
    }

    struct Prune: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete every finished, untagged run, and stored results no remaining run uses."
        )
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let result = try await global.workspace().prune()
            Terminal.out("deleted \(result.runs.count) run\(result.runs.count == 1 ? "" : "s") and \(result.artifacts) stored result\(result.artifacts == 1 ? "" : "s")")
        }
    }
}
