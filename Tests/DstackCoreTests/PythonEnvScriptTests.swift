import DstackRunners
import Foundation
import Testing

/// `Scripts/python-env.sh` run by a real `sh`, with a stand-in `python3.42` that does what the script asks of an
/// interpreter (`-c`, `-m venv`, `-m pip install -r`) slowly and writes each venv and pip run to a log, so that
/// what was built, and how often, can be counted. The real interpreter is exercised end to end in JobTests.
@Suite(.serialized) struct PythonEnvScriptTests {
    static let standIn = """
        #!/bin/sh
        case "$1 $2" in
          "-c "*) echo "3.42.0 (stand-in)" ;;
          "-m venv") sleep 0.5; mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && echo "venv $3" >> "$STANDIN_LOG" ;;
          "-m pip") sleep 0.5; [ -f "$5" ] && echo "pip $5" >> "$STANDIN_LOG" ;;
          *) echo "stand-in python: $*" ;;
        esac
        """

    /// A runner directory (with `jobs/`), a folder with the stand-in interpreter, and a working directory.
    struct Bed {
        let scratch: Scratch
        var base: URL { scratch.at("runner") }
        var log: URL { scratch.at("log") }
        var work: URL { scratch.at("work") }

        init(_ name: String = #function) throws {
            scratch = try Scratch(name)
            try scratch.write("bin/python3.42", PythonEnvScriptTests.standIn, mode: 0o755)
            try scratch.write("work/req.txt", "tinypkg==1.0\n")
            try FileManager.default.createDirectory(at: base.appendingPathComponent("jobs/j1"), withIntermediateDirectories: true)
            try FileManager.default.createDirectory(at: base.appendingPathComponent("jobs/j2"), withIntermediateDirectories: true)
        }

        var environment: [String: String] {
            ["PATH": scratch.at("bin").path + ":/usr/bin:/bin", "STANDIN_LOG": log.path,
             "DSTACK_RUNNER_DIR": base.path, "HOME": scratch.url.path]
        }

        /// Starts `sh -e` running the script, one call, then `then`; returns the process and its output pipe.
        func start(version: String = "3.42", requirements: String = "req.txt", job: String = "j1",
                   then: String = "command -v python; echo \"venv=$VIRTUAL_ENV\"",
                   environment extra: [String: String?] = [:]) throws -> (Process, Pipe) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-e", "-c", PythonEnvironment.prelude(version: version, requirements: requirements) + "\n" + then]
            var env = environment
            env["DSTACK_JOB_ID"] = job
            for (key, value) in extra { env[key] = value }
            process.environment = env
            process.currentDirectoryURL = work
            let out = Pipe()
            process.standardOutput = out
            process.standardError = out
            try process.run()
            return (process, out)
        }

