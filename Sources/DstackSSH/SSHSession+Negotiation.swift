import Foundation
import Logging

extension Negotiation {
    /// What to do about a method category the server and libssh2 do not share.
    static let hint = "allow one of libssh2's in the server's sshd_config (KexAlgorithms, HostKeyAlgorithms, Ciphers, MACs), "
        + "or link a newer libssh2 (1.11 adds aes128/256-gcm and the -etm MACs); dstack uses whatever the linked library offers"
}

extension SSHSession {
    /// After a failed handshake behind a jump host: reads the server's KEXINIT through a second `direct-tcpip`
    /// channel of the same jump connection (the direct route the connector would use does not exist there) and
    /// names the category with nothing in common, as for a direct connection.
    static func explainNegotiation(through jump: SSHSession, _ options: SSHOptions, logger: Logger) async -> SSHError? {
        guard let fd = try? await jump.openTunnel(host: options.host, port: options.port) else { return nil }
        // The read blocks (poll): on a thread of its own, never the cooperative pool.
        let server: SSHAlgorithms? = await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                let lists = Negotiation.serverAlgorithms(socket: fd, deadline: .now + .seconds(5))
                closeDescriptor(fd)
                continuation.resume(returning: lists)
            }
        }
        guard let server,
              let what = Negotiation.offeredByLibrary().mismatch(with: server, clientName: "libssh2 \(Negotiation.libraryVersion) (linked)")
        else { return nil }
        logger.error("ssh \(options.hostKeyName): \(what)")
        return .negotiationFailed(host: options.host, port: options.port, what: what, hint: Negotiation.hint)
    }
}
