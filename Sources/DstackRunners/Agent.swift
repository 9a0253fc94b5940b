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
    /// Who takes each answer, oldest first (the first is the agent's "ready").
    private var waiting: [@Sendable (Result<AgentReply, any Error>) -> Void] = []
    private var failure: (any Error)?
    /// Polls waiting to be sent: while one poll request is answered, the polls asked meanwhile are gathered into
    /// the next one (one request line, one answer for all the jobs of the connection that are due).
    private var polls: [(base: String, job: String, offset: Int64, reply: CheckedContinuation<PollReply, any Error>)] = []
    private var pollInFlight = false

    private init(process: RemoteProcess, runner: String, logger: Logger) {
        self.process = process
        self.runner = runner
        self.logger = logger
    }

    /// Starts an agent over `session` (its text `script`: the agent's program, or another runner kind's functions
    /// in front of it) and waits until it is ready.
    static func start(on session: any RemoteSession, runner: String, logger: Logger,
                      script: String = RunnerScript.agentProgram) async throws -> Agent {
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
            waiting.append { continuation.resume(with: $0) }
            // Written under the lock: the order of writes is the order of `waiting`.
            if let request { process.write(request.bytes) }
            lock.unlock()
        }
    }

    /// Polls `job` under the work folder `base` from log byte `offset`: its new log bytes and state. Polls asked
    /// while another is being answered go together in the next request.
    func poll(base: String, job: String, offset: Int64) async throws -> PollReply {
        try await withCheckedThrowingContinuation { continuation in
            lock.lock()
            if let failure {
                lock.unlock()
                continuation.resume(throwing: failure)
                return
            }
            polls.append((base, job, offset, continuation))
            if !pollInFlight { sendPolls() }
            lock.unlock()
        }
    }

    /// Under the lock: sends the waiting polls of one work folder as one request.
    private func sendPolls() {
        guard let base = polls.first?.base else { return }
        let batch = polls.filter { $0.base == base }
        polls.removeAll { $0.base == base }
        let request: AgentRequest
        do {
            request = try AgentRequest("poll", [base] + batch.flatMap { [$0.job, String($0.offset)] })
        } catch {
            for poll in batch { poll.reply.resume(throwing: error) }
            sendPolls()
            return
        }
        pollInFlight = true
        waiting.append { [self] result in
            switch result {
            case .success(let reply):
                for (i, poll) in batch.enumerated() {
                    poll.reply.resume(returning: PollReply(status: reply.status, errorText: reply.errorText,
                                                           state: reply.states[i], data: reply.data[i]))
                }
            case .failure(let error):
                for poll in batch { poll.reply.resume(throwing: error) }
            }
            lock.withLock {
                pollInFlight = false
                if failure == nil { sendPolls() }
            }
        }
        process.write(request.bytes)
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
        let next: (@Sendable (Result<AgentReply, any Error>) -> Void)? = lock.withLock {
            waiting.isEmpty ? nil : waiting.removeFirst()
        }
        next?(.success(reply))
    }

    private func fail(_ error: any Error) {
        let (all, unsent) = lock.withLock {
            if failure == nil { failure = error }
            defer { waiting = []; polls = [] }
            return (waiting, polls)
        }
        for taker in all { taker(.failure(error)) }
        for poll in unsent { poll.reply.resume(throwing: error) }
    }
}

/// One job's part of a poll's answer.
struct PollReply: Sendable {
    /// How the poll request ended.
    var status: AgentStatus
    /// Why it failed, when it did.
    var errorText: String
    /// The job's state (nil when the agent did not say).
    var state: PollState?
    /// Its new log bytes.
    var data: Data?
}
