internal import CLibSSH2

/// Proves the connection alive while it is idle: opens a channel and closes it again, a full round trip that
/// also lets libssh2 answer anything the server sent meanwhile.
final class PingOperation: LoopOperation, @unchecked Sendable {
    let label = "keepalive"
    let idleTimeout: Duration?
    let usesChannel = false
    private var channel: OpaquePointer?

    init(interval: Duration) { idleTimeout = interval * 3 }

    func abort(_ error: SSHError) {}

    func step(_ loop: SSHEventLoop) -> StepResult {
        guard let session = loop.session else { return .finished }
        var progressed = false
        if channel == nil {
            let opened = "session".withCString { libssh2_channel_open_ex(session, $0, 7, 32768, 32768, nil, 0) }
            guard let opened else {
                let code = libssh2_session_last_errno(session)
                if code == LIBSSH2_ERROR_EAGAIN { return .blocked }
                _ = loop.error(Int(code), "keepalive")
                return .finished
            }
            channel = opened
            progressed = true
        }
        let rc = libssh2_channel_free(channel)
        if rc == LIBSSH2_ERROR_EAGAIN { return progressed ? .progressed : .blocked }
        channel = nil
        return .finished
    }
}
