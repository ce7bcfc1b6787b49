//! The images the container tests run. A stand-in WebUI image (Debian bookworm from debootstrap,
//! python3, the demo WebUI, the handler's packages from a host wheelhouse), tagged by a content hash
//! of everything that goes into it so that reruns skip it; and the worker image, built on it by
//! `cargo xtask image --webui-image`, the way a user adds the worker to their own WebUI image.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::docker::{docker, image_exists, image_id, report};

/// Set to 1 to skip the container tests (they need a Docker engine, debootstrap and the network
/// on a cold run). Nothing else skips them: a missing engine fails them.
pub const SKIP_VAR: &str = "SKIP_CONTAINER_TESTS";

const DEBIAN_SUITE: &str = "bookworm";
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
const BASE_PACKAGES: &str = "python3,python3-venv";
/// bookworm's Python: the host wheelhouse must be built for it.
const CONTAINER_PYTHON: &str = "3.11";
pub const WORKER_TAG: &str = "sd-worker-test:latest";

pub struct Images {
    pub standin: String,
    pub worker: String,
}

/// The images, built once per test process; None (and a note) when SKIP_CONTAINER_TESTS=1.
pub fn images() -> Option<&'static Images> {
    if skipped() {
        return None;
    }
    static IMAGES: OnceLock<Result<Images, String>> = OnceLock::new();
    match IMAGES.get_or_init(build_all) {
        Ok(images) => Some(images),
        Err(e) => panic!("{e}"),
    }
}

pub fn skipped() -> bool {
    let skip = std::env::var(SKIP_VAR).is_ok_and(|v| v == "1");
    if skip {
        report(&format!("skipped: {SKIP_VAR}=1"));
    }
    skip
}

pub fn root() -> PathBuf {
    let runtime = Path::new(env!("CARGO_MANIFEST_DIR"));
    runtime.parent().unwrap_or(runtime).to_path_buf()
}

/// Cargo's target directory, as cargo itself chose it ($CARGO_TARGET_DIR included): the parent
/// of the tests' scratch folder, `<target>/tmp`.
pub fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_path_buf()
}

pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Fails with what to do when no engine answers.
pub fn require_engine() -> Result<(), String> {
    let out = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match out {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "no Docker engine answers ({}). Start one with `bash .ci/ensure-docker.sh`, or set \
             {SKIP_VAR}=1 to skip the container tests",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!(
            "docker cannot be run ({e}). Install and start it with `bash .ci/ensure-docker.sh`, or \
             set {SKIP_VAR}=1 to skip the container tests"
        )),
    }
}

