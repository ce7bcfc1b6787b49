//! `cargo xtask codegen`: files derived from the code. Each has a test below that fails when the
//! committed file is stale (rust-analyzer's idiom): the test rewrites it, so committing the
//! rewritten file is the fix.

use std::fs;
use std::path::Path;

use anyhow::Context;

use crate::project_root;

#[derive(clap::Args)]
pub struct CodegenArgs {
    /// Fail instead of writing when a generated file is stale.
    #[arg(long)]
    pub check: bool,
}

/// Generated files: path relative to the workspace root, and their contents.
pub fn generated_files() -> Vec<(&'static str, String)> {
    vec![("docs/webui-flags.md", runtime::webui_flags::markdown_doc())]
}

pub fn run(args: CodegenArgs) -> anyhow::Result<()> {
    let mut stale = Vec::new();
    for (path, contents) in generated_files() {
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
        for (path, contents) in generated_files() {
            let stale = update(&project_root().join(path), &contents, false).expect("write");
            assert!(
                !stale,
                "{path} was stale and has been regenerated: review and commit it"
            );
        }
    }
}
