//! `cargo xtask a1111`: a runnable real AUTOMATIC1111 WebUI on this machine, prepared once and
//! reused: its source (a pinned tarball, or git at the pinned commits), a Python environment from
//! PyPI with every version locked, the Hugging Face files A1111 needs for SD 1.x made offline, and
//! two small test checkpoints with deterministic random weights.
//!
//! Each step records what it was made from in a stamp; a step whose stamp matches is skipped, and
//! a step that has to run again first removes what an earlier (maybe interrupted) run left, so
//! nothing half-prepared is ever reused.

mod source;
mod steps;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

pub use source::SourceSpec;

/// What the prepared WebUI is made of, relative to xtask/a1111/ (hashed into the stamps).
const LOCK_FILE: &str = "requirements.lock";
const HF_SCRIPT: &str = "hf_clip_cache.py";
const CHECKPOINT_SCRIPT: &str = "test_checkpoint.py";
const MODEL_CONFIG: &str = "tiny-sd1.yaml";

/// The checkpoint loaded at start (MODEL_PATH) and the one a job can switch to (in CKPT_DIR).
pub const MAIN_CHECKPOINT: &str = "test-a";
pub const SECOND_CHECKPOINT: &str = "test-b";

pub use crate::flags::A1111Args;

/// A prepared WebUI: the settings worker-runtime needs to run it.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub webui_dir: PathBuf,
    pub python: PathBuf,
    pub model_path: PathBuf,
    pub ckpt_dir: PathBuf,
    pub hf_home: PathBuf,
}

impl Prepared {
    /// The settings as `KEY=value` pairs, in the order they are printed.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let show = |p: &Path| p.display().to_string();
        vec![
            ("WEBUI_DIR", show(&self.webui_dir)),
            ("WEBUI_PYTHON", show(&self.python)),
            ("MODEL_PATH", show(&self.model_path)),
            ("CKPT_DIR", show(&self.ckpt_dir)),
            ("HF_HOME", show(&self.hf_home)),
            // The hub is never asked: everything A1111 needs from it is in HF_HOME.
            ("HF_HUB_OFFLINE", "1".into()),
            ("TRANSFORMERS_OFFLINE", "1".into()),
        ]
    }

    /// Sets the settings on a command, except those the user's environment already sets.
    pub fn apply(&self, command: &mut Command) {
        for (key, value) in self.settings() {
            if std::env::var_os(key).is_none_or(|v| v.is_empty()) {
                command.env(key, value);
            }
        }
    }

    /// A fresh folder for A1111's run-time files (config.json, params.txt, cache, ...), passed
    /// as `--data-dir`, so that one run's settings never leak into the next. A1111 reads its
    /// small bundled models (the live-preview approximation) from there too: they are copied.
    pub fn make_data_dir(&self, data_dir: &Path) -> Result<()> {
        let models = data_dir.join("models");
        std::fs::create_dir_all(&models)
            .with_context(|| format!("creating {}", models.display()))?;
        let bundled = self.webui_dir.join("models").join("VAE-approx");
        let target = models.join("VAE-approx");
        if bundled.is_dir() && !target.exists() {
            std::fs::create_dir_all(&target)?;
            for entry in std::fs::read_dir(&bundled)? {
                let entry = entry?;
                std::fs::copy(entry.path(), target.join(entry.file_name())).with_context(|| {
                    format!(
                        "copying {} into {}",
                        entry.path().display(),
                        target.display()
                    )
                })?;
            }
        }
        Ok(())
    }
}

pub fn run(args: A1111Args) -> Result<()> {
    let prepared = prepare(&args)?;
    for (key, value) in prepared.settings() {
        println!("{key}={value}");
    }
    Ok(())
}

/// Prepares (or finds prepared) the real WebUI; progress goes to stderr.
pub fn prepare(args: &A1111Args) -> Result<Prepared> {
    let dir = match &args.dir {
        Some(dir) => absolute(dir)?,
        None => default_dir()?,
    };
    let source = SourceSpec::choose(args.source.as_deref())?;
    let python = steps::choose_python(args.python.as_deref())?;
    steps::Preparation::new(dir, source, python)?.run()
}

/// ~/.cache/sd-worker/a1111 (or under XDG_CACHE_HOME): outside any clone, so CI's fresh clones
/// and every worktree share one prepared WebUI.
pub fn default_dir() -> Result<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .context("neither XDG_CACHE_HOME nor HOME is set: pass --dir")?;
    Ok(cache.join("sd-worker").join("a1111"))
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("reading the current directory")?
        .join(path))
}

/// xtask/a1111/: the lock file, the scripts and the model config.
fn assets_dir() -> PathBuf {
    crate::project_root().join("xtask").join("a1111")
}
