import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Fans work out to child tasks with at most a fixed number running at once.
///
/// Probing a 2,000-runner inventory all at once opened 2,000 sockets and session threads together; past the
/// open-file limit, runners that were fine were reported unreachable ("too many open files").
enum BoundedConcurrency {
    /// Runs `body(0..<count)` with at most `limit` calls in flight, and returns when every call has.
    static func forEach(count: Int, limit: Int, _ body: @escaping @Sendable (Int) async -> Void) async {
        await withTaskGroup(of: Void.self) { group in
            var next = 0
            while next < min(max(1, limit), count) {
                let index = next
                group.addTask { await body(index) }
                next += 1
            }
            while await group.next() != nil {
                guard next < count else { continue }
                let index = next
                group.addTask { await body(index) }
                next += 1
            }
        }
    }
}

/// The process's limit on open files, which dstack raises for itself: every runner holds a socket, and the
/// usual soft limit (1,024 on many Linux systems, 256 on macOS) is far below the hard one.
enum OpenFileLimit {
    /// The most this process asks for: enough for thousands of runners, and small enough that a program which
    /// closes every descriptor up to the limit before it starts a process stays quick.
    static let wanted: rlim_t = 65_536

    /// Raises the soft limit toward `wanted`, never above the hard limit; returns the soft limit now in force.
    @discardableResult
    static func raise() -> rlim_t {
        var limit = rlimit()
        guard getrlimit(resourceNoFile, &limit) == 0 else { return 0 }
        var target = min(wanted, limit.rlim_max)
        #if canImport(Darwin)
        target = min(target, rlim_t(OPEN_MAX))
        #endif
        guard limit.rlim_cur < target else { return limit.rlim_cur }
        limit.rlim_cur = target
        if setrlimit(resourceNoFile, &limit) != 0 { _ = getrlimit(resourceNoFile, &limit) }
        return limit.rlim_cur
    }

    #if canImport(Glibc)
    private static let resourceNoFile = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    #else
    private static let resourceNoFile = RLIMIT_NOFILE
    #endif
}
