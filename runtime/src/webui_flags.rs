//! The WebUI's command line: the flag set the worker always passes (one definition, documented by
//! `cargo xtask codegen` into docs/webui-flags.md), and the check of user-supplied extra flags
//! against A1111's own flag catalog and the flags its installed extensions add, because A1111
//! exits at once on a flag or value its argparse parser rejects.
//!
//! The check reads the words as A1111 does: split with Python's shlex, options recognised by
//! argparse's rules (unambiguous prefixes included), the last occurrence of a flag winning. So the
//! flags that decide where the API listens (`--port`, `--server-name`, `--listen`) are refused in
//! any spelling: the runtime's own are then the only ones A1111 sees.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use crate::cli::{Config, WebuiDevice};

/// A1111 v1.10.1's argparse definitions (flag, kind, default), read from its modules/cmd_args.py
/// at commit 82a973c04367123ae98bd9abdf80d9eda9b910e2 (the v1.10.1 tag). `cargo xtask codegen`
/// copies it into the demo WebUI, which must accept exactly these flags.
pub const CATALOG_TSV: &str = include_str!("a1111-cmd-flags-v1.10.tsv");

/// Where a flag's value comes from.
#[derive(Debug, Clone, Copy)]
pub enum FlagValue {
    /// A switch.
    None,
    /// A fixed value.
    Fixed(&'static str),
    /// A runtime setting (its env var name, for the docs) and how to read it from the config.
    Setting(&'static str, fn(&Config) -> String),
}

/// When a flag is passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    /// The GPU check confirmed that A1111 can use xformers on this GPU and image. Not confirmed
    /// (CUDA_CHECK=off, no image facts, a CPU run) means dropped: with xformers installed but
    /// unusable, A1111's VAE still takes its kernels and every generation fails.
    XformersConfirmed,
    /// WEBUI_DEVICE=cpu.
    Cpu,
}

/// What the flag set depends on besides the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conditions {
    pub xformers_confirmed: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct WebuiFlag {
    pub name: &'static str,
    pub value: FlagValue,
    pub why: &'static str,
    pub when: When,
}

const fn flag(name: &'static str, why: &'static str) -> WebuiFlag {
    WebuiFlag {
        name,
        value: FlagValue::None,
        why,
        when: When::Always,
    }
}

const fn cpu_flag(name: &'static str, value: FlagValue, why: &'static str) -> WebuiFlag {
    WebuiFlag {
        name,
        value,
        why,
        when: When::Cpu,
    }
}

const fn setting(
    name: &'static str,
    env: &'static str,
    read: fn(&Config) -> String,
    why: &'static str,
) -> WebuiFlag {
    WebuiFlag {
        name,
        value: FlagValue::Setting(env, read),
        why,
        when: When::Always,
    }
}

/// The flag set of the bash start.sh worker-runtime replaces (xtask/bench/start.sh), in its order, plus `--server-name 127.0.0.1`.
pub const FLAG_SET: &[WebuiFlag] = &[
    WebuiFlag {
        name: "--xformers",
        value: FlagValue::None,
        why: "Memory-efficient attention. A1111 v1.10 only uses xformers for compute capability \
              6.0-9.0, and with xformers installed but unusable every generation fails, so the \
              flag is passed only where the CUDA check confirms it (not on RTX 5090 or B200, not \
              with `CUDA_CHECK=off`, not on the CPU); `--opt-sdp-attention` does the work otherwise.",
        when: When::XformersConfirmed,
    },
    flag(
        "--no-half-vae",
        "Full-precision VAE: avoids black or NaN images from fp16 VAEs.",
    ),
    flag(
        "--skip-python-version-check",
        "No effect with webui.py, which the worker starts: only launch.py checks the Python \
         version. Kept from the bash start.sh's set so a launch.py-based start behaves the same.",
    ),
    flag(
        "--skip-torch-cuda-test",
        "No effect with webui.py: only launch.py runs the torch CUDA test. The GPU is verified \
         natively by `worker-runtime cuda-check` before the WebUI starts.",
    ),
    flag(
        "--skip-install",
        "No effect with webui.py: only launch.py installs packages or clones repositories. \
         Everything is installed when the image is built.",
    ),
    setting(
        "--ckpt-dir",
        "CKPT_DIR",
        |c| c.ckpt_dir.display().to_string(),
        "Checkpoints on the RunPod network volume.",
    ),
    setting(
        "--lora-dir",
        "LORA_DIR",
        |c| c.lora_dir.display().to_string(),
        "LoRAs on the network volume (flag of A1111's built-in Lora extension).",
    ),
    setting(
        "--embeddings-dir",
        "EMBEDDINGS_DIR",
        |c| c.embeddings_dir.display().to_string(),
        "Textual-inversion embeddings on the network volume.",
    ),
    setting(
        "--ckpt",
        "MODEL_PATH",
        |c| c.model_path.display().to_string(),
        "The checkpoint baked into the image, loaded at start.",
    ),
    flag(
        "--opt-sdp-attention",
        "PyTorch scaled-dot-product attention: used where xformers is not (A1111 prefers \
         xformers when both apply).",
    ),
    flag(
        "--disable-safe-unpickle",
        "Loads .ckpt/.pt files without A1111's restricted unpickler: faster, but only safe with \
         trusted models. The runtime logs a warning at every start.",
    ),
    setting(
        "--port",
        "WEBUI_PORT",
        |c| c.webui_port.to_string(),
        "Port of the API that the handler calls.",
    ),
    WebuiFlag {
        name: "--server-name",
        value: FlagValue::Fixed("127.0.0.1"),
        why: "Binds the API to loopback: without it A1111 listens on every interface, and the \
              API must stay inside the container.",
        when: When::Always,
    },
    flag("--api", "Serves /sdapi/v1/*."),
    flag(
        "--nowebui",
        "API only: no Gradio UI, faster start, less memory.",
    ),
    flag(
        "--skip-version-check",
        "No version look-ups at start: the image is pinned.",
    ),
    flag(
        "--no-hashing",
        "No SHA-256 of every checkpoint at start: large models load faster.",
    ),
    flag(
        "--no-download-sd-model",
        "Never download SD 1.5 when no checkpoint is found: a worker has no business fetching \
         4 GB at start.",
    ),
    cpu_flag(
        "--use-cpu",
        FlagValue::Fixed("all"),
        "`WEBUI_DEVICE=cpu`: every model part on the CPU.",
    ),
    cpu_flag(
        "--no-half",
        FlagValue::None,
        "`WEBUI_DEVICE=cpu`: the CPU has no fast fp16; the UNet in fp32.",
    ),
    cpu_flag(
        "--precision",
        FlagValue::Fixed("full"),
        "`WEBUI_DEVICE=cpu`: no autocast to half precision.",
    ),
];

/// Flags that would make the API ask for credentials or speak TLS: the readiness probe and the
/// handler call it over plain HTTP without credentials, so the worker could never become ready.
const UNSUPPORTED: &[&str] = &["--api-auth", "--tls-keyfile", "--tls-certfile"];

/// Flags the runtime owns: a user value would conflict with what the handler and readiness gate use.
const OWNED: &[(&str, &str)] = &[
    ("--port", "set WEBUI_PORT instead"),
    (
        "--server-name",
        "the API stays on 127.0.0.1 inside the container",
    ),
    (
        "--listen",
        "the API stays on 127.0.0.1 inside the container",
    ),
];

/// The flag set for this configuration, with the GPU check's verdict applied.
pub fn base_args(config: &Config, conditions: Conditions) -> Vec<String> {
    let cpu = config.webui_device == WebuiDevice::Cpu;
    let mut args = Vec::new();
    for f in FLAG_SET {
        let wanted = match f.when {
            When::Always => true,
            When::XformersConfirmed => conditions.xformers_confirmed && !cpu,
            When::Cpu => cpu,
        };
        if !wanted {
            continue;
        }
        args.push(f.name.to_string());
        match f.value {
            FlagValue::None => {}
            FlagValue::Fixed(v) => args.push(v.to_string()),
            FlagValue::Setting(_, read) => args.push(read(config)),
        }
    }
    args
}

/// What A1111's parser expects after a flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arity {
    Switch,
    One {
        int: bool,
        choices: Option<Vec<String>>,
    },
    OneOrMore,
    /// `nargs='*'` (or `'?'`: at most one).
    Optional {
        at_most_one: bool,
    },
}

