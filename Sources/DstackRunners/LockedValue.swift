import Foundation

/// A value handed between threads or tasks under a lock: written by one (a helper thread, a child task) and read
/// by another once it is done.
public final class LockedValue<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    /// Creates the box holding `value`.
    public init(_ value: Value) { self.value = value }

    /// Replaces the value.
    public func set(_ newValue: Value) { lock.withLock { value = newValue } }

    /// The value now.
    public func get() -> Value { lock.withLock { value } }

    /// Changes the value in place, under the lock (a read and a write no other thread can come between).
    public func update(_ change: (inout Value) -> Void) { lock.withLock { change(&value) } }
}
