import DstackModel
import Testing

/// Loads `workflows` (and `variables`, if given) as `.dstack/workflows.yaml` and `.dstack/variables.yaml`.
func load(_ workflows: String, variables: String? = nil) throws(ConfigError) -> Project {
    try Project.load(
        workflows: SourceFile(displayName: ".dstack/workflows.yaml", text: workflows),
        variables: variables.map { SourceFile(displayName: ".dstack/variables.yaml", text: $0) })
}

/// The whole rendered error for files that must not load; records an issue (and returns "") when they load.
func diagnostics(_ workflows: String, variables: String? = nil,
                 sourceLocation: SourceLocation = #_sourceLocation) -> String {
    do {
        let project = try load(workflows, variables: variables)
        Issue.record("expected a configuration error, loaded \(project.workflowNames)", sourceLocation: sourceLocation)
        return ""
    } catch {
        return error.description
    }
}

/// Loads files that must be valid; records the whole error as an issue when they are not.
func loaded(_ workflows: String, variables: String? = nil,
            sourceLocation: SourceLocation = #_sourceLocation) -> Project? {
    do {
        return try load(workflows, variables: variables)
    } catch {
        Issue.record("expected the files to load:\n\(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// Files that must not load, and the whole error they must produce.
struct Golden: Sendable, CustomTestStringConvertible {
    /// What the case shows, as the test report names it.
    let name: String
    /// The text of `.dstack/workflows.yaml`.
    let workflows: String
    /// The text of `.dstack/variables.yaml`, if the case has one.
    var variables: String? = nil
    /// The whole rendered `ConfigError`.
    let expected: String

    var testDescription: String { name }
}
