@testable import DstackCore
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A 2,000-runner inventory is probed a bounded number at a time, with the open-file limit raised, so that no
/// runner is reported unreachable for "too many open files" (issue 16, point 9).
@Suite("Bounded concurrency")
struct BoundedConcurrencyTests {
    actor Tally {
        var inFlight = 0
        var peak = 0
        var seen: [Int] = []
        func enter() {
            inFlight += 1
            peak = max(peak, inFlight)
        }
        func leave(_ index: Int) {
            inFlight -= 1
            seen.append(index)
        }
    }

    @Test func neverMoreThanTheLimitRunAtOnceAndEveryIndexRunsOnce() async {
        let tally = Tally()
        await BoundedConcurrency.forEach(count: 2_000, limit: 128) { index in
            await tally.enter()
            try? await Task.sleep(nanoseconds: 200_000)
            await tally.leave(index)
        }
        let peak = await tally.peak
        #expect(peak <= 128)
        #expect(peak > 1, "the work did not run concurrently at all")
        #expect(await tally.seen.sorted() == Array(0..<2_000))
    }

    @Test func theProbeOfAnInventoryIsBounded() {
        #expect(Workspace.probeConcurrency == 128)
    }

    @Test func theOpenFileLimitIsRaisedTowardTheHardLimit() {
        var limit = rlimit()
        #if canImport(Glibc)
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        #expect(getrlimit(resource, &limit) == 0)
        let original = limit
        defer { var restore = original; _ = setrlimit(resource, &restore) }
        guard limit.rlim_max > 512 else { return }  // nothing to raise toward on this machine
        limit.rlim_cur = 256
        #expect(setrlimit(resource, &limit) == 0)
        let raised = OpenFileLimit.raise()
        #expect(raised == min(OpenFileLimit.wanted, limit.rlim_max))
        #expect(getrlimit(resource, &limit) == 0 && limit.rlim_cur == raised)
    }
}
