@testable import DstackSSH
import Foundation
import Testing

@Suite("exec over a real sshd", .serialized, .testbed())
struct ExecTests {
    @Test("exit status, stdout and stderr come back separately")
    func statusAndStreams() async throws {
        let session = try await testbed().connect()
        defer { Task { await session.close() } }
        let result = try await session.exec("echo out; echo err >&2; exit 3")
        #expect(result.stdoutText == "out\n")
        #expect(result.stderrText == "err\n")
        #expect(result.exitStatus == 3)
        #expect(result.exitSignal == nil)
        #expect(!result.succeeded)
        #expect(throws: SSHError.commandFailed(command: "x", status: "exited with status 3", stderr: "err\n")) {
            try result.check("x")
        }
        let ok = try await session.exec("true")
        #expect(ok.succeeded && ok.stdout.isEmpty)
    }

    @Test("a command killed by a signal reports the signal")
    func signal() async throws {
        let session = try await testbed().connect()
        defer { Task { await session.close() } }
        let result = try await session.exec("kill -TERM $$")
        #expect(result.exitSignal == "TERM")
        #expect(!result.succeeded)
        #expect(result.statusDescription == "was killed by signal TERM")
    }

    @Test("stdin reaches the command and gets EOF; no stdin means immediate EOF")
    func stdin() async throws {
        let session = try await testbed().connect()
        defer { Task { await session.close() } }
        let echoed = try await session.exec("tr a-z A-Z", stdin: Data("hello\n".utf8))
        #expect(echoed.stdoutText == "HELLO\n")
        let nothing = try await session.exec("cat; echo done")
        #expect(nothing.stdoutText == "done\n")
    }

    @Test("5 MB stdout and 5 MB stderr, interleaved, do not deadlock")
    func interleaved() async throws {
        let session = try await testbed().connect()
        defer { Task { await session.close() } }
        let chunk = 65_536, rounds = 80
        let result = try await session.exec(
            "i=0; while [ $i -lt \(rounds) ]; do head -c \(chunk) /dev/zero | tr '\\0' o; head -c \(chunk) /dev/zero | tr '\\0' e >&2; i=$((i+1)); done")
        #expect(result.succeeded)
        #expect(result.stdout.count == chunk * rounds)
        #expect(result.stderr.count == chunk * rounds)
        #expect(result.stdout.allSatisfy { $0 == UInt8(ascii: "o") })
        #expect(result.stderr.allSatisfy { $0 == UInt8(ascii: "e") })
    }

    @Test("5 MB of stdin echoed back while it is still being sent does not deadlock")
    func echoLargeInput() async throws {
        let session = try await testbed().connect()
        defer { Task { await session.close() } }
        var input = Data(count: 5 * 1024 * 1024)
        for index in stride(from: 0, to: input.count, by: 4093) { input[index] = UInt8(truncatingIfNeeded: index / 4093) }
        let result = try await session.exec("cat; cat /dev/null >&2", stdin: input)
        #expect(result.succeeded)
        #expect(result.stdout == input)
    }

    @Test("several execs run at once on one session")
    func concurrent() async throws {
        let session = try await testbed().connect()
        defer { Task { await session.close() } }
        let start = ContinuousClock.now
        let outputs = try await withThrowingTaskGroup(of: String.self) { group in
            for index in 0..<6 {
                group.addTask { try await session.exec("sleep 3; echo \(index)").stdoutText }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let elapsed = ContinuousClock.now - start
        #expect(outputs.sorted() == (0..<6).map { "\($0)\n" })
        // Run one after another they would take 18 s; the bound is loose because CI machines are shared and noisy.
        #expect(elapsed < .seconds(12), "six 3-second commands took \(elapsed): they did not overlap")
    }

    @Test("more execs than channel slots wait for a slot instead of failing")
    func channelLimit() async throws {
        let session = try await testbed().connect { $0.maxChannels = 3 }
        defer { Task { await session.close() } }
        let results = try await withThrowingTaskGroup(of: Int32.self) { group in
            for index in 0..<12 {
                group.addTask { try await session.exec("sleep 0.2; exit \(index % 4)").exitStatus }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.sorted() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    }

    @Test("the streaming exec delivers output while the command still runs")
    func streaming() async throws {
        let session = try await testbed().connect()
        defer { Task { await session.close() } }
        let chunks = Collector<(ContinuousClock.Instant, ExecStream, String)>()
        let result = try await session.exec("for i in 1 2 3; do echo line$i; echo warn$i >&2; sleep 0.3; done") { stream, data in
            chunks.append((ContinuousClock.now, stream, String(decoding: data, as: UTF8.self)))
        }
        let end = ContinuousClock.now
        #expect(result.succeeded && result.stdout.isEmpty)
        let stdout = chunks.values.filter { $0.1 == .stdout }.map(\.2).joined()
        let stderr = chunks.values.filter { $0.1 == .stderr }.map(\.2).joined()
        #expect(stdout == "line1\nline2\nline3\n")
        #expect(stderr == "warn1\nwarn2\nwarn3\n")
        let first = try #require(chunks.values.first)
        #expect(end - first.0 > .milliseconds(400), "the first chunk arrived only at the end")
    }

    @Test("execStream yields output as it comes; leaving the loop early stops the command")
    func execStream() async throws {
        let session = try await testbed().connect()
        defer { Task { await session.close() } }
        var events: [ExecEvent] = []
        for try await event in session.execStream("printf 'a\\n'; sleep 0.2; printf 'b\\n' >&2; exit 4") { events.append(event) }
        #expect(events == [.output(.stdout, Data("a\n".utf8)), .output(.stderr, Data("b\n".utf8)), .exit(ExecResult(exitStatus: 4))])

        let start = ContinuousClock.now
        var ticks = 0
        for try await event in session.execStream("while true; do echo tick; sleep 0.1; done", idleTimeout: .some(nil)) {
            if case .output = event { ticks += 1 }
            if ticks == 3 { break }
        }
        #expect(ContinuousClock.now - start < .seconds(10))
        #expect(try await session.exec("echo after").stdoutText == "after\n")
    }

    @Test("a connection dropped by the server fails running and later execs, and isConnected turns false")
    func connectionLost() async throws {
        let session = try await testbed().connect()
        defer { Task { await session.close() } }
        #expect(session.isConnected)
        let pending = Task { try await session.exec("sleep 30") }
        try await Task.sleep(for: .milliseconds(200))
        _ = try? await session.exec("kill -9 $PPID")  // the server process of this very connection
        let start = ContinuousClock.now
        do {
            _ = try await pending.value
            Issue.record("the exec survived its connection")
        } catch let error as SSHError {
            guard case .connectionLost = error else {
                Issue.record("expected connectionLost, got \(error)")
                return
            }
        }
        #expect(ContinuousClock.now - start < .seconds(10))
        #expect(!session.isConnected)
        await #expect(throws: SSHError.self) { try await session.exec("true") }
    }

    @Test("keepalives notice a server that stops answering, idle or in the middle of an exec", arguments: [false, true])
    func unresponsiveServer(busy: Bool) async throws {
        let session = try await testbed().connect { $0.keepaliveInterval = .seconds(1) }
        defer { Task { await session.close() } }
        // The parent of the remote shell is the sshd process that serves this connection.
        let server = try await session.exec("echo $PPID").stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
        try await Task.sleep(for: .milliseconds(1600))
        #expect(session.isConnected, "idle pings keep a healthy connection")
        let pending = busy ? Task { try await session.exec("sleep 60", idleTimeout: .some(nil)) } : nil
        try await Task.sleep(for: .milliseconds(300))
        try await shell("kill -STOP \(server)")
        defer { Task { try? await shell("kill -CONT \(server)") } }
        let start = ContinuousClock.now
        while session.isConnected && ContinuousClock.now - start < .seconds(10) {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(!session.isConnected, "the connection still counts as alive")
        if let pending {
            await #expect(throws: SSHError.self) { try await pending.value }
        }
    }

    @Test("an exec that sees no data for its idle timeout fails, and the session stays usable")
    func idleTimeout() async throws {
        let session = try await testbed().connect()
        defer { Task { await session.close() } }
        let start = ContinuousClock.now
        await #expect(throws: SSHError.timedOut(operation: "remote command 'sleep 20'", seconds: 1)) {
            try await session.exec("sleep 20", idleTimeout: .seconds(1))
        }
        #expect(ContinuousClock.now - start < .seconds(12), "the 20 s command was not cut short by the idle timeout")
        #expect(try await session.exec("echo still here").stdoutText == "still here\n")
    }

    @Test("cancelling the task aborts the exec, and the session stays usable")
    func cancellation() async throws {
        let session = try await testbed().connect()
        defer { Task { await session.close() } }
        let start = ContinuousClock.now
        let task = Task { try await session.exec("sleep 20") }
        try await Task.sleep(for: .milliseconds(300))
        task.cancel()
        await #expect(throws: SSHError.cancelled) { try await task.value }
        #expect(ContinuousClock.now - start < .seconds(12), "the 20 s command was not cut short by cancellation")
        #expect(try await session.exec("echo ok").stdoutText == "ok\n")
    }

    @Test("after close, execs fail with a clear error")
    func closed() async throws {
        let bed = try testbed()
        let session = try await bed.connect()
        await session.close()
        await #expect(throws: SSHError.sessionClosed(host: "[\(bed.runners[0].host)]:\(bed.runners[0].port)")) {
            try await session.exec("true")
        }
        await session.close()
    }

    @Test("a session dropped without close() still disconnects")
    func dropped() async throws {
        let bed = try testbed()
        let port = bed.runners[0].port
        let live = try await bed.connect()
        #expect(try await establishedConnections(toPort: port) >= 1, "the count sees a live session")
        await live.close()
        for _ in 0..<3 {
            let session = try await bed.connect()
            _ = try await session.exec("true")
        }
        var open = try await establishedConnections(toPort: port)
        for _ in 0..<50 where open != 0 {
            try await Task.sleep(for: .milliseconds(100))
            open = try await establishedConnections(toPort: port)
        }
        #expect(open == 0, "connections to the runner left open by dropped sessions")
    }

    /// Established TCP connections whose local port is `port`, from /proc/net/tcp (the server side on loopback).
    private func establishedConnections(toPort port: Int) async throws -> Int {
        // Through cat: Foundation reads a /proc file by its stat size, which is 0.
        let table = try await shell("cat /proc/net/tcp")
        let suffix = ":" + String(format: "%04X", port)
        return table.split(separator: "\n").dropFirst().filter { line in
            let fields = line.split(separator: " ")
            return fields.count > 3 && fields[1].hasSuffix(suffix) && fields[3] == "01"
        }.count
    }
}
