/// The files a project was loaded from, by display name, so any located value can be quoted in an error.
public struct SourceSet: Sendable {
    /// The files, by display name.
    public var files: [String: SourceFile]

    /// Creates a set from `files`.
    public init(_ files: [SourceFile] = []) {
        self.files = Dictionary(files.map { ($0.displayName, $0) }, uniquingKeysWith: { a, _ in a })
    }

    /// A diagnostic at `mark` in `file`, quoting the line when the file is known.
    public func diagnostic(file: String, mark: Mark, _ message: String) -> Diagnostic {
        Diagnostic(file: file, mark: mark, message: message, sourceLine: files[file]?.line(mark.line))
    }

    /// A diagnostic pointing at a located value.
    public func diagnostic<T>(_ located: Located<T>, _ message: String) -> Diagnostic {
        diagnostic(file: located.file, mark: located.mark, message)
    }
}
