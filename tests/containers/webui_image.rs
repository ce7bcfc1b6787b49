//! The full WebUI image, built for real: `cargo xtask image` on a debootstrap bookworm base, with
//! A1111 v1.10.1 from the source tarball (A1111_SOURCE), torch and xformers from the PyPI wheelhouse,
//! the Hugging Face files and the test checkpoint of `cargo xtask a1111` baked in. Built once per
//! test process, tagged by the project's revision; docker's cache makes a rebuild cheap.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use super::docker::{docker, image_exists, image_id, report};
use super::images::{cargo, require_engine, run, skipped};

pub const FULL_TAG: &str = "sd-worker-full-test:latest";

/// The full worker image's tag, or None (with the reason reported) when A1111_SOURCE is unset.
pub fn full_image() -> Option<&'static str> {
    if skipped() {
        return None;
    }
    let Some(source) = std::env::var_os("A1111_SOURCE").filter(|v| !v.is_empty()) else {
        report(
            "skipped: A1111_SOURCE is unset (the full WebUI image is built from the A1111 v1.10.1 \
             source tarball; .ci/run passes it)",
        );
        return None;
    };
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    match BUILT.get_or_init(|| build(PathBuf::from(source))) {
        Ok(()) => Some(FULL_TAG),
        Err(e) => panic!("{e}"),
    }
}

fn build(source: PathBuf) -> Result<(), String> {
    require_engine()?;
    // The test checkpoint (and its .yaml) that `cargo xtask a1111` makes; cached after a first run.
    let settings = run(
        cargo().args(["xtask", "a1111", "--source"]).arg(&source),
        "cargo xtask a1111",
    )?;
    let model = settings
        .lines()
        .find_map(|l| l.strip_prefix("MODEL_PATH="))
        .ok_or_else(|| format!("cargo xtask a1111 printed no MODEL_PATH:\n{settings}"))?
        .to_string();
    let previous = image_exists(FULL_TAG).then(|| image_id(FULL_TAG));
    let started = Instant::now();
    let out = run(
        cargo()
            .args([
                "xtask",
                "image",
                "--base-image",
                "debootstrap:bookworm",
                "--model",
                &model,
                "--tag",
                FULL_TAG,
                "--webui-src",
            ])
            .arg(&source),
        "cargo xtask image (the full WebUI image)",
    )?;
    report(&format!(
        "full image {FULL_TAG} built by cargo xtask image in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    for line in out
        .lines()
        .filter(|l| l.starts_with("size") || l.starts_with("built"))
    {
        report(line);
    }
    // A new revision rebuilds the worker layer and moves the tag; the image it leaves is of no use.
    if let Some(previous) = previous.filter(|id| *id != image_id(FULL_TAG)) {
        let _ = docker(&["rmi", &previous]);
    }
    Ok(())
}
