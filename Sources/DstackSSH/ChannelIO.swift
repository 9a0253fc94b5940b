import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where a channel's standard input comes from, read on the loop thread.
final class ChannelInput {
    private let descriptor: Int32?
    private let handle: FileHandle?
    private let queue: InputQueue?
    private let buffer: UnsafeMutableRawBufferPointer
    private var start = 0
    private var end = 0
    private var sourceDone: Bool
    /// Bytes sent before anything of the source (the script of a portable command line).
    private var prefix = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    private var prefixSent = 0

    /// No input: the channel gets EOF at once.
    convenience init() { self.init(data: Data()) }

    /// Input from bytes in memory (copied into a buffer the loop thread owns).
    init(data: Data) {
        descriptor = nil
        handle = nil
        queue = nil
        buffer = .allocate(byteCount: max(1, data.count), alignment: 16)
        data.copyBytes(to: buffer.bindMemory(to: UInt8.self), count: data.count)
        end = data.count
        sourceDone = true
    }

    /// Input read from a file or pipe until its end; the handle is kept open until the input is dropped.
    init(handle: FileHandle, bufferSize: Int) {
        descriptor = handle.fileDescriptor
        self.handle = handle
        queue = nil
        buffer = .allocate(byteCount: bufferSize, alignment: 16)
        sourceDone = false
    }

    /// Input written over time by another thread (an agent's requests), until the queue is closed.
    init(queue: InputQueue) {
        descriptor = nil
        handle = nil
        self.queue = queue
        buffer = .allocate(byteCount: 256 * 1024, alignment: 16)
        sourceDone = false
    }

    /// Sends `bytes` before the rest of the input; called once, before the input is used.
    func prepend(_ bytes: Data) {
        precondition(prefix.count == 0, "one prefix per input")
        prefix = .allocate(byteCount: bytes.count, alignment: 16)
        bytes.copyBytes(to: prefix.bindMemory(to: UInt8.self), count: bytes.count)
    }

    deinit {
        buffer.deallocate()
        if prefix.count > 0 { prefix.deallocate() }
    }

    /// Whether the input is written over time (an agent's requests): it has no end of its own, so the remote
    /// side closing its output ends the command.
    var isQueue: Bool { queue != nil }

    /// Whether every byte of the source has been sent.
    var reachedEnd: Bool { sourceDone && start == end && prefixSent == prefix.count }

    /// The bytes ready to send, refilled from the source when empty; empty once `reachedEnd`, or when a queue has
    /// nothing yet.
    func pending() throws(SSHError) -> UnsafeRawBufferPointer {
        if prefixSent < prefix.count {
            return UnsafeRawBufferPointer(rebasing: prefix[prefixSent...])
        }
        if start == end, !sourceDone, let queue {
            let (bytes, closed) = queue.take(upTo: buffer.count)
            start = 0
            end = bytes.count
            bytes.copyBytes(to: buffer.bindMemory(to: UInt8.self), count: bytes.count)
            if bytes.isEmpty && closed { sourceDone = true }
        }
        if start == end, !sourceDone, let descriptor {
            start = 0
            end = 0
            while true {
                // A blocking read of a local file or pipe, on the session's own thread.
                let n = Posix.read(descriptor, buffer.baseAddress!, buffer.count)
                if n > 0 { end = n; break }
                if n == 0 { sourceDone = true; break }
                if errno == EINTR { continue }
                throw .localIO(path: "standard input of the remote command", reason: errnoDescription(errno))
            }
        }
        return UnsafeRawBufferPointer(rebasing: buffer[start..<end])
    }

    /// Marks `count` bytes of `pending()` as sent.
    func consume(_ count: Int) {
        if prefixSent < prefix.count { prefixSent += count } else { start += count }
    }
}

/// Bytes handed from any thread to a channel's input, which the loop thread takes as it can send them.
final class InputQueue: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    private var closed = false

    /// Creates an empty, open queue.
    init() {}

    /// Adds bytes to send; ignored once closed.
    func append(_ bytes: Data) {
        lock.withLock { if !closed { data.append(bytes) } }
    }

    /// Ends the input once what is queued was sent.
    func close() {
        lock.withLock { closed = true }
    }

    /// Takes up to `limit` queued bytes, and whether the queue is closed.
    func take(upTo limit: Int) -> (Data, Bool) {
        lock.withLock {
            let n = min(limit, data.count)
            let taken = Data(data.prefix(n))
            data.removeFirst(n)
            return (taken, closed)
        }
    }
}

/// Where a channel's output goes, written on the loop thread.
final class ChannelOutput {
    /// One destination.
    enum Target {
        /// Kept in memory, up to `limit` bytes; the rest is dropped.
        case collect(limit: Int)
        /// Written to a local file or pipe (blocking, on the loop thread).
        case handle(FileHandle)
        /// Handed to a callback, on the loop thread.
        case callback(@Sendable (ExecStream, Data) -> Void)
    }

    private let stdoutTarget: Target
    private let stderrTarget: Target
    /// The collected standard output.
    private(set) var stdout = Data()
    /// The collected standard error.
    private(set) var stderr = Data()

    init(stdout: Target, stderr: Target) {
        stdoutTarget = stdout
        stderrTarget = stderr
    }

    /// Delivers bytes read from stream 0 (stdout) or 1 (stderr).
    func write(_ stream: ExecStream, _ bytes: UnsafeRawBufferPointer) throws(SSHError) {
        switch stream == .stdout ? stdoutTarget : stderrTarget {
        case let .collect(limit):
            if stream == .stdout {
                stdout.append(contentsOf: bytes.prefix(max(0, limit - stdout.count)))
            } else {
                stderr.append(contentsOf: bytes.prefix(max(0, limit - stderr.count)))
            }
        case let .handle(handle):
            if let code = Posix.writeAll(handle.fileDescriptor, bytes) {
                throw .localIO(path: "output of the remote command", reason: errnoDescription(code))
            }
        case let .callback(callback):
            callback(stream, Data(bytes))
        }
    }
}
