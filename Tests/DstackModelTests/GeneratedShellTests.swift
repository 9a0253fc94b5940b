import DstackModel
import Foundation
import Testing

/// Values never run as code, shown on a generated set of commands: printing cores (bare, quoted, spliced) put
/// inside one or two wrappers (`$( )`, backticks, `case` patterns inside `$( )`, here-documents, bash's `<<<`,
/// subshells, functions, loops, comments, arithmetic), plus templates that put the value into `case` patterns,
/// `$'...'`, here-strings and command position. Every rendered command runs under dash and bash with many
/// hostile values; no value may create its canary file, and where the shell can carry the value, it must
/// arrive byte for byte (issue 16, point 4).
@Suite("Generated shell templates × hostile values")
struct GeneratedShellTests {
    /// A command template and what it prints for a value.
    struct Shape: Sendable {
        let template: String
        /// What the shell prints for `value`; nil where only the absence of code execution is checked.
        let expected: @Sendable (_ value: String, _ shell: Shell) -> String?
    }

    enum Shell: String, CaseIterable, Sendable {
        case dash, bash
        var path: String { self == .dash ? "/bin/dash" : "/bin/bash" }
    }

    /// Commands that print the value in a known way.
    static let cores: [Shape] = [
        Shape(template: "printf '%s' ${{ v }}") { v, _ in v },
        Shape(template: "printf '%s' \"${{ v }}\"") { v, _ in v },
        Shape(template: "printf '%s' '${{ v }}'") { v, _ in v },
        Shape(template: "printf '%s' \"<${{ v }}>\"") { v, _ in "<\(v)>" },
        Shape(template: "printf '%s' x${{ v }}'y'\"z\"") { v, _ in "x\(v)yz" },
    ]

    /// How a wrapper changes a command's text and its output.
    struct Wrapper: Sendable {
        let name: String
        let wrap: @Sendable (String) -> String
        let output: @Sendable (String) -> String
        var bashOnly = false
    }

    static func trimmed(_ s: String) -> String {
        var s = Substring(s)
        while s.last == "\n" { s = s.dropLast() }
        return String(s)
    }

    static func escapedForBackticks(_ s: String) -> String {
        var out = ""
        for ch in s {
            if ch == "\\" || ch == "`" { out.append("\\") }
            out.append(ch)
        }
        return out
    }

    /// Each puts the command on lines of its own, so that a here-document's last line stays a line of its own.
    static let wrappers: [Wrapper] = [
        Wrapper(name: "$( ) in double quotes", wrap: { "printf '%s' \"$(\n\($0)\n)\"" }, output: trimmed),
        Wrapper(name: "assignment from $( )", wrap: { "y=$(\n\($0)\n); printf '%s' \"$y\"" }, output: trimmed),
        Wrapper(name: "backticks", wrap: { "y=`\n\(escapedForBackticks($0))\n`; printf '%s' \"$y\"" }, output: trimmed),
        Wrapper(name: "case in $( )", wrap: { "printf '%s' \"$(case a in a)\n\($0)\n;; esac)\"" }, output: trimmed),
        Wrapper(name: "case in $( ), (pattern|alternatives)",
                wrap: { "printf '%s' \"$(case b in (a|b)\n\($0)\n;; *) echo no;; esac)\"" }, output: trimmed),
        Wrapper(name: "case in $( ), last branch without ;;",
                wrap: { "printf '%s' \"$(case a in b) echo no;; a)\n\($0)\nesac)\"" }, output: trimmed),
        Wrapper(name: "nested case in $( )",
                wrap: { "printf '%s' \"$(case a in a) case b in b)\n\($0)\n;; esac ;; esac)\"" }, output: trimmed),
        Wrapper(name: "case", wrap: { "case a in a)\n\($0)\n;; esac" }, output: { $0 }),
        Wrapper(name: "multi-line case",
                wrap: { "case a in\n  b) echo no ;;\n  a)\n\($0)\n    ;;\nesac" }, output: { $0 }),
        Wrapper(name: "subshell", wrap: { "(\n\($0)\n)" }, output: { $0 }),
        Wrapper(name: "brace group", wrap: { "{\n\($0)\n}" }, output: { $0 }),
        Wrapper(name: "if", wrap: { "if true; then\n\($0)\nfi" }, output: { $0 }),
        Wrapper(name: "function", wrap: { "f() {\n\($0)\n}; f" }, output: { $0 }),
        Wrapper(name: "for loop", wrap: { "for i in 1; do\n\($0)\ndone" }, output: { $0 }),
        Wrapper(name: "here-document", wrap: { "cat <<EOF\n$(\n\($0)\n)\nEOF" }, output: { trimmed($0) + "\n" }),
        Wrapper(name: "here-string", wrap: { "cat <<< \"$(\n\($0)\n)\"" }, output: { trimmed($0) + "\n" }, bashOnly: true),
        Wrapper(name: "comment after", wrap: { "\($0)\n# ${{ v }} ) `" }, output: { $0 }),
        Wrapper(name: "arithmetic before", wrap: { ": $(( (1 + 2) * 3 )); \($0)" }, output: { $0 }),
        Wrapper(name: "$'...' before", wrap: { "x=$'a\\tb'; \($0)" }, output: { $0 }, bashOnly: true),
        Wrapper(name: "escaped quotes", wrap: { "printf '%s' \"\\\"$(\n\($0)\n)\\\"\"" }, output: { "\"" + trimmed($0) + "\"" }),
    ]

