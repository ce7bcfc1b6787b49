//! `cargo xtask codegen`: files derived from the code. Each has a test below that fails when the
//! committed file is stale (rust-analyzer's idiom): the test rewrites it, so committing the
//! rewritten file is the fix.

use std::fs;
use std::path::Path;

use anyhow::Context;

use crate::project_root;

pub use crate::flags::CodegenArgs;

/// The demo WebUI is one file (it is copied alone into test images), so the flag catalog it
/// accepts lives inside it, between these lines, copied from the runtime's catalog.
const DEMO_WEBUI: &str = "docker/demo-webui/webui.py";
const CATALOG_START: &str = "FLAG_CATALOG_TSV = \"\"\"\\\n";
const CATALOG_END: &str = "\"\"\"\n";

/// Generated files: path relative to the workspace root, and their contents.
pub fn generated_files() -> anyhow::Result<Vec<(&'static str, String)>> {
    let demo_path = project_root().join(DEMO_WEBUI);
    let demo = fs::read_to_string(&demo_path)
        .with_context(|| format!("reading {}", demo_path.display()))?;
    Ok(vec![
        ("docs/webui-flags.md", runtime::webui_flags::markdown_doc()),
        (
            DEMO_WEBUI,
            splice(
                &demo,
                CATALOG_START,
                CATALOG_END,
                runtime::webui_flags::CATALOG_TSV,
            )
            .with_context(|| format!("{DEMO_WEBUI}: the flag catalog"))?,
        ),
    ])
}

/// `text` with what lies between `start` and the next `end` replaced by `contents`.
fn splice(text: &str, start: &str, end: &str, contents: &str) -> anyhow::Result<String> {
    let Some(at) = text.find(start).map(|i| i + start.len()) else {
        anyhow::bail!("no line {:?} to generate after", start.trim_end());
    };
    let Some(length) = text[at..].find(end) else {
        anyhow::bail!("no closing {:?}", end.trim_end());
    };
    Ok(format!("{}{contents}{}", &text[..at], &text[at + length..]))
}

pub fn run(args: CodegenArgs) -> anyhow::Result<()> {
    let mut stale = Vec::new();
    for (path, contents) in generated_files()? {
        if update(&project_root().join(path), &contents, args.check)? {
            stale.push(path);
        }
    }
    match (args.check, stale.is_empty()) {
        (true, false) => anyhow::bail!(
            "stale generated files: {}; run `cargo xtask codegen`",
            stale.join(", ")
        ),
        (false, false) => println!("updated: {}", stale.join(", ")),
        _ => println!("generated files are up to date"),
    }
    Ok(())
}

/// Returns whether the file differed; writes it unless `check_only`.
fn update(path: &Path, contents: &str, check_only: bool) -> anyhow::Result<bool> {
    if fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(false);
    }
    if !check_only {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_are_fresh() {
        for (path, contents) in generated_files().expect("generated files") {
            let stale = update(&project_root().join(path), &contents, false).expect("write");
            assert!(
                !stale,
                "{path} was stale and has been regenerated: review and commit it"
            );
        }
    }

    #[test]
    fn splice_replaces_only_the_generated_part() {
        let text = "a\nX = \"\"\"\\\nold\n\"\"\"\nb \"\"\"\n";
        let spliced = splice(
            text,
            CATALOG_START.replace("FLAG_CATALOG_TSV", "X").as_str(),
            CATALOG_END,
            "new\n",
        );
        assert_eq!(
            spliced.expect("spliced"),
            "a\nX = \"\"\"\\\nnew\n\"\"\"\nb \"\"\"\n"
        );
        assert!(splice("nothing here", CATALOG_START, CATALOG_END, "").is_err());
    }
}
