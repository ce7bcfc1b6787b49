//! The preparation steps, their stamps and their progress lines.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::{
    assets_dir, Prepared, SourceSpec, CHECKPOINT_SCRIPT, HF_SCRIPT, LOCK_FILE, MAIN_CHECKPOINT,
    MODEL_CONFIG, SECOND_CHECKPOINT,
};

/// A venv with torch and the nvidia-* wheels is about 6.5 GB; pip unpacks next to it.
const VENV_NEEDS_GB: u64 = 9;

/// The Pythons A1111 v1.10.1 runs on, best first.
const PYTHONS: [&str; 2] = ["3.10", "3.11"];

pub struct Preparation {
    dir: PathBuf,
    source: SourceSpec,
    python: BasePython,
    assets: PathBuf,
}

/// The interpreter the venv is made from, with its version.
pub struct BasePython {
    path: PathBuf,
    version: String,
}

/// One step: its name, what it was made from, and the path it owns.
struct Step<'a> {
    number: usize,
    name: &'static str,
    key: String,
    output: &'a Path,
}

const STEPS: usize = 4;

impl Preparation {
    pub fn new(dir: PathBuf, source: SourceSpec, python: BasePython) -> Result<Preparation> {
        fs::create_dir_all(dir.join(".stamps"))
            .with_context(|| format!("creating {}", dir.display()))?;
        Ok(Preparation {
            dir,
            source,
            python,
            assets: assets_dir(),
        })
    }

    pub fn run(self) -> Result<Prepared> {
        self.source.verify()?;
        let started = Instant::now();
        let src = self.dir.join("src");
        let venv = self.dir.join("venv");
        let hf = self.dir.join("hf");
        let models = self.dir.join("models");
        let prepared = Prepared {
            webui_dir: src.join("stable-diffusion-webui"),
            python: venv.join("bin").join("python"),
            model_path: models.join(format!("{MAIN_CHECKPOINT}.safetensors")),
            ckpt_dir: models.join("extra"),
            hf_home: hf.clone(),
        };
        say(&format!(
            "preparing a real A1111 in {} (source: {}; Python {} at {})",
            self.dir.display(),
            self.source.describe(),
            self.python.version,
            self.python.path.display()
        ));

        let source_key = SourceSpec::stamp_key();
        let mut did_something = false;
        did_something |= self.step(
            Step {
                number: 1,
                name: "source",
                key: source_key.clone(),
                output: &src,
            },
            |out| self.source.fetch(out),
        )?;

        let lock = self.assets.join(LOCK_FILE);
        let env_key = format!(
            "{source_key}\npython {}\n{}",
            self.python.version,
            file_digest(&lock)?
        );
        did_something |= self.step(
            Step {
                number: 2,
                name: "python environment",
                key: env_key.clone(),
                output: &venv,
            },
            |out| self.make_venv(out, &lock, &src.join("CLIP")),
        )?;

        let hf_script = self.assets.join(HF_SCRIPT);
        let hf_key = format!("{env_key}\n{}", file_digest(&hf_script)?);
        did_something |= self.step(
            Step {
                number: 3,
                name: "Hugging Face files (CLIP tokenizer and config)",
                key: hf_key.clone(),
                output: &hf,
            },
            |out| {
                let command = duct::cmd!(&prepared.python, &hf_script, out);
                run_python(command, "making the CLIP tokenizer files")
            },
        )?;

        let checkpoint_script = self.assets.join(CHECKPOINT_SCRIPT);
        let config = self.assets.join(MODEL_CONFIG);
        let models_key = format!(
            "{hf_key}\n{}\n{}",
            file_digest(&checkpoint_script)?,
            file_digest(&config)?
        );
        did_something |= self.step(
            Step {
                number: 4,
                name: "test checkpoints",
                key: models_key,
                output: &models,
            },
            |out| {
                for (seed, path) in [
                    (1, &prepared.model_path),
                    (2, &second_checkpoint(&prepared)),
                ] {
                    // The stamp says where the files were made; the paths must be inside `out`.
                    let path = out.join(path.strip_prefix(&models).unwrap_or(path));
                    let command = duct::cmd!(
                        &prepared.python,
                        &checkpoint_script,
                        &prepared.webui_dir,
                        &config,
                        seed.to_string(),
                        &path
                    )
                    .env("HF_HOME", &prepared.hf_home)
                    .env("HF_HUB_OFFLINE", "1")
                    .env("TRANSFORMERS_OFFLINE", "1");
                    run_python(command, "making a test checkpoint")?;
                    // A1111 reads <name>.yaml beside a checkpoint as its model config.
                    fs::copy(&config, path.with_extension("yaml"))
                        .with_context(|| format!("copying {}", config.display()))?;
                }
                Ok(())
            },
        )?;

        if did_something {
            say(&format!(
                "ready in {:.1} s",
                started.elapsed().as_secs_f64()
            ));
        } else {
            say("everything was prepared already: nothing to do");
        }
        Ok(prepared)
    }

