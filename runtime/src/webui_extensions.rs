//! The WebUI flags that installed extensions add. A1111 runs every extension's `preload(parser)`
//! (extensions/*/preload.py and extensions-builtin/*/preload.py) before it parses its command
//! line, so ControlNet's `--controlnet-dir` is as valid there as `--xformers`. This reads the
//! `add_argument(...)` calls of those files, without running Python: option strings, `action`,
//! `nargs`, `type=int` and `choices`. A flag built in a way this cannot read is unknown to the
//! runtime; WEBUI_ALLOW_UNKNOWN_FLAGS=1 lets it through.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::webui_flags::Arity;

/// Every flag the extensions in `webui_dir` define.
pub fn flags(webui_dir: &Path) -> BTreeMap<String, Arity> {
    let mut found = BTreeMap::new();
    for folder in ["extensions", "extensions-builtin"] {
        let Ok(entries) = fs::read_dir(webui_dir.join(folder)) else {
            continue;
        };
        let mut paths: Vec<_> = entries
            .flatten()
            .map(|e| e.path().join("preload.py"))
            .collect();
        paths.sort();
        for path in paths {
            if let Ok(text) = fs::read_to_string(&path) {
                for (names, arity) in add_argument_calls(&text) {
                    for name in names {
                        found.entry(name).or_insert_with(|| arity.clone());
                    }
                }
            }
        }
    }
    found
}

/// The option strings and arity of each `add_argument(...)` call in Python source.
pub fn add_argument_calls(source: &str) -> Vec<(Vec<String>, Arity)> {
    let mut calls = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("add_argument(") {
        let line_start = rest[..at].rfind('\n').map_or(0, |n| n + 1);
        let commented = rest[line_start..at].contains('#');
        rest = &rest[at + "add_argument(".len()..];
        if commented {
            continue;
        }
        let Some(args) = call_arguments(rest) else {
            break;
        };
        let mut names = Vec::new();
        let mut action = None;
        let mut nargs = None;
        let mut int = false;
        let mut choices = None;
        for item in args {
            match keyword(&item) {
                Some(("action", value)) => action = string_literal(value),
                Some(("nargs", value)) => {
                    nargs = Some(string_literal(value).unwrap_or(value.to_string()))
                }
                Some(("type", value)) => int = value == "int",
                Some(("choices", value)) => choices = Some(string_literals(value)),
                Some(_) => {}
                None => {
                    if let Some(name) = string_literal(&item).filter(|n| n.starts_with('-')) {
                        names.push(name);
                    }
                }
            }
        }
        if names.is_empty() {
            continue;
        }
        let arity = match (action.as_deref(), nargs.as_deref()) {
            (
                Some(
                    "store_true" | "store_false" | "store_const" | "append_const" | "count"
                    | "help" | "version",
                ),
                _,
            ) => Arity::Switch,
            (_, Some("+")) => Arity::OneOrMore,
            (_, Some("*")) => Arity::Optional { at_most_one: false },
            (_, Some("?")) => Arity::Optional { at_most_one: true },
            // nargs=N (N > 1) is rare in preload files; one or more values covers it loosely.
            (_, Some(n)) if n.parse::<u32>().is_ok_and(|n| n > 1) => Arity::OneOrMore,
            _ => Arity::One { int, choices },
        };
        calls.push((names, arity));
    }
    calls
}

/// The top-level arguments of a call whose text starts right after `(`, as source slices.
fn call_arguments(text: &str) -> Option<Vec<String>> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                // A string literal, triple-quoted or not; its text is copied as is.
                current.push(c);
                let triple = chars.peek() == Some(&c) && {
                    let mut ahead = chars.clone();
                    ahead.next();
                    ahead.peek() == Some(&c)
                };
                if triple {
                    current.push(chars.next()?);
                    current.push(chars.next()?);
                }
                let mut run = 0;
                loop {
                    let d = chars.next()?;
                    current.push(d);
                    if d == '\\' {
                        current.push(chars.next()?);
                        run = 0;
                        continue;
                    }
                    run = if d == c { run + 1 } else { 0 };
                    if run == if triple { 3 } else { 1 } {
                        break;
                    }
                }
            }
            '#' => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '(' | '[' | '{' => {
                depth += 1;
                current.push(c);
            }
            ')' | ']' | '}' if depth == 0 => {
                items.push(current);
                return Some(
                    items
                        .into_iter()
                        .map(|i| i.trim().to_string())
                        .filter(|i| !i.is_empty())
                        .collect(),
                );
            }
            ')' | ']' | '}' => {
                depth -= 1;
                current.push(c);
            }
            ',' if depth == 0 => items.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    None
}

/// `name=value` at the top level of an argument (not `==`).
fn keyword(item: &str) -> Option<(&str, &str)> {
    let (name, value) = item.split_once('=')?;
    let name = name.trim();
    let is_identifier = !name.is_empty()
        && name.chars().all(|c| c.is_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    (is_identifier && !value.starts_with('=')).then(|| (name, value.trim()))
}

/// The text of a plain string literal (`"--x"`, `'x'`, `r"x"`); None for anything else.
fn string_literal(item: &str) -> Option<String> {
    let item = item.trim();
    let body = item.trim_start_matches(['r', 'R', 'u', 'U']);
    let quote = body.chars().next().filter(|q| *q == '"' || *q == '\'')?;
    let inner = body.strip_prefix(quote)?.strip_suffix(quote)?;
    (!inner.contains(quote)).then(|| inner.to_string())
}

/// Every string literal in a list or tuple expression (`choices=[...]`).
fn string_literals(expression: &str) -> Vec<String> {
    let inner = expression
        .trim()
        .trim_start_matches(['[', '(', '{'])
        .trim_end_matches([']', ')', '}']);
    inner.split(',').filter_map(string_literal).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_controlnet_style_preload_files() {
        let source = r#"
# ControlNet: parser.add_argument("--commented-out")
def preload(parser):
    parser.add_argument("--controlnet-dir", type=str, help="Path to directory (with commas, too)", default=None)
    parser.add_argument(
        "--no-half-controlnet",
        action='store_true',
        help="""multi-line
        help, with "quotes" and )""",
    )
    parser.add_argument("--controlnet-cache", type=int, default=16)
    parser.add_argument("--controlnet-loglevel", default="INFO", choices=["DEBUG", "INFO"], help="x")
    parser.add_argument("-x", "--extra-paths", nargs="+", default=[])
    parser.add_argument(f"--{name}", type=str)
"#;
        let calls = add_argument_calls(source);
        let names: Vec<&str> = calls
            .iter()
            .flat_map(|(n, _)| n.iter().map(String::as_str))
            .collect();
        assert_eq!(
            names,
            [
                "--controlnet-dir",
                "--no-half-controlnet",
                "--controlnet-cache",
                "--controlnet-loglevel",
                "-x",
                "--extra-paths"
            ]
        );
        assert_eq!(calls[1].1, Arity::Switch);
        assert_eq!(
            calls[2].1,
            Arity::One {
                int: true,
                choices: None
            }
        );
        assert_eq!(
            calls[3].1,
            Arity::One {
                int: false,
                choices: Some(vec!["DEBUG".into(), "INFO".into()])
            }
        );
        assert_eq!(calls[4].1, Arity::OneOrMore);
    }
}
