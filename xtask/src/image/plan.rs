//! What `cargo xtask image` will do, worked out before anything runs: `--dry-run` prints the very
//! commands a real run executes, built by the same functions.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Cmd, Shell};

use super::{base, wheelhouse, ImageArgs};
use crate::a1111::SourceSpec;

pub const VERSIONS_FILE: &str = "docker/versions.env";
pub const WEBUI_DOCKERFILE: &str = "docker/Dockerfile.webui";
pub const WORKER_DOCKERFILE: &str = "docker/Dockerfile.worker";
/// Labels the Dockerfiles write (pins, runtime version); printed after a build.
pub const LABEL_PREFIX: &str = "sd-worker.";
/// Placeholder names the dry run prints for the temporary build contexts.
const WEBUI_CONTEXT: &str = "$WEBUI_CONTEXT";
const WORKER_CONTEXT: &str = "$WORKER_CONTEXT";
/// The handler's own package, imported by docker/handler.py: staged beside it in the image.
pub const HANDLER_PACKAGE: [(&str, &str); 5] = [
    (
        "docker/sdhandler/__init__.py",
        "rootfs/sdhandler/__init__.py",
    ),
    ("docker/sdhandler/outputs.py", "rootfs/sdhandler/outputs.py"),
    (
        "docker/sdhandler/redaction.py",
        "rootfs/sdhandler/redaction.py",
    ),
    ("docker/sdhandler/rules.py", "rootfs/sdhandler/rules.py"),
    ("docker/sdhandler/webui.py", "rootfs/sdhandler/webui.py"),
];
/// Build arguments this command sets itself.
const SET_BY_XTASK: [&str; 5] = [
    "WEBUI_IMAGE",
    "RUNTIME_VERSION",
    "RUNTIME_REVISION",
    "WHEELHOUSE_URL",
    "MODEL_FILE",
];
/// The WebUI's locked packages and the script that makes its Hugging Face files.
pub const WEBUI_LOCK: &str = "xtask/a1111/requirements.lock";
const HF_SCRIPT: &str = "xtask/a1111/hf_clip_cache.py";
const HANDLER_REQUIREMENTS: &str = "docker/requirements.txt";

#[derive(Clone)]
pub struct StagedFile {
    /// Relative to the project root (or absolute, for --runtime-bin).
    pub source: PathBuf,
    /// Relative to the build context.
    pub dest: &'static str,
    pub mode: u32,
}

#[derive(Clone)]
pub struct DockerBuild {
    pub dockerfile: &'static str,
    pub files: Vec<StagedFile>,
    pub build_args: Vec<(String, String)>,
    pub tag: String,
}

impl DockerBuild {
    /// `--network host`: a CI machine may have no bridge network, and RUN steps may need the
    /// network (apt, pip, git).
    pub fn command<'a>(&self, sh: &'a Shell, context: &Path) -> Cmd<'a> {
        let tag = &self.tag;
        let args = self
            .build_args
            .iter()
            .flat_map(|(k, v)| ["--build-arg".to_string(), format!("{k}={v}")]);
        cmd!(
            sh,
            "docker build --network host --tag {tag} {args...} {context}"
        )
    }
}

pub struct Plan {
    pub build_runtime: bool,
    /// `debootstrap:SUITE`: the base is built locally first.
    pub debootstrap_suite: Option<String>,
    /// Where A1111's source comes from (the WebUI image only).
    pub source: Option<SourceSpec>,
    /// A checkpoint to bake in, and its name in the image.
    pub model: Option<(PathBuf, String)>,
    /// The Python version of the image (the wheelhouse is made for it).
    pub python_version: String,
    pub runtime_bin: PathBuf,
    /// None with --webui-image: the worker layer goes on the user's image.
    pub webui: Option<DockerBuild>,
    pub worker: DockerBuild,
    /// The image the worker layer is built FROM.
    pub webui_image: String,
}

