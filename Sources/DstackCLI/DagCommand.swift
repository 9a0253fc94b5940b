import ArgumentParser
import DstackCore
import DstackModel
import DstackRunners
import Foundation

extension DstackCommand {
    struct Dag: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the plan of a workflow, with what is cached, without running it."
        )

        enum Format: String, ExpressibleByArgument, CaseIterable {
            case text, dot, mermaid
        }

        @OptionGroup var global: GlobalOptions

        @Argument(help: "The workflow.")
        var workflow: String

        @Option(help: "text, dot (Graphviz) or mermaid.")
        var format: Format = .text

        @Flag(name: .customLong("no-cache"), help: "Plan as 'dstack run --no-cache' would.")
        var noCache = false

        func run() async throws {
            let workspace = try global.workspace()
            let plan = try await workspace.dag(RunRequest(workflow: workflow, noCache: noCache))
            Terminal.out(DagRenderer.render(plan, format: format))
        }
    }

    struct Runners: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Probe every runner at once: reachable or why not, OS, CPUs, memory, GPUs, engine, disk, busy slots.",
            discussion: "An unreachable runner is reported after its connect timeout without holding up the others."
        )

        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print a JSON array, one object per runner.") var json = false

        struct Entry: Encodable {
            let name: String
            let via: [String]
            let reachable: Bool
            let error: String?
            let info: RunnerInfo?

            func encode(to encoder: Encoder) throws {
                var c = encoder.container(keyedBy: CodingKeys.self)
                try c.encode(name, forKey: .name)
                try c.encode(via, forKey: .via)
                try c.encode(reachable, forKey: .reachable)
                try c.encode(error, forKey: .error)
                try c.encode(info?.os, forKey: .os)
                try c.encode(info?.cpus, forKey: .cpus)
                try c.encode(info?.memory, forKey: .memory)
                try c.encode(info?.gpus, forKey: .gpus)
                try c.encode(info?.engine, forKey: .engine)
                try c.encode(info?.diskFree, forKey: .diskFree)
                try c.encode(info?.maxJobs, forKey: .maxJobs)
                try c.encode(info?.labels, forKey: .labels)
                try c.encode(info?.locks, forKey: .busy)
                try c.encode(info?.pythons, forKey: .pythons)
                try c.encode(info?.slurm, forKey: .slurm)
            }

            enum CodingKeys: String, CodingKey {
                case name, via, reachable, error, os, cpus, memory, gpus, engine, diskFree, maxJobs, labels, busy, pythons, slurm
            }
        }

        func run() async throws {
            try await global.withWorkspace { workspace in
                let entries = await workspace.probePool().map { runner, result in
                    switch result {
                    case .success(let info): return Entry(name: runner.name, via: workspace.via(runner), reachable: true, error: nil, info: info)
                    case .failure(let error): return Entry(name: runner.name, via: workspace.via(runner), reachable: false, error: "\(error)", info: nil)
                    }
                }
                if json { try Terminal.json(entries); return }
                var rows: [[String]] = []
                for e in entries {
                    let name = e.via.isEmpty ? e.name : "\(e.name) via \(e.via.joined(separator: ","))"
                    guard let info = e.info else {
                        rows.append([name, "unreachable", e.error ?? "", "", "", "", "", "", ""])
                        continue
                    }
                    var gpus = info.gpus.isEmpty ? "-" : info.gpus.map { "\($0.index):\($0.name) \(formatBytes($0.memory))" }.joined(separator: ", ")
                    var busy = info.locks.filter { $0.hasPrefix("slot-") }.count
                    if let slurm = info.slurm {
                        // A cluster: the largest node's resources, GPUs as GRES, this user's jobs in the queue.
                        gpus = info.gpus.isEmpty ? "-" : "\(info.gpus.count)x \(info.gpus[0].name) (GRES)"
                        busy = slurm.queued.count
                    }
                    rows.append([name, info.slurm == nil ? "ok" : "ok (slurm)", info.os, String(info.cpus), formatBytes(info.memory),
                                 gpus, info.engine ?? "-", info.diskFree.map(formatBytes) ?? "-", "\(busy)/\(info.maxJobs)"])
                }
                Terminal.out(Terminal.table(["RUNNER", "STATUS", "OS", "CPUS", "MEMORY", "GPUS", "ENGINE", "DISK FREE", "BUSY"], rows))
                for e in entries where e.info?.locks.isEmpty == false {
                    for lock in e.info!.locks { Terminal.out("  \(e.name): \(lock)") }
                }
                for e in entries {
                    if let slurm = e.info?.slurm { Terminal.out(Self.describe(slurm, runner: e.name)) }
                }
            }
        }
    }
}

