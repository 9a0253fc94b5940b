import DstackModel
import Foundation
import Testing

@testable import DstackStorage

/// Many processes find the same dead coordinator at once; exactly one takes the run over (issue 16, point 7).
func raceForADeadLease(_ storage: any Storage) async throws {
    let store = RunStore(storage: storage, project: "proj")
    let dead = CoordinatorInfo(host: "gone-host", pid: 4242, heartbeatAt: Date(timeIntervalSince1970: 1_000))
    #expect(try await store.takeLease("r", dead))
    #expect(try await store.takeLease("r", CoordinatorInfo(host: "h", pid: 1, heartbeatAt: Date())) == false)
    let found = try #require(try await store.lease("r"))
    #expect(found.holder?.pid == 4242)

    let winners = try await withThrowingTaskGroup(of: Int32?.self) { group in
        for pid in Int32(100)..<Int32(116) {
            group.addTask {
                let me = CoordinatorInfo(host: "h", pid: pid, heartbeatAt: Date())
                return try await store.takeOverLease("r", from: found, me) ? pid : nil
            }
        }
        var out: [Int32] = []
        for try await pid in group { if let pid { out.append(pid) } }
        return out
    }
    #expect(winners.count == 1, "\(winners.count) processes took the run: \(winners)")
    let now = try #require(try await store.lease("r"))
    #expect(now.holder?.pid == winners.first)
    // A late racer that read the dead lease before the takeover cannot replace the winner's.
    #expect(try await store.takeOverLease("r", from: found, CoordinatorInfo(host: "h", pid: 999, heartbeatAt: Date())) == false)
    #expect(try await store.lease("r")?.holder?.pid == winners.first)
    // The winner's own lease, once found dead in its turn, can be taken over again.
    #expect(try await store.takeOverLease("r", from: now, CoordinatorInfo(host: "h", pid: 7, heartbeatAt: Date())))
    #expect(try await store.lease("r")?.holder?.pid == 7)
}

@Suite("Lease takeover on a directory")
struct DirectoryLeaseTakeoverTests {
    @Test func onlyOneOfManyTakesOverADeadLease() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-lease-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: root) }
        try await raceForADeadLease(try DirectoryStorage(root: root))
    }
}

extension S3StorageTests {
    @Suite("lease takeover")
    struct LeaseTakeover {
        @Test("only one of many takes over a dead lease")
        func onlyOne() async throws {
            let server = try await motoServers.server()
            try await raceForADeadLease(try server.storage(bucket: try await server.makeBucket()))
        }
    }
}
