//! A1111's source: the pinned release, the five repositories its launch_utils.py pins, and
//! openai/CLIP (its `clip` package). From a tarball laid out as `stable-diffusion-webui/` +
//! `CLIP/` and checked against a pinned SHA-256, or from git at the pinned commits.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// The source tarball the project knows: A1111 v1.10.1, its pinned repositories and CLIP, as
/// plain folders (git archive of each commit below).
pub const TARBALL_SHA256: &str = "9d6ad9aad410c7c5dca7481fc9d04c7d45305fda986a860d96256f807cf701e7";

/// (folder in the prepared tree, repository, commit). The repositories' commits are the ones
/// A1111 v1.10.1's modules/launch_utils.py pins; Stability-AI/stablediffusion was deleted
/// upstream, the w-e-w fork keeps the same history.
pub const PINNED: &[(&str, &str, &str)] = &[
    (
        "stable-diffusion-webui",
        "https://github.com/AUTOMATIC1111/stable-diffusion-webui.git",
        "82a973c04367123ae98bd9abdf80d9eda9b910e2",
    ),
    (
        "stable-diffusion-webui/repositories/stable-diffusion-stability-ai",
        "https://github.com/w-e-w/stablediffusion.git",
        "cf1d67a6fd5ea1aa600c4df58e5b47da45f6bdbf",
    ),
    (
        "stable-diffusion-webui/repositories/generative-models",
        "https://github.com/Stability-AI/generative-models.git",
        "45c443b316737a4ab6e40413d7794a7f5657c19f",
    ),
    (
        "stable-diffusion-webui/repositories/k-diffusion",
        "https://github.com/crowsonkb/k-diffusion.git",
        "ab527a9a6d347f364e3d185ba6d714e22d80cb3c",
    ),
    (
        "stable-diffusion-webui/repositories/BLIP",
        "https://github.com/salesforce/BLIP.git",
        "48211a1594f1321b00f14c9f7a5b4813144b2fb9",
    ),
    (
        "stable-diffusion-webui/repositories/stable-diffusion-webui-assets",
        "https://github.com/AUTOMATIC1111/stable-diffusion-webui-assets.git",
        "6f7db241d2f8ba7457bac5ca9753331f0c266917",
    ),
    (
        "CLIP",
        "https://github.com/openai/CLIP.git",
        "d50d76daa670286dd6cacf3bcd80b5e4823fc8e1",
    ),
];

/// Where the source comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Tarball(PathBuf),
    Git,
}

impl SourceSpec {
    /// `--source`, else `A1111_SOURCE`, else git. An empty variable counts as unset.
    pub fn choose(flag: Option<&Path>) -> Result<SourceSpec> {
        let from_env = std::env::var_os("A1111_SOURCE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let (path, setting) = match (flag, from_env) {
            (Some(p), _) => (p.to_path_buf(), "--source"),
            (None, Some(p)) => (p, "A1111_SOURCE"),
            (None, None) => return Ok(SourceSpec::Git),
        };
        if !path.is_file() {
            bail!(
                "{setting} {}: no such file; give the A1111 v1.10.1 source tarball, or leave it unset to fetch the pinned commits with git",
                path.display()
            );
        }
        Ok(SourceSpec::Tarball(path))
    }

    /// What the prepared tree is: the same pins whichever way it was fetched.
    pub fn stamp_key() -> String {
        let mut key = String::from("source");
        for (path, _, commit) in PINNED {
            key.push_str(&format!(" {path}@{commit}"));
        }
        key
    }

    pub fn describe(&self) -> String {
        match self {
            SourceSpec::Tarball(p) => format!("tarball {}", p.display()),
            SourceSpec::Git => "git, the pinned commits".to_string(),
        }
    }

