import Foundation
import Logging

/// A use of a jump host's connection by one session behind it; `release()` once, when that session closes.
final class JumpLease: Sendable {
    /// The jump host's connection.
    let session: SSHSession
    /// The jump host's name, for messages.
    let name: String
    private let key: JumpPool.Key
    private let released = LockedFlag()

    init(session: SSHSession, name: String, key: JumpPool.Key) {
        self.session = session
        self.name = name
        self.key = key
    }

    /// Gives the use back; the jump host's connection closes when nothing uses it any more.
    func release() async {
        guard !released.set() else { return }
        await JumpPool.shared.release(key, session)
    }
}

/// The connections to jump hosts: one per chain of hops, shared by every session behind it, opened on first use
/// and closed when the last session behind it closes. A connection that died is replaced on the next use.
actor JumpPool {
    /// The one pool of the process.
    static let shared = JumpPool()

    /// A chain of hops, each `user@host:port`.
    struct Key: Hashable, Sendable {
        var hops: [String]
    }

    private struct Entry {
        var connecting: Task<SSHSession, any Error>
        var session: SSHSession?
        var users: Int
    }

    private var entries: [Key: Entry] = [:]

    /// How many jump host connections are open or opening (for tests).
    var count: Int { entries.count }

    /// A lease on the connection to the last of `hops`, reached through the ones before it; connects when needed.
    func lease(_ hops: [SSHOptions], target: String, logger: Logger) async throws -> JumpLease {
        let key = Key(hops: hops.map { "\($0.user)@\($0.hostKeyName)" })
        let last = hops[hops.count - 1]
        let name = last.label ?? last.hostKeyName
        if var entry = entries[key], entry.session?.isConnected ?? true {
            entry.users += 1
            entries[key] = entry
            do {
                let session = try await entry.connecting.value
                return JumpLease(session: session, name: name, key: key)
            } catch {
                await release(key, nil)
                throw Self.wrap(error, name: name, target: target)
            }
        }
        if let stale = entries.removeValue(forKey: key), let session = stale.session {
            // It died; sessions still leasing it release a connection no longer in the pool.
            Task { await session.close() }
        }
        var options = last
        options.jumpHosts = Array(hops.dropLast())
        let connecting = Task { try await SSHSession.connect(options, logger: logger) }
        entries[key] = Entry(connecting: connecting, session: nil, users: 1)
        do {
            let session = try await connecting.value
            if entries[key]?.connecting == connecting { entries[key]?.session = session }
            logger.debug("ssh \(name): jump host connected")
            return JumpLease(session: session, name: name, key: key)
        } catch {
            if entries[key]?.connecting == connecting { entries.removeValue(forKey: key) }
            throw Self.wrap(error, name: name, target: target)
        }
    }

    /// One use fewer of the connection for `key`; the last one closes it.
    func release(_ key: Key, _ session: SSHSession?) async {
        guard var entry = entries[key], session == nil || entry.session === session else {
            // Replaced meanwhile: the old connection is closed already or closes here.
            if let session { await session.close() }
            return
        }
        entry.users -= 1
        if entry.users > 0 {
            entries[key] = entry
            return
        }
        entries.removeValue(forKey: key)
        await entry.session?.close()
    }

    private static func wrap(_ error: any Error, name: String, target: String) -> any Error {
        guard let error = error as? SSHError else { return error }
        if case .jumpHostFailed = error { return error }
        return SSHError.jumpHostFailed(jump: name, target: target, error: error)
    }
}
