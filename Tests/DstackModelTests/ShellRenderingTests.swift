import DstackModel
import Foundation
import Testing

/// `Template.renderShell` is what keeps variable values data: each rendered command is run by a real shell,
/// which must print the value byte for byte and run nothing that the value holds.
@Suite("renderShell against a real shell")
struct ShellRenderingTests {
    /// A place in a command where a reference can stand, and what the command prints for a value there.
    struct Context: Sendable, CustomTestStringConvertible {
        let name: String
        let template: String
        /// What the command prints for `value`.
        let expected: @Sendable (String) -> String
        /// Whether the context can carry `value` exactly at all (for reasons that are not quoting).
        var carries: @Sendable (String) -> Bool = { _ in true }

        var testDescription: String { name }
    }

    static let contexts: [Context] = [
        Context(name: "bare word", template: "printf '%s' ${{ v }}", expected: { $0 }),
        Context(name: "double quotes", template: "printf '%s' \"${{ v }}\"", expected: { $0 }),
        Context(name: "single quotes", template: "printf '%s' '${{ v }}'", expected: { $0 }),
        // dash's echo reads backslash escapes itself, so only values without one come out unchanged there.
        Context(name: "echo in double quotes", template: "echo \"x=${{ v }}y\"", expected: { "x=\($0)y\n" },
                carries: { !$0.contains("\\") }),
        Context(name: "assignment", template: "x=${{ v }}; printf '%s' \"$x\"", expected: { $0 }),
        Context(name: "backslash before a bare reference", template: "printf '%s' \\${{ v }}", expected: { $0 }),
        Context(name: "backslash before a reference in double quotes", template: "printf '%s' \"\\${{ v }}\"",
                expected: { $0 }),
        Context(name: "$( ) inside double quotes", template: "printf '%s' \"$(printf '%s' ${{ v }})\"",
                expected: trimmingTrailingNewlines),
        Context(name: "double quotes inside $( )", template: "printf '%s' \"$(printf '%s' \"${{ v }}\")\"",
                expected: trimmingTrailingNewlines),
        Context(name: "backticks inside double quotes", template: "printf '%s' \"`printf '%s' ${{ v }}`\"",
                expected: trimmingTrailingNewlines),
        Context(name: "escaped double quotes inside backticks",
                template: "printf '%s' \"`printf '%s' \\\"${{ v }}\\\"`\"", expected: trimmingTrailingNewlines),
        Context(name: "single quotes inside backticks", template: "printf '%s' \"`printf '%s' '${{ v }}'`\"",
                expected: trimmingTrailingNewlines),
        Context(name: "comment", template: "printf '%s' ok # ${{ v }}", expected: { _ in "ok" }),
        Context(name: "here-document", template: "cat <<EOF\n${{ v }}\nEOF", expected: { $0 + "\n" }),
        Context(name: "nested $( )",
                template: "printf '%s' \"$(printf '%s' \"$(printf '%s' ${{ v }})\")\"", expected: trimmingTrailingNewlines),
        Context(name: "here-document stripping tabs", template: "cat <<-EOF\n\t${{ v }}\n\tEOF",
                expected: { $0 + "\n" }, carries: { !$0.hasPrefix("\t") && !$0.contains("\n\t") }),
        Context(name: "here-document inside $( )",
                template: "printf '%s' \"$(cat <<EOF\n${{ v }}\nEOF\n)\"", expected: trimmingTrailingNewlines),
        // A literal body cannot carry a line equal to its delimiter; such a line gets a leading space.
        Context(name: "quoted here-document", template: "cat <<'EOF'\n${{ v }}\nEOF",
                expected: { value in
                    value.split(separator: "\n", omittingEmptySubsequences: false)
                        .map { $0 == "EOF" ? " EOF" : String($0) }.joined(separator: "\n") + "\n"
                }),
    ]

    static let shells = ["/bin/sh", "/bin/bash"].filter { FileManager.default.isExecutableFile(atPath: $0) }

