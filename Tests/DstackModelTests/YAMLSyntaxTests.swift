import DstackModel
import Testing

/// YAML syntax errors, read through `Project.load`: each points at the right place and says what to do.
@Suite("YAML syntax errors")
struct YAMLSyntaxTests {
    static let cases: [Golden] = [
        Golden(name: "tab indentation", workflows: "workflows:\n  - name: a\n\tcommands: [x]\n", expected: """
            .dstack/workflows.yaml:3:1: error: tab character used for indentation; YAML needs spaces
                commands: [x]
            ^
            """),
        Golden(name: "tab after spaces", workflows: "workflows:\n  - name: a\n    commands: [x]\n    \thelp: y\n",
               expected: """
            .dstack/workflows.yaml:4:5: error: tab character used for indentation; YAML needs spaces
                    help: y
                ^
            """),
        Golden(name: "unclosed double quote", workflows: """
            workflows:
              - name: "train
                commands: [x]

            """, expected: """
            .dstack/workflows.yaml:2:11: error: unclosed quote: this string has no closing quote
              - name: "train
                      ^
            """),
        Golden(name: "unclosed single quote in a list", workflows: """
            workflows:
              - name: train
                commands: ['python train.py]

            """, expected: """
            .dstack/workflows.yaml:3:16: error: unclosed quote: this string has no closing quote
                commands: ['python train.py]
                           ^
            """),
        Golden(name: "key indented less than its siblings", workflows: """
            workflows:
              - name: train
               commands: [x]

            """, expected: """
            .dstack/workflows.yaml:3:4: error: bad indentation: this line does not line up with the keys above it; indent it like its siblings in the list that starts at line 2
               commands: [x]
               ^
            """),
        Golden(name: "key indented deeper than its siblings", workflows: """
            workflows:
              - name: train
                  commands: [x]

            """, expected: """
            .dstack/workflows.yaml:3:7: error: bad indentation: this line is indented deeper than the key above it, so it reads as part of that value; align it with its siblings
                  commands: [x]
                  ^
            """),
        Golden(name: "key between two indentation levels", workflows: """
            workflows:
              - name: train
                commands:
                  - python train.py
                 help: trains

            """, expected: """
            .dstack/workflows.yaml:5:6: error: bad indentation: this line does not line up with the keys above it; indent it like its siblings in the mapping that starts at line 2
                 help: trains
                 ^
            """),
        Golden(name: "stray ':' in a value", workflows: """
            workflows:
              - name: train
                commands: [x]
                help: note: slow

            """, expected: """
            .dstack/workflows.yaml:4:15: error: unexpected ':' inside a value; put the value in quotes if it holds ': '
                help: note: slow
                          ^
            """),
        Golden(name: "unclosed '['", workflows: """
            workflows:
              - name: train
                commands: [python train.py
              - name: evaluate
                commands: [python eval.py]

            """, expected: """
            .dstack/workflows.yaml:3:15: error: unclosed '[': this list has no closing ']'
                commands: [python train.py
                          ^
            """),
        Golden(name: "unclosed '[' at the end of the file", workflows: "workflows: [\n", expected: """
            .dstack/workflows.yaml:1:12: error: unclosed '[': this list has no closing ']'
            workflows: [
                       ^
            """),
        Golden(name: "unclosed '{'", workflows: """
            workflows:
              - name: train
                environment: {A: 1
                commands: [x]

            """, expected: """
            .dstack/workflows.yaml:3:18: error: unclosed '{': this mapping has no closing '}'
                environment: {A: 1
                             ^
            """),
        Golden(name: "missing ',' in a flow mapping", workflows: """
            workflows:
              - name: train
                environment: {A: 1 B: 2}
                commands: [x]

            """, expected: """
            .dstack/workflows.yaml:3:25: error: expected ',' or '}' in this mapping; separate its entries with ', '
                environment: {A: 1 B: 2}
                                    ^
            """),
        Golden(name: "unquoted reference inside [...]", workflows: """
            workflows:
              - name: train
                commands: [python train.py --lr ${{ lr }}]

            """, expected: """
            .dstack/workflows.yaml:3:37: error: put this value in quotes: inside [...] or {...}, a '${{ }}' reference is only allowed in a quoted string
                commands: [python train.py --lr ${{ lr }}]
                                                ^
            """),
        Golden(name: "text after a closed value", workflows: """
            workflows:
              - name: train
                commands: [x]]

            """, expected: """
            .dstack/workflows.yaml:3:18: error: unexpected ']' after the end of a value; put the whole value in quotes if it belongs to it
                commands: [x]]
                             ^
            """),
        Golden(name: "a line that is no 'key: value'", workflows: """
            workflows:
              - name: train
                commands: [x]
            python train.py

            """, expected: """
            .dstack/workflows.yaml:4:1: error: this line is not a 'key: value' pair; add the ':', or indent the line further if it continues the value above
            python train.py
            ^
            """),
        Golden(name: "a character that cannot start a value", workflows: """
            workflows:
              - name: train
                commands: [x]
                help: @me

            """, expected: """
            .dstack/workflows.yaml:4:11: error: '@' cannot start a plain value; put the value in quotes
                help: @me
                      ^
            """),
        Golden(name: "unknown escape in a double-quoted string", workflows: """
            workflows:
              - name: train
                commands: ["dir C:\\data"]

            """, expected: """
            .dstack/workflows.yaml:3:23: error: unknown escape sequence in a double-quoted string; write '\\\\' for a backslash, or use single quotes
                commands: ["dir C:\\data"]
                                  ^
            """),
        Golden(name: "a second document", workflows: """
            workflows:
              - name: train
                commands: [x]
            ---
            workflows: []

            """, expected: """
            .dstack/workflows.yaml:4:1: error: a second YAML document starts here; this file holds one, so remove the '---' line
            ---
            ^
            """),
        Golden(name: "an alias to nothing", workflows: """
            workflows:
              - name: *train
                commands: [x]

            """, expected: """
            .dstack/workflows.yaml:2:11: error: unknown alias '*train'; define '&train' before using it
              - name: *train
                      ^
            """),
        Golden(name: "a syntax error in variables.yaml", workflows: "workflows:\n  - name: train\n    commands: [x]\n",
               variables: "variables:\n  train: {lr: 0.1\n", expected: """
            .dstack/variables.yaml:2:10: error: unclosed '{': this mapping has no closing '}'
              train: {lr: 0.1
                     ^
            """),
    ]

    @Test(arguments: cases)
    func reportsWhereAndWhat(_ golden: Golden) {
        #expect(diagnostics(golden.workflows, variables: golden.variables) == golden.expected)
    }

    @Test("an empty workflows file says what it needs")
    func emptyFile() {
        #expect(diagnostics("") == """
            .dstack/workflows.yaml:1:1: error: the file is empty; it needs a 'workflows:' list (run 'dstack init' for an example)

            ^
            """)
    }

    @Test("YAMLReader reports a syntax error as a Diagnostic with a 1-based mark")
    func readerThrowsDiagnostic() {
        let source = SourceFile(displayName: "x.yaml", text: "a: [1, 2\n")
        #expect(throws: Diagnostic(file: "x.yaml", mark: Mark(line: 1, column: 4),
                                   message: "unclosed '[': this list has no closing ']'", sourceLine: "a: [1, 2")) {
            try YAMLReader.parse(source)
        }
    }
}
