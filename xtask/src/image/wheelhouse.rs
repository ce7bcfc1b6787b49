//! The Python packages of the WebUI image, as wheels made on the build host and served to
//! `docker build` on loopback. pip inside a build container may not reach PyPI (a proxy, a private
//! CA, or no network at all), the host's pip does; and a wheelhouse is downloaded once, into
//! ~/.cache/sd-worker/wheelhouse, keyed by the hash of what it holds, and reused by every later build.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// The port the wheelhouse is served on. Fixed, because its URL is a build argument: a new port
/// would miss the docker cache of every step after it.
pub const PORT: u16 = 39017;

/// One set of wheels: the WebUI's (the lock, no dependencies resolved) or the handler's.
pub struct Wheels<'a> {
    pub name: &'static str,
    pub requirements: &'a Path,
    /// Every package is pinned in the file: resolve nothing.
    pub no_deps: bool,
}

/// The wheelhouse directory for `wheels`, made when missing. `python` is the host's interpreter of
/// the image's Python version (wheels are built for one version).
pub fn ensure(
    cache: &Path,
    python: &Path,
    python_version: &str,
    wheels: &Wheels,
) -> Result<PathBuf> {
    let text = fs::read(wheels.requirements)
        .with_context(|| format!("reading {}", wheels.requirements.display()))?;
    let digest: String = Sha256::digest(&text)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let tag = format!("cp{}", python_version.replace('.', ""));
    let dir = cache.join(format!("{}-{tag}-{digest}", wheels.name));
    if dir.join(".complete").is_file() {
        eprintln!("wheelhouse: {} (cached)", dir.display());
        return Ok(dir);
    }
    let started = Instant::now();
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let partial = cache.join(format!(".partial-{}-{tag}-{digest}", wheels.name));
    let _ = fs::remove_dir_all(&partial);
    eprintln!(
        "wheelhouse: downloading {} into {} (once; later builds reuse it)",
        wheels.requirements.display(),
        dir.display()
    );
    // `pip wheel` downloads the wheels PyPI has and builds the rest (antlr4-python3-runtime has
    // only a source distribution).
    let mut pip = Command::new(python);
    pip.args([
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--disable-pip-version-check",
    ]);
    if wheels.no_deps {
        pip.arg("--no-deps");
    }
    pip.arg("-r")
        .arg(wheels.requirements)
        .arg("-w")
        .arg(&partial);
    let status = pip
        .status()
        .with_context(|| format!("running {} -m pip", python.display()))?;
    if !status.success() {
        let _ = fs::remove_dir_all(&partial);
        bail!(
            "pip could not make the {} wheelhouse ({status}; its output is above): check that PyPI \
             answers (pip's own proxy settings apply), then run again",
            wheels.name
        );
    }
    fs::write(partial.join(".complete"), b"")?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&partial, &dir).with_context(|| format!("moving it to {}", dir.display()))?;
    eprintln!(
        "wheelhouse: {} made in {:.1} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(dir)
}

/// The host Python that makes wheels for the image's `version` (e.g. "3.11"): `python3.11` on
/// PATH, or `python3` when it is that version.
pub fn host_python(version: &str) -> Result<PathBuf> {
    for name in [format!("python{version}"), "python3".to_string()] {
        let Ok(path) = which::which(&name) else {
            continue;
        };
        let out = Command::new(&path)
            .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
            .output();
        if out.is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == version
        }) {
            return Ok(path);
        }
    }
    bail!(
        "the image's Python is {version} and its wheels are made on this machine: install \
         python{version} with pip (apt-get install python{version} python3-pip, or pyenv install {version})"
    )
}

/// The cache folder: ~/.cache/sd-worker/wheelhouse (or under XDG_CACHE_HOME).
pub fn cache_dir() -> Result<PathBuf> {
    let a1111 = crate::a1111::default_dir()?;
    Ok(a1111.with_file_name("wheelhouse"))
}

/// Serves the wheels of several wheelhouses as one flat directory (hard links) on 127.0.0.1 until
/// dropped, with Python's own HTTP server: pip's `--find-links` reads its directory listing.
pub struct Server {
    child: Child,
    dir: PathBuf,
    pub url: String,
}

impl Server {
    pub fn start(python: &Path, cache: &Path, wheelhouses: &[PathBuf]) -> Result<Server> {
        let dir = cache.join(format!(".serve-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for house in wheelhouses {
            for entry in
                fs::read_dir(house).with_context(|| format!("reading {}", house.display()))?
            {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "whl") {
                    let dest = dir.join(path.file_name().unwrap_or_default());
                    if !dest.exists() && fs::hard_link(&path, &dest).is_err() {
                        fs::copy(&path, &dest)
                            .with_context(|| format!("copying {}", path.display()))?;
                    }
                }
            }
        }
        let port = if TcpListener::bind(("127.0.0.1", PORT)).is_ok() {
            PORT
        } else {
            let free = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
            eprintln!(
                "wheelhouse: port {PORT} is taken (another build?); serving on {free}, so the \
                 docker cache of the steps that install wheels is missed this time"
            );
            free
        };
        let child = Command::new(python)
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting python -m http.server for the wheelhouse")?;
        let server = Server {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}/"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("the wheelhouse server did not answer on 127.0.0.1:{port} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
