import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Opening the TCP connection under a deadline, before libssh2 takes it over.
enum TCPSocket {
    /// Resolves `host` and connects to the first address that answers before `deadline`; returns the socket.
    static func connect(host: String, port: Int, deadline: ContinuousClock.Instant, timeout: Duration) throws(SSHError) -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Glibc)
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
        hints.ai_socktype = SOCK_STREAM
        #endif
        var list: UnsafeMutablePointer<addrinfo>?
        // getaddrinfo blocks; this runs on the session's own thread.
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let list else {
            throw .connectFailed(host: host, port: port, reason: String(cString: gai_strerror(rc)).lowercasedFirst)
        }
        defer { freeaddrinfo(list) }
        var lastError: Int32 = ECONNREFUSED
        var cursor: UnsafeMutablePointer<addrinfo>? = list
        while let info = cursor {
            cursor = info.pointee.ai_next
            let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
            if fd < 0 { lastError = errno; continue }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            if Foundation.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 {
                configure(fd)
                return fd
            }
            guard errno == EINPROGRESS else {
                lastError = errno
                close(fd)
                continue
            }
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let remaining = max(0, (deadline - ContinuousClock.now).milliseconds)
            let ready = poll(&pfd, 1, Int32(min(remaining, Int64(Int32.max))))
            if ready == 0 {
                close(fd)
                throw .connectTimedOut(host: host, port: port, seconds: timeout.seconds)
            }
            var soError: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &length)
            if ready > 0 && soError == 0 {
                configure(fd)
                return fd
            }
            lastError = soError != 0 ? soError : errno
            close(fd)
        }
        throw .connectFailed(host: host, port: port, reason: errnoDescription(lastError))
    }

    /// Turns on TCP_NODELAY (commands and acknowledgements are small) and TCP keepalive.
    private static func configure(_ fd: Int32) {
        var on: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, socklen_t(MemoryLayout<Int32>.size))
        #if os(Linux)
        // A peer that vanishes without a reset is noticed within a minute instead of TCP's fifteen.
        var userTimeout: UInt32 = 60_000
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_USER_TIMEOUT, &userTimeout, socklen_t(MemoryLayout<UInt32>.size))
        #endif
    }
}
