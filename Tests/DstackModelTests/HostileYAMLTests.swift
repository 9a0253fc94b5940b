import DstackModel
import DstackYAML
import Testing

/// Bad input is an error, never a crash (issue 16, point 9): a file nested 300,000 levels deep killed
/// `dstack dag` with SIGSEGV; a NUL character in a value cannot reach a command or a file name.
@Suite("Hostile YAML")
struct HostileYAMLTests {
    private func parse(_ text: String) throws(Diagnostic) -> Node? {
        try YAMLReader.parse(SourceFile(displayName: "t.yaml", text: text))
    }

    @Test("nesting deeper than 256 levels is a located error, not a crash", arguments: [
        ("flow lists", String(repeating: "[", count: 300_000) + String(repeating: "]", count: 300_000)),
        ("flow mappings", String(repeating: "{a: ", count: 300_000) + "1" + String(repeating: "}", count: 300_000)),
        ("block lists", (0..<2_000).map { String(repeating: " ", count: $0) + "-\n" }.joined()),
    ])
    func deepNesting(name: String, text: String) {
        do {
            _ = try parse(text)
            Issue.record("\(name): nesting 300,000 deep was accepted")
        } catch {
            #expect(error.message == "lists and mappings are nested more than 256 levels deep here; no dstack file needs that many, so look for a long run of '[', '{' or '- '")
        }
    }

    @Test("256 levels are still read")
    func deepestAllowed() throws {
        let text = String(repeating: "[", count: 255) + "x" + String(repeating: "]", count: 255)
        var node = try #require(try parse(text))
        var depth = 1
        while let inner = node.sequence?.first { node = inner; depth += 1 }
        #expect(depth == 256 && node.scalar == "x")
    }

    @Test("the error points at the first level too deep, in the workflows file")
    func locatedInAWorkflowsFile() {
        let text = "workflows:\n  - name: a\n    commands: " + String(repeating: "[", count: 300) + String(repeating: "]", count: 300) + "\n"
        let rendered = diagnostics(text)
        #expect(rendered.hasPrefix(".dstack/workflows.yaml:3:268: error: lists and mappings are nested more than 256 levels deep here"), "\(rendered)")
    }

    @Test("a NUL character in a value is refused where it stands", arguments: ["\\0", "\\x00", "\\u0000"])
    func nul(escape: String) {
        let rendered = diagnostics("workflows:\n  - name: a\n    commands: [\"echo a\(escape)b\"]\n")
        #expect(rendered == """
            .dstack/workflows.yaml:3:16: error: this value holds a NUL character (written \\0, \\x00 or \\u0000); no command, file name or environment variable can carry one, so remove it
                commands: ["echo a\(escape)b"]
                           ^
            """, "\(rendered)")
    }
}