    /// Values that break naive quoting; `marker` is a path that must never be created.
    static func values(marker: String) -> [String] {
        [
            "a'b\"c $(touch \(marker)) `id` ; rm -rf * \n second line",
            "a'b\"c $(touch \(marker)) `touch \(marker)` ; rm -rf * \n second line",
            "", "'", "\"", "\\", "x\\", "\\\n", "*", "-n", "tab\there", "\n\nleading newlines",
            "héllo wörld ✓ 🙂",
            "$(touch \(marker))", "`touch \(marker)`", "${HOME}$HOME", "\\`touch \(marker)\\`",
            "); touch \(marker); (", "))); touch \(marker); (((", "}; touch \(marker); {",
            "'; touch \(marker); '", "\"; touch \(marker); \"", "\\\"; touch \(marker); echo \\\"",
            "# c\ntouch \(marker)", "EOF\ntouch \(marker)\nEOF", "x\nEOF\ntouch \(marker)",
            "'\"'\"'\\''",
        ]
    }

    @Test("each value prints exactly and runs nothing", arguments: contexts, shells)
    func valuesStayData(context: Context, shell: String) throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let template = try Template(context.template)
        for value in Self.values(marker: sandbox.marker.path) where context.carries(value) {
            let command = try template.renderShell(["v": value])
            let result = try runShell(shell, command, in: sandbox.directory)
            #expect(result.stdout == Data(context.expected(value).utf8),
                    "\(shell) printed \(String(decoding: result.stdout, as: UTF8.self).debugDescription) for value \(value.debugDescription); command: \(command.debugDescription); stderr: \(result.stderr)")
            #expect(result.status == 0, "\(shell) exited \(result.status) for \(command.debugDescription): \(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: sandbox.marker.path),
                    "the value \(value.debugDescription) ran code in \(command.debugDescription)")
            #expect(FileManager.default.fileExists(atPath: sandbox.canary.path),
                    "the value \(value.debugDescription) removed files in \(command.debugDescription)")
            try? FileManager.default.removeItem(at: sandbox.marker)
        }
    }

    /// Arithmetic expands `$( )` even inside single quotes, so only whole numbers can be carried there.
    @Test("a value in arithmetic is a whole number or an error, never code", arguments: [
        "printf '%s' \"$((1 + ${{ v }}))\"", "printf '%s' $((1 + ${{ v }}))", "(( x = 1 + ${{ v }} )) && echo ok",
    ], shells)
    func arithmetic(template: String, shell: String) throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let template = try Template(template)
        if template.raw.hasPrefix("printf") {
            let sum = try runShell(shell, try template.renderShell(["v": "41"]), in: sandbox.directory)
            #expect(String(decoding: sum.stdout, as: UTF8.self) == "42")
            let negative = try runShell(shell, try template.renderShell(["v": "-1"]), in: sandbox.directory)
            #expect(String(decoding: negative.stdout, as: UTF8.self) == "0")
        }
        for value in Self.values(marker: sandbox.marker.path) + ["x", "a[$(touch \(sandbox.marker.path))]"] {
            let command = try template.renderShell(["v": value])
            let result = try runShell(shell, command, in: sandbox.directory)
            #expect(result.status != 0, "\(shell) accepted \(command.debugDescription)")
            #expect(!FileManager.default.fileExists(atPath: sandbox.marker.path),
                    "the value \(value.debugDescription) ran code in \(command.debugDescription)")
            #expect(FileManager.default.fileExists(atPath: sandbox.canary.path))
            try? FileManager.default.removeItem(at: sandbox.marker)
        }
    }
}

private func trimmingTrailingNewlines(_ value: String) -> String {
    var value = Substring(value)
    while value.last == "\n" { value = value.dropLast() }
    return String(value)
}

/// An empty folder to run commands in, holding a file that must survive them and naming a file that must
/// never appear.
private struct Sandbox {
    let directory: URL
    var canary: URL { directory.appendingPathComponent("canary") }
    var marker: URL { directory.appendingPathComponent("pwned") }

    init() throws {
        directory = URL(fileURLWithPath: NSTemporaryDirectory())
            .appendingPathComponent("dstack-shell-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Data("keep".utf8).write(to: canary)
    }

    func remove() {
        try? FileManager.default.removeItem(at: directory)
    }
}

/// Runs `command` with `shell -c` in `directory`.
private func runShell(_ shell: String, _ command: String, in directory: URL) throws -> (stdout: Data, stderr: String, status: Int32) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: shell)
    process.arguments = ["-c", command]
    process.currentDirectoryURL = directory
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (stdout, String(decoding: stderr, as: UTF8.self), process.terminationStatus)
}
