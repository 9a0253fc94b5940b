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
    private let buffer: UnsafeMutableRawBufferPointer
    private var start = 0
    private var end = 0
    private var sourceDone: Bool

    /// No input: the channel gets EOF at once.
    convenience init() { self.init(data: Data()) }

    /// Input from bytes in memory (copied into a buffer the loop thread owns).
    init(data: Data) {
        descriptor = nil
        handle = nil
        buffer = .allocate(byteCount: max(1, data.count), alignment: 16)
        data.copyBytes(to: buffer.bindMemory(to: UInt8.self), count: data.count)
        end = data.count
        sourceDone = true
    }

    /// Input read from a file or pipe until its end; the handle is kept open until the input is dropped.
    init(handle: FileHandle, bufferSize: Int) {
        descriptor = handle.fileDescriptor
        self.handle = handle
        buffer = .allocate(byteCount: bufferSize, alignment: 16)
        sourceDone = false
    }

    deinit { buffer.deallocate() }

    /// Whether every byte of the source has been sent.
    var reachedEnd: Bool { sourceDone && start == end }

    /// The bytes ready to send, refilled from the source when empty; empty once `reachedEnd`.
    func pending() throws(SSHError) -> UnsafeRawBufferPointer {
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
    func consume(_ count: Int) { start += count }
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
