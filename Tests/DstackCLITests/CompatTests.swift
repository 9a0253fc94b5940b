import Foundation
import Testing

/// Projects written for early dstack, run by the real binary: `$name` references and the python provider, whose
/// Python environment is built on the runner from a wheel this test makes (no package registry is reached).
@Suite struct CompatTests {
    /// The `X.Y` of the `python3` on this machine's PATH.
    static let python: String = {
        let result = try? Sandbox.run(["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                      in: URL(fileURLWithPath: "/"), environment: ProcessInfo.processInfo.environment)
        return result?.stdout.trimmingCharacters(in: .whitespacesAndNewlines) ?? "3"
    }()

    /// Writes `wheels/tinypkg-1.0-py3-none-any.whl` into the project: a package whose import prints nothing and
    /// whose `GREETING` the scripts print, so the job shows it was installed.
    static func writeWheel(_ box: Sandbox) throws {
        let script = """
            import sys, zipfile
            files = {
                "tinypkg/__init__.py": "GREETING = 'hello from tinypkg'\\n",
                "tinypkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\\nName: tinypkg\\nVersion: 1.0\\n",
                "tinypkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\\nGenerator: dstack-tests\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
            }
            files["tinypkg-1.0.dist-info/RECORD"] = "".join(name + ",,\\n" for name in list(files) + ["tinypkg-1.0.dist-info/RECORD"])
            with zipfile.ZipFile(sys.argv[1], "w") as wheel:
                for name, text in files.items():
                    wheel.writestr(name, text)
            """
        let wheels = box.project.appendingPathComponent("wheels")
        try FileManager.default.createDirectory(at: wheels, withIntermediateDirectories: true)
        let made = try Sandbox.run(["python3", "-c", script, wheels.appendingPathComponent("tinypkg-1.0-py3-none-any.whl").path],
                                   in: box.project, environment: ProcessInfo.processInfo.environment)
        #expect(made.status == 0, "\(made.output)")
        try box.write("requirements.txt", "./wheels/tinypkg-1.0-py3-none-any.whl\n")
        try box.write("main.py", """
            import sys, tinypkg
            print(tinypkg.GREETING, sys.argv[1:], sys.prefix)

            """)
    }

    static let workflows = """
        workflows:
          - name: first
            provider: python
            python: \(python)
            requirements: requirements.txt
            script: main.py
            args: ["$who", "${{ who }}"]
            environment: {PIP_NO_INDEX: "1"}
          - name: second
            provider: python
            python: \(python)
            requirements: requirements.txt
            python_script: main.py
            args: --from $run_name
            environment: {PIP_NO_INDEX: "1"}
          - name: left
            provider: bash
            python: \(python)
            requirements: other.txt
            commands: [python main.py left]
            environment: {PIP_NO_INDEX: "1"}
          - name: right
            provider: bash
            python: \(python)
            requirements: other.txt
            commands: [python main.py right]
            environment: {PIP_NO_INDEX: "1"}
          - name: pair
            depends-on: [left, right]
            commands: [echo both]
        """

    @Test func pythonProviderBuildsItsEnvironmentOnceAndLaterJobsReuseIt() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try Self.writeWheel(box)
        try box.workflows(Self.workflows)
        try box.variables("variables:\n  global:\n    who: \"the world; rm -rf ~\"\n")
        let pyenvs = box.runnerDir.appendingPathComponent("pyenvs").path

        let first = try box.dstack("run", "first")
        #expect(first.status == 0, "\(first.output)")
        #expect(first.stdout.contains("first | dstack: building Python environment"), "\(first.stdout)")
        #expect(first.stdout.contains("Successfully installed tinypkg-1.0"), "\(first.stdout)")
        #expect(first.stdout.contains("first | hello from tinypkg ['the world; rm -rf ~', 'the world; rm -rf ~'] \(pyenvs)/"),
                "\(first.stdout)")
        let built = try FileManager.default.contentsOfDirectory(atPath: pyenvs)
        #expect(built.count == 1, "\(built)")

        // Another workflow, same interpreter and requirements: the environment is reused, pip does not run.
        let second = try box.dstack("run", "second")
        #expect(second.status == 0, "\(second.output)")
        #expect(second.stdout.contains("second | dstack: reusing Python environment \(built[0])"), "\(second.stdout)")
        #expect(!second.stdout.contains("pip") && !second.stdout.contains("Successfully installed")
                && !second.stdout.contains("Processing"), "pip ran again: \(second.stdout)")
        let run = try box.lastRun()
        #expect(second.stdout.contains("second | hello from tinypkg ['--from', '\(run)'] \(pyenvs)/\(built[0])"), "\(second.stdout)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: pyenvs) == built)

