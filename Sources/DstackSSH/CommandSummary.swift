/// How a remote command is shown in `-v` output, labels and errors: its first line, cut at 77 characters.
///
/// A job's start script carries its environment values and its commands with their variables substituted; they
/// must not appear in logs that people paste into bug reports. Scripts start with fixed text (a function
/// definition), so their first line says what runs without showing what it carries.
func summarized(_ command: String) -> String {
    let firstLine = command.prefix { $0 != "\n" }
    let cut = firstLine.count > 77 ? firstLine.prefix(77) : firstLine
    let rest = command.count - cut.count
    return rest == 0 ? String(cut) : "\(cut)... (\(command.utf8.count) bytes)"
}