impl Plan {
    pub fn new(root: &Path, args: &ImageArgs) -> Result<Plan> {
        if args.webui_image.is_some() {
            for (given, flag) in [
                (args.webui_src.is_some(), "--webui-src"),
                (args.model.is_some(), "--model"),
                (args.base_image.is_some(), "--base-image"),
            ] {
                if given {
                    bail!("{flag}: it applies to the WebUI image, which --webui-image replaces");
                }
            }
        }
        let versions = parse_versions(&read(root, VERSIONS_FILE)?)
            .with_context(|| format!("in {VERSIONS_FILE}"))?;
        let webui_declares = declared_args(&read(root, WEBUI_DOCKERFILE)?);
        let worker_declares = declared_args(&read(root, WORKER_DOCKERFILE)?);

        let (name, tag) = split_tag(&args.tag)?;
        let webui_tag = format!("{name}-webui:{tag}");
        let webui_image = args.webui_image.clone().unwrap_or(webui_tag.clone());

        let mut webui_args = Vec::new();
        let mut worker_args = vec![
            ("WEBUI_IMAGE".to_string(), webui_image.clone()),
            ("RUNTIME_VERSION".to_string(), runtime_version(root)),
            ("RUNTIME_REVISION".to_string(), git_revision(root)),
        ];
        let mut overrides = args.build_args.clone();
        if let Some(image) = &args.base_image {
            overrides.push(("BASE_IMAGE".to_string(), image.clone()));
        }
        let mut debootstrap_suite = None;
        let mut python_version = String::new();
        for (key, value, from_user) in merge_overrides(&versions, &overrides) {
            if SET_BY_XTASK.contains(&key.as_str()) {
                bail!("--build-arg {key}: set by cargo xtask image itself (use --webui-image for the base)");
            }
            let in_webui = webui_declares.contains(&key);
            let in_worker = worker_declares.contains(&key);
            if !in_webui && !in_worker {
                let source = if from_user {
                    "--build-arg"
                } else {
                    VERSIONS_FILE
                };
                bail!(
                    "{source} {key}: no Dockerfile declares it ({WEBUI_DOCKERFILE}: {}; {WORKER_DOCKERFILE}: {})",
                    webui_declares.join(" "),
                    worker_declares.join(" ")
                );
            }
            if in_webui && !in_worker && args.webui_image.is_some() && from_user {
                bail!("--build-arg {key}: it applies to the WebUI image, which --webui-image replaces");
            }
            if key == "PYTHON_VERSION" {
                python_version = value.clone();
            }
            let value = if key == "BASE_IMAGE" {
                match base::suite(&value)? {
                    Some(suite) => {
                        debootstrap_suite = Some(suite.to_string());
                        base::tag(suite)
                    }
                    None => value,
                }
            } else {
                value
            };
            if in_webui {
                webui_args.push((key.clone(), value.clone()));
            }
            if in_worker {
                worker_args.push((key, value));
            }
        }

        let runtime_bin = match &args.runtime_bin {
            Some(path) => std::path::absolute(path)
                .with_context(|| format!("--runtime-bin {}", path.display()))?,
            None => crate::target_dir().join("release/worker-runtime"),
        };

        let model = match &args.model {
            Some(path) => Some(model_file(path, &webui_args)?),
            None => None,
        };
        if let Some((_, name)) = &model {
            webui_args.push(("MODEL_FILE".to_string(), name.clone()));
        }
        webui_args.push((
            "WHEELHOUSE_URL".to_string(),
            format!("http://127.0.0.1:{}/", wheelhouse::PORT),
        ));
        let source = match (&args.webui_src, args.webui_image.is_some()) {
            (_, true) => None,
            (Some(path), false) => {
                if !path.is_file() {
                    bail!(
                        "--webui-src {}: no such file; give the A1111 v1.10.1 source tarball, or leave it (and A1111_SOURCE) unset to fetch the pinned commits with git",
                        path.display()
                    );
                }
                Some(SourceSpec::Tarball(std::path::absolute(path)?))
            }
            (None, false) => Some(SourceSpec::choose(None)?),
        };
        if args.webui_image.is_none() && python_version.is_empty() {
            bail!("{VERSIONS_FILE} has no PYTHON_VERSION");
        }

        let webui = args.webui_image.is_none().then(|| DockerBuild {
            dockerfile: WEBUI_DOCKERFILE,
            files: vec![
                staged(WEBUI_DOCKERFILE, "Dockerfile", 0o644),
                staged(HANDLER_REQUIREMENTS, "requirements.txt", 0o644),
                staged(WEBUI_LOCK, "requirements.lock", 0o644),
                staged(HF_SCRIPT, "hf_clip_cache.py", 0o644),
            ],
            build_args: webui_args,
            tag: webui_tag,
        });
        let mut worker_files = vec![
            staged(WORKER_DOCKERFILE, "Dockerfile", 0o644),
            StagedFile {
                source: runtime_bin.clone(),
                dest: "rootfs/usr/local/bin/worker-runtime",
                mode: 0o755,
            },
            staged("docker/handler.py", "rootfs/handler.py", 0o644),
            staged("docker/test_input.json", "rootfs/test_input.json", 0o644),
            staged(
                "docker/requirements.txt",
                "rootfs/opt/sd-worker/handler-requirements.txt",
                0o644,
            ),
        ];
        worker_files.extend(
            HANDLER_PACKAGE
                .iter()
                .map(|(source, dest)| staged(source, dest, 0o644)),
        );
        let worker = DockerBuild {
            dockerfile: WORKER_DOCKERFILE,
            files: worker_files,
            build_args: worker_args,
            tag: args.tag.clone(),
        };

        Ok(Plan {
            build_runtime: args.runtime_bin.is_none(),
            debootstrap_suite,
            source,
            model,
            python_version,
            runtime_bin,
            webui,
            worker,
            webui_image,
        })
    }