    /// The wrappers that go inside every other one in the pairs (all of them would take minutes to run).
    static let pairedInside: Set<String> = [
        "$( ) in double quotes", "backticks", "case in $( )", "case in $( ), (pattern|alternatives)", "case",
        "here-document", "here-string", "comment after", "function", "escaped quotes",
    ]

    /// Templates that put the value where the grammar is at its most particular.
    static let specials: [Shape] = [
        Shape(template: "printf '%s' \"$(case a in a) echo ${{ v }} ;; esac)\"") { v, _ in
            // The command from the issue; echo and $( ) change some values (dash's echo reads backslashes).
            v.contains("\\") || v.hasPrefix("-") ? nil : trimmed(v + "\n")
        },
        Shape(template: "case x in ${{ v }}) printf '%s' one;; *) printf '%s' two;; esac") { v, _ in v == "x" ? "one" : "two" },
        Shape(template: "case x in (${{ v }}|y) printf '%s' one;; *) printf '%s' two;; esac") { v, _ in v == "x" ? "one" : "two" },
        Shape(template: "case ${{ v }} in *) printf '%s' ok;; esac") { _, _ in "ok" },
        Shape(template: "printf '%s' $'[${{ v }}]'") { v, shell in shell == .bash ? "[\(v)]" : "$[\(v)$]" },
        Shape(template: "printf '%s' $'\\t\\\\${{ v }}'") { v, shell in shell == .bash ? "\t\\\(v)" : "$\\t\\\\\(v)$" },
        Shape(template: "cat <<< ${{ v }}") { v, shell in shell == .bash ? v + "\n" : nil },
        Shape(template: "cat <<< \"${{ v }}\"") { v, shell in shell == .bash ? v + "\n" : nil },
        Shape(template: "cat <<<${{ v }}; printf '%s' ${{ v }}") { v, shell in shell == .bash ? v + "\n" + v : nil },
        Shape(template: "${{ v }} 2>/dev/null; printf '%s' ok") { _, _ in "ok" },
        Shape(template: "x=${{ v }}; printf '%s' \"$x\"") { v, _ in v },
        Shape(template: "printf '%s' ${x:-${{ v }}}") { v, _ in v },
        Shape(template: "printf '%s' a\\ #${{ v }}") { v, _ in "a #" + v },
        Shape(template: "echo \\$'a'; printf '%s' ${{ v }}") { v, _ in "$a\n" + v },
        Shape(template: "printf '%s' \"$(ca\\\nse a in a) printf '%s' ${{ v }} ;; esac)\"") { v, _ in trimmed(v) },
        Shape(template: "printf '%s' \"$(case a in a) printf '%s' ${{ v }} ;; esac; printf '%s' ${{ v }})\"") { v, _ in
            trimmed(v + v)
        },
        Shape(template: "printf '%s' \"$(for w in case; do printf '%s' ${{ v }}; done)\"") { v, _ in trimmed(v) },
        Shape(template: "printf '%s' \"$(echo case a in a) printf '%s' ${{ v }})\"") { v, _ in
            "case a in a printf '%s' \(v))"
        },
    ]

    /// Every template: each core alone and in each wrapper, the first core in each pair of wrappers, and the
    /// special ones.
    static func shapes() -> [Shape] {
        var out = cores + specials
        for core in cores {
            for w in wrappers {
                out.append(Shape(template: w.wrap(core.template)) { v, shell in
                    if w.bashOnly && shell != .bash { return nil }
                    return core.expected(v, shell).map(w.output)
                })
            }
        }
        let core = cores[0]
        for outer in wrappers {
            // A here-document inside another with the same delimiter ends both at its first line: not a template
            // anyone can write.
            for inner in wrappers where Self.pairedInside.contains(inner.name)
                && !(outer.name == "here-document" && inner.name == "here-document") {
                out.append(Shape(template: outer.wrap(inner.wrap(core.template))) { v, shell in
                    if (outer.bashOnly || inner.bashOnly) && shell != .bash { return nil }
                    return core.expected(v, shell).map(inner.output).map(outer.output)
                })
            }
        }
        return out
    }

