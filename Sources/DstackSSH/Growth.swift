/// A count that only grows (bytes a process read, bytes landed in a folder), watched for a progress line.
public enum Growth {
    /// Reads `measure` every quarter second until cancelled and reports how much it grew (nothing once cancelled:
    /// what comes after a transfer must not be counted as its; nothing while `measure` cannot tell).
    public static func watch(_ report: @escaping @Sendable (Int64) -> Void,
                             measure: @escaping @Sendable () -> Int64?) -> Task<Void, Never> {
        Task {
            var last: Int64 = 0
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(250))
                guard !Task.isCancelled else { return }
                guard let now = measure() else { continue }
                if now > last { report(now - last) }
                last = max(last, now)
            }
        }
    }
}
