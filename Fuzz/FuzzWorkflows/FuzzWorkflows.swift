import DstackModel
import DstackYAML

/// libFuzzer entry point: the input is a workflows file, then (after a NUL byte, if any) a variables file.
/// Loading must end in a project or a `ConfigError`, never a crash; every command of a loaded project is
/// rendered for the shell with hostile values.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWorkflows(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let parts = bytes.split(separator: 0, maxSplits: 1, omittingEmptySubsequences: false)
    let workflows = String(decoding: parts[0], as: UTF8.self)
    let variables = parts.count > 1 ? String(decoding: parts[1], as: UTF8.self) : nil
    guard let project = try? Project.load(
        workflows: SourceFile(displayName: ".dstack/workflows.yaml", text: workflows),
        variables: variables.map { SourceFile(displayName: ".dstack/variables.yaml", text: $0) }) else { return 0 }
    for workflow in project.workflows {
        for command in workflow.commands {
            guard let template = try? Template(command.value) else { continue }
            var values: [String: String] = [:]
            for name in template.variables { values[name] = "'\"$(x)`y`\\\n)}; esac" }
            _ = try? template.renderShell(values)
        }
    }
    _ = try? ProjectConfig.parse(SourceFile(displayName: ".dstack/config.yaml", text: workflows))
    return 0
}