    /// A source file of a build context that does not exist (the runtime binary is exempt: the
    /// run builds it first, or --runtime-bin names it).
    pub fn is_missing(&self, root: &Path, file: &StagedFile) -> bool {
        file.source != self.runtime_bin && !root.join(&file.source).is_file()
    }

    pub fn cargo_build<'a>(&self, sh: &'a Shell) -> Cmd<'a> {
        let cargo = crate::cargo();
        cmd!(sh, "{cargo} build --release -p runtime")
    }

    /// Every command a real run would execute, in order, the versions it would pass, and the
    /// Dockerfiles it would use.
    pub fn dry_run_text(&self, sh: &Shell, root: &Path) -> Result<String> {
        let mut out = String::new();
        let w = &mut out;
        writeln!(
            w,
            "# cargo xtask image --dry-run: what a real run does, in order. Nothing was run."
        )?;
        writeln!(w, "{}", engine_check(sh))?;
        if self.build_runtime {
            writeln!(w, "{}", self.cargo_build(sh))?;
        }
        if self.webui.is_some() {
            if let Some(suite) = &self.debootstrap_suite {
                writeln!(w, "# the base image, unless the engine has it:")?;
                writeln!(w, "{}", base::describe(suite))?;
            }
            writeln!(
                w,
                "# the wheelhouse for Python {} (made once, with pip wheel on this machine; then cached):",
                self.python_version
            )?;
            for (name, file) in [("webui", WEBUI_LOCK), ("handler", HANDLER_REQUIREMENTS)] {
                writeln!(
                    w,
                    "#   {name}: pip wheel{} -r {file} -w <cache>/wheelhouse/{name}-cp{}-<sha256 of {file}>",
                    if name == "webui" { " --no-deps" } else { "" },
                    self.python_version.replace('.', "")
                )?;
            }
            writeln!(
                w,
                "#   served during the build: python3 -m http.server --bind 127.0.0.1 {}",
                wheelhouse::PORT
            )?;
        }
        for (build, context) in [
            (self.webui.as_ref(), WEBUI_CONTEXT),
            (Some(&self.worker), WORKER_CONTEXT),
        ] {
            let Some(build) = build else { continue };
            writeln!(w, "# stage {context} (a new temporary directory):")?;
            for file in &build.files {
                let missing = if self.is_missing(root, file) {
                    "   (missing!)"
                } else {
                    ""
                };
                writeln!(
                    w,
                    "#   install -m {:o} {} {context}/{}{missing}",
                    file.mode,
                    file.source.display(),
                    file.dest
                )?;
            }
            if build.dockerfile == WEBUI_DOCKERFILE {
                if let Some(source) = &self.source {
                    writeln!(
                        w,
                        "#   A1111 v1.10.1 from {} -> {context}/src",
                        source.describe()
                    )?;
                }
                match &self.model {
                    Some((path, name)) => writeln!(
                        w,
                        "#   install -m 644 {} {context}/model/{name} (and its .yaml, if any)",
                        path.display()
                    )?,
                    None => writeln!(w, "#   mkdir {context}/model (no model)")?,
                }
            }
            writeln!(w, "{}", build.command(sh, Path::new(context)))?;
        }
        writeln!(w, "{}", image_size(sh, &self.worker.tag))?;
        writeln!(w, "{}", image_size(sh, &self.webui_image))?;
        writeln!(w, "{}", image_labels(sh, &self.worker.tag))?;
        for build in self.webui.iter().chain([&self.worker]) {
            writeln!(w, "\n==> {} <==", build.dockerfile)?;
            w.push_str(&read(root, build.dockerfile)?);
        }
        Ok(out)
    }
}

// Go templates are passed through variables: xshell's cmd! reads `{...}` as interpolation.
pub fn engine_check(sh: &Shell) -> Cmd<'_> {
    let format = "{{.ServerVersion}}";
    cmd!(sh, "docker info --format {format}")
}

pub fn image_size<'a>(sh: &'a Shell, image: &str) -> Cmd<'a> {
    let format = "{{.Size}}";
    cmd!(sh, "docker image inspect --format {format} {image}")
}

pub fn image_labels<'a>(sh: &'a Shell, image: &str) -> Cmd<'a> {
    let format = "{{json .Config.Labels}}";
    cmd!(sh, "docker image inspect --format {format} {image}")
}

