import DstackYAML
import Testing

/// `YAMLReader` builds the `Node` tree that the schema readers walk: kinds, plainness and 1-based marks.
@Suite("YAMLReader")
struct YAMLReaderTests {
    private func parse(_ text: String) throws -> Node? {
        try YAMLReader.parse(SourceFile(displayName: "t.yaml", text: text))
    }

    @Test("nodes carry 1-based line:column marks")
    func marks() throws {
        let root = try #require(try parse("# comment\nkey:\n  - one\n  - [two, three]\n"))
        let pair = try #require(root.mapping?.first)
        #expect(root.mark == Mark(line: 2, column: 1))
        #expect(pair.key.scalar == "key")
        let items = try #require(pair.value.sequence)
        #expect(items.map(\.mark) == [Mark(line: 3, column: 5), Mark(line: 4, column: 5)])
        let flow = try #require(items[1].sequence)
        #expect(flow.map(\.scalar) == ["two", "three"])
        #expect(flow.map(\.mark) == [Mark(line: 4, column: 6), Mark(line: 4, column: 11)])
    }

    @Test("a quoted '1' stays a string; a plain 1 is a number", arguments: [
        ("v: \"1\"", "a string", false), ("v: '1'", "a string", false), ("v: 1", "a number", true),
        ("v: yes", "a boolean", true), ("v: ~", "null", true), ("v:", "null", true), ("v: [1]", "a list", false),
        ("v: {a: 1}", "a mapping", false),
    ])
    func typeDescriptions(text: String, type: String, plain: Bool) throws {
        let value = try #require(try parse(text)?.mapping?.first?.value)
        #expect(value.typeDescription == type)
        if case .scalar(_, let isPlain) = value.kind { #expect(isPlain == plain) }
    }

    @Test("mappings keep their order, and aliases copy their anchor")
    func orderAndAliases() throws {
        let root = try #require(try parse("b: &x {k: v}\na: *x\nc: 3\n"))
        let pairs = try #require(root.mapping)
        #expect(pairs.map(\.key.scalar) == ["b", "a", "c"])
        #expect(pairs[1].value.mapping?.first?.value.scalar == "v")
        #expect(pairs[1].value.mark == Mark(line: 2, column: 4))
    }

    @Test("an empty document is nil")
    func empty() throws {
        #expect(try parse("") == nil)
        #expect(try parse("# only a comment\n") == nil)
    }

    @Test("block scalars keep their text and are not plain")
    func blockScalar() throws {
        let value = try #require(try parse("run: |\n  echo a\n  echo b\n")?.mapping?.first?.value)
        #expect(value.scalar == "echo a\necho b\n")
        #expect(value.typeDescription == "a string")
    }

    @Test("a Diagnostic renders file:line:col, the line, and a caret under the column, tabs expanded")
    func diagnosticRendering() {
        let source = SourceFile(displayName: "f.yaml", text: "one\n\tkey: value\r\nthree")
        #expect(Diagnostic(source, Mark(line: 2, column: 7), "bad").description == """
            f.yaml:2:7: error: bad
                key: value
                     ^
            """)
        #expect(Diagnostic(file: "f.yaml", mark: Mark(line: 9, column: 1), message: "no line").description
            == "f.yaml:9:1: error: no line")
        #expect(source.line(3) == "three")
        #expect(source.line(4) == nil)
        #expect(source.line(0) == nil)
    }
}