fn build_all() -> Result<Images, String> {
    require_engine()?;
    let root = root();
    let started = Instant::now();
    let base = base_tag();
    // The three slow, independent steps of a cold run overlap: debootstrap and pip mostly wait on
    // the network, cargo on the CPU.
    let (base_built, wheelhouse, runtime_built) = std::thread::scope(|s| {
        let base_job = s.spawn(|| ensure_base(&base));
        let wheel_job = s.spawn(|| ensure_wheelhouse(&root));
        let cargo_job = s.spawn(|| {
            run(
                cargo().args(["build", "--release", "--quiet", "-p", "runtime"]),
                "cargo build --release -p runtime",
            )
        });
        (join(base_job), join(wheel_job), join(cargo_job))
    });
    base_built?;
    let wheelhouse = wheelhouse?;
    runtime_built?;
    let standin = ensure_standin(&root, &base, &wheelhouse)?;
    report(&format!(
        "stand-in WebUI image {standin} ready after {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let previous = image_exists(WORKER_TAG).then(|| image_id(WORKER_TAG));
    let took = build_worker(&standin, WORKER_TAG, None)?;
    // A runtime change moves the tag; the image it leaves behind is of no further use.
    if let Some(previous) = previous.filter(|id| *id != image_id(WORKER_TAG)) {
        let _ = docker(&["rmi", &previous]);
    }
    report(&format!(
        "worker image {WORKER_TAG} built by cargo xtask image in {:.1} s",
        took.as_secs_f64()
    ));
    Ok(Images {
        standin,
        worker: WORKER_TAG.to_string(),
    })
}

fn join<T>(job: std::thread::ScopedJoinHandle<'_, Result<T, String>>) -> Result<T, String> {
    job.join()
        .unwrap_or_else(|_| Err("an image-building thread panicked".to_string()))
}

/// `cargo xtask image --webui-image <standin> --tag <tag> [--runtime-bin <bin>]`; returns its time.
pub fn build_worker(
    standin: &str,
    tag: &str,
    runtime_bin: Option<&Path>,
) -> Result<Duration, String> {
    let mut cmd = cargo();
    cmd.args(["xtask", "image", "--webui-image", standin, "--tag", tag]);
    if let Some(bin) = runtime_bin {
        cmd.arg("--runtime-bin").arg(bin);
    }
    let started = Instant::now();
    run(&mut cmd, "cargo xtask image")?;
    Ok(started.elapsed())
}

fn base_tag() -> String {
    let recipe = format!(
        "debootstrap --variant=minbase --include={BASE_PACKAGES} {DEBIAN_SUITE} {DEBIAN_MIRROR}"
    );
    format!(
        "sd-worker-test-base:{:016x}",
        cache_key(&[recipe.as_bytes()])
    )
}

/// Debian bookworm minbase with python3, imported as an image (no registry can be reached).
fn ensure_base(tag: &str) -> Result<(), String> {
    if image_exists(tag) {
        return Ok(());
    }
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("sd-worker-debootstrap-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let rootfs = dir.path().join("rootfs");
    run(
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={BASE_PACKAGES}"))
            .arg(DEBIAN_SUITE)
            .arg(&rootfs)
            .arg(DEBIAN_MIRROR),
        "debootstrap (installed by .ci/ensure-docker.sh)",
    )?;
    let import = duct::cmd!("tar", "-C", &rootfs, "-c", ".")
        .pipe(duct::cmd!("docker", "import", "-", tag))
        .stdout_null()
        .stderr_capture()
        .unchecked()
        .run()
        .map_err(|e| format!("cannot run tar | docker import: {e}"))?;
    if !import.status.success() {
        return Err(format!(
            "importing the debootstrap tree failed ({}): {}",
            import.status,
            String::from_utf8_lossy(&import.stderr)
        ));
    }
    report(&format!(
        "base image {tag}: debootstrap + import in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The handler's packages as wheels, built on the host (pip inside containers cannot reach PyPI
/// here), cached under target/tmp by the requirements' hash.
fn ensure_wheelhouse(root: &Path) -> Result<PathBuf, String> {
    let python = run(
        Command::new("python3").args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]),
        "python3 on the host",
    )?;
    if python.trim() != CONTAINER_PYTHON {
        return Err(format!(
            "the host's python3 is {} but the stand-in image's is {CONTAINER_PYTHON}: the wheelhouse \
             would not fit it",
            python.trim()
        ));
    }
    let requirements = root.join("docker/requirements.txt");
    let text = std::fs::read(&requirements).map_err(|e| format!("docker/requirements.txt: {e}"))?;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("container-tests")
        .join(format!("wheelhouse-{:016x}", cache_key(&[&text])));
    let complete = dir.join(".complete");
    if complete.exists() {
        return Ok(dir);
    }
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    run(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements)
            .arg("-w")
            .arg(&dir),
        "pip wheel -r docker/requirements.txt",
    )?;
    std::fs::write(&complete, b"").map_err(|e| format!("{}: {e}", complete.display()))?;
    report(&format!(
        "wheelhouse {}: pip wheel in {:.1} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(dir)
}

/// The stand-in WebUI image, tagged by the hash of its base and every file that goes into it.
fn ensure_standin(root: &Path, base: &str, wheelhouse: &Path) -> Result<String, String> {
    let fixtures = root.join("tests/fixtures/containers");
    let files: [(PathBuf, &str); 4] = [
        (fixtures.join("Dockerfile.standin"), "Dockerfile"),
        (root.join("docker/requirements.txt"), "requirements.txt"),
        (
            root.join("docker/demo-webui/webui.py"),
            "demo-webui/webui.py",
        ),
        (
            fixtures.join("orphan-webui/webui.py"),
            "orphan-webui/webui.py",
        ),
    ];
    let mut contents = Vec::new();
    for (source, _) in &files {
        contents.push(std::fs::read(source).map_err(|e| format!("{}: {e}", source.display()))?);
    }
    let mut parts: Vec<&[u8]> = vec![b"stand-in v1", base.as_bytes()];
    parts.extend(contents.iter().map(Vec::as_slice));
    let tag = format!("sd-worker-test-webui:{:016x}", cache_key(&parts));
    if image_exists(&tag) {
        return Ok(tag);
    }

    let started = Instant::now();
    let context = tempfile::Builder::new()
        .prefix("sd-worker-standin-")
        .tempdir()
        .map_err(|e| format!("cannot create a build context: {e}"))?;
    for ((_, dest), content) in files.iter().zip(&contents) {
        let dest = context.path().join(dest);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(&dest, content).map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    let wheels = context.path().join("wheelhouse");
    std::fs::create_dir_all(&wheels).map_err(|e| format!("{}: {e}", wheels.display()))?;
    for entry in std::fs::read_dir(wheelhouse).map_err(|e| format!("wheelhouse: {e}"))? {
        let path = entry.map_err(|e| format!("wheelhouse: {e}"))?.path();
        if path.extension().is_some_and(|e| e == "whl") {
            let dest = wheels.join(path.file_name().unwrap_or_default());
            // A hard link where possible: the wheelhouse is tens of megabytes.
            if std::fs::hard_link(&path, &dest).is_err() {
                std::fs::copy(&path, &dest).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
    }
    run(
        Command::new("docker")
            .args(["build", "--network", "none", "--build-arg"])
            .arg(format!("BASE={base}"))
            .args(["--tag", &tag])
            .arg(context.path()),
        "docker build (stand-in WebUI image)",
    )?;
    report(&format!(
        "stand-in image {tag}: docker build in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(tag)
}

/// Runs a command to completion; its stdout, or an error carrying the end of its output.
pub fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let tail = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    Err(format!(
        "{what} failed ({}):\n{}\n{}",
        out.status,
        tail(&out.stdout),
        tail(&out.stderr)
    ))
}

/// SHA-256 over length-prefixed parts, cut to 64 bits: a stable cache key (std's hasher may
/// change between Rust releases), not a security measure.
fn cache_key(parts: &[&[u8]]) -> u64 {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    u64::from_be_bytes(
        digest[..8]
            .try_into()
            .expect("a SHA-256 digest has 32 bytes"),
    )
}

/// Removes an image the tests made for one check (ignoring errors: it is only tidying up).
pub fn remove_image(tag: &str) {
    let _ = docker(&["rmi", tag]);
}

/// An image FROM `base` with one more instruction, built with no context and no network.
pub fn derive(base: &str, tag: &str, instructions: &str) -> Result<(), String> {
    let dockerfile = format!("FROM {base}\n{instructions}\n");
    let out = duct::cmd!("docker", "build", "--network", "none", "--tag", tag, "-")
        .stdin_bytes(dockerfile)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .map_err(|e| format!("cannot run docker build: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker build of {tag} failed: {}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    Ok(())
}
