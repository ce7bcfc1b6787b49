//! Words split exactly as Python's `shlex.split` splits them (POSIX mode, no comments): A1111
//! splits COMMANDLINE_ARGS this way, so the runtime must see the very words the WebUI will see.
//! A POSIX shell's rules differ in small ways that matter here: shlex also splits on `\r`, and
//! inside double quotes a backslash escapes only `"` and `\`. A port of CPython's
//! `shlex.read_token` for `whitespace_split=True`, written here rather than taken from a crate
//! because what matters is agreement with Python's module: the tests hold it against python3.

/// Python's `shlex.whitespace`.
const WHITESPACE: [char; 4] = [' ', '\t', '\r', '\n'];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Between,
    Word,
    Quote(char),
    /// After a backslash; the state to return to.
    Escape(Return),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Return {
    Word,
    DoubleQuote,
}

/// `shlex.split(text)`; the error is Python's message.
pub fn split(text: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut token = String::new();
    let mut quoted = false;
    let mut state = State::Between;
    for c in text.chars() {
        match state {
            State::Between | State::Word if WHITESPACE.contains(&c) => {
                if !token.is_empty() || quoted {
                    words.push(std::mem::take(&mut token));
                    quoted = false;
                }
                state = State::Between;
            }
            State::Between | State::Word => match c {
                '\\' => state = State::Escape(Return::Word),
                '\'' | '"' => state = State::Quote(c),
                _ => {
                    token.push(c);
                    state = State::Word;
                }
            },
            State::Quote(q) => {
                quoted = true;
                if c == q {
                    state = State::Word;
                } else if c == '\\' && q == '"' {
                    state = State::Escape(Return::DoubleQuote);
                } else {
                    token.push(c);
                }
            }
            State::Escape(back) => {
                // Inside double quotes only the quote and the backslash itself are escaped.
                if back == Return::DoubleQuote && c != '\\' && c != '"' {
                    token.push('\\');
                }
                token.push(c);
                state = match back {
                    Return::Word => State::Word,
                    Return::DoubleQuote => {
                        quoted = true;
                        State::Quote('"')
                    }
                };
            }
        }
    }
    match state {
        State::Quote(_) => Err("No closing quotation"),
        State::Escape(_) => Err("No escaped character"),
        State::Between | State::Word => {
            if !token.is_empty() || quoted {
                words.push(token);
            }
            Ok(words)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tricky inputs, each split here and by python3's shlex.split: the results must agree.
    const CASES: &[&str] = &[
        "",
        "   ",
        "--medvram --precision full",
        "--ckpt-dir=/x\r--server-name\r127.0.0.2",
        "a\tb\nc\rd",
        "a\x0bb\x0cc",
        "a\u{a0}b",
        "'single quoted' \"double quoted\"",
        "''",
        "\"\"",
        "a'' b\"\"c",
        "\"a\\\"b\"",
        "\"a\\$b\\`c\\\\d\\e\"",
        "'a\\b'",
        "a\\ b",
        "a\\\\b",
        "\\'x",
        "--styles-file 'my styles.csv' --x=\"y z\"",
        "#not a comment",
        "a#b",
        "é ü '日本'",
        "\"multi\nline\"",
        "a\\\nb",
        "'it'\\''s'",
    ];

    fn python_split(text: &str) -> Option<Result<Vec<String>, String>> {
        let script = "import json, shlex, sys\n\
                      try:\n    print(json.dumps(shlex.split(sys.argv[1])))\n\
                      except ValueError as e:\n    print(json.dumps(str(e)))\n";
        let out = std::process::Command::new("python3")
            .args(["-c", script, text])
            .output()
            .ok()?;
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(match value {
            serde_json::Value::String(e) => Err(e),
            other => Ok(serde_json::from_value(other).ok()?),
        })
    }

    #[test]
    fn splits_exactly_as_python_shlex() {
        let mut odd = CASES.to_vec();
        odd.extend(["'unclosed", "\"unclosed \\\"", "trailing\\"]);
        for text in odd {
            let ours = split(text).map_err(str::to_string);
            match python_split(text) {
                Some(python) => assert_eq!(ours, python, "{text:?}"),
                None => panic!("python3 is needed to check shlex parity"),
            }
        }
    }

    #[test]
    fn the_bypass_that_a_shell_split_let_through_is_three_words_here() {
        assert_eq!(
            split("--ckpt-dir=/x\r--server-name\r127.0.0.2"),
            Ok(vec![
                "--ckpt-dir=/x".to_string(),
                "--server-name".to_string(),
                "127.0.0.2".to_string()
            ])
        );
    }
}
