internal import CLibSSH2
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Liveness: idle timeouts of operations, keepalives while they run, pings while the connection is idle.
extension SSHEventLoop {
    func enforceTimeouts() {
        let now = clock.now
        for entry in running {
            if let deadline = entry.cleanupDeadline {
                if now >= deadline {
                    logger.debug("ssh \(hostName): gave up releasing '\(entry.op.label)'")
                    running.removeAll { $0 === entry }
                    if owner === entry { owner = nil }
                }
            } else if let timeout = entry.op.idleTimeout, now - entry.lastProgress >= timeout {
                if entry.op is PingOperation {
                    pendingDeath = .connectionLost(
                        host: hostName, reason: "the server did not answer a keepalive within \(timeout.seconds) s")
                    return
                }
                abort(entry, .timedOut(operation: entry.op.label, seconds: timeout.seconds))
            }
        }
    }

    func noteReceived() {
        if received.pointee != lastReceivedCount {
            lastReceivedCount = received.pointee
            lastReceive = clock.now
            keepalivesUnanswered = 0
        }
    }

    /// Sends keepalives while operations run, pings the server while idle, and declares the connection lost when
    /// three intervals pass without a byte from the server.
    func keepAlive(_ session: OpaquePointer) {
        let now = clock.now
        guard now >= nextKeepalive else { return }
        nextKeepalive = now + keepaliveInterval
        if running.isEmpty && waiting.isEmpty {
            let ping = PingOperation(interval: keepaliveInterval)
            running.append(Entry(id: 0, op: ping, now: now))
            return
        }
        if keepalivesUnanswered >= 3 && now - lastReceive >= keepaliveInterval * 3 {
            pendingDeath = .connectionLost(
                host: hostName, reason: "no data from the server for \(Int((now - lastReceive).seconds)) s despite keepalives")
            return
        }
        // A keepalive is tiny; sending it only into a writable socket keeps it from being left half sent.
        guard owner == nil, !outboundPending, isWritable() else { return }
        var next: Int32 = 0
        let rc = libssh2_keepalive_send(session, &next)
        if rc != 0 && Int(rc) != LibSSH2.eagain {
            _ = error(Int(rc), "sending a keepalive")
        } else {
            keepalivesUnanswered += 1
        }
    }

    private func isWritable() -> Bool {
        var fd = pollfd(fd: socket, events: Int16(POLLOUT), revents: 0)
        return poll(&fd, 1, 0) == 1 && fd.revents & Int16(POLLOUT) != 0
    }
}