/// A1111's flag catalog: flag name to what follows it.
pub fn catalog() -> &'static BTreeMap<String, Arity> {
    static CATALOG: OnceLock<BTreeMap<String, Arity>> = OnceLock::new();
    CATALOG.get_or_init(|| {
        CATALOG_TSV
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut cols = line.split('\t');
                let name = cols.next()?.trim();
                let kind = cols.next()?.trim();
                Some((name.to_string(), arity_of(kind)))
            })
            .collect()
    })
}

fn arity_of(kind: &str) -> Arity {
    if kind.starts_with("store_") {
        Arity::Switch
    } else if kind.contains("nargs=+") {
        Arity::OneOrMore
    } else {
        let choices = kind
            .split_whitespace()
            .find_map(|part| part.strip_prefix("choices="))
            .map(|c| c.split('|').map(str::to_string).collect());
        Arity::One {
            int: kind.starts_with("int"),
            choices,
        }
    }
}

/// A user-supplied WebUI flag that A1111 would reject, or that would break the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagError {
    /// Where the words came from: WEBUI_EXTRA_ARGS or COMMANDLINE_ARGS.
    pub source: &'static str,
    pub message: String,
}

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.message)
    }
}

impl std::error::Error for FlagError {}

/// Splits `words` as A1111 splits COMMANDLINE_ARGS and checks them against A1111's catalog only.
pub fn parse_extra_args(source: &'static str, words: &str) -> Result<Vec<String>, FlagError> {
    FlagCheck::default().check(source, words)
}

