import DstackModel
import DstackSSH
import Foundation

/// How an agent request ended: its exit status in the agent (`agent.sh`), the one place these numbers live.
public enum AgentStatus: Sendable, Equatable {
    /// Done.
    case ok
    /// The runner cannot do it (a folder cannot be made, the disk is full...).
    case unavailable
    /// No job slot is free now.
    case noFreeSlot
    /// Not enough GPUs are free now.
    case noFreeGPUs
    /// The runner has no code tree of the snapshot (it was reaped): build it, then ask again.
    case noTree
    /// The agent did not understand the request (a bug on this side).
    case badRequest
    /// Any other status.
    case other(Int32)

    /// Reads a status number.
    init(_ code: Int32) {
        switch code {
        case 0: self = .ok
        case 2: self = .unavailable
        case 3: self = .noFreeSlot
        case 4: self = .noFreeGPUs
        case 5: self = .noTree
        case 6: self = .badRequest
        default: self = .other(code)
        }
    }
}

/// One request to the agent: a call of one of its `dstack_*` functions, arguments quoted as data, and an
/// optional payload the function reads itself.
struct AgentRequest: Sendable {
    /// The line sent (ends with a newline).
    let line: String
    /// Bytes sent right after the line.
    let payload: Data

    /// `function` with `arguments`, each one single-quoted word; an argument holding a newline or NUL cannot be
    /// framed on one line and is refused (file names with control characters are refused at snapshot time).
    init(_ function: String, _ arguments: [String], payload: Data = Data()) throws {
        for argument in arguments where argument.utf8.contains(where: { $0 == 0x0A || $0 == 0x0D || $0 == 0 }) {
            throw RunnerError.job(jobId: "", reason: "cannot send \(function) a value holding a line break or NUL: \(argument.debugDescription)")
        }
        var line = "dstack_" + function
        for argument in arguments { line += " " + shellQuote(argument) }
        self.line = line + "\n"
        self.payload = payload
    }

    /// The bytes to write.
    var bytes: Data {
        var data = Data(line.utf8)
        data.append(payload)
        return data
    }
}

/// What the agent answered to one request.
public struct AgentReply: Sendable {
    /// `E` lines: events (`granted 0 1,2`, `launched`, `error WHY`).
    public var events: [String] = []
    /// `K` lines: facts, as key and value.
    public var facts: [(key: String, value: String)] = []
    /// `S` lines: each polled job's state, by its index in the request.
    public var states: [Int: PollState] = [:]
    /// `D` frames: each polled job's new log bytes, by index.
    public var data: [Int: Data] = [:]
    /// How the request ended.
    public var status: AgentStatus = .ok

    /// The `error` events' texts, joined.
    var errorText: String {
        events.filter { $0.hasPrefix("error ") }.map { String($0.dropFirst(6)) }.joined(separator: "; ")
    }
}

/// A polled job's state.
public enum PollState: Sendable, Equatable {
    /// Still running (or its exit is being written).
    case running
    /// Its wrapper wrote this exit code.
    case exited(Int32)
    /// Its wrapper vanished without an exit code (killed, or the machine rebooted).
    case gone
    /// It has no folder on the runner.
    case missing

    /// Reads the words after `S N`.
    init(_ words: [Substring]) {
        switch words.first {
        case "exit": self = words.count > 1 ? Int32(words[1]).map(PollState.exited) ?? .running : .running
        case "gone": self = .gone
        case "missing": self = .missing
        default: self = .running
        }
    }
}

/// Reads the agent's output, which may arrive in pieces of any size, into replies: the one parser of the protocol.
struct AgentParser {
    private var buffer = Data()
    private var reply = AgentReply()
    /// While a `D` frame is being read: whose bytes, and how many are still due.
    private var frame: (index: Int, remaining: Int)?
    /// Whether the agent said it is ready (anything the login shell printed before is skipped).
    private(set) var ready = false
    /// Inside a line longer than `longestLine`, skipped to its end.
    private var skippingLine = false
    /// A runner is another machine: what it sends is bounded here. The agent's lines are short and its log frames
    /// at most 4 MiB; anything beyond these is not the protocol.
    static let longestLine = 1 << 20
    static let largestFrame = 64 << 20
    static let mostUnexpectedLines = 20
    private var unexpected = 0

    /// Takes more output; returns the replies it completed, in order.
    mutating func feed(_ bytes: Data) -> [AgentReply] {
        buffer.append(bytes)
        var done: [AgentReply] = []
        while true {
            if let (index, remaining) = frame {
                let n = min(remaining, buffer.count)
                if n > 0 {
                    reply.data[index, default: Data()].append(buffer.prefix(n))
                    buffer.removeFirst(n)
                }
                if n < remaining {
                    frame = (index, remaining - n)
                    return done
                }
                frame = nil
                continue
            }
            guard let newline = buffer.firstIndex(of: 0x0A) else {
                if buffer.count > Self.longestLine {
                    buffer.removeAll()
                    if !skippingLine { unexpectedLine("a line longer than \(Self.longestLine) bytes") }
                    skippingLine = true
                }
                return done
            }
            let length = buffer.distance(from: buffer.startIndex, to: newline)
            if skippingLine || length > Self.longestLine {
                if !skippingLine { unexpectedLine("a line longer than \(Self.longestLine) bytes") }
                skippingLine = false
                buffer.removeSubrange(buffer.startIndex...newline)
                continue
            }
            let line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
            buffer.removeSubrange(buffer.startIndex...newline)
            if !ready {
                if line.hasPrefix("dstack-agent ready") { ready = true }
                continue
            }
            let words = line.split(separator: " ", omittingEmptySubsequences: false)
            let rest = words.count > 1 ? line.dropFirst(words[0].count + 1) : ""
            switch words.first {
            case "E": reply.events.append(String(rest))
            case "K":
                let kv = rest.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
                reply.facts.append((String(kv[0]), kv.count > 1 ? String(kv[1]) : ""))
            case "S":
                if words.count > 2, let index = Int(words[1]) { reply.states[index] = PollState(Array(words[2...])) }
            case "D":
                if words.count > 2, let index = Int(words[1]), let length = Int(words[2]), length >= 0 {
                    if length <= Self.largestFrame {
                        frame = (index, length)
                    } else {
                        unexpectedLine(line)
                    }
                }
            case ".":
                reply.status = AgentStatus(words.count > 1 ? Int32(words[1]) ?? -1 : -1)
                done.append(reply)
                reply = AgentReply()
                unexpected = 0
            default:
                // Not the protocol (a job's stray output cannot reach here; a broken agent could): keep it as an
                // error event so that a failure says what was seen.
                unexpectedLine(line)
            }
        }
    }

    /// Records what was not the protocol, as an error event of the reply under way (the first few per reply).
    private mutating func unexpectedLine(_ line: String) {
        unexpected += 1
        guard unexpected <= Self.mostUnexpectedLines else { return }
        reply.events.append("error unexpected agent output: \(line.prefix(200))")
    }
}
