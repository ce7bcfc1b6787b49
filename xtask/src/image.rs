//! `cargo xtask image`: builds the worker's Docker image.
//!
//! Two Dockerfiles, two images. docker/Dockerfile.webui is the WebUI image (CUDA base, torch, A1111:
//! gigabytes, rebuilt rarely); docker/Dockerfile.worker adds the worker layer (worker-runtime, the
//! handler: megabytes) FROM it, or FROM any image given with `--webui-image`. Two files rather than
//! one multi-stage file: the legacy builder (what a docker CLI without buildx uses, as on our build
//! machines) builds every stage before the target, so `--webui-image` could not skip the CUDA stage.
//!
//! Every pin lives in docker/versions.env; each entry goes as `--build-arg` to the Dockerfile that
//! declares it, and the Dockerfiles record them as labels, which this command prints back.

mod base;
mod plan;

pub use plan::parse_build_arg;
mod wheelhouse;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xshell::Shell;

use plan::{DockerBuild, Plan};

pub use crate::flags::ImageArgs;

pub fn run(sh: &Shell, args: ImageArgs) -> Result<()> {
    let root = crate::project_root();
    let plan = Plan::new(&root, &args)?;
    if args.dry_run {
        print!("{}", plan.dry_run_text(sh, &root)?);
        return Ok(());
    }
    build(sh, &root, &plan)
}