/// The flags a WebUI checkout accepts: A1111's catalog plus those its extensions add.
#[derive(Debug, Default)]
pub struct FlagCheck {
    extensions: BTreeMap<String, Arity>,
    allow_unknown: bool,
}

enum Lookup<'a> {
    Known(&'a str, &'a Arity),
    Ambiguous(Vec<&'a str>),
    Unknown,
}

impl FlagCheck {
    /// Reads the flags of every extension's preload.py in `webui_dir` (extensions/ and
    /// extensions-builtin/); `allow_unknown` lets flags the runtime cannot see through.
    pub fn for_webui(webui_dir: &Path, allow_unknown: bool) -> FlagCheck {
        FlagCheck {
            extensions: crate::webui_extensions::flags(webui_dir),
            allow_unknown,
        }
    }

    fn all_names(&self) -> impl Iterator<Item = &str> {
        catalog()
            .keys()
            .chain(self.extensions.keys())
            .map(String::as_str)
    }

    /// argparse's reading of an option name: exact, else an unambiguous prefix.
    fn lookup(&self, name: &str) -> Lookup<'_> {
        let exact = catalog()
            .get_key_value(name)
            .or_else(|| self.extensions.get_key_value(name));
        if let Some((known, arity)) = exact {
            return Lookup::Known(known, arity);
        }
        if !name.starts_with("--") || name.len() < 3 {
            return Lookup::Unknown;
        }
        let mut matches: Vec<&str> = self.all_names().filter(|k| k.starts_with(name)).collect();
        matches.dedup();
        match matches.as_slice() {
            [] => Lookup::Unknown,
            [one] => {
                let arity = catalog()
                    .get(*one)
                    .or_else(|| self.extensions.get(*one))
                    .expect("a listed name");
                Lookup::Known(one, arity)
            }
            _ => Lookup::Ambiguous(matches),
        }
    }

    /// Splits `words` with Python's shlex rules (as A1111 does) and checks every flag and value
    /// as A1111's argparse parser would; returns the words.
    pub fn check(&self, source: &'static str, words: &str) -> Result<Vec<String>, FlagError> {
        let err = |message: String| FlagError { source, message };
        let args = crate::shlex::split(words).map_err(|e| {
            err(format!(
                "cannot split {words:?} into words (Python's shlex: {e}); check the quotes"
            ))
        })?;
        let mut i = 0;
        while i < args.len() {
            let word = &args[i];
            i += 1;
            if !looks_like_option(word) || word == "--" {
                return Err(err(format!(
                    "unexpected word {word:?}: WebUI flags start with --, and a value follows its flag"
                )));
            }
            let (name, inline) = match word.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (word.as_str(), None),
            };
            let (flag, arity) = match self.lookup(name) {
                Lookup::Known(flag, arity) => (flag, Some(arity)),
                Lookup::Ambiguous(candidates) => {
                    let closest = candidates
                        .iter()
                        .min_by_key(|c| strsim::levenshtein(name, c))
                        .copied()
                        .unwrap_or_default();
                    return Err(err(format!(
                        "{name} is ambiguous to A1111, which would exit at start (it could be {}); \
                         did you mean {closest}?",
                        candidates.join(", ")
                    )));
                }
                Lookup::Unknown => (name, None),
            };
            if let Some((owned, fix)) = OWNED.iter().find(|(owned, _)| {
                *owned == flag || (arity.is_none() && name.len() > 2 && owned.starts_with(name))
            }) {
                let spelled = if *owned == name {
                    String::new()
                } else {
                    format!(" (A1111 reads {name} as {owned})")
                };
                return Err(err(format!(
                    "{owned} is set by worker-runtime{spelled}: {fix}"
                )));
            }
            if UNSUPPORTED.contains(&flag) {
                return Err(err(format!(
                    "{flag} is not supported: the readiness probe and the handler call the API \
                     over plain HTTP without credentials, so the worker would never become ready"
                )));
            }
            let Some(arity) = arity else {
                if !self.allow_unknown {
                    return Err(err(self.unknown_flag_message(name)));
                }
                tracing::warn!(
                    "{source}: passing {name}, which neither A1111 v1.10 nor an extension in \
                     WEBUI_DIR defines (WEBUI_ALLOW_UNKNOWN_FLAGS is set)"
                );
                if inline.is_none() {
                    while args.get(i).is_some_and(|v| !looks_like_option(v)) {
                        i += 1;
                    }
                }
                continue;
            };
            match arity {
                Arity::Switch => {
                    if inline.is_some() {
                        return Err(err(format!("{flag} is a switch and takes no value")));
                    }
                }
                Arity::One { int, choices } => {
                    let value = match inline {
                        Some(v) => v,
                        None => match args.get(i) {
                            Some(v) if !looks_like_option(v) => {
                                i += 1;
                                v.clone()
                            }
                            _ => return Err(err(format!("{flag} needs a value"))),
                        },
                    };
                    if *int && !is_python_int(&value) {
                        return Err(err(format!("{flag} needs an integer, not {value:?}")));
                    }
                    if let Some(choices) = choices {
                        if !choices.contains(&value) {
                            return Err(err(format!(
                                "{flag} must be one of {}, not {value:?}",
                                choices.join(", ")
                            )));
                        }
                    }
                }
                Arity::OneOrMore => {
                    // argparse: a value after `=` is the only one.
                    if inline.is_none() {
                        let mut count = 0;
                        while args.get(i).is_some_and(|v| !looks_like_option(v)) {
                            i += 1;
                            count += 1;
                        }
                        if count == 0 {
                            return Err(err(format!("{flag} needs at least one value")));
                        }
                    }
                }
                Arity::Optional { at_most_one } => {
                    if inline.is_none() {
                        let mut count = 0;
                        while args.get(i).is_some_and(|v| !looks_like_option(v))
                            && !(*at_most_one && count == 1)
                        {
                            i += 1;
                            count += 1;
                        }
                    }
                }
            }
        }
        Ok(args)
    }

    fn unknown_flag_message(&self, name: &str) -> String {
        let closest = self
            .all_names()
            .map(|known| (strsim::levenshtein(name, known), known))
            .min()
            .filter(|(distance, _)| *distance <= 3);
        let escape = "if an extension defines it in code the runtime cannot read, set \
                      WEBUI_ALLOW_UNKNOWN_FLAGS=1";
        match closest {
            Some((_, known)) => format!(
                "unknown WebUI flag {name} (A1111 v1.10 would exit at start); did you mean \
                 {known}? ({escape})"
            ),
            None => format!(
                "unknown WebUI flag {name} (A1111 v1.10 would exit at start): neither A1111's \
                 catalog (runtime/src/a1111-cmd-flags-v1.10.tsv) nor an extension's preload.py in \
                 WEBUI_DIR defines it; {escape}"
            ),
        }
    }
}

