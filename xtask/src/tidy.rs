//! `cargo xtask tidy`: the rules a reviewer would otherwise enforce by hand, one line per finding.
//!
//! - No reference a reader of the repository cannot follow (paths outside the clone, tracker
//!   numbers, machine names, documents that are not here).
//! - The README's configuration and exit-code tables in step with the code that defines them.
//! - Every README promise listed in `xtask/tidy/promises.txt` still said, and its test still there.
//! - No source file over `MAX_LINES` without a reason written in its first lines.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use xshell::{cmd, Shell};

use crate::project_root;

/// Longer source files need a `tidy: long because ...` comment in their first lines.
pub const MAX_LINES: usize = 600;
const LONG_MARKER: &str = "tidy: long because";
/// The README promises and their tests, one `phrase -> path::test_name` a line.
pub const PROMISES: &str = "xtask/tidy/promises.txt";

pub use crate::flags::TidyArgs;

/// The tracked files of a tree, as paths relative to its root.
pub struct Tree {
    pub root: PathBuf,
    pub files: Vec<String>,
}

/// What the code defines, to compare the README's tables with.
pub struct Facts {
    /// Every environment variable a clap argument of `worker-runtime` reads.
    pub clap_env: BTreeSet<String>,
    /// The runtime's own exit statuses.
    pub exit_codes: BTreeSet<u8>,
}

impl Facts {
    pub fn of_runtime() -> Facts {
        let command = <runtime::cli::Cli as clap::CommandFactory>::command();
        let clap_env = runtime::cli::setting_variables(&command)
            .into_iter()
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        let exit_codes = runtime::exit_code::MEANINGS
            .iter()
            .map(|(code, _)| *code)
            .collect();
        Facts {
            clap_env,
            exit_codes,
        }
    }
}

pub fn run(sh: &Shell, _args: TidyArgs) -> anyhow::Result<()> {
    let root = project_root();
    let listing = cmd!(sh, "git ls-files")
        .read()
        .context("listing the tracked files (git ls-files)")?;
    let tree = Tree {
        root,
        files: listing.lines().map(str::to_string).collect(),
    };
    let findings = check(&tree, &Facts::of_runtime());
    if findings.is_empty() {
        println!("tidy: no findings");
        return Ok(());
    }
    for finding in &findings {
        println!("{finding}");
    }
    anyhow::bail!("tidy: {} finding(s), listed above", findings.len())
}

/// Every rule over the tree; one line per finding, `path:line: what to fix`.
pub fn check(tree: &Tree, facts: &Facts) -> Vec<String> {
    let texts: Vec<(&str, String)> = tree
        .files
        .iter()
        .filter_map(|path| {
            let text = fs::read_to_string(tree.root.join(path)).ok()?;
            Some((path.as_str(), text))
        })
        .collect();
    let names: BTreeSet<&str> = tree
        .files
        .iter()
        .map(|file| file.rsplit('/').next().unwrap_or(file))
        .collect();
    let mut findings = Vec::new();
    for (path, text) in &texts {
        findings.extend(outside_references(path, text));
        findings.extend(foreign_documents(path, text, &names));
        findings.extend(long_file(path, text));
    }
    match texts.iter().find(|(path, _)| *path == "README.md") {
        Some((_, readme)) => {
            findings.extend(configuration_table(readme, facts, &texts));
            findings.extend(exit_code_table(readme, facts));
            findings.extend(promises(&texts, readme));
        }
        None => findings.push("README.md: missing".to_string()),
    }
    findings
}

/// Words that point outside the repository, and what to write instead.
const OUTSIDE: &[(&str, &str)] = &[
    (
        "../shared",
        "a path outside the clone: name what is meant in the project's own words",
    ),
    (
        "shared/seeds",
        "a path outside the clone: name what is meant in the project's own words",
    ),
    (
        "the lent h200",
        "a machine the reader does not have: say which GPU (e.g. \"an H200\")",
    ),
    (
        "our build machines",
        "machines the reader does not know: say what about them matters",
    ),
    (
        "the build machines",
        "machines the reader does not know: say what about them matters",
    ),
    (
        "a build machine like ours",
        "machines the reader does not know: say what about them matters",
    ),
    (
        "device tool",
        "a tool the reader does not have: say what was run, on which GPU",
    ),
    (
        "the seed's",
        "a starting point the reader does not have: name the bash start.sh (xtask/bench/start.sh) or the torch check (docs/bench/torch_check.py)",
    ),
    (
        "start.sh (seed)",
        "a starting point the reader does not have: name the bash start.sh (xtask/bench/start.sh)",
    ),
];