fn build(sh: &Shell, root: &Path, plan: &Plan) -> Result<()> {
    check_engine(sh)?;
    // Before the builds, which can take long: a missing handler.py should not surface an hour in.
    let missing: Vec<String> = plan
        .webui
        .iter()
        .chain([&plan.worker])
        .flat_map(|build| &build.files)
        .filter(|file| plan.is_missing(root, file))
        .map(|file| file.source.display().to_string())
        .collect();
    if !missing.is_empty() {
        bail!("missing from the build context: {}", missing.join(", "));
    }

    let mut timings: Vec<(&str, Duration)> = Vec::new();
    if plan.build_runtime {
        let started = Instant::now();
        plan.cargo_build(sh).run()?;
        timings.push(("worker-runtime (cargo, release)", started.elapsed()));
    }
    if !plan.runtime_bin.is_file() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p runtime`",
            plan.runtime_bin.display()
        );
    }

    if let Some(webui) = &plan.webui {
        let mut webui = webui.clone();
        if let Some(suite) = &plan.debootstrap_suite {
            let started = Instant::now();
            base::ensure(suite)?;
            timings.push((
                "base image (debootstrap, or the engine's copy)",
                started.elapsed(),
            ));
        }
        let started = Instant::now();
        let python = wheelhouse::host_python(&plan.python_version)?;
        let cache = wheelhouse::cache_dir()?;
        let houses = [
            wheelhouse::ensure(
                &cache,
                &python,
                &plan.python_version,
                &wheelhouse::Wheels {
                    name: "webui",
                    requirements: &root.join(plan::WEBUI_LOCK),
                    no_deps: true,
                },
            )?,
            wheelhouse::ensure(
                &cache,
                &python,
                &plan.python_version,
                &wheelhouse::Wheels {
                    name: "handler",
                    requirements: &root.join("docker/requirements.txt"),
                    no_deps: false,
                },
            )?,
        ];
        timings.push(("wheelhouse (pip wheel, or the cache)", started.elapsed()));
        let server = wheelhouse::Server::start(&python, &cache, &houses)?;
        for (key, value) in &mut webui.build_args {
            if key == "WHEELHOUSE_URL" {
                *value = server.url.clone();
            }
        }
        let started = Instant::now();
        run_docker_build_with(sh, root, &webui, |context| stage_webui(plan, context))?;
        drop(server);
        timings.push(("WebUI image (docker build)", started.elapsed()));
    }
    let started = Instant::now();
    run_docker_build(sh, root, &plan.worker)?;
    timings.push(("worker layer (docker build)", started.elapsed()));

    report(sh, plan, &timings)
}

/// Stages the build's context in a temporary directory (only the files it needs, so the context sent
/// to the engine is small and nothing else can invalidate its cache) and runs `docker build`.
fn run_docker_build(sh: &Shell, root: &Path, build: &DockerBuild) -> Result<()> {
    run_docker_build_with(sh, root, build, |_| Ok(()))
}

/// A1111's source into src/ and the checkpoint (with its .yaml) into model/.
fn stage_webui(plan: &Plan, context: &Path) -> Result<()> {
    if let Some(source) = &plan.source {
        source.verify()?;
        let started = Instant::now();
        source.fetch(&context.join("src"))?;
        eprintln!(
            "A1111 source from {} staged in {:.1} s",
            source.describe(),
            started.elapsed().as_secs_f64()
        );
    }
    let model_dir = context.join("model");
    std::fs::create_dir_all(&model_dir)?;
    if let Some((path, name)) = &plan.model {
        link_or_copy(path, &model_dir.join(name))?;
        let yaml = path.with_extension("yaml");
        if yaml.is_file() {
            link_or_copy(&yaml, &model_dir.join("model.yaml"))?;
        }
    }
    Ok(())
}

/// A hard link where possible: checkpoints are gigabytes.
fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .with_context(|| format!("cannot copy {} into the build context", from.display()))?;
    }
    Ok(())
}

fn run_docker_build_with(
    sh: &Shell,
    root: &Path,
    build: &DockerBuild,
    extra: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let context = tempfile::Builder::new()
        .prefix("sd-worker-image-")
        .tempdir()
        .context("cannot create a temporary build context")?;
    for file in &build.files {
        let source = root.join(&file.source);
        let dest = context.path().join(file.dest);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::copy(&source, &dest).with_context(|| {
            format!(
                "cannot copy {} into the build context (is it missing?)",
                source.display()
            )
        })?;
        set_mode(&dest, file.mode)?;
    }
    extra(context.path())?;
    build.command(sh, context.path()).run()?;
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // Explicit modes: the layer's content (and its cache key) must not depend on the host's umask.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<()> {
    Ok(())
}

/// Fails in one line, saying how to get an engine, when no Docker engine answers.
fn check_engine(sh: &Shell) -> Result<()> {
    let answer = plan::engine_check(sh).quiet().ignore_status().output();
    let reason = match answer {
        Ok(out) if out.status.success() && !out.stdout.trim_ascii().is_empty() => return Ok(()),
        Ok(out) => String::from_utf8_lossy(&out.stderr)
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no answer")
            .trim()
            .to_string(),
        Err(_) => "the docker command is not installed".to_string(),
    };
    bail!(
        "no Docker engine ({reason}): get one with `bash .ci/ensure-docker.sh` (installs docker.io \
         and starts dockerd without a bridge network, as CI does), or start your own Docker"
    )
}

fn report(sh: &Shell, plan: &Plan, timings: &[(&str, Duration)]) -> Result<()> {
    let tag = &plan.worker.tag;
    let size = image_size(sh, tag)?;
    let base_size = image_size(sh, &plan.webui_image)?;
    let labels = plan::image_labels(sh, tag).quiet().read()?;
    let labels: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&labels).unwrap_or_default();

    println!();
    println!("image         {tag}");
    println!(
        "size          {} (worker layer {} on {}, {})",
        plan::human_size(size),
        plan::human_size(size.saturating_sub(base_size)),
        plan.webui_image,
        plan::human_size(base_size)
    );
    for (what, took) in timings {
        println!("built         {what} in {:.1} s", took.as_secs_f64());
    }
    println!("versions (image labels)");
    let mut pins: Vec<_> = labels
        .iter()
        .filter(|(k, _)| k.starts_with(plan::LABEL_PREFIX))
        .collect();
    pins.sort_by(|a, b| a.0.cmp(b.0));
    for (key, value) in pins {
        println!("  {key} = {}", value.as_str().unwrap_or_default());
    }
    if plan.webui.is_none() {
        println!(
            "  (the WebUI image is yours: its Python, torch and WebUI versions are in \
             /etc/sd-worker/image-facts.json, printed above by the build)"
        );
    }
    Ok(())
}

fn image_size(sh: &Shell, image: &str) -> Result<u64> {
    let out = plan::image_size(sh, image).quiet().read()?;
    out.trim()
        .parse()
        .with_context(|| format!("docker reported an odd size for {image}: {out}"))
}