/// The baked checkpoint's name in the image (its type decides how A1111 loads it).
fn model_file(path: &Path, webui_args: &[(String, String)]) -> Result<(PathBuf, String)> {
    if webui_args
        .iter()
        .any(|(k, v)| k == "MODEL_URL" && !v.is_empty())
    {
        bail!("--model and MODEL_URL: give one checkpoint to bake in, not two");
    }
    if !path.is_file() {
        bail!("--model {}: no such file", path.display());
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    if ext != "safetensors" && ext != "ckpt" {
        bail!(
            "--model {}: expected a .safetensors or .ckpt checkpoint",
            path.display()
        );
    }
    Ok((std::path::absolute(path)?, format!("model.{ext}")))
}

fn staged(source: &str, dest: &'static str, mode: u32) -> StagedFile {
    StagedFile {
        source: PathBuf::from(source),
        dest,
        mode,
    }
}

fn read(root: &Path, file: &str) -> Result<String> {
    std::fs::read_to_string(root.join(file)).with_context(|| format!("cannot read {file}"))
}

pub fn parse_build_arg(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    if !is_arg_name(key) {
        return Err(format!(
            "{key:?}: a build argument name is letters, digits and _"
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

fn is_arg_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// docker/versions.env: `KEY=VALUE` lines, `#` comments. Values are single words, so the shell
/// one-liner in the file's header works too.
pub fn parse_versions(text: &str) -> Result<Vec<(String, String)>> {
    let mut pins: Vec<(String, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = n + 1;
        let (key, value) = line
            .split_once('=')
            .with_context(|| format!("line {n}: expected KEY=VALUE"))?;
        if !is_arg_name(key) || value.is_empty() || value.contains(char::is_whitespace) {
            bail!("line {n}: expected KEY=VALUE with a name and one non-empty word");
        }
        if pins.iter().any(|(k, _)| k == key) {
            bail!("line {n}: {key} is pinned twice");
        }
        pins.push((key.to_string(), value.to_string()));
    }
    Ok(pins)
}

/// The pins with the user's `--build-arg`s applied: (key, value, given by the user).
fn merge_overrides(
    pins: &[(String, String)],
    user: &[(String, String)],
) -> Vec<(String, String, bool)> {
    let mut merged: Vec<(String, String, bool)> = pins
        .iter()
        .map(|(k, v)| (k.clone(), v.clone(), false))
        .collect();
    for (key, value) in user {
        match merged.iter_mut().find(|(k, _, _)| k == key) {
            Some(entry) => *entry = (key.clone(), value.clone(), true),
            None => merged.push((key.clone(), value.clone(), true)),
        }
    }
    merged
}

/// The names a Dockerfile declares with ARG (before or after FROM).
pub fn declared_args(dockerfile: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for line in dockerfile.lines() {
        let mut words = line.split_whitespace();
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("ARG")) {
            continue;
        }
        for word in words {
            let name = word.split('=').next().unwrap_or_default().to_string();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// `name[:tag]` into (name, tag); the registry's port (`host:5000/name`) is not a tag.
pub fn split_tag(image: &str) -> Result<(&str, &str)> {
    if image.is_empty() || image.contains('@') {
        bail!("--tag {image:?}: expected NAME[:TAG] (not a digest)");
    }
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    Ok(match image[name_start..].rfind(':') {
        Some(i) => (&image[..name_start + i], &image[name_start + i + 1..]),
        None => (image, "latest"),
    })
}

fn runtime_version(root: &Path) -> String {
    let manifest = std::fs::read_to_string(root.join("runtime/Cargo.toml")).unwrap_or_default();
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if let Some(rest) = line.strip_prefix("version") {
            if in_package {
                if let Some((_, value)) = rest.split_once('=') {
                    return value.trim().trim_matches('"').to_string();
                }
            }
        }
    }
    "unknown".to_string()
}

/// The commit the image is built from, marked `-dirty` when tracked files differ from it. Reading
/// git is the one thing `--dry-run` runs: it changes nothing.
fn git_revision(root: &Path) -> String {
    let Ok(sh) = Shell::new() else {
        return "unknown".to_string();
    };
    sh.change_dir(root);
    let Ok(head) = cmd!(sh, "git rev-parse --short=12 HEAD")
        .quiet()
        .ignore_stderr()
        .read()
    else {
        return "unknown".to_string();
    };
    let dirty = cmd!(sh, "git status --porcelain --untracked-files=no")
        .quiet()
        .ignore_stderr()
        .read()
        .map(|s| !s.trim().is_empty())
        .unwrap_or(false);
    if dirty {
        format!("{head}-dirty")
    } else {
        head
    }
}

/// Bytes as `docker images` shows them (decimal units).
pub fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} kB", b / 1e3)
    }
}

#[cfg(test)]
mod tests;