    /// Runs a step unless its stamp says its output is current. What a failed or interrupted run
    /// left is removed first: only a stamp written after success marks an output as usable.
    fn step(&self, step: Step<'_>, make: impl FnOnce(&Path) -> Result<()>) -> Result<bool> {
        let stamp = self.dir.join(".stamps").join(step.name.replace(' ', "-"));
        let label = format!("[{}/{STEPS}] {}", step.number, step.name);
        if step.output.exists() && fs::read_to_string(&stamp).ok().as_deref() == Some(&step.key) {
            say(&format!("{label}: up to date"));
            return Ok(false);
        }
        let _ = fs::remove_file(&stamp);
        if step.output.exists() {
            fs::remove_dir_all(step.output)
                .with_context(|| format!("removing the stale {}", step.output.display()))?;
        }
        say(&format!("{label}: making {}", step.output.display()));
        let started = Instant::now();
        if let Err(e) = make(step.output) {
            // Leave nothing that looks prepared; the stamp was never written.
            let _ = fs::remove_dir_all(step.output);
            return Err(e.context(format!("{label} failed; nothing of it is kept")));
        }
        fs::write(&stamp, &step.key).with_context(|| format!("writing {}", stamp.display()))?;
        say(&format!(
            "{label}: done in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        Ok(true)
    }

    fn make_venv(&self, venv: &Path, lock: &Path, clip: &Path) -> Result<()> {
        check_free_space(&self.dir, VENV_NEEDS_GB)?;
        let status = duct::cmd!(&self.python.path, "-m", "venv", venv)
            .stdout_to_stderr()
            .unchecked()
            .run()
            .with_context(|| format!("running {}", self.python.path.display()))?
            .status;
        if !status.success() {
            bail!(
                "{} -m venv failed ({status}): on Debian install python{}-venv, or pass --python",
                self.python.path.display(),
                self.python.version
            );
        }
        let python = venv.join("bin").join("python");
        let packages = fs::read_to_string(lock)?
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count();
        say(&format!(
            "    installing {packages} pinned packages from PyPI (torch with its CUDA libraries: about 4.5 GB to download, 6.5 GB installed)"
        ));
        // Every version is in the lock, so pip needs no resolver run; bytecode is compiled at
        // install (pip's default), so the WebUI's start never pays for it.
        pip(
            &python,
            &["install", "--no-deps", "-r"],
            lock,
            "installing A1111's packages",
        )?;
        // CLIP's setup.py needs setuptools and wheel from the environment (no build isolation:
        // nothing more to fetch).
        pip(
            &python,
            &["install", "--no-deps", "--no-build-isolation"],
            clip,
            "installing CLIP from the source",
        )?;
        Ok(())
    }
}

fn second_checkpoint(prepared: &Prepared) -> PathBuf {
    prepared
        .ckpt_dir
        .join(format!("{SECOND_CHECKPOINT}.safetensors"))
}

/// Runs pip; on failure, names the likely cause in one line after pip's own output.
fn pip(python: &Path, args: &[&str], target: &Path, what: &str) -> Result<()> {
    let mut argv: Vec<&std::ffi::OsStr> = ["-m", "pip", "--disable-pip-version-check", "-q"]
        .iter()
        .chain(args)
        .map(std::ffi::OsStr::new)
        .collect();
    argv.push(target.as_os_str());
    let output = duct::cmd(python, argv)
        .stdin_null()
        .stdout_to_stderr()
        .stderr_capture()
        .unchecked()
        .run()
        .with_context(|| format!("running {}", python.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprint!("{stderr}");
    if output.status.success() {
        return Ok(());
    }
    bail!("{what}: {}", pip_failure(&stderr))
}

/// pip's failures as a user can act on them.
fn pip_failure(stderr: &str) -> &'static str {
    let has = |s: &str| stderr.contains(s);
    if has("No space left on device") {
        "the disk is full: free some space, or pass --dir on a larger disk"
    } else if has("NewConnectionError")
        || has("Temporary failure in name resolution")
        || has("Network is unreachable")
        || has("Max retries exceeded")
        || has("ConnectTimeout")
        || has("ReadTimeoutError")
    {
        "PyPI cannot be reached: check the network (or PIP_INDEX_URL / a proxy), then run again"
    } else if has("No matching distribution") || has("Could not find a version") {
        "PyPI has no build of a pinned package for this Python: use Python 3.10 or 3.11 (--python)"
    } else {
        "pip failed (its output is above); run again once the cause is fixed"
    }
}

/// Child output goes to stderr: stdout carries only the KEY=value settings.
fn run_python(command: duct::Expression, what: &str) -> Result<()> {
    let status = command
        .stdin_null()
        .stdout_to_stderr()
        .unchecked()
        .run()
        .with_context(|| format!("{what}: cannot run the environment's Python"))?
        .status;
    if !status.success() {
        bail!("{what} failed ({status}); its output is above");
    }
    Ok(())
}

fn check_free_space(dir: &Path, needed_gb: u64) -> Result<()> {
    let stat = nix::sys::statvfs::statvfs(dir)
        .with_context(|| format!("reading the free space of {}", dir.display()))?;
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    let free_gb = free / (1 << 30);
    if free_gb < needed_gb {
        bail!(
            "{} has {free_gb} GB free; the Python environment needs about {needed_gb} GB: free some space, or pass --dir on a larger disk",
            dir.display()
        );
    }
    Ok(())
}

fn file_digest(path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let digest = Sha256::digest(&bytes);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    Ok(format!(
        "{name} sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
}

/// `--python`, else `A1111_PYTHON`, else the first of 3.10 and 3.11 found in pyenv or on PATH.
pub fn choose_python(flag: Option<&Path>) -> Result<BasePython> {
    let chosen = flag.map(Path::to_path_buf).or_else(|| {
        std::env::var_os("A1111_PYTHON")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = chosen {
        let resolved = which::which(&path).unwrap_or(path.clone());
        let version = python_version(&resolved).with_context(|| {
            format!(
                "--python {}: cannot run it; give a Python 3.10 or 3.11 interpreter",
                path.display()
            )
        })?;
        if !PYTHONS.contains(&version.as_str()) {
            bail!(
                "--python {}: Python {version}; A1111 v1.10.1 needs 3.10 or 3.11",
                path.display()
            );
        }
        return Ok(BasePython {
            path: resolved,
            version,
        });
    }
    for wanted in PYTHONS {
        for candidate in candidates(wanted) {
            if python_version(&candidate).is_ok_and(|v| v == wanted) {
                return Ok(BasePython {
                    path: candidate,
                    version: wanted.to_string(),
                });
            }
        }
    }
    bail!(
        "no Python 3.10 or 3.11 found (looked in pyenv and on PATH): install one (Debian: apt-get install python3.11-venv), or pass --python"
    )
}

/// pyenv's installs first (their `pythonX.Y` on PATH is a shim that only works when selected).
fn candidates(version: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let pyenv_root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")));
    if let Some(versions) = pyenv_root.map(|r| r.join("versions")) {
        if let Ok(entries) = fs::read_dir(&versions) {
            let mut dirs: Vec<PathBuf> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{version}.")))
                })
                .collect();
            // Newest patch release first.
            dirs.sort();
            dirs.reverse();
            found.extend(
                dirs.into_iter()
                    .map(|d| d.join("bin").join(format!("python{version}"))),
            );
        }
    }
    if let Ok(path) = which::which(format!("python{version}")) {
        found.push(path);
    }
    found
}

/// "3.10" for a Python 3.10.x.
fn python_version(python: &Path) -> Result<String> {
    let output = Command::new(python)
        .args([
            "-c",
            "import sys, venv; print('%d.%d' % sys.version_info[:2])",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    if !output.status.success() {
        bail!("{} does not run ({})", python.display(), output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn say(message: &str) {
    eprintln!("a1111: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_failures_say_what_to_do() {
        assert!(pip_failure("OSError: [Errno 28] No space left on device").contains("disk is full"));
        assert!(pip_failure("WARNING: Retrying ... NewConnectionError(...)")
            .contains("PyPI cannot be reached"));
        assert!(
            pip_failure("ERROR: No matching distribution found for torch==2.8.0")
                .contains("3.10 or 3.11")
        );
        assert!(pip_failure("something else").contains("output is above"));
    }

    #[test]
    fn a_python_of_another_version_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fake = dir.path().join("python");
        fs::write(&fake, "#!/bin/sh\necho 3.8\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).expect("chmod");
        let err = choose_python(Some(&fake)).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("Python 3.8; A1111 v1.10.1 needs 3.10 or 3.11")),
            "{err:?}"
        );
        let missing = choose_python(Some(Path::new("/no/such/python3")))
            .err()
            .map(|e| e.to_string());
        assert!(
            missing
                .as_deref()
                .is_some_and(|e| e.contains("cannot run it")),
            "{missing:?}"
        );
    }

    #[test]
    fn a_failed_step_leaves_no_output_and_no_stamp_and_a_later_run_redoes_it() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let prep = Preparation {
            dir: dir.path().to_path_buf(),
            source: SourceSpec::Git,
            python: BasePython {
                path: PathBuf::from("python3"),
                version: "3.10".into(),
            },
            assets: dir.path().to_path_buf(),
        };
        fs::create_dir_all(dir.path().join(".stamps"))?;
        let out = dir.path().join("thing");
        let step = |key: &str| Step {
            number: 1,
            name: "thing",
            key: key.to_string(),
            output: &out,
        };
        let failed = prep.step(step("k1"), |o| {
            fs::create_dir_all(o)?;
            fs::write(o.join("half"), "x")?;
            bail!("disk full")
        });
        assert!(failed.is_err());
        assert!(!out.exists(), "a failed step's output is removed");
        assert!(prep.step(step("k1"), |o| Ok(fs::create_dir_all(o)?))?);
        assert!(
            !prep.step(step("k1"), |_| bail!("must not run"))?,
            "up to date"
        );
        // Another key (a pin changed): the old output is removed before the step runs again.
        fs::write(out.join("old"), "x")?;
        assert!(prep.step(step("k2"), |o| {
            assert!(!o.join("old").exists());
            Ok(fs::create_dir_all(o)?)
        })?);
        Ok(())
    }
}
