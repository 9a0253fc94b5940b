import DstackModel
import Testing

/// `${{ name }}` templates: how they split, how they render as text, and how they render into shell commands.
@Suite("Template")
struct TemplateTests {
    @Test("a template splits into text and references, with the offset of each '$'")
    func parts() throws {
        let template = try Template("python train.py --lr ${{ lr }} --bs ${{batch-size}}!")
        #expect(template.parts == [
            .text("python train.py --lr "), .variable("lr", offset: 21),
            .text(" --bs "), .variable("batch-size", offset: 36), .text("!"),
        ])
        #expect(template.variables == ["lr", "batch-size"])
        #expect(try Template("").parts.isEmpty)
        #expect(try Template("${{ a }}${{ b }}").parts == [.variable("a", offset: 0), .variable("b", offset: 8)])
        #expect(try Template("no refs, $HOME and ${x} and {{ y }}").parts
            == [.text("no refs, $HOME and ${x} and {{ y }}")])
    }

    @Test("malformed references say what is wrong and where", arguments: [
        ("echo ${{ x", "'${{' is never closed with '}}'", 5),
        ("a ${{ x }", "'${{' is never closed with '}}'", 2),
        ("${{ 2x }}", "'2x' is not a variable name (letters, digits, '_' and '-')", 0),
        ("ok ${{ a }} ${{ }}", "'' is not a variable name (letters, digits, '_' and '-')", 12),
        ("${{ a b }}", "'a b' is not a variable name (letters, digits, '_' and '-')", 0),
    ])
    func malformed(raw: String, message: String, offset: Int) {
        #expect {
            try Template(raw)
        } throws: { error in
            let error = try #require(error as? TemplateError)
            return error.message == message && error.offset == offset
        }
    }

    @Test("variable names are ASCII letters, digits, '_' and '-', not starting with a digit or '-'", arguments: [
        ("lr", true), ("batch-size", true), ("_private", true), ("run_name", true), ("x1", true),
        ("", false), ("1x", false), ("-x", false), ("a b", false), ("a.b", false), ("épochs", false),
    ])
    func names(name: String, valid: Bool) {
        #expect(Template.isValidName(name) == valid)
    }

    @Test("render substitutes as plain text and keeps references it has no value for")
    func render() throws {
        let template = try Template("--lr ${{ lr }} --name ${{ run_name }} --x ${{ missing }}")
        #expect(template.render(["lr": "0.1", "run_name": "a'b $c"]) == "--lr 0.1 --name a'b $c --x ${{ missing }}")
    }

    @Test("shellQuote leaves safe words alone and single-quotes everything else", arguments: [
        ("abc", "abc"), ("a-b_c./d=e:f,g+h@i%j", "a-b_c./d=e:f,g+h@i%j"), ("", "''"), ("a b", "'a b'"),
        ("it's", "'it'\\''s'"), ("$HOME", "'$HOME'"), ("*", "'*'"), ("é", "'é'"), ("a\nb", "'a\nb'"),
    ])
    func quoting(value: String, quoted: String) {
        #expect(shellQuote(value) == quoted)
    }

    /// The exact text matters too: it is what `dstack` shows and logs. `ShellRenderingTests` runs these.
    @Test("renderShell quotes for the context each reference stands in", arguments: [
        ("printf '%s' ${{ v }}", "a'b", "printf '%s' 'a'\\''b'"),
        ("printf '%s' ${{ v }}", "plain", "printf '%s' plain"),
        ("printf '%s' \"${{ v }}\"", "a\"$b`c\\", "printf '%s' \"a\\\"\\$b\\`c\\\\\""),
        ("printf '%s' '${{ v }}'", "a'b", "printf '%s' 'a'\\''b'"),
        ("echo \"x=${{ v }}y\"", "$(id)", "echo \"x=\\$(id)y\""),
        ("echo \"$(cat ${{ v }})\"", "a b", "echo \"$(cat 'a b')\""),
        ("echo `cat ${{ v }}`", "it's", "echo `cat 'it'\\\\''s'`"),
        ("echo hi # ${{ v }}", "a\nb", "echo hi # 'a b'"),
        ("echo \\${{ v }}", "x y", "echo \\\n'x y'"),
        ("cat <<EOF\n${{ v }}\nEOF", "$x\nEOF", "cat <<EOF\n\\$x\n${-+}EOF\nEOF"),
        ("cat <<'EOF'\n${{ v }}\nEOF", "$x\nEOF", "cat <<'EOF'\n$x\n EOF\nEOF"),
        ("echo $((1 + ${{ v }}))", "41", "echo $((1 + 41))"),
        ("echo $((1 + ${{ v }}))", "$(id)", "echo $((1 + @'\\$(id)'))"),
        ("echo ${{ v }} ${{ missing }}", "a", "echo a ${{ missing }}"),
        // Issue 16: a case pattern's ')' does not end the $( ); bash's here-strings and $'...'; command position.
        ("echo \"$(case a in a) echo ${{ v }} ;; esac)\"", "x; y", "echo \"$(case a in a) echo 'x; y' ;; esac)\""),
        ("cat <<< ${{ v }}\necho ${{ v }}", "a b", "cat <<< 'a b'\necho 'a b'"),
        ("printf '%s' $'[${{ v }}]'", "it's", "printf '%s' $'[''it'\\''s'$']'"),
        ("${{ v }} x", "case", "'case' x"),
        ("cat <<EOF\n$(printf '%s' ${{ v }})\nEOF", "a\nEOF\nb", "cat <<EOF\n$(printf '%s' 'a\n''EOF\nb')\nEOF"),
    ])
    func renderShell(template: String, value: String, rendered: String) throws {
        #expect(try Template(template).renderShell(["v": value]) == rendered)
    }
}