/// Draws a plan as text, Graphviz dot or Mermaid; linear in jobs + edges, so 10,000-job plans print quickly.
enum DagRenderer {
    static func render(_ plan: Plan, format: DstackCommand.Dag.Format) -> String {
        var lines: [String] = []
        switch format {
        case .text:
            let width = min(40, plan.jobs.map(\.workflow.count).max() ?? 0)
            for job in plan.jobs {
                var line = job.workflow
                if job.workflow.count < width { line += String(repeating: " ", count: width - job.workflow.count) }
                let deps = job.dependsOn + job.tagDependencies.map { "\($0.workflow):\($0.tag) (run \($0.run))" }
                if deps.isEmpty {
                    line += job.cached != nil ? "  cached" : "  run"
                } else {
                    line += (job.cached != nil ? "  cached" : "  run   ") + "  <- " + deps.joined(separator: ", ")
                }
                lines.append(line)
            }
            let cached = plan.jobs.filter { $0.cached != nil }.count
            lines.append("\(plan.jobs.count) job\(plan.jobs.count == 1 ? "" : "s"), \(cached) cached, \(plan.jobs.count - cached) to run")
        case .dot:
            lines.append("digraph \"\(plan.target)\" {")
            lines.append("  rankdir=LR;")
            lines.append("  node [shape=box];")
            for job in plan.jobs {
                let attrs = job.cached != nil ? ", style=filled, fillcolor=lightgrey" : ""
                lines.append("  \"\(job.workflow)\" [label=\"\(job.workflow)\(job.cached != nil ? "\\n(cached)" : "")\"\(attrs)];")
                for dep in job.dependsOn { lines.append("  \"\(dep)\" -> \"\(job.workflow)\";") }
                for tag in job.tagDependencies {
                    let name = "\(tag.workflow):\(tag.tag)"
                    lines.append("  \"\(name)\" [shape=note, label=\"\(name)\\n(run \(tag.run))\"];")
                    lines.append("  \"\(name)\" -> \"\(job.workflow)\" [style=dashed];")
                }
            }
            lines.append("}")
        case .mermaid:
            lines.append("graph LR")
            func id(_ s: String) -> String { s.map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined() }
            for job in plan.jobs {
                lines.append("  \(id(job.workflow))[\"\(job.workflow)\(job.cached != nil ? " (cached)" : "")\"]\(job.cached != nil ? ":::cached" : "")")
                for dep in job.dependsOn { lines.append("  \(id(dep)) --> \(id(job.workflow))") }
                for tag in job.tagDependencies {
                    let name = "\(tag.workflow):\(tag.tag)"
                    lines.append("  \(id(name))>\"\(name) (run \(tag.run))\"] -.-> \(id(job.workflow))")
                }
            }
            lines.append("  classDef cached fill:#ddd,stroke:#999")
        }
        return lines.joined(separator: "\n")
    }
}

extension DstackCommand.Runners {
    /// A Slurm runner's partitions, nodes and queued jobs, one indented line each, under the table.
    static func describe(_ cluster: SlurmCluster, runner: String) -> String {
        var lines: [String] = []
        for p in cluster.partitions {
            lines.append("  \(runner): partition \(p.name) \(p.availability), \(p.nodes) node\(p.nodes == 1 ? "" : "s"), time limit \(p.timeLimit)")
        }
        let states = Dictionary(grouping: cluster.nodes, by: { $0.state }).map { "\($0.value.count) \($0.key)" }.sorted()
        lines.append("  \(runner): nodes \(states.isEmpty ? "none" : states.joined(separator: ", "))")
        for node in cluster.nodes {
            lines.append("  \(runner):   \(node.name) \(node.state), \(node.cpus) CPUs, \(formatBytes(node.memoryMB << 20))"
                         + (node.gres == "(null)" ? "" : ", \(node.gres)"))
        }
        for job in cluster.queued { lines.append("  \(runner): queued \(job)") }
        return lines.joined(separator: "\n")
    }
}
