internal import CLibSSH2
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A `direct-tcpip` channel of a jump host's connection, bridged to one end of a local socket pair on that
/// connection's thread; the other end is the socket of the session behind the jump host (ProxyJump).
///
/// The caller is answered with that other end once the jump host has opened the channel (it connected to the
/// target); the bridge then runs until both directions have ended, or the jump host's connection dies — then the
/// local socket closes, and the session behind sees its connection drop like a direct one would.
final class TunnelOperation: OperationBase<Int32>, LoopOperation, @unchecked Sendable {
    let usesChannel = false
    private let host: String
    private let port: Int
    private let jumpName: String
    private var channel: OpaquePointer?
    /// Our end of the socket pair; -1 once closed.
    private var local: Int32
    /// The session's end, handed to the caller; closed here if the caller is never answered with it.
    private var remote: Int32
    /// Bytes read from the channel and not yet sent to the local socket: `toLocal[localStart..<localEnd]`; and
    /// the other way. Fixed buffers, so that moving a large artifact allocates and shifts nothing per read.
    private let toLocal = UnsafeMutableRawBufferPointer.allocate(byteCount: TunnelOperation.bufferSize, alignment: 16)
    private var localStart = 0
    private var localEnd = 0
    private let toChannel = UnsafeMutableRawBufferPointer.allocate(byteCount: TunnelOperation.bufferSize, alignment: 16)
    private var channelStart = 0
    private var channelEnd = 0
    static let bufferSize = 256 * 1024
    private var channelEOF = false
    private var localEOF = false
    private var sentEOF = false
    private var aborted = false

    /// A tunnel to `host:port` bridged to `pair.local`; the caller gets `pair.remote`.
    init(host: String, port: Int, jumpName: String, pair: (local: Int32, remote: Int32),
         completion: @escaping @Sendable (Result<Int32, SSHError>) -> Void) {
        self.host = host
        self.port = port
        self.jumpName = jumpName
        local = pair.local
        remote = pair.remote
        super.init(label: "tunnel to \(host):\(port)", idleTimeout: nil, completion: completion)
    }

    /// A connected pair of non-blocking, close-on-exec local stream sockets with large buffers.
    static func socketPair() throws(SSHError) -> (local: Int32, remote: Int32) {
        var fds: [Int32] = [0, 0]
        #if canImport(Glibc)
        let type = Int32(SOCK_STREAM.rawValue)
        #else
        let type = SOCK_STREAM
        #endif
        guard socketpair(AF_UNIX, type, 0, &fds) == 0 else {
            throw .localIO(path: "socketpair", reason: errnoDescription(errno))
        }
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            var size: Int32 = 1 << 20
            _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        return (fds[0], fds[1])
    }

    deinit {
        toLocal.deallocate()
        toChannel.deallocate()
        if local >= 0 { close(local) }
        if remote >= 0 { close(remote) }
    }

    /// What the loop waits for on the local socket besides the SSH connection.
    var pollRequest: (fd: Int32, events: Int16)? {
        guard local >= 0, channel != nil else { return nil }
        var events: Int16 = 0
        if channelStart == channelEnd && !localEOF { events |= Int16(POLLIN) }
        if localStart != localEnd { events |= Int16(POLLOUT) }
        return events == 0 ? nil : (local, events)
    }

    func abort(_ error: SSHError) {
        aborted = true
        fail(error)
    }

    func step(_ loop: SSHEventLoop) -> StepResult {
        guard let session = loop.session else { return release(nil) }
        if aborted { return release(session) }
        var progressed = false
        if channel == nil {
            let opened = host.withCString { libssh2_channel_direct_tcpip_ex(session, $0, Int32(port), "127.0.0.1", 22) }
            guard let opened else {
                let code = libssh2_session_last_errno(session)
                if code == LIBSSH2_ERROR_EAGAIN { return .blocked }
                let reason = LibSSH2.error(session, Int(code), "opening a direct-tcpip channel").messageText
                if LibSSH2.isFatal(code) { _ = loop.error(Int(code), "opening a tunnel") }
                fail(.connectFailed(host: host, port: port, reason: "the jump host \(jumpName) could not open a connection to it (\(reason); its sshd must also allow TCP forwarding, AllowTcpForwarding)"))
                return release(session)
            }
            channel = opened
            let handed = remote
            remote = -1
            succeed(handed)
            progressed = true
        }
        guard let channel else { return .blocked }
        // Jump host → session behind it.
        while true {
            if localStart == localEnd && !channelEOF {
                let n = libssh2_channel_read_ex(channel, 0, toLocal.baseAddress, toLocal.count)
                if n > 0 {
                    localStart = 0
                    localEnd = Int(n)
                    progressed = true
                } else if n == 0 || n == Int(LIBSSH2_ERROR_EAGAIN) {
                    if libssh2_channel_eof(channel) == 1 {
                        channelEOF = true
                        _ = shutdown(local, Int32(SHUT_WR))
                        progressed = true
                    }
                } else {
                    _ = loop.error(Int(n), "reading a tunnel")
                    return release(session)
                }
            }
            guard localStart != localEnd else { break }
            let sent = send(local, toLocal.baseAddress! + localStart, localEnd - localStart, Int32(MSG_NOSIGNAL))
            if sent > 0 {
                localStart += sent
                progressed = true
                continue
            }
            if sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { break }
            // The session behind closed its socket: the tunnel is done.
            return release(session)
        }
        // Session behind → jump host.
        while true {
            if channelStart == channelEnd && !localEOF {
                let n = recv(local, toChannel.baseAddress, toChannel.count, 0)
                if n > 0 {
                    channelStart = 0
                    channelEnd = n
                    progressed = true
                } else if n == 0 {
                    localEOF = true
                    progressed = true
                } else if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
                    localEOF = true
                }
            }
            guard channelStart != channelEnd else { break }
            let n = libssh2_channel_write_ex(channel, 0, toChannel.baseAddress! + channelStart, channelEnd - channelStart)
            if n > 0 {
                channelStart += n
                progressed = true
                continue
            }
            if n == Int(LIBSSH2_ERROR_EAGAIN) { break }
            _ = loop.error(Int(n), "writing a tunnel")
            return release(session)
        }
        if localEOF && channelStart == channelEnd && !sentEOF {
            let rc = libssh2_channel_send_eof(channel)
            if rc == LIBSSH2_ERROR_EAGAIN { return .blocked }
            sentEOF = true
            progressed = true
        }
        if channelEOF && localStart == localEnd && sentEOF { return release(session) }
        return progressed ? .progressed : .blocked
    }

    /// Closes the local socket and frees the channel; `.blocked` until libssh2 has sent the close.
    private func release(_ session: OpaquePointer?) -> StepResult {
        aborted = true  // later steps come straight back here
        if local >= 0 {
            close(local)
            local = -1
        }
        if let channel, session != nil {
            let rc = libssh2_channel_free(channel)
            if rc == LIBSSH2_ERROR_EAGAIN { return .blocked }
        }
        channel = nil
        if !isAnswered { fail(.connectionLost(host: "\(host):\(port)", reason: "the tunnel closed")) }
        return .finished
    }
}

/// Closes a file descriptor (for types whose own `close` hides the C one).
func closeDescriptor(_ fd: Int32) {
    _ = close(fd)
}
