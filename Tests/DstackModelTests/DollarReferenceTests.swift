import DstackModel
import Foundation
import Testing

/// Early dstack's `$name` references: substituted where the shell would expand them, for declared names only,
/// and quoted exactly like `${{ name }}`.
@Suite("$name references")
struct DollarReferenceTests {
    static let declared: Set<String> = ["model", "batch-size", "lr", "run_name", "job_id", "variables_as_args"]

    /// The names the template references, in order.
    func references(_ raw: String, shell: Bool = true) throws -> [String] {
        try Template(raw, declared: Self.declared, shell: shell).variables
    }

    @Test("declared names are references, in $name and ${name} forms, with the offset of each '$'")
    func declaredNames() throws {
        let template = try Template("python3 x.py $model --run ${run_name} $job_id", declared: Self.declared, shell: true)
        #expect(template.parts == [.text("python3 x.py "), .variable("model", offset: 13), .text(" --run "),
                                   .variable("run_name", offset: 26), .text(" "), .variable("job_id", offset: 38)])
    }

    @Test("names that are not declared, positional parameters and $$ are left to the shell", arguments: [
        "echo $HOME $PATH $CUDA_VISIBLE_DEVICES $1 $@ $# $? $$model $models ${model:-x} ${HOME} $", "echo $MODEL",
    ])
    func leftToTheShell(raw: String) throws {
        #expect(try references(raw) == [])
        #expect(try Template(raw, declared: Self.declared, shell: true).renderShell([:], arguments: []) == raw)
    }

    @Test("a name with dashes is taken whole when declared, else up to where the shell's name ends", arguments: [
        ("--bs $batch-size", ["batch-size"]), ("$lr-decay", ["lr"]), ("$model-$lr", ["model", "lr"]),
        ("$batch-sizes", []), ("$model_x", []),
    ])
    func dashes(raw: String, names: [String]) throws {
        #expect(try references(raw) == names)
    }

    @Test("where the shell keeps '$' as written, so does dstack", arguments: [
        "echo '$model'", "echo \\$model", "echo \"\\$model\"", "echo ok # $model", "cat <<'EOF'\n$model\nEOF",
        "awk '{ print $model }'", "echo \"`echo '$model'`\"",
    ])
    func literal(raw: String) throws {
        #expect(try references(raw) == [])
    }

    @Test("where the shell expands '$', dstack substitutes", arguments: [
        "echo \"$model\"", "echo $(echo $model)", "echo `echo $model`", "cat <<EOF\n$model\nEOF", "echo $((1 + $lr))",
        "x=$model", "echo \"${model}\"",
    ])
    func expanded(raw: String) throws {
        #expect(try references(raw).count == 1)
    }

    @Test("outside commands every declared $name is substituted as text")
    func plainText() throws {
        let template = try Template("$model '$lr' ${{ model }} $HOME", declared: Self.declared, shell: false)
        #expect(template.render(["model": "m", "lr": "0.1"]) == "m '0.1' m $HOME")
    }

    @Test("$variables_as_args becomes --name value for each variable, each value one quoted word")
    func variablesAsArgs() throws {
        let template = try Template("train $variables_as_args --x", declared: Self.declared, shell: true)
        let rendered = try template.renderShell([:], arguments: [("model", "124M"), ("lr", "a b; rm -rf /")])
        #expect(rendered == "train --model 124M --lr 'a b; rm -rf /' --x")
        #expect(try Template("train $variables_as_args", declared: Self.declared, shell: true)
            .renderShell([:], arguments: []) == "train ")
    }
}

/// Every place `${{ v }}` is tested against a real shell, written as `$v` and `${v}`: the shell must print the
/// value exactly and run nothing it holds; where the shell itself would not expand `$v`, the text is unchanged.
@Suite("$name references against a real shell")
struct DollarShellTests {
    /// Contexts of `ShellRenderingTests` where the shell takes `$v` literally.
    static let literalContexts: Set<String> = ["single quotes", "comment", "quoted here-document",
                                                "single quotes inside backticks", "backslash before a bare reference",
                                                "backslash before a reference in double quotes"]

    @Test("each value prints exactly and runs nothing", arguments: ShellRenderingTests.contexts, ["$v", "${v}"])
    func valuesStayData(context: ShellRenderingTests.Context, form: String) throws {
        // `"x=$vy"` names another variable, `vy`: only `${v}` can stand there.
        if form == "$v", let after = context.template.range(of: "${{ v }}").map({ context.template[$0.upperBound...].first }),
           let next = after, next.isLetter || next.isNumber || next == "_" { return }
        let raw = context.template.replacingOccurrences(of: "${{ v }}", with: form)
        let template = try Template(raw, declared: ["v"], shell: true)
        if Self.literalContexts.contains(context.name) {
            #expect(template.variables.isEmpty)
            #expect(try template.renderShell(["v": "x"], arguments: []) == raw)
            return
        }
        #expect(template.variables == ["v"], "\(raw.debugDescription)")
        let directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("dstack-dollar-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let marker = directory.appendingPathComponent("pwned")
        for value in ShellRenderingTests.values(marker: marker.path) where context.carries(value) {
            let command = try template.renderShell(["v": value], arguments: [])
            let (stdout, status) = try sh(command, in: directory)
            #expect(stdout == Data(context.expected(value).utf8),
                    "printed \(String(decoding: stdout, as: UTF8.self).debugDescription) for \(value.debugDescription); command: \(command.debugDescription)")
            #expect(status == 0)
            #expect(!FileManager.default.fileExists(atPath: marker.path), "\(value.debugDescription) ran code in \(command.debugDescription)")
            try? FileManager.default.removeItem(at: marker)
        }
    }

    @Test("each --name value pair of $variables_as_args reaches the program as two arguments, exactly")
    func variablesAsArgsWords() throws {
        let directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("dstack-dollar-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let marker = directory.appendingPathComponent("pwned").path
        let values = ShellRenderingTests.values(marker: marker)
        let pairs = values.enumerated().map { (name: "v\($0.offset)", value: $0.element) }
        let command = try Template("printf '[%s]' $variables_as_args", declared: ["variables_as_args"], shell: true)
            .renderShell([:], arguments: pairs)
        let (stdout, status) = try sh(command, in: directory)
        #expect(status == 0)
        #expect(String(decoding: stdout, as: UTF8.self) == pairs.map { "[--\($0.name)][\($0.value)]" }.joined())
        #expect(!FileManager.default.fileExists(atPath: marker))
    }

    private func sh(_ command: String, in directory: URL) throws -> (Data, Int32) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        process.currentDirectoryURL = directory
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (data, process.terminationStatus)
    }
}