/// Where a rule above may not hold, and why.
const OUTSIDE_ALLOWED: &[(&str, &str, &str)] = &[
    (
        ".ci/run",
        "../shared",
        // The CI entry point runs on machines that keep the pinned A1111 source tarball beside the
        // clone; it passes that file to `cargo xtask a1111`, which checks its SHA-256 and fetches
        // the pinned commits when the file is not there. The project itself never reads it.
        "CI passes a source tarball found beside the clone",
    ),
    (
        "xtask/src/tidy.rs",
        "",
        // The rules name the words they look for.
        "the rules themselves",
    ),
    (
        "xtask/src/tidy/tests.rs",
        "",
        // The tests break each rule on purpose.
        "the rules' fixtures",
    ),
];

fn allowed(path: &str, pattern: &str) -> bool {
    OUTSIDE_ALLOWED
        .iter()
        .any(|(file, what, _)| *file == path && (what.is_empty() || *what == pattern))
}

fn outside_references(path: &str, text: &str) -> Vec<String> {
    let mut findings = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let lower = line.to_lowercase();
        for (pattern, fix) in OUTSIDE {
            if lower.contains(pattern) && !allowed(path, pattern) {
                findings.push(format!("{path}:{}: \"{pattern}\": {fix}", number + 1));
            }
        }
        if let Some(reference) = tracker_reference(&lower) {
            if !allowed(path, "issue") {
                findings.push(format!(
                    "{path}:{}: \"{reference}\": a tracker number the reader cannot follow; say what is meant",
                    number + 1
                ));
            }
        }
    }
    findings
}

/// "issue 5", "issue #5", "issues 5": the number of an entry in a tracker outside the repository.
fn tracker_reference(lower: &str) -> Option<String> {
    for (start, _) in lower.match_indices("issue") {
        let before = lower[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &lower[start + "issue".len()..];
        let rest = rest.strip_prefix('s').unwrap_or(rest);
        let Some(rest) = rest.strip_prefix(' ') else {
            continue;
        };
        let number = rest.strip_prefix('#').unwrap_or(rest);
        if number.starts_with(|c: char| c.is_ascii_digit()) {
            let end = lower.len() - number.len()
                + number
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(number.len());
            return Some(lower[start..end].to_string());
        }
    }
    None
}

/// Markdown documents named in the tree that the tree does not hold, except the ones of other
/// projects the code reads.
const FOREIGN_DOCS_ALLOWED: &[(&str, &str)] = &[(
    "CHANGELOG.md",
    "A1111's own changelog, read from its checkout for its version",
)];

/// `names`: the file names (without folders) of every file in the tree.
fn foreign_documents(path: &str, text: &str, names: &BTreeSet<&str>) -> Vec<String> {
    if allowed(path, ".md") {
        return Vec::new();
    }
    let mut findings = Vec::new();
    for (number, line) in text.lines().enumerate() {
        for (end, _) in line.match_indices(".md") {
            let after = line[end + 3..].chars().next();
            if after.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let start = line[..end]
                .rfind(|c: char| !(c.is_alphanumeric() || "_-./".contains(c)))
                .map_or(0, |i| i + 1);
            let named = &line[start..end + 3];
            let base = named.rsplit('/').next().unwrap_or(named);
            if base == ".md" || names.contains(base) {
                continue;
            }
            if FOREIGN_DOCS_ALLOWED.iter().any(|(doc, _)| *doc == base) {
                continue;
            }
            findings.push(format!(
                "{path}:{}: \"{named}\" is not in the repository: say what it says, or add it",
                number + 1
            ));
        }
    }
    findings
}

/// Variables in the configuration table that no clap argument reads: the file that reads each.
const CONFIG_OUTSIDE_CLAP: &[(&str, &str)] = &[
    ("RUST_LOG", "runtime/src/logging.rs"),
    ("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "runtime/src/launch.rs"),
];

fn configuration_table(readme: &str, facts: &Facts, texts: &[(&str, String)]) -> Vec<String> {
    let Some(rows) = table_after(readme, "## Configuration") else {
        return vec!["README.md: no table under \"## Configuration\"".to_string()];
    };
    let mut documented = BTreeSet::new();
    let mut findings = Vec::new();
    for (number, cells) in rows {
        for name in backticked(&cells[0]) {
            if !facts.clap_env.contains(&name) {
                match CONFIG_OUTSIDE_CLAP.iter().find(|(known, _)| *known == name) {
                    Some((_, file)) => {
                        let read = texts
                            .iter()
                            .any(|(path, text)| path == file && text.contains(name.as_str()));
                        if !read {
                            findings.push(format!(
                                "README.md:{number}: `{name}` is documented but {file} no longer reads it"
                            ));
                        }
                    }
                    None => findings.push(format!(
                        "README.md:{number}: `{name}` is documented but no argument of runtime/src/cli.rs reads it"
                    )),
                }
            }
            documented.insert(name);
        }
    }
    for name in facts.clap_env.difference(&documented) {
        findings.push(format!(
            "README.md: `{name}` (runtime/src/cli.rs) is missing from the configuration table"
        ));
    }
    findings
}

fn exit_code_table(readme: &str, facts: &Facts) -> Vec<String> {
    let Some(rows) = table_after(readme, "## Exit codes") else {
        return vec!["README.md: no table under \"## Exit codes\"".to_string()];
    };
    let mut documented = BTreeSet::new();
    let mut findings = Vec::new();
    for (number, cells) in rows {
        let Ok(code) = cells[0].parse::<u8>() else {
            continue;
        };
        if !facts.exit_codes.contains(&code) {
            findings.push(format!(
                "README.md:{number}: exit code {code} is not in runtime/src/exit_code.rs"
            ));
        }
        documented.insert(code);
    }
    for code in facts.exit_codes.difference(&documented) {
        findings.push(format!(
            "README.md: exit code {code} (runtime/src/exit_code.rs) is missing from the exit-code table"
        ));
    }
    findings
}

/// The body rows of the first table after `heading`: line number and trimmed cells.
fn table_after(text: &str, heading: &str) -> Option<Vec<(usize, Vec<String>)>> {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|line| line.trim() == heading)?;
    let first = at + lines[at..].iter().position(|line| line.starts_with('|'))?;
    let rows = lines[first..]
        .iter()
        .enumerate()
        .take_while(|(_, line)| line.starts_with('|'))
        .skip(2)
        .map(|(offset, line)| {
            let cells = line
                .trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_string())
                .collect();
            (first + offset + 1, cells)
        })
        .collect();
    Some(rows)
}

fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// `texts`: every file of the tree with its text, as `check` read them.
fn promises(texts: &[(&str, String)], readme: &str) -> Vec<String> {
    let text_of = |wanted: &str| {
        texts
            .iter()
            .find(|(path, _)| *path == wanted)
            .map(|(_, text)| text)
    };
    let Some(list) = text_of(PROMISES) else {
        return vec![format!("{PROMISES}: cannot read it: not in the tree")];
    };
    let prose = words(readme);
    let mut findings = Vec::new();
    for (number, line) in list.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{PROMISES}:{}", number + 1);
        let Some((phrase, test)) = line.split_once(" -> ") else {
            findings.push(format!("{at}: expected `README phrase -> path::test_name`"));
            continue;
        };
        if !prose.contains(&words(phrase)) {
            findings.push(format!(
                "{at}: README.md no longer says \"{}\"",
                phrase.trim()
            ));
        }
        let Some((file, name)) = test.trim().rsplit_once("::") else {
            findings.push(format!(
                "{at}: expected `path::test_name`, found \"{test}\""
            ));
            continue;
        };
        let Some(source) = text_of(file) else {
            findings.push(format!("{at}: {file} does not exist"));
            continue;
        };
        let defined = [format!("fn {name}("), format!("def {name}(")]
            .iter()
            .any(|definition| source.contains(definition.as_str()));
        if !defined {
            findings.push(format!("{at}: {file} has no test `{name}`"));
        }
    }
    findings
}

/// Text with every run of whitespace made one space: README lines wrap anywhere.
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

const SOURCE_EXTENSIONS: &[&str] = &["rs", "py", "sh", "c"];

fn long_file(path: &str, text: &str) -> Option<String> {
    let extension = Path::new(path).extension()?.to_str()?;
    let lines = text.lines().count();
    if !SOURCE_EXTENSIONS.contains(&extension) || lines <= MAX_LINES {
        return None;
    }
    if text.lines().take(5).any(|line| line.contains(LONG_MARKER)) {
        return None;
    }
    Some(format!(
        "{path}: {lines} lines, over {MAX_LINES}: split it, or say why in its first lines (`{LONG_MARKER} ...`)"
    ))
}

#[cfg(test)]
mod tests;
