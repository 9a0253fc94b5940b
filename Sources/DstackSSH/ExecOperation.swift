internal import CLibSSH2
import Foundation

/// Runs one remote command on its own channel: open, exec, pump stdin/stdout/stderr, close, read the exit status.
final class ExecOperation: OperationBase<ExecResult>, LoopOperation, @unchecked Sendable {
    private enum Phase { case open, start, io, close, waitClosed, release, done }

    let usesChannel = true
    private var phase = Phase.open
    private let command: String
    private let input: ChannelInput
    private let output: ChannelOutput
    private var channel: OpaquePointer?
    private let buffer: UnsafeMutableRawBufferPointer
    private var eofSent = false
    private var resumeWithRead = false
    private var result = ExecResult(exitStatus: -1)

    init(
        command: String, label: String? = nil, input: ChannelInput, output: ChannelOutput, bufferSize: Int,
        idleTimeout: Duration?, completion: @escaping @Sendable (Result<ExecResult, SSHError>) -> Void
    ) {
        self.command = command
        self.input = input
        self.output = output
        buffer = .allocate(byteCount: bufferSize, alignment: 16)
        super.init(label: "remote command '\(summarized(label ?? command))'", idleTimeout: idleTimeout, completion: completion)
    }

    deinit { buffer.deallocate() }

    func abort(_ error: SSHError) {
        fail(error)
        if phase != .done { phase = .release }
    }

    func step(_ loop: SSHEventLoop) -> StepResult {
        guard let session = loop.session else { return .blocked }
        var progressed = false
        func blocked() -> StepResult { progressed ? .progressed : .blocked }
        while true {
            switch phase {
            case .open:
                let opened = "session".withCString {
                    libssh2_channel_open_ex(session, $0, 7, 2 * 1024 * 1024, 32768, nil, 0)
                }
                guard let opened else {
                    let code = libssh2_session_last_errno(session)
                    if code == LIBSSH2_ERROR_EAGAIN { return blocked() }
                    fail(loop.error(Int(code), "opening a channel for \(label)"))
                    phase = .done
                    return .finished
                }
                channel = opened
                phase = .start
                progressed = true
            case .start:
                let rc = command.withCString {
                    libssh2_channel_process_startup(channel, "exec", 4, $0, UInt32(strlen($0)))
                }
                if rc == LIBSSH2_ERROR_EAGAIN { return blocked() }
                if rc != 0 {
                    fail(loop.error(Int(rc), "starting \(label)"))
                    phase = .release
                    continue
                }
                phase = .io
                progressed = true
            case .io:
                switch pump(loop) {
                case .failure(let error):
                    fail(error)
                    phase = .release
                case .success(let moved):
                    if moved { progressed = true }
                    if phase == .io { return blocked() }
                }
            case .close:
                let rc = libssh2_channel_close(channel)
                if rc == LIBSSH2_ERROR_EAGAIN { return blocked() }
                if rc != 0 {
                    fail(loop.error(Int(rc), "closing the channel of \(label)"))
                    phase = .release
                    continue
                }
                phase = .waitClosed
                progressed = true
            case .waitClosed:
                let rc = libssh2_channel_wait_closed(channel)
                if rc == LIBSSH2_ERROR_EAGAIN { return blocked() }
                result.exitStatus = libssh2_channel_get_exit_status(channel)
                result.exitSignal = exitSignal(session)
                phase = .release
                progressed = true
            case .release:
                if let channel {
                    let rc = libssh2_channel_free(channel)
                    if rc == LIBSSH2_ERROR_EAGAIN { return blocked() }
                    self.channel = nil
                }
                phase = .done
                result.stdout = output.stdout
                result.stderr = output.stderr
                succeed(result)  // no effect when the caller was already answered with an error
                return .finished
            case .done:
                return .finished
            }
        }
    }

    /// Moves data both ways until every call would block; returns whether anything moved, and switches to
    /// `.close` once the remote side has sent EOF and everything before it was read.
    private func pump(_ loop: SSHEventLoop) -> Result<Bool, SSHError> {
        var moved = false
        var writeBlockedOnWindow = false
        if !resumeWithRead && !eofSent {
            do throws(SSHError) {
                while !eofSent {
                    let bytes = try input.pending()
                    // A queue with nothing to send yet: the loop comes back when more is queued (it is woken).
                    if bytes.isEmpty && !input.reachedEnd { break }
                    if bytes.isEmpty && input.reachedEnd {
                        let rc = libssh2_channel_send_eof(channel)
                        if rc == LIBSSH2_ERROR_EAGAIN { break }
                        if rc != 0 { return .failure(loop.error(Int(rc), "sending end of input to \(label)")) }
                        eofSent = true
                        moved = true
                        break
                    }
                    let n = bytes.withMemoryRebound(to: CChar.self) {
                        libssh2_channel_write_ex(channel, 0, $0.baseAddress, $0.count)
                    }
                    if n == LibSSH2.eagain {
                        writeBlockedOnWindow = libssh2_channel_window_write_ex(channel, nil) == 0
                        break
                    }
                    if n < 0 {
                        if libssh2_channel_eof(channel) == 1 {
                            // The command stopped reading and exited; the rest of its input has nowhere to go.
                            eofSent = true
                            break
                        }
                        return .failure(loop.error(n, "writing the input of \(label)"))
                    }
                    input.consume(n)
                    moved = true
                }
            } catch {
                return .failure(error)
            }
            if loop.outboundPending { return .success(moved) }
        }
        resumeWithRead = false
        for (id, stream) in [(Int32(0), ExecStream.stdout), (Int32(SSH_EXTENDED_DATA_STDERR), ExecStream.stderr)] {
            while true {
                let n = buffer.withMemoryRebound(to: CChar.self) {
                    libssh2_channel_read_ex(channel, id, $0.baseAddress, $0.count)
                }
                if n > 0 {
                    do throws(SSHError) {
                        try output.write(stream, UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                    } catch {
                        return .failure(error)
                    }
                    moved = true
                    continue
                }
                if n == LibSSH2.eagain {
                    if loop.outboundPending {
                        resumeWithRead = true
                        return .success(moved)
                    }
                    break
                }
                if n == 0 { break }
                return .failure(loop.error(n, "reading the output of \(label)"))
            }
        }
        if libssh2_channel_eof(channel) == 1 && (eofSent || writeBlockedOnWindow || input.isQueue) {
            phase = .close
            moved = true
        }
        return .success(moved)
    }

    private func exitSignal(_ session: OpaquePointer) -> String? {
        var name: UnsafeMutablePointer<CChar>?
        var length = 0
        var message: UnsafeMutablePointer<CChar>?
        var messageLength = 0
        var language: UnsafeMutablePointer<CChar>?
        var languageLength = 0
        let rc = libssh2_channel_get_exit_signal(
            channel, &name, &length, &message, &messageLength, &language, &languageLength)
        defer {
            for pointer in [name, message, language] where pointer != nil { libssh2_free(session, pointer) }
        }
        guard rc == 0, let name, length > 0 else { return nil }
        return String(decoding: UnsafeRawBufferPointer(start: name, count: length), as: UTF8.self)
    }
}
