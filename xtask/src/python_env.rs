//! The project's Python virtual environment (.venv): created from docker/requirements.txt and
//! docker/requirements-dev.txt on demand, reinstalled only when those files change.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

/// The files whose packages the venv holds, relative to the project root.
const REQUIREMENTS: [&str; 2] = ["docker/requirements.txt", "docker/requirements-dev.txt"];
/// Written after a successful install; holds the hash of what was installed.
const STAMP: &str = ".requirements-stamp";

/// The venv's Python (`<root>/.venv/bin/python`), creating the venv and installing the
/// requirements first when needed. A second call with unchanged requirements only reads a file.
pub fn ensure_venv(sh: &Shell) -> Result<PathBuf> {
    let root = crate::project_root();
    let venv = root.join(".venv");
    let python = venv.join("bin").join("python");
    let stamp = venv.join(STAMP);
    let wanted = requirements_stamp(&root)?;

    let usable = runs(&python);
    if usable && fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }

    if !usable {
        let base = base_python();
        eprintln!("python env: creating {} with {base}", venv.display());
        // --clear: a venv whose interpreter moved (pyenv, a Python upgrade) cannot be repaired.
        cmd!(sh, "{base} -m venv --clear {venv}")
            .run()
            .with_context(|| {
                format!(
                    "could not create {} with `{base} -m venv` \
                     (on Debian: apt-get install python3-venv; or set PYTHON)",
                    venv.display()
                )
            })?;
    }

    eprintln!(
        "python env: installing {} into {}",
        REQUIREMENTS.join(" and "),
        venv.display()
    );
    // A stale stamp must not survive a failed install.
    let _ = fs::remove_file(&stamp);
    let [runtime_reqs, dev_reqs] = REQUIREMENTS.map(|r| root.join(r));
    cmd!(
        sh,
        "{python} -m pip install --disable-pip-version-check --quiet -r {runtime_reqs} -r {dev_reqs}"
    )
    .run()
    .context("pip install into .venv failed (is PyPI reachable?)")?;
    fs::write(&stamp, &wanted).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(python)
}

/// The interpreter that creates the venv: $PYTHON, else python3.
fn base_python() -> String {
    std::env::var("PYTHON")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "python3".to_string())
}

/// Whether `python` starts at all (a venv can outlive the interpreter it links to).
fn runs(python: &Path) -> bool {
    python.is_file()
        && Command::new(python)
            .args(["-c", "import sys"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// What the stamp must say for the venv to be current: a hash of every requirements file.
fn requirements_stamp(root: &Path) -> Result<String> {
    let mut hash = Sha256::new();
    for name in REQUIREMENTS {
        let path = root.join(name);
        let text = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(&text);
        hash.update([0]);
    }
    Ok(format!("sha256:{:x}\n", hash.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_changes_when_a_requirements_file_changes() -> Result<()> {
        let dir = tempfile::tempdir()?;
        fs::create_dir_all(dir.path().join("docker"))?;
        fs::write(dir.path().join(REQUIREMENTS[0]), "runpod==1.12.0\n")?;
        fs::write(dir.path().join(REQUIREMENTS[1]), "pytest==9.2.0\n")?;
        let first = requirements_stamp(dir.path())?;
        assert_eq!(first, requirements_stamp(dir.path())?);
        fs::write(dir.path().join(REQUIREMENTS[1]), "pytest==9.2.1\n")?;
        assert_ne!(first, requirements_stamp(dir.path())?);
        Ok(())
    }

    #[test]
    fn stamp_fails_on_a_missing_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(requirements_stamp(dir.path()).is_err());
    }
}