        // Two jobs of one run that need the same new environment at once: it is built once.
        try box.write("other.txt", "./wheels/tinypkg-1.0-py3-none-any.whl\n# other\n")
        let pair = try box.dstack("run", "pair")
        #expect(pair.status == 0, "\(pair.output)")
        #expect(pair.stdout.components(separatedBy: "dstack: building Python environment").count == 2, "\(pair.stdout)")
        #expect(pair.stdout.components(separatedBy: "Successfully installed tinypkg").count == 2, "\(pair.stdout)")
        #expect(pair.stdout.contains("left  | hello from tinypkg ['left']"), "\(pair.stdout)")
        #expect(pair.stdout.contains("right | hello from tinypkg ['right']"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: pyenvs).filter { !$0.hasSuffix(".lock") }.count == 2)
    }

    @Test func aPythonNoRunnerHasIsAConfigurationErrorNamingIt() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("workflows:\n  - name: old\n    provider: python\n    python: 3.4\n    script: main.py\n")
        try box.write("main.py", "print('never')\n")
        let result = try box.dstack("run", "old")
        #expect(result.status == 2, "\(result.output)")
        #expect(result.stderr.contains("no runner can ever fit job 'old': it needs Python 3.4 (python3.4 on its PATH; it has "),
                "\(result.stderr)")
        #expect(!result.stdout.contains("never"))
    }

    @Test func gpt2TutorialArgumentsReachTheCommandsAndTheRunnerDirectoryIsExported() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
            workflows:
              - name: finetune
                commands:
                  - printf '[%s]' $model $variables_as_args "$run_name" $HOME
                  - echo
                  - echo "runner=$DSTACK_RUNNER_DIR"
            """)
        try box.variables("variables:\n  global:\n    model: 124M\n  finetune:\n    learning_rate: 0.00002\n    noise: \"0.0 1\"\n")
        // A relative runner directory for the coordinator: the job still gets the absolute one.
        let result = try box.dstack(["run", "finetune", "--model", "it's $(id)"], environment: ["DSTACK_RUNNER_DIR": "../runner"])
        #expect(result.status == 0, "\(result.output)")
        let run = try box.lastRun(["DSTACK_RUNNER_DIR": "../runner"])
        let home = ProcessInfo.processInfo.environment["HOME"] ?? ""
        #expect(result.stdout.contains("finetune | [it's $(id)][--model][it's $(id)][--learning_rate][0.00002][--noise][0.0 1][\(run)][\(home)]"),
                "\(result.stdout)")
        #expect(result.stdout.contains("finetune | runner=\(box.runnerDir.path)\n"), "\(result.stdout)")
    }

    /// On an SSH runner: the probe lists its Pythons, the environment is made in its work directory, the job
    /// sees that directory, and environments unused for 7 days go when a code tree is built there.
    @Test func onAnSSHRunnerTheEnvironmentLivesInItsWorkDirectoryAndOldOnesAreReaped() throws {
        let bed = try SSHBed(1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try Self.writeWheel(box)
        try box.workflows(Self.workflows + "\n  - name: where\n    commands: ['echo \"runner=$DSTACK_RUNNER_DIR\"']\n")
        try box.variables("variables:\n  global:\n    who: x\n")
        try box.write(".dstack/hosts.yaml", bed.inventory(tag: "py"))
        let work = bed.directory.appendingPathComponent("work-py-r1")
        /// Plants environments last used 10 days ago and yesterday.
        func plant() throws {
            for (name, days) in [("0ld", 10.0), ("recent", 1.0)] {
                let mark = work.appendingPathComponent("pyenvs/\(name)/.dstack-ready")
                try FileManager.default.createDirectory(at: mark.deletingLastPathComponent(), withIntermediateDirectories: true)
                try Data().write(to: mark)
                try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: -days * 86400)], ofItemAtPath: mark.path)
            }
        }

        let runners = try box.dstack(["runners", "--json"], environment: bed.environment)
        #expect(runners.status == 0, "\(runners.output)")
        #expect(runners.stdout.contains("\"\(Self.python)\""), "the probe lists python\(Self.python): \(runners.stdout)")

        let first = try box.dstack(["run", "first"], environment: bed.environment)
        #expect(first.status == 0, "\(first.output)")
        #expect(first.stdout.contains("Successfully installed tinypkg-1.0"), "\(first.stdout)")
        #expect(first.stdout.contains("first | hello from tinypkg ['x', 'x'] \(work.path)/pyenvs/"), "\(first.stdout)")
        // Code edited: a new tree is built on the runner, and the old environment goes with the old trees, though
        // no environment is built this time.
        try plant()
        try box.write("main.py", (try box.read("project/main.py")) + "# edited\n")
        let second = try box.dstack(["run", "second"], environment: bed.environment)
        let envs = try FileManager.default.contentsOfDirectory(atPath: work.appendingPathComponent("pyenvs").path).sorted()
        #expect(envs.count == 2 && envs.contains("recent") && !envs.contains("0ld"), "reaped with the tree build: \(envs)")
        #expect(second.status == 0, "\(second.output)")
        #expect(second.stdout.contains("second | dstack: reusing Python environment"), "\(second.stdout)")
        #expect(!second.stdout.contains("Successfully installed"))

        let whereResult = try box.dstack(["run", "where"], environment: bed.environment)
        #expect(whereResult.stdout.contains("where | runner=\(work.path)\n"), "\(whereResult.output)")
    }

    /// A STAND-IN container engine that keeps a container's boundary: the commands run on the host, but with only
    /// the environment passed by `-e` and this folder (holding a stand-in `python` that echoes its arguments)
    /// first on PATH, as in an image; it records its arguments.
    static let boundedStandIn = #"""
    #!/bin/sh
    here=$(dirname "$0")
    printf '%s\n' "$*" >> "$here/calls"
    case "$1" in
      version) echo "stand-in 0"; exit 0 ;;
      run) shift ;;
      *) exit 0 ;;
    esac
    repo="" workdir="/workspace" commands="" names=""
    while [ $# -gt 0 ]; do
      case "$1" in
        --rm) shift ;;
        --name|--user|--gpus) shift 2 ;;
        -e) names="$names $2"; shift 2 ;;
        -v) case "$2" in
              *:/workspace) repo=${2%:/workspace} ;;
              *:/dstack/commands.sh:ro) commands=${2%:/dstack/commands.sh:ro} ;;
            esac
            shift 2 ;;
        -w) workdir=$2; shift 2 ;;
        *) break ;;
      esac
    done
    set --
    for n in $names; do eval "set -- \"\$@\" \"$n=\${$n}\""; done
    cd "$repo${workdir#/workspace}" && exec env -i PATH="$here:/usr/bin:/bin" "$@" /bin/sh -e "$commands"
    """#

    /// A GPU job of `provider: python` whose Python no runner has: the runner without an engine is not chosen, the
    /// one with an engine runs it in early dstack's CUDA image, where the image's Python installs the requirements.
    @Test func aGPUPythonJobRunsInTheDefaultImageWhereARunnerHasAnEngine() throws {
        let bin = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-standin-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: bin) }
        for (name, text) in [("docker", Self.boundedStandIn), ("python", "#!/bin/sh\necho \"image python: $*\"\n")] {
            try Data(text.utf8).write(to: bin.appendingPathComponent(name))
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: bin.appendingPathComponent(name).path)
        }
        let bed = try SSHBed(2, extraEnvironment: [1: "PATH=\(bin.path):/usr/local/bin:/usr/bin:/bin"])
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
            workflows:
              - name: fit
                provider: python
                python: 3.4
                requirements: requirements.txt
                script: main.py
                resources:
                  gpu: 1
            """)
        try box.write("requirements.txt", "tinypkg\n")
        try box.write("main.py", "print('never on the host')\n")
        try box.write(".dstack/hosts.yaml", bed.inventory(tag: "img", extra: [0: "resources: {gpu: 1}", 1: "resources: {gpu: 1}"]))
        let result = try box.dstack(["run", "fit"], environment: bed.environment)
        #expect(result.status == 0, "\(result.output)")
        #expect(try box.jobs(try box.lastRun())["fit"]?["runner"] as? String == "r2", "r1 has neither Python 3.4 nor an engine")
        #expect(result.stdout.contains("fit | image python: -m pip install -r requirements.txt"), "\(result.stdout)")
        #expect(result.stdout.contains("fit | image python: main.py"), "\(result.stdout)")
        let calls = try String(contentsOf: bin.appendingPathComponent("calls"), encoding: .utf8)
        let runCall = try #require(calls.split(separator: "\n").first { $0.hasPrefix("run ") })
        #expect(runCall.hasSuffix(" dstackai/python:3.4-cuda-11.1 /bin/sh -e /dstack/commands.sh"), "\(runCall)")
        #expect(runCall.contains("--gpus"), "\(runCall)")
        #expect(!FileManager.default.fileExists(atPath: bed.directory.appendingPathComponent("work-img-r2/pyenvs").path))
    }
}