        /// Runs one job to the end: its exit status and output.
        func run(version: String = "3.42", requirements: String = "req.txt", job: String = "j1",
                 then: String = "command -v python; echo \"venv=$VIRTUAL_ENV\"",
                 environment extra: [String: String?] = [:]) throws -> (Int32, String) {
            let (process, out) = try start(version: version, requirements: requirements, job: job, then: then, environment: extra)
            let data = out.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: data, as: UTF8.self))
        }

        func logLines() -> [String] {
            ((try? String(contentsOf: log, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }

        func environments() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: base.appendingPathComponent("pyenvs").path)) ?? []).sorted()
        }
    }

    @Test("built once with venv and pip, then reused; the job runs with it first on PATH")
    func buildThenReuse() throws {
        let bed = try Bed()
        defer { bed.scratch.remove() }
        let (status, output) = try bed.run()
        #expect(status == 0, "\(output)")
        let key = try #require(bed.environments().first)
        #expect(bed.environments() == [key], "one environment, no lock left")
        let dir = bed.base.appendingPathComponent("pyenvs/\(key)").path
        #expect(output.contains("dstack: building Python environment \(key)"))
        #expect(output.contains("\(dir)/bin/python\nvenv=\(dir)\n"), "\(output)")
        #expect(bed.logLines() == ["venv \(dir)", "pip req.txt"])
        #expect(try String(contentsOf: bed.base.appendingPathComponent("jobs/j1/pyenv"), encoding: .utf8) == key + "\n")

        let (again, second) = try bed.run(job: "j2")
        #expect(again == 0, "\(second)")
        #expect(second.contains("dstack: reusing Python environment \(key)"))
        #expect(bed.logLines().count == 2, "pip did not run again: \(bed.logLines())")

        // Other requirements (or another interpreter) are another environment.
        try bed.scratch.write("work/req.txt", "tinypkg==2.0\n")
        _ = try bed.run()
        #expect(bed.environments().count == 2)
        #expect(bed.logLines().count == 4)
    }

    @Test("two jobs starting together build the environment once: one waits for the other")
    func concurrentJobsBuildOnce() throws {
        let bed = try Bed()
        defer { bed.scratch.remove() }
        let a = try bed.start(job: "j1"), b = try bed.start(job: "j2")
        let outA = String(decoding: a.1.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let outB = String(decoding: b.1.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        a.0.waitUntilExit()
        b.0.waitUntilExit()
        #expect(a.0.terminationStatus == 0 && b.0.terminationStatus == 0, "\(outA)\n\(outB)")
        #expect(bed.logLines().filter { $0.hasPrefix("venv ") }.count == 1, "\(bed.logLines())")
        #expect(bed.logLines().filter { $0.hasPrefix("pip ") }.count == 1, "\(bed.logLines())")
        let both = outA + outB
        #expect(both.components(separatedBy: "building Python environment").count == 2)
        #expect(both.contains("waiting for another job to build the same Python environment"), "\(both)")
        #expect(both.contains("reusing Python environment"))
    }

    @Test("a lock whose holder died is broken, and the half-built environment built again")
    func staleLock() throws {
        let bed = try Bed()
        defer { bed.scratch.remove() }
        _ = try bed.run()
        let key = try #require(bed.environments().first)
        let dir = bed.base.appendingPathComponent("pyenvs/\(key)")
        try FileManager.default.removeItem(at: dir.appendingPathComponent(".dstack-ready"))
        // A pid that was just in use and is gone now.
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()
        try bed.scratch.write("runner/pyenvs/\(key).lock/pid", "\(gone.processIdentifier)\n")
        let (status, output) = try bed.run()
        #expect(status == 0, "\(output)")
        #expect(output.contains("building Python environment \(key)"))
        #expect(bed.logLines().count == 4)
        #expect(bed.environments() == [key])
    }

    @Test("environments unused for 7 days are reaped, unless a running job uses one; fresh ones stay")
    func reaping() throws {
        let bed = try Bed()
        defer { bed.scratch.remove() }
        for name in ["old", "inuse", "fresh", "finished"] {
            try bed.scratch.write("runner/pyenvs/\(name)/.dstack-ready", "")
        }
        try bed.scratch.write("runner/pyenvs/halfbuilt/bin/python", "")
        try bed.scratch.write("runner/jobs/j1/pyenv", "inuse\n")
        try bed.scratch.write("runner/jobs/j2/pyenv", "finished\n")
        try bed.scratch.write("runner/jobs/j2/exit", "0\n")
        let old = Date(timeIntervalSinceNow: -10 * 86400)
        for path in ["old/.dstack-ready", "inuse/.dstack-ready", "finished/.dstack-ready", "halfbuilt"] {
            try FileManager.default.setAttributes([.modificationDate: old],
                                                  ofItemAtPath: bed.base.appendingPathComponent("pyenvs/\(path)").path)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-e", "-c", PythonEnvironment.script + "\ndstack_python_env_reap \"$1\"", "sh", bed.base.path]
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        #expect(bed.environments() == ["fresh", "inuse"])
    }

    @Test("in a container (no runner directory there) the image's Python installs the requirements itself")
    func inAnImage() throws {
        let bed = try Bed()
        defer { bed.scratch.remove() }
        let (status, output) = try bed.run(then: "echo \"venv=${VIRTUAL_ENV:-none}\"", environment: ["DSTACK_RUNNER_DIR": nil])
        #expect(output.hasSuffix("venv=none\n"))
        #expect(status == 0, "\(output)")
        #expect(bed.logLines() == ["pip req.txt"])
        #expect(bed.environments().isEmpty)
    }

    @Test("a Python the runner lacks, or a missing requirements file, fails the job with a message")
    func failures() throws {
        let bed = try Bed()
        defer { bed.scratch.remove() }
        let (status, output) = try bed.run(version: "3.43")
        #expect(status == 2)
        #expect(output.contains("dstack: python3.43 is not installed on this runner"))
        let (missing, text) = try bed.run(requirements: "nope.txt")
        #expect(missing == 2)
        #expect(text.contains("dstack: the requirements file 'nope.txt' does not exist in \(bed.work.path)"), "\(text)")
        #expect(bed.logLines().isEmpty)
    }
}
