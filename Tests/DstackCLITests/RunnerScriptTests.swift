import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

@testable import DstackRunners

/// The shell code that runs on runners, by itself: every script parses (and passes shellcheck where it is
/// installed), and the agent answers its protocol when run here under `/bin/sh` with pipes for a channel.
@Suite struct RunnerScriptTests {
    /// `Sources/DstackRunners/Scripts/NAME`.
    static func source(_ script: RunnerScript) -> URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources/DstackRunners/Scripts/\(script.fileName)")
    }

    @Test(arguments: RunnerScript.allCases)
    func everyScriptParsesAndIsTheOneCompiledIn(_ script: RunnerScript) throws {
        let file = Self.source(script)
        #expect(try String(contentsOf: file, encoding: .utf8) == script.text)
        let result = try run(["/bin/sh", "-n", file.path])
        #expect(result.status == 0, "\(result.output)")
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/shellcheck"), "shellcheck is not installed"),
          arguments: RunnerScript.allCases)
    func shellcheckFindsNoWarning(_ script: RunnerScript) throws {
        let result = try run(["/usr/bin/shellcheck", "-s", "sh", "-S", "warning", "-e", "SC2317", Self.source(script).path])
        #expect(result.status == 0, "\(result.output)")
    }

    func run(_ arguments: [String], stdin: Data = Data()) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        try process.run()
        input.fileHandleForWriting.write(stdin)
        try? input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Feeds the agent `requests` (then end of input) and parses what it answered.
    func agent(_ requests: [AgentRequest]) throws -> [AgentReply] {
        var input = Data()
        for request in requests { input.append(request.bytes) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", RunnerScript.agentProgram]
        let stdin = Pipe(), stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = FileHandle.nullDevice
        try process.run()
        stdin.fileHandleForWriting.write(input)
        try? stdin.fileHandleForWriting.close()
        let data = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        var parser = AgentParser()
        return parser.feed(data)
    }

    @Test func theAgentStartsAJobOnceFollowsItsLogAndReportsItsExit() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-agent-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: base) }
        // A tree as tree-publish.sh leaves it: trees/snap links to .b-snap-x/repo (the other tests keep an older
        // dstack's plain trees/snap folder).
        let tree = base.appendingPathComponent("trees/.b-snap-x/repo")
        try FileManager.default.createDirectory(at: tree, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: base.appendingPathComponent("trees/snap").path, withDestinationPath: ".b-snap-x/repo")
        try Data("data\n".utf8).write(to: tree.appendingPathComponent("input.txt"))
        // A value that would run as code if it were ever spliced into shell text.
        let hostile = "x'; touch \(base.path)/pwned; echo '"
        let files = [("commands.sh", "set -e\ncat input.txt\nprintf '%s\\n' \"$VALUE\"\nexit 3\n"),
                     ("env.sh", "export VALUE='" + hostile.replacingOccurrences(of: "'", with: "'\\''") + "'\n")]
        var payload = ""
        for (name, text) in files {
            payload += "printf '%s' '" + text.replacingOccurrences(of: "'", with: "'\\''") + "' > \(name) || return 2\n"
        }
        let body = Data(payload.utf8)
        func start() throws -> AgentRequest {
            try AgentRequest("start", [base.path, "job-1", "1", "2", "", "0", "tests", "snap", "", "0", "", Self.lines(body)], payload: body)
        }
        // Two starts of the same attempt: the second reports, and launches nothing.
        var replies = try agent([start(), start()])
        #expect(replies.count == 2)
        #expect(replies.allSatisfy { $0.status == .ok }, "\(replies.map(\.errorText))")
        #expect(replies[0].events == ["granted 0 ", "launched"])
        #expect(replies[1].events == ["granted 0 ", "launched"])
        // Poll until it exits.
        var log = Data()
        var state = PollState.running
        for _ in 0..<200 where state == .running {
            Thread.sleep(forTimeInterval: 0.05)
            replies = try agent([AgentRequest("poll", [base.path, "job-1", String(log.count)])])
            log.append(replies[0].data[0] ?? Data())
            state = replies[0].states[0] ?? .running
        }
        #expect(state == .exited(3))
        #expect(String(decoding: log, as: UTF8.self) == "data\n\(hostile)\n")
        // `pid`: `WRAPPER BOOTID` on the first line, as older dstacks read it (`read -r pid boot`), and the job's own
        // process group on the second.
        let pidLines = try String(contentsOf: base.appendingPathComponent("jobs/job-1/pid"), encoding: .utf8).split(separator: "\n")
        #expect(pidLines.count == 2 && pidLines[0].split(separator: " ").count == 2 && Int32(pidLines[1]) != nil, "\(pidLines)")
        #expect(!FileManager.default.fileExists(atPath: base.appendingPathComponent("pwned").path))
        // The exit released the slot; the job ran once.
        #expect(!FileManager.default.fileExists(atPath: base.appendingPathComponent("locks/slot-0").path))
        // Another start of the same attempt finds it launched (and exited): nothing runs again.
        replies = try agent([start()])
        #expect(replies[0].events.last == "launched")
        replies = try agent([AgentRequest("poll", [base.path, "job-1", "0"])])
        #expect(String(decoding: replies[0].data[0] ?? Data(), as: UTF8.self) == "data\n\(hostile)\n")
    }

    @Test func theAgentSaysWhenNoSlotIsFreeAndWhenTheTreeIsMissing() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-agent-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: base) }
        try FileManager.default.createDirectory(at: base.appendingPathComponent("trees/snap"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: base.appendingPathComponent("locks/slot-0"), withIntermediateDirectories: true)
        try Data("other-job someone\n".utf8).write(to: base.appendingPathComponent("locks/slot-0/owner"))
        try FileManager.default.createDirectory(at: base.appendingPathComponent("jobs/other-job"), withIntermediateDirectories: true)
        let replies = try agent([
            AgentRequest("start", [base.path, "job-2", "1", "1", "", "0", "tests", "snap", "", "0", "", "0"]),
            AgentRequest("start", [base.path, "job-3", "1", "1", "", "0", "tests", "nosuch", "", "0", "", "0"]),
            AgentRequest("poll", [base.path, "never", "0"]),
            AgentRequest("probe", [base.path]),
        ])
        #expect(replies.map(\.status) == [.noFreeSlot, .noTree, .ok, .ok])
        #expect(replies[2].states[0] == .missing)
        #expect(replies[3].facts.contains { $0.key == "cpus" })
        #expect(replies[3].facts.contains { $0.key == "lock" && $0.value == "slot-0 other-job someone" })
    }

    /// The number of lines of a start payload (what `dstack_start` reads).
    static func lines(_ payload: Data) -> String {
        String(payload.filter { $0 == 0x0A }.count)
    }

    /// A start payload writing `commands` as the job's commands (no environment).
    static func payload(_ commands: String) -> Data {
        var payload = ""
        for (name, text) in [("commands.sh", commands), ("env.sh", "")] {
            payload += "printf '%s' '" + text.replacingOccurrences(of: "'", with: "'\\''") + "' > \(name) || return 2\n"
        }
        return Data(payload.utf8)
    }

    /// Polls `job` under `base` until it exits; returns its log and state.
    func pollUntilExit(_ base: URL, _ job: String) throws -> (String, PollState) {
        var log = Data()
        var state = PollState.running
        for _ in 0..<200 where state == .running {
            Thread.sleep(forTimeInterval: 0.05)
            let reply = try agent([AgentRequest("poll", [base.path, job, String(log.count)])])[0]
            log.append(reply.data[0] ?? Data())
            state = reply.states[0] ?? .running
        }
        return (String(decoding: log, as: UTF8.self), state)
    }

    /// One agent kept open: each request answered before the next is sent (the agent's memory, such as the locks
    /// it releases later, lives as long as the session).
    final class AgentSession {
        let process = Process()
        let stdin = Pipe(), stdout = Pipe()
        var parser = AgentParser()
        var replies: [AgentReply] = []

        init() throws {
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", RunnerScript.agentProgram]
            process.standardInput = stdin
            process.standardOutput = stdout
            process.standardError = FileHandle.nullDevice
            try process.run()
        }

        func send(_ request: AgentRequest) throws -> AgentReply {
            stdin.fileHandleForWriting.write(request.bytes)
            while replies.isEmpty {
                let data = stdout.fileHandleForReading.availableData
                try #require(!data.isEmpty, "the agent ended")
                replies += parser.feed(data)
            }
            return replies.removeFirst()
        }

        func close() {
            try? stdin.fileHandleForWriting.close()
            process.waitUntilExit()
        }
    }

    /// A job that ended leaves its slot lock to the next start of the same agent, which takes it over in place (the
    /// same file, rewritten: no lock made or removed per job); a lock it does not take is removed after it.
    @Test func theNextStartTakesOverTheSlotLockOfAJobThatEnded() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-agent-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: base) }
        try FileManager.default.createDirectory(at: base.appendingPathComponent("trees/snap"), withIntermediateDirectories: true)
        let session = try AgentSession()
        defer { session.close() }
        let body = Self.payload("echo ran\n")
        func start(_ job: String, slots: Int, cleanup: String = "") throws -> AgentReply {
            try session.send(AgentRequest("start", [base.path, job, "1", String(slots), "", "0", "t", "snap", "", "0", cleanup, Self.lines(body)],
                                          payload: body))
        }
        func untilOver(_ job: String) throws {
            for _ in 0..<200 {
                let reply = try session.send(AgentRequest("poll", [base.path, job, "0"]))
                if case .exited = reply.states[0] ?? .running { return }
                Thread.sleep(forTimeInterval: 0.02)
            }
            Issue.record("\(job) never ended")
        }
        func mode(_ name: String) -> Int? {
            (try? FileManager.default.attributesOfItem(atPath: base.appendingPathComponent("locks/\(name)").path))?[.posixPermissions] as? Int
        }
        func holder(_ name: String) -> String {
            (try? String(contentsOfFile: base.appendingPathComponent("locks/\(name)").path, encoding: .utf8)) ?? "none"
        }

        #expect(try start("a", slots: 2).events == ["granted 0 ", "launched"])
        try untilOver("a")
        // A mark that a file made anew would not have (inode numbers are reused at once).
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: base.appendingPathComponent("locks/slot-0").path)
        // Over, its lock is released with the next start, which takes it: the same file, now naming b.
        #expect(try start("b", slots: 2, cleanup: "a").events == ["granted 0 ", "launched"])
        #expect(mode("slot-0") == 0o600, "the lock was made anew")
        #expect(holder("slot-0") == "b t\n")
        #expect(!FileManager.default.fileExists(atPath: base.appendingPathComponent("jobs/a").path))
        // Two over, one start: it takes one over and the other is removed.
        #expect(try start("c", slots: 2).events == ["granted 1 ", "launched"])
        try untilOver("b")
        try untilOver("c")
        #expect(try start("d", slots: 2).events.last == "launched")
        let held = [holder("slot-0"), holder("slot-1")].filter { $0 != "none" }
        #expect(held == ["d t\n"], "\(held)")
        // A lock taken by someone else meanwhile (another coordinator's agent) is never taken over.
        try untilOver("d")
        let slot = held.isEmpty ? "slot-0" : (holder("slot-0") == "d t\n" ? "slot-0" : "slot-1")
        let other = slot == "slot-0" ? "slot-1" : "slot-0"
        // Between the poll that saw d over and the next start, the other agent reclaimed d's lock and took it.
        try Data("theirs x\n".utf8).write(to: base.appendingPathComponent("locks/\(slot)"))
        #expect(try start("e", slots: 2).events == ["granted \(other.dropFirst(5)) ", "launched"])
        #expect(holder(slot) == "theirs x\n")
        #expect(holder(other) == "e t\n")
        // An empty lock (another agent's, being made) is neither taken over nor removed.
        try untilOver("e")
        try FileManager.default.removeItem(at: base.appendingPathComponent("locks/\(slot)"))
        try Data().write(to: base.appendingPathComponent("locks/\(other)"))
        #expect(try start("f", slots: 2).events == ["granted \(slot.dropFirst(5)) ", "launched"])
        #expect(holder(other) == "", "an empty lock was taken over or removed")
    }

    /// A stop that comes while the wrapper has not launched the job yet (its `pid` names no group so far) still
    /// reaches the job's process group once the wrapper writes it.
    @Test func aStopBeforeTheJobsGroupIsKnownStillReachesIt() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-agent-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: base) }
        let dir = base.appendingPathComponent("jobs/j")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        // The wrapper: alive, deaf to TERM (as wrapper.sh is); the job: a process group of its own, not yet named.
        let wrapper = try Subprocess.spawnDetached(["/bin/sh", "-c", "trap '' TERM; sleep 4"], environment: [:])
        let job = try Subprocess.spawnDetached(["/bin/sleep", "30"], environment: [:])
        defer { kill(wrapper, SIGKILL); kill(job, SIGKILL) }
        for pid in [wrapper, job] { Thread.detachNewThread { var status: Int32 = 0; waitpid(pid, &status, 0) } }
        let boot = try String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        try Data("\(wrapper) \(boot)\n".utf8).write(to: dir.appendingPathComponent("pid"))
        // The wrapper launches the job while the stop waits.
        Thread.detachNewThread {
            Thread.sleep(forTimeInterval: 0.5)
            try? Data("\(wrapper) \(boot)\n\(job)\n".utf8).write(to: dir.appendingPathComponent("pid"))
        }
        let replies = try agent([AgentRequest("stop", [dir.path])])
        #expect(replies.first?.status == .ok)
        #expect(kill(job, 0) != 0, "the job's group was never signalled")
    }

    @Test func aJobNeverSeesTheAgentsRequestStream() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-agent-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: base) }
        try FileManager.default.createDirectory(at: base.appendingPathComponent("trees/snap"), withIntermediateDirectories: true)
        let body = Self.payload("if [ -e /proc/$$/fd/3 ]; then echo fd3-open; else echo fd3-closed; fi\n")
        let replies = try agent([AgentRequest("start", [base.path, "j", "1", "1", "", "0", "t", "snap", "", "0", "", Self.lines(body)], payload: body)])
        #expect(replies.first?.status == .ok)
        let (log, state) = try pollUntilExit(base, "j")
        #expect(state == .exited(0))
        #expect(log == "fd3-closed\n", "the job could read other jobs' requests: \(log)")
    }

    @Test func aNewAttemptStopsWhatTheOldOneLeftRunning() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-agent-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: base) }
        let fm = FileManager.default
        try fm.createDirectory(at: base.appendingPathComponent("trees/snap"), withIntermediateDirectories: true)
        // Attempt 1 of the job still runs here (the coordinator gave it up): a `sleep` in a session of its own (so
        // its own process group leader, as a wrapper is), recorded as the job's wrapper, with a slot lock.
        try fm.createDirectory(at: base, withIntermediateDirectories: true)
        // posix_spawn with setsid, every other descriptor closed: nothing of this test's is held by the sleep.
        let oldPid = try Subprocess.spawnDetached(["/bin/sleep", "31"], environment: [:])
        try #require(oldPid > 0)
        defer { kill(oldPid, SIGKILL) }
        // Reaped as soon as it ends, as a wrapper is by init (a zombie would pass the agent's `kill -0`).
        Thread.detachNewThread { var status: Int32 = 0; waitpid(oldPid, &status, 0) }
        let boot = try String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        try fm.createDirectory(at: base.appendingPathComponent("jobs/j"), withIntermediateDirectories: true)
        try Data("1\n".utf8).write(to: base.appendingPathComponent("jobs/j/attempt"))
        try Data("\(oldPid) \(boot)\n".utf8).write(to: base.appendingPathComponent("jobs/j/pid"))
        try fm.createDirectory(at: base.appendingPathComponent("locks/slot-0"), withIntermediateDirectories: true)
        try Data("j someone\n".utf8).write(to: base.appendingPathComponent("locks/slot-0/owner"))
        try Data("slot-0\n".utf8).write(to: base.appendingPathComponent("locks/held-j"))
        let body = Self.payload("echo second\n")
        let replies = try agent([AgentRequest("start", [base.path, "j", "2", "1", "", "0", "t", "snap", "", "0", "", Self.lines(body)], payload: body)])
        #expect(replies.first?.status == .ok, "\(replies.map(\.errorText))")
        #expect(replies.first?.events == ["granted 0 ", "launched"])
        // Gone (or a zombie nobody reaped yet: it was killed all the same).
        func alive(_ pid: pid_t) -> Bool {
            guard kill(pid, 0) == 0 else { return false }
            let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
            return !status.contains("State:\tZ")
        }
        var stopped = false
        for _ in 0..<100 where !stopped {
            stopped = !alive(oldPid)
            if !stopped { Thread.sleep(forTimeInterval: 0.05) }
        }
        #expect(stopped, "attempt 1 was not stopped")
        let (log, state) = try pollUntilExit(base, "j")
        #expect(state == .exited(0))
        #expect(log == "second\n")
    }

    @Test func aLockIsOneFileMadeWithoutAProcessAndAnOlderLockFolderStillCounts() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-agent-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: base) }
        let fm = FileManager.default
        try fm.createDirectory(at: base.appendingPathComponent("trees/snap"), withIntermediateDirectories: true)
        // slot-0 is held by a running job through an older dstack's lock folder: the new job gets slot-1, as a file.
        try fm.createDirectory(at: base.appendingPathComponent("locks/slot-0"), withIntermediateDirectories: true)
        try Data("busy someone\n".utf8).write(to: base.appendingPathComponent("locks/slot-0/owner"))
        try fm.createDirectory(at: base.appendingPathComponent("jobs/busy"), withIntermediateDirectories: true)
        let body = Self.payload("sleep 0.3\n")
        let replies = try agent([AgentRequest("start", [base.path, "j", "1", "2", "", "0", "me", "snap", "", "0", "", Self.lines(body)], payload: body),
                                 AgentRequest("probe", [base.path])])
        #expect(replies.first?.events == ["granted 1 ", "launched"], "\(replies.map(\.errorText))")
        var isFolder: ObjCBool = true
        #expect(fm.fileExists(atPath: base.appendingPathComponent("locks/slot-1").path, isDirectory: &isFolder) && !isFolder.boolValue)
        #expect(try String(contentsOf: base.appendingPathComponent("locks/slot-1"), encoding: .utf8) == "j me\n")
        #expect(replies[1].facts.filter { $0.key == "lock" }.map(\.value) == ["slot-0 busy someone", "slot-1 j me"])
        let (_, state) = try pollUntilExit(base, "j")
        #expect(state == .exited(0))
        #expect(!fm.fileExists(atPath: base.appendingPathComponent("locks/slot-1").path), "the exit released the lock")
        #expect(fm.fileExists(atPath: base.appendingPathComponent("locks/slot-0/owner").path), "another job's lock stays")
    }

    @Test func aLockAPollSawOverIsFreeForTheNextStartAndGoneAfterTheAgent() throws {
        // The poll that sees a job's exit releases its locks with the agent's next removal: the next start (which
        // removes the finished folders first) gets the slot, and nothing is left behind when the agent ends.
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-agent-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: base) }
        let fm = FileManager.default
        try fm.createDirectory(at: base.appendingPathComponent("trees/snap"), withIntermediateDirectories: true)
        try fm.createDirectory(at: base.appendingPathComponent("jobs/old"), withIntermediateDirectories: true)
        try fm.createDirectory(at: base.appendingPathComponent("locks"), withIntermediateDirectories: true)
        try Data("old me\n".utf8).write(to: base.appendingPathComponent("locks/slot-0"))
        try Data("0\n".utf8).write(to: base.appendingPathComponent("jobs/old/exit"))
        try Data().write(to: base.appendingPathComponent("jobs/old/log"))
        let body = Self.payload("true\n")
        let replies = try agent([AgentRequest("poll", [base.path, "old", "0"]),
                                 AgentRequest("start", [base.path, "new", "1", "1", "", "0", "me", "snap", "", "0", "old", Self.lines(body)], payload: body),
                                 AgentRequest("probe", [base.path])])
        #expect(replies[0].states[0] == .exited(0))
        #expect(replies[1].events == ["granted 0 ", "launched"], "\(replies[1].errorText)")
        #expect(replies[2].facts.filter { $0.key == "lock" }.map(\.value) == ["slot-0 new me"])
        #expect(!fm.fileExists(atPath: base.appendingPathComponent("jobs/old").path), "the finished folder went with the cleanup")
        let (_, state) = try pollUntilExit(base, "new")
        #expect(state == .exited(0))
        #expect(!fm.fileExists(atPath: base.appendingPathComponent("locks/slot-0").path), "released when the polling agent ended")
    }

    @Test func aStartSentAgainBeforeTheWrapperRanLaunchesNothing() throws {
        // The agent marks the attempt launched itself: a start sent again right behind the first (before the
        // wrapper wrote its pid) reports it, rather than taking the folder for an unfinished start and running the
        // job a second time (seen when two starts came in one write).
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-agent-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: base) }
        let fm = FileManager.default
        try fm.createDirectory(at: base.appendingPathComponent("trees/snap"), withIntermediateDirectories: true)
        try fm.createDirectory(at: base.appendingPathComponent("jobs/j/repo"), withIntermediateDirectories: true)
        try fm.createDirectory(at: base.appendingPathComponent("locks"), withIntermediateDirectories: true)
        try Data("1\nlaunched\n".utf8).write(to: base.appendingPathComponent("jobs/j/attempt"))
        try Data("j me\n".utf8).write(to: base.appendingPathComponent("locks/slot-0"))
        let body = Self.payload("echo again > again.txt\n")
        let replies = try agent([AgentRequest("start", [base.path, "j", "1", "1", "", "0", "me", "snap", "", "0", "", Self.lines(body)], payload: body)])
        #expect(replies.first?.events == ["granted 0 ", "launched"], "\(replies.map(\.errorText))")
        Thread.sleep(forTimeInterval: 0.3)
        #expect(!fm.fileExists(atPath: base.appendingPathComponent("jobs/j/repo/again.txt").path), "the job ran again")
        #expect(!fm.fileExists(atPath: base.appendingPathComponent("jobs/j/log").path), "the folder was made anew")
    }

    @Test func anExitFileWithoutItsLineIsNotAnExitStatus() throws {
        // The wrapper writes `exit` in place: a file with no whole line is one being written, or one its wrapper
        // was killed in the middle of writing — never a status, and never a job polled as running forever.
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-agent-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: base) }
        let fm = FileManager.default
        let boot = try String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        try fm.createDirectory(at: base.appendingPathComponent("jobs/j"), withIntermediateDirectories: true)
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()
        try Data("\(gone.processIdentifier) \(boot)\n".utf8).write(to: base.appendingPathComponent("jobs/j/pid"))
        try Data().write(to: base.appendingPathComponent("jobs/j/log"))
        try Data("0".utf8).write(to: base.appendingPathComponent("jobs/j/exit"))
        var reply = try agent([AgentRequest("poll", [base.path, "j", "0"])])[0]
        #expect(reply.states[0] == .gone)
        #expect(LocalRunner.exitCode(base.appendingPathComponent("jobs/j/exit").path) == nil)
        try Data("0\n".utf8).write(to: base.appendingPathComponent("jobs/j/exit"))
        reply = try agent([AgentRequest("poll", [base.path, "j", "0"])])[0]
        #expect(reply.states[0] == .exited(0))
        #expect(LocalRunner.exitCode(base.appendingPathComponent("jobs/j/exit").path) == "0")
    }

    @Test func whatARunnerSendsBackIsBounded() {
        // A runner is another machine: a frame announcing more than any poll sends, an endless line, or a flood of
        // lines that are not the protocol cost bounded memory and still end in a reply.
        var parser = AgentParser()
        var replies = parser.feed(Data("dstack-agent ready 1\nD 0 99999999999\n. 0\n".utf8))
        #expect(replies.count == 1)
        #expect(replies.first?.errorText.contains("D 0 99999999999") == true)
        #expect(replies.first?.data.isEmpty == true)
        _ = parser.feed(Data(repeating: UInt8(ascii: "x"), count: AgentParser.longestLine + 10))
        replies = parser.feed(Data("more\n. 3\n".utf8))
        #expect(replies.count == 1)
        #expect(replies.first?.status == .noFreeSlot)
        #expect(replies.first?.events == ["error unexpected agent output: a line longer than \(AgentParser.longestLine) bytes"])
        replies = parser.feed(Data(String(repeating: "junk\n", count: 1000).utf8) + Data(". 0\n".utf8))
        #expect(replies.first?.events.count == AgentParser.mostUnexpectedLines)
    }

    @Test func aValueWithALineBreakIsNeverFramedAsARequest() {
        #expect(throws: RunnerError.self) { try AgentRequest("stop", ["jobs/a\ndstack_finish / 1 x"]) }
    }
}