/// argparse's test for a word that is an option rather than a value: it starts with '-', is not
/// '-' alone, is not a negative number, and holds no space.
fn looks_like_option(word: &str) -> bool {
    let negative_number = word.strip_prefix('-').is_some_and(|rest| {
        let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
        let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
        (rest.contains('.') && digits(int) && !frac.is_empty() && digits(frac))
            || (!rest.contains('.') && !rest.is_empty() && digits(rest))
    });
    word.starts_with('-') && word != "-" && !negative_number && !word.contains(' ')
}

/// What Python's `int()` accepts: surrounding whitespace, a sign, digits with single
/// underscores between them.
fn is_python_int(value: &str) -> bool {
    let v = value.trim();
    let v = v.strip_prefix(['+', '-']).unwrap_or(v);
    !v.is_empty()
        && !v.starts_with('_')
        && !v.ends_with('_')
        && !v.contains("__")
        && v.chars().all(|c| c.is_ascii_digit() || c == '_')
}

/// docs/webui-flags.md, generated by `cargo xtask codegen` from [`FLAG_SET`].
pub fn markdown_doc() -> String {
    let mut out = String::from(
        "# The WebUI flag set\n\n\
         <!-- Generated by `cargo xtask codegen` from runtime/src/webui_flags.rs: do not edit. -->\n\n\
         `worker-runtime` starts the WebUI as `<WEBUI_PYTHON> <WEBUI_DIR>/webui.py` with these flags, \
         in this order, then the words of `WEBUI_EXTRA_ARGS`. `worker-runtime webui-args` prints \
         the exact command line. Extra flags (and `COMMANDLINE_ARGS`, which A1111 appends itself) \
         are split with Python's shlex rules and checked before anything starts against A1111 \
         v1.10's flag catalog and the flags of the extensions in `WEBUI_DIR` (their \
         `preload.py`); `WEBUI_ALLOW_UNKNOWN_FLAGS=1` lets other flags through. `--port`, \
         `--server-name` and `--listen` belong to the runtime (refused in any spelling argparse \
         accepts); `--api-auth` and the TLS flags are refused (the probe and handler use plain \
         HTTP).\n\n\
         | Flag | Value | Why | Passed |\n|---|---|---|---|\n",
    );
    for f in FLAG_SET {
        let value = match f.value {
            FlagValue::None => String::new(),
            FlagValue::Fixed(v) => format!("`{v}`"),
            FlagValue::Setting(env, _) => format!("`${env}`"),
        };
        let passed = match f.when {
            When::Always => "always",
            When::XformersConfirmed => "when the GPU check confirms xformers (never on the CPU)",
            When::Cpu => "`WEBUI_DEVICE=cpu`",
        };
        out.push_str(&format!(
            "| `{}` | {value} | {} | {passed} |\n",
            f.name, f.why
        ));
    }
    out
}

#[cfg(test)]
mod tests;