    /// A tarball is checked whenever it is given, even when the tree is already prepared: a
    /// wrong file is a mistake worth hearing about at once.
    pub fn verify(&self) -> Result<()> {
        match self {
            SourceSpec::Tarball(path) => verify_sha256(path),
            SourceSpec::Git => Ok(()),
        }
    }

    /// Lays the source out in `into` (which must not exist yet).
    pub fn fetch(&self, into: &Path) -> Result<()> {
        match self {
            SourceSpec::Tarball(path) => extract(path, into)?,
            SourceSpec::Git => clone_pinned(into)?,
        }
        check_layout(into)
    }
}

fn verify_sha256(path: &Path) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let got = hex(&hasher.finalize());
    if got != TARBALL_SHA256 {
        bail!(
            "{}: SHA-256 {got} is not the pinned A1111 v1.10.1 source tarball ({TARBALL_SHA256}); give that tarball, or leave --source/A1111_SOURCE unset to use git",
            path.display()
        );
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn extract(tarball: &Path, into: &Path) -> Result<()> {
    let file = File::open(tarball).with_context(|| format!("opening {}", tarball.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    // tar's unpack refuses entries that would land outside `into` (absolute paths, "..").
    archive
        .unpack(into)
        .with_context(|| format!("extracting {} into {}", tarball.display(), into.display()))
}

fn clone_pinned(into: &Path) -> Result<()> {
    // Parents first: the repositories live inside A1111's folder.
    for (folder, url, commit) in PINNED {
        let dir = into.join(folder);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let git = |args: &[&str]| -> Result<()> {
            let status = std::process::Command::new("git")
                .arg("-C")
                .arg(&dir)
                .args(args)
                .status()
                .context("running git (is it installed?)")?;
            if !status.success() {
                bail!(
                    "git could not fetch {url} at {commit} ({status}): without access to GitHub, pass --source (or A1111_SOURCE) with the A1111 v1.10.1 source tarball"
                );
            }
            Ok(())
        };
        git(&["init", "-q"])?;
        git(&["fetch", "-q", "--depth", "1", url, commit])?;
        git(&["checkout", "-q", "FETCH_HEAD"])?;
    }
    Ok(())
}

/// The folders webui.py imports from and CLIP's setup.py: a tarball of another shape fails here,
/// with the missing path named, rather than later inside A1111.
fn check_layout(root: &Path) -> Result<()> {
    let mut wanted: Vec<PathBuf> = PINNED.iter().map(|(f, _, _)| root.join(f)).collect();
    wanted.push(root.join("stable-diffusion-webui").join("webui.py"));
    wanted.push(root.join("CLIP").join("setup.py"));
    for path in wanted {
        if !path.exists() {
            bail!(
                "the A1111 source lacks {}: expected stable-diffusion-webui/ (with repositories/) and CLIP/ at its top",
                path.strip_prefix(root).unwrap_or(&path).display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tarball_with_another_checksum_is_refused_with_the_fix() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let fake = dir.path().join("a1111.tar.gz");
        std::fs::write(&fake, b"not the source")?;
        let err = SourceSpec::Tarball(fake).verify().unwrap_err().to_string();
        assert!(
            err.contains("is not the pinned A1111 v1.10.1 source tarball"),
            "{err}"
        );
        assert!(err.contains(TARBALL_SHA256), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        Ok(())
    }

    #[test]
    fn a_missing_tarball_is_named() {
        let err = SourceSpec::choose(Some(Path::new("/no/such/a1111.tar.gz")))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--source /no/such/a1111.tar.gz: no such file"),
            "{err}"
        );
    }

    #[test]
    fn a_tree_of_another_shape_names_what_is_missing() -> Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("stable-diffusion-webui"))?;
        let err = check_layout(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("lacks stable-diffusion-webui/repositories/stable-diffusion-stability-ai"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn the_stamp_names_every_pinned_commit() {
        let key = SourceSpec::stamp_key();
        for (_, _, commit) in PINNED {
            assert!(key.contains(commit));
        }
    }
}
