//! `--base-image debootstrap:SUITE`: the base image built locally from Debian's packages, for
//! machines that reach no container registry. debootstrap --variant=minbase makes the tree (about
//! 45 s), `docker import` turns it into an image; the tag names the recipe, so a later build finds
//! it and skips this.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

const PREFIX: &str = "debootstrap:";
const MIRROR: &str = "http://deb.debian.org/debian";

/// The Debian suite when `image` asks for a local debootstrap base.
pub fn suite(image: &str) -> Result<Option<&str>> {
    let Some(suite) = image.strip_prefix(PREFIX) else {
        return Ok(None);
    };
    if suite.is_empty() || !suite.chars().all(|c| c.is_ascii_lowercase()) {
        bail!("--base-image {image}: expected debootstrap:SUITE with a Debian suite name, e.g. debootstrap:bookworm");
    }
    Ok(Some(suite))
}

/// The local tag of a debootstrap base (bumped with the recipe below).
pub fn tag(suite: &str) -> String {
    format!("sd-worker-base:{suite}-minbase-v1")
}

/// The commands `ensure` runs, for --dry-run.
pub fn describe(suite: &str) -> String {
    format!(
        "debootstrap --variant=minbase {suite} $ROOTFS {MIRROR}\ntar -C $ROOTFS -c . | docker import - {}",
        tag(suite)
    )
}

/// Builds the base unless the engine has it.
pub fn ensure(suite: &str) -> Result<String> {
    let tag = tag(suite);
    let exists = Command::new("docker")
        .args(["image", "inspect", &tag])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if exists {
        eprintln!("base image: {tag} (built earlier)");
        return Ok(tag);
    }
    if which::which("debootstrap").is_err() {
        bail!("--base-image debootstrap:{suite} needs debootstrap: apt-get install debootstrap (or bash .ci/ensure-docker.sh)");
    }
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("sd-worker-debootstrap-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let rootfs = dir.path().join("rootfs");
    eprintln!("base image: debootstrap --variant=minbase {suite} (Debian's mirror)");
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", suite])
        .arg(&rootfs)
        .arg(MIRROR)
        .stdout(Stdio::null())
        .status()
        .context("running debootstrap")?;
    if !status.success() {
        bail!("debootstrap {suite} failed ({status}; its output is above): check that {MIRROR} answers");
    }
    import(&rootfs, &tag)?;
    eprintln!(
        "base image: {tag} made in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(tag)
}

fn import(rootfs: &Path, tag: &str) -> Result<()> {
    let out = duct::cmd!("tar", "-C", rootfs, "-c", ".")
        .pipe(duct::cmd!("docker", "import", "-", tag))
        .stdout_null()
        .stderr_capture()
        .unchecked()
        .run()
        .context("running tar | docker import")?;
    if !out.status.success() {
        bail!(
            "importing the debootstrap tree as {tag} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debootstrap_bases_name_a_suite() {
        assert_eq!(suite("debootstrap:bookworm").ok(), Some(Some("bookworm")));
        assert_eq!(suite("debian:bookworm-slim").ok(), Some(None));
        assert!(suite("debootstrap:").is_err());
        assert!(suite("debootstrap:Bookworm 12").is_err());
    }
}
