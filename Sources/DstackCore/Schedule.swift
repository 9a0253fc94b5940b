import DstackModel
import DstackRunners
import Foundation

/// Where jobs may go, as a value: how many jobs this coordinator has on each runner, which runners to leave be
/// for a while (full elsewhere, or unreachable), and the pick of the least loaded runner that fits. No I/O, no
/// clock of its own: the coordinator passes `now`.
struct Schedule: Sendable {
    /// The runners, with what their probe found.
    let runners: [RunnerInfo]
    /// Jobs this coordinator has in flight, by runner.
    private(set) var active: [String: Int] = [:]
    /// Runners to leave be until the time given.
    private(set) var restingUntil: [String: Date] = [:]

    init(runners: [RunnerInfo]) {
        self.runners = runners
    }

    /// Why no runner can ever take a job that `misfit` describes (why a runner cannot take it), or nil when one can.
    func unfit(_ misfit: (RunnerInfo) -> String?) -> String? {
        let misfits = runners.compactMap(misfit)
        guard misfits.count == runners.count, let first = misfits.first else { return nil }
        return "no reachable runner fits it: it needs \(first)"
    }

    /// The runner to try: one that fits, has a free slot here and is not resting; the least loaded first, so jobs
    /// spread over the pool.
    func pick(now: Date, _ misfit: (RunnerInfo) -> String?) -> RunnerInfo? {
        runners
            .filter { info in
                misfit(info) == nil
                    && (active[info.name] ?? 0) < info.maxJobs
                    && (restingUntil[info.name].map { $0 < now } ?? true)
            }
            .min { (active[$0.name] ?? 0) < (active[$1.name] ?? 0) }
    }

    /// A job goes to `runner`.
    mutating func assign(_ runner: String) {
        active[runner, default: 0] += 1
    }

    /// A job left `runner`.
    mutating func vacate(_ runner: String) {
        active[runner] = max(0, (active[runner] ?? 0) - 1)
    }

    /// Leaves `runner` be until `until` (full elsewhere: half a second; unreachable or lost: the lost timeout).
    mutating func rest(_ runner: String, until: Date) {
        restingUntil[runner] = until
    }

    /// Whether some runner is resting now (a job waiting for it should be looked at again shortly).
    func anyResting(now: Date) -> Bool {
        restingUntil.values.contains { $0 > now }
    }
}