    /// Values that break naive quoting, each naming `marker`, a file that must never appear.
    static func values(marker m: String) -> [String] {
        [
            "x; touch \(m)", "$(touch \(m))", "`touch \(m)`", "'; touch \(m); '", "\"; touch \(m); \"",
            "); touch \(m); (", ") touch \(m) ;; esac", ";; esac; touch \(m); case x in x) ", "esac", "case", "in",
            "x\nEOF\ntouch \(m)\nEOF", "\\'; touch \(m); '", "$'\\''; touch \(m) #", "' ;touch \(m) #",
            "a'b\"c\\d$e`f", "\n", "", "*", "{", "}", "-n", "\\", "tab\there", "héllo ✓",
            "'\"'\"'\\''", "x\n# c\ntouch \(m)", "))); touch \(m); (((",
        ]
    }

    @Test("no hostile value runs, and values arrive byte for byte", arguments: Shell.allCases)
    func generated(shell: Shell) throws {
        let shapes = Self.shapes()
        let work = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("dstack-gen-\(UUID().uuidString.prefix(8))")
        let commands = work.appendingPathComponent("commands")
        let markers = work.appendingPathComponent("markers")
        let sandbox = work.appendingPathComponent("sandbox")
        let fm = FileManager.default
        for dir in [commands, markers, sandbox] { try fm.createDirectory(at: dir, withIntermediateDirectories: true) }
        defer { try? fm.removeItem(at: work) }
        try Data("keep".utf8).write(to: sandbox.appendingPathComponent("canary"))

        // Render every (template, value) pair into its own file, then run them all from one driver script: a
        // process start from Swift per command would take minutes.
        var cases: [(shape: Int, value: String, command: String)] = []
        var refused = 0
        for (index, shape) in shapes.enumerated() {
            let template = try Template(shape.template)
            for value in Self.values(marker: "MARKER") {
                let value = value.replacingOccurrences(of: "MARKER", with: markers.appendingPathComponent("\(cases.count)").path)
                guard let command = try? template.renderShell(["v": value]) else {
                    refused += 1
                    continue
                }
                try Self.write(command, to: commands.path + "/\(cases.count)")
                cases.append((index, value, command))
            }
        }
        #expect(refused == 0, "\(refused) renderings were refused")
        #expect(cases.count > 4_000, "only \(cases.count) commands were generated")
        // Each command runs in a subshell of one shell process (a fork, no new program): it reads its file as a
        // script would, and whatever it does (exit, a syntax error) ends only that subshell.
        let driver = """
            n=0
            while [ $n -lt \(cases.count) ]; do
              ( . "\(commands.path)/$n" ) > "\(commands.path)/$n.out" 2>/dev/null < /dev/null
              n=$((n + 1))
            done
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: shell.path)
        process.arguments = ["-c", driver]
        process.currentDirectoryURL = sandbox
        try process.run()
        // No command waits for anything; one that hangs all the same fails the test rather than the suite.
        let deadline = Date().addingTimeInterval(300)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning {
            process.terminate()
            Issue.record("\(shell): the commands did not finish within 300 seconds")
        }
        process.waitUntilExit()

        let ran = (try? fm.contentsOfDirectory(atPath: markers.path)) ?? []
        for name in ran.sorted().prefix(20) {
            guard let i = Int(name) else { continue }
            Issue.record("\(shell): the value \(cases[i].value.debugDescription) ran code in \(cases[i].command.debugDescription)")
        }
        #expect(ran.isEmpty, "\(ran.count) values ran code")
        #expect(fm.fileExists(atPath: sandbox.appendingPathComponent("canary").path), "a value removed files")
        var mismatches = 0
        for (i, c) in cases.enumerated() {
            guard let expected = shapes[c.shape].expected(c.value, shell) else { continue }
            let output = (try? Data(contentsOf: commands.appendingPathComponent("\(i).out"))) ?? Data()
            if output != Data(expected.utf8) {
                mismatches += 1
                if mismatches <= 20 {
                    Issue.record("\(shell) printed \(String(decoding: output, as: UTF8.self).debugDescription), expected \(expected.debugDescription), for value \(c.value.debugDescription); command: \(c.command.debugDescription)")
                }
            }
        }
        #expect(mismatches == 0, "\(mismatches) of \(cases.count) commands printed something else than expected")
    }

    /// Writes a small file with plain system calls (Foundation's `Data.write` cost most of this test's time).
    static func write(_ text: String, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw CocoaError(.fileWriteUnknown) }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        guard bytes.withUnsafeBytes({ Foundation.write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
            throw CocoaError(.fileWriteUnknown)
        }
    }

    /// After a `\'` inside `$'...'`, bash and dash disagree on where the string ends: refused, located.
    @Test func aReferenceAfterAnEscapedQuoteInsideDollarQuotesIsRefused() throws {
        let template = try Template("printf '%s' $'it\\'s' ${{ v }}")
        #expect(throws: TemplateError.self) { try template.renderShell(["v": "x"]) }
        do {
            _ = try template.renderShell(["v": "x"])
        } catch {
            #expect(error.offset == 21)
            #expect(error.message == "'${{ v }}' follows a \\' inside $'...', which bash reads as an escaped quote and dash as the end of the string, so no quoting keeps the value data in both; write that string in \"...\" instead")
        }
    }
}
