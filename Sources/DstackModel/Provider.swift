/// The providers of early dstack that this project runs: what `provider:` may say.
public enum Provider: String, Sendable, CaseIterable {
    /// Commands on the runner (in `image` where one is given), with an optional Python environment.
    case bash
    /// Commands in a container image (`image` is required).
    case docker
    /// A Python script run with its arguments, in a Python environment made from `requirements`.
    case python

    /// Early dstack's other providers, refused by name: they serve ports or span nodes, which runners here do not.
    public static let notSupported = ["curl", "lab", "notebook", "code", "tensorboard", "torchrun", "streamlit",
                                      "gradio", "fastapi"]
}

/// The Python a job runs with: the interpreter's version, a requirements file installed into a virtual
/// environment, and, for `provider: python`, the script and its arguments. Values are templates.
public struct PythonSpec: Sendable, Hashable {
    /// `python:` or `version:`, as written (`3.10`), or nil for the runner's `python3`.
    public var version: Located<String>?
    /// The requirements file, relative to the working directory, or nil for none.
    public var requirements: Located<String>?
    /// The script `provider: python` runs (`script`, `python_script` or `file`), or nil for `provider: bash`.
    public var script: Located<String>?
    /// The script's arguments: one line of shell words (`args: --lr 0.1`), or words each passed as one argument.
    public var arguments: [Located<String>] = []
    /// True when `arguments` came as a list, so each item is one argument.
    public var argumentsAreWords = false

    /// Creates a spec.
    public init(version: Located<String>? = nil, requirements: Located<String>? = nil, script: Located<String>? = nil,
                arguments: [Located<String>] = [], argumentsAreWords: Bool = false) {
        self.version = version
        self.requirements = requirements
        self.script = script
        self.arguments = arguments
        self.argumentsAreWords = argumentsAreWords
    }

    /// The values that may hold references.
    public var templatedValues: [Located<String>] {
        [requirements, script].compactMap { $0 } + arguments
    }

    /// The command that runs the script, before substitution: `python "FILE" ARGS`.
    ///
    /// The file and each list item are double-quoted words: one argument each, in which `$NAME` and `${{ }}` still
    /// expand (as they did in early dstack); a string of arguments is shell text, as written.
    public var command: String? {
        guard let script else { return nil }
        var line = "python " + Self.word(script.value)
        if argumentsAreWords {
            for argument in arguments { line += " " + Self.word(argument.value) }
        } else if let text = arguments.first?.value, !text.isEmpty {
            line += " " + text
        }
        return line
    }

    /// `text` as one double-quoted shell word; only `"` and `\` are escaped, so expansions stay live.
    static func word(_ text: String) -> String {
        var out = "\""
        for ch in text {
            if ch == "\"" || ch == "\\" { out.append("\\") }
            out.append(ch)
        }
        return out + "\""
    }
}
