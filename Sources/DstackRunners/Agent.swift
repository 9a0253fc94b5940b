import DstackSSH
import Foundation
import Logging

/// One agent shell on a runner (`Scripts/agent.sh`), started once per connection through the login shell, carrying
/// every later request of that connection over one channel. Requests may be sent from many tasks at once: they are
/// written in order and the agent answers them in the same order, one at a time.
final class Agent: @unchecked Sendable {
    private let lock = NSLock()
    private let process: RemoteProcess
    private let logger: Logger
    private let runner: String
    /// The callers waiting for answers, oldest first (the first is the agent's "ready").
    private var waiting: [CheckedContinuation<AgentReply, any Error>] = []
    private var failure: (any Error)?

    private init(process: RemoteProcess, runner: String, logger: Logger) {
        self.process = process
        self.runner = runner
        self.logger = logger
    }

    /// Starts an agent over `session` (its text `script`: the agent's, or another runner kind's functions and the
    /// agent's) and waits until it is ready.
    static func start(on session: SSHSession, runner: String, logger: Logger, script: String = RunnerScript.agent.text) async throws -> Agent {
        let agent = Agent(process: session.startProcess(script, label: "the agent shell"), runner: runner, logger: logger)
        let reader = Task { await agent.read() }
        do {
            _ = try await agent.enqueue(nil)
        } catch {
            reader.cancel()
            agent.process.cancel()
            throw error
        }
        return agent
    }

    /// Whether it can take requests (it has not died).
    var isAlive: Bool { lock.withLock { failure == nil } }

    /// Sends `request` and waits for its answer.
    func send(_ request: AgentRequest) async throws -> AgentReply {
        try await enqueue(request)
    }

    /// Ends the agent (its input closes, it exits).
    func close() {
        process.closeInput()
    }

    private func enqueue(_ request: AgentRequest?) async throws -> AgentReply {
        try await withCheckedThrowingContinuation { continuation in
            lock.lock()
            if let failure {
                lock.unlock()
                continuation.resume(throwing: failure)
                return
            }
            waiting.append(continuation)
            // Written under the lock: the order of writes is the order of `waiting`.
            if let request { process.write(request.bytes) }
            lock.unlock()
        }
    }

    private func read() async {
        var parser = AgentParser()
        var wasReady = false
        do {
            for try await event in process.events {
                switch event {
                case .output(.stdout, let data):
                    var replies = parser.feed(data)
                    if parser.ready && !wasReady {
                        wasReady = true
                        replies.insert(AgentReply(), at: 0)
                    }
                    for reply in replies { answer(reply) }
                case .output(.stderr, let data):
                    logger.debug("\(runner) agent: \(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))")
                case .exit(let result):
                    fail(RunnerError.unavailable(runner: runner, reason: "its agent shell ended (\(result.statusDescription))\(wasReady ? "" : ": it never started; check that /bin/sh and head exist there")"))
                    return
                }
            }
            fail(RunnerError.unavailable(runner: runner, reason: "its agent shell ended"))
        } catch {
            fail(error)
        }
    }

    private func answer(_ reply: AgentReply) {
        let next: CheckedContinuation<AgentReply, any Error>? = lock.withLock {
            waiting.isEmpty ? nil : waiting.removeFirst()
        }
        next?.resume(returning: reply)
    }

    private func fail(_ error: any Error) {
        let all: [CheckedContinuation<AgentReply, any Error>] = lock.withLock {
            if failure == nil { failure = error }
            defer { waiting = [] }
            return waiting
        }
        for continuation in all { continuation.resume(throwing: error) }
    }
}
