//! Image facts: what the image's Python stack was built for, recorded once at image build time
//! (`worker-runtime facts`) so the start-up check never imports torch (5-7 s, 850 MB).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use serde::{Deserialize, Serialize};

use super::FactsArgs;

/// Where the image keeps its facts; `IMAGE_FACTS` (or `cuda-check --facts`) points elsewhere.
pub const DEFAULT_PATH: &str = "/etc/sd-worker/image-facts.json";

const SCRIPT: &str = include_str!("facts.py");
const MARKER: &str = "@@IMAGE_FACTS@@";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageFacts {
    /// Format version of this file.
    #[serde(default)]
    pub schema: u32,
    /// When the facts were recorded (seconds since the Unix epoch).
    #[serde(default)]
    pub recorded_unix: u64,
    #[serde(default)]
    pub python: PythonFacts,
    #[serde(default)]
    pub torch: Option<TorchFacts>,
    /// Why torch could not be imported, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_error: Option<String>,
    #[serde(default)]
    pub xformers: Option<XformersFacts>,
    /// "not installed", or why it failed to import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xformers_error: Option<String>,
    #[serde(default)]
    pub webui: Option<WebuiFacts>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PythonFacts {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub executable: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TorchFacts {
    pub version: String,
    /// `torch.version.cuda`: the CUDA version torch was built for; none for a CPU-only build.
    #[serde(default)]
    pub cuda: Option<String>,
    /// The architectures torch carries code for (`sm_90`, `compute_120`, ...).
    #[serde(default)]
    pub arch_list: Vec<String>,
    #[serde(default)]
    pub arch_list_source: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct XformersFacts {
    #[serde(default)]
    pub version: Option<String>,
    /// `import xformers.ops` worked: what A1111 requires before it uses xformers.
    #[serde(default)]
    pub ops_import: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_error: Option<String>,
    /// The compiled extension loaded (it does not when built for another torch or Python).
    #[serde(default)]
    pub has_cpp_library: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpp_library_error: Option<String>,
    #[serde(default)]
    pub built_for_torch: Option<String>,
    #[serde(default)]
    pub built_for_cuda: Option<String>,
    /// `TORCH_CUDA_ARCH_LIST` of the xformers build (`7.5;8.0;9.0a`), when recorded.
    #[serde(default)]
    pub arch_list: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebuiFacts {
    pub dir: String,
    /// What A1111 itself shows as its version: `git describe --tags`, else CHANGELOG.md's first line.
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub version_source: Option<String>,
    #[serde(default)]
    pub commit: Option<String>,
}

/// The facts as the check found them.
#[derive(Debug, Clone, PartialEq)]
pub enum FactsState {
    Loaded(Box<ImageFacts>),
    /// No file: outside the image, or an image built without `worker-runtime facts`.
    Missing,
    /// A file that cannot be read or parsed.
    Unreadable(String),
}

impl FactsState {
    pub fn facts(&self) -> Option<&ImageFacts> {
        match self {
            FactsState::Loaded(f) => Some(f),
            _ => None,
        }
    }
}

pub fn load(path: &Path) -> FactsState {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<ImageFacts>(&bytes) {
            Ok(facts) => FactsState::Loaded(Box::new(facts)),
            Err(e) => FactsState::Unreadable(format!("not valid image facts: {e}")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FactsState::Missing,
        Err(e) => FactsState::Unreadable(e.to_string()),
    }
}

/// `worker-runtime facts`: exit 0 when written, 1 when Python could not report, 2 when the file
/// could not be written.
pub fn main(args: &FactsArgs) -> ExitCode {
    let facts = match collect(&args.python, &args.webui_dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("facts: {e}");
            return ExitCode::from(1);
        }
    };
    let mut json = match serde_json::to_string_pretty(&facts) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("facts: cannot encode the facts: {e}");
            return ExitCode::from(1);
        }
    };
    json.push('\n');
    if args.output.as_os_str() == "-" {
        print!("{json}");
    } else if let Err(e) = write_atomically(&args.output, json.as_bytes()) {
        eprintln!("facts: cannot write {}: {e}", args.output.display());
        return ExitCode::from(2);
    }
    eprintln!("{}", summary(&facts, &args.output));
    ExitCode::SUCCESS
}

fn collect(python: &str, webui_dir: &Path) -> Result<ImageFacts, String> {
    let output = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(json) = stdout.lines().rev().find_map(|l| l.strip_prefix(MARKER)) else {
        return Err(format!(
            "{python} did not report facts (exit status {}); its output: {}",
            output.status,
            stdout.trim()
        ));
    };
    let mut facts: ImageFacts = serde_json::from_str(json)
        .map_err(|e| format!("{python} reported facts this runtime cannot read: {e}"))?;
    facts.schema = 1;
    facts.recorded_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    facts.webui = webui_facts(webui_dir);
    Ok(facts)
}

/// A1111's own version logic (modules/launch_utils.py `git_tag`): `git describe --tags`, falling
/// back to the first non-empty line of CHANGELOG.md without its "## ".
fn webui_facts(dir: &Path) -> Option<WebuiFacts> {
    if !dir.is_dir() {
        return None;
    }
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            // An image build may run as another user than the checkout's owner; git would then
            // refuse the repository ("dubious ownership") for a read-only query.
            .arg("-c")
            .arg(format!("safe.directory={}", dir.display()))
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    let (version, version_source) = match git(&["describe", "--tags"]) {
        Some(v) => (Some(v), Some("git describe --tags".to_string())),
        None => match changelog_version(&dir.join("CHANGELOG.md")) {
            Some(v) => (Some(v), Some("CHANGELOG.md".to_string())),
            None => (None, None),
        },
    };
    Some(WebuiFacts {
        dir: dir.display().to_string(),
        version,
        version_source,
        commit: git(&["rev-parse", "HEAD"]),
    })
}

fn changelog_version(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.replace("## ", ""))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn summary(f: &ImageFacts, output: &Path) -> String {
    let torch = match &f.torch {
        Some(t) => format!(
            "torch {} (CUDA {}, {})",
            t.version,
            t.cuda.as_deref().unwrap_or("none: CPU-only build"),
            if t.arch_list.is_empty() {
                "no GPU architectures".to_string()
            } else {
                t.arch_list.join(" ")
            }
        ),
        None => format!(
            "no torch ({})",
            f.torch_error.as_deref().unwrap_or("unknown reason")
        ),
    };
    let xformers = match &f.xformers {
        Some(x) => format!(
            "xformers {}{}",
            x.version.as_deref().unwrap_or("(unknown version)"),
            if x.ops_import {
                ""
            } else {
                " (xformers.ops does not import)"
            }
        ),
        None => format!(
            "xformers {}",
            f.xformers_error.as_deref().unwrap_or("not installed")
        ),
    };
    let webui = match &f.webui {
        Some(w) => format!(
            "WebUI {}",
            w.version.as_deref().unwrap_or("(version unknown)")
        ),
        None => "no WebUI checkout".to_string(),
    };
    let place = if output.as_os_str() == "-" {
        "stdout".to_string()
    } else {
        output.display().to_string()
    };
    format!(
        "image facts written to {place}: Python {}, {torch}, {xformers}, {webui}",
        f.python.version
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changelog_fallback_reads_a1111_style_headings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("CHANGELOG.md");
        std::fs::write(&path, "\n## 1.10.1\n\n### Bug Fixes\n").expect("write");
        assert_eq!(changelog_version(&path).as_deref(), Some("1.10.1"));
        assert_eq!(changelog_version(&dir.path().join("nope")), None);
    }

    #[test]
    fn facts_from_older_or_partial_files_still_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.json");
        std::fs::write(
            &path,
            r#"{"torch": {"version": "2.7.0+cu128", "cuda": "12.8"}}"#,
        )
        .expect("write");
        let FactsState::Loaded(f) = load(&path) else {
            panic!("should load")
        };
        assert_eq!(f.torch.map(|t| t.cuda), Some(Some("12.8".into())));
        std::fs::write(&path, "not json").expect("write");
        assert!(matches!(load(&path), FactsState::Unreadable(_)));
        assert_eq!(load(&dir.path().join("absent.json")), FactsState::Missing);
    }
}
