//! Test support: runs the real `worker-runtime` binary against fake WebUI and handler scripts
//! (Python, written into a temporary directory) and observes what a user would: exit status,
//! log lines, and which processes exist.

#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use runtime::process_tree;
use tempfile::TempDir;

const FAKE_WEBUI: &str = include_str!("fake_webui.py");
const FAKE_HANDLER: &str = include_str!("fake_handler.py");

/// Generous: these bound a hang, they do not measure speed.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn runtime_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("worker-runtime")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A temporary WebUI checkout and handler, and the launcher's environment pointing at them.
pub struct Fixture {
    pub dir: TempDir,
    pub port: u16,
    envs: Vec<(String, String)>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let webui_dir = dir.path().join("webui");
        fs::create_dir_all(&webui_dir).expect("webui dir");
        fs::create_dir_all(dir.path().join("records")).expect("records dir");
        fs::write(webui_dir.join("webui.py"), FAKE_WEBUI).expect("write webui.py");
        fs::write(dir.path().join("handler.py"), FAKE_HANDLER).expect("write handler.py");
        let port = free_port();
        let path = |p: &str| dir.path().join(p).display().to_string();
        let envs = vec![
            ("WEBUI_DIR".into(), path("webui")),
            ("HANDLER_PATH".into(), path("handler.py")),
            ("WEBUI_PYTHON".into(), "python3".into()),
            ("HANDLER_PYTHON".into(), "python3".into()),
            ("WEBUI_PORT".into(), port.to_string()),
            ("CUDA_CHECK".into(), "off".into()),
            ("SHUTDOWN_GRACE".into(), "3".into()),
            ("WEBUI_READY_TIMEOUT".into(), "30".into()),
            // The fake WebUI has no model: readiness is its API answering.
            ("WEBUI_READY".into(), "api".into()),
            ("MODEL_PATH".into(), path("model.safetensors")),
            ("CKPT_DIR".into(), path("volume/checkpoints")),
            ("LORA_DIR".into(), path("volume/loras")),
            ("EMBEDDINGS_DIR".into(), path("volume/embeddings")),
            ("FAKE_PID_DIR".into(), path("records")),
            ("RUST_LOG".into(), "info".into()),
        ];
        Fixture { dir, port, envs }
    }

    pub fn env(mut self, key: &str, value: &str) -> Fixture {
        self.envs.retain(|(k, _)| k != key);
        self.envs.push((key.into(), value.into()));
        self
    }

    pub fn without_env(mut self, key: &str) -> Fixture {
        self.envs.retain(|(k, _)| k != key);
        self
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(runtime_bin());
        // Only what the test sets: the developer's own settings must not leak in.
        for key in [
            "LD_PRELOAD",
            "NO_TCMALLOC",
            "WEBUI_EXTRA_ARGS",
            "COMMANDLINE_ARGS",
            "HANDLER_ARGS",
            "HANDLER_START",
            "WORKER_RUNTIME_TCMALLOC",
            "PORT_HEALTH",
        ] {
            command.env_remove(key);
        }
        command.envs(self.envs.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs to completion; returns (exit code, all output lines).
    pub fn run(&self) -> (i32, Vec<String>) {
        self.spawn().wait()
    }

    pub fn spawn(&self) -> Running {
        self.spawn_with(|command| {
            command.stdin(Stdio::null());
        })
    }

    /// `spawn`, with the command adjusted first (its stdin, a session of its own...).
    pub fn spawn_with(&self, adjust: impl FnOnce(&mut Command)) -> Running {
        let mut command = self.command();
        adjust(&mut command);
        // One pipe for stdout and stderr, as a container log has it: the runtime's lines and its
        // children's keep the order in which they were written.
        let (reader, writer) = std::io::pipe().expect("pipe");
        let stderr = writer.try_clone().expect("pipe clone");
        command.stdout(writer).stderr(stderr);
        let child = command.spawn().expect("worker-runtime starts");
        // The parent's copies of the write end are gone with `command`: EOF comes when the runtime
        // and every child holding the pipe have exited.
        drop(command);
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let store = Arc::clone(&lines);
        let reader = thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                let (lines, signal) = &*store;
                lines.lock().expect("lines").push(line);
                signal.notify_all();
            }
        });
        Running {
            child,
            lines,
            readers: vec![reader],
        }
    }

    pub fn record(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.dir.path().join("records").join(name)).ok()
    }

    /// Waits until a fake process has written its record.
    pub fn wait_for_record(&self, name: &str) -> bool {
        let deadline = Instant::now() + PATIENCE;
        while self.record(name).is_none() {
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        true
    }

    pub fn recorded_pid(&self, name: &str) -> Option<Pid> {
        self.record(name)?.trim().parse().ok().map(Pid::from_raw)
    }

    /// A file the fake handler waits for (FAKE_HANDLER_WAIT_FILE) before it exits.
    pub fn release_file(&self) -> PathBuf {
        self.dir.path().join("release")
    }

    /// Writes `text` as `relative` inside the fake WebUI checkout.
    pub fn webui_file(&self, relative: &str, text: &str) {
        let path = self.dir.path().join("webui").join(relative);
        fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
        fs::write(path, text).expect("write");
    }
}

/// A field of /proc/<pid>/status (`SigBlk`, `NSpgid`...), as written there.
pub fn status_field(pid: Pid, field: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then(|| value.trim().to_string())
    })
}

/// The process group of `pid`.
pub fn pgid(pid: Pid) -> Option<Pid> {
    nix::unistd::getpgid(Some(pid)).ok()
}

/// Live children of `parent` whose command line contains `needle`.
pub fn children_running(parent: Pid, needle: &str) -> Vec<Pid> {
    process_tree::snapshot()
        .into_iter()
        .filter(|(_, s)| s.ppid == parent.as_raw() && s.is_live())
        .filter(|(pid, _)| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .map(|(pid, _)| Pid::from_raw(pid))
        .collect()
}

/// Waits (up to PATIENCE) until `find` returns something.
pub fn wait_for<T>(mut find: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = find() {
            return Some(found);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The demo WebUI of docker/demo-webui (an A1111 API stand-in).
pub fn demo_webui_dir() -> PathBuf {
    workspace_root().join("docker/demo-webui")
}

/// A fake libcuda (tests/fake_libcuda) built once per test process; its directory goes on
/// LD_LIBRARY_PATH so the runtime's GPU check loads it instead of a driver.
pub fn fake_libcuda_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| fake_libcuda_variant(&[]))
}

/// A fake libcuda built with extra compiler flags (`-D...` variants); its directory, to put on
/// LD_LIBRARY_PATH. It carries the real driver's soname: the runtime must find it the way it
/// finds the real one.
pub fn fake_libcuda_variant(flags: &[&str]) -> PathBuf {
    let library = compile_shared("tests/fake_libcuda/fake_libcuda.c", "libcuda.so.1", flags);
    library
        .parent()
        .expect("the library's directory")
        .to_path_buf()
}

/// An LD_PRELOAD library under which signalfd(2) fails (tests/fault_preload/no_signalfd.c).
pub fn no_signalfd_preload() -> &'static Path {
    static LIB: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LIB.get_or_init(|| compile_shared("tests/fault_preload/no_signalfd.c", "libnosignalfd.so", &[]))
}

/// Compiles a C file of the tests, with `flags`, into a shared library in a directory of its
/// own; its path.
fn compile_shared(source: &str, name: &str, flags: &[&str]) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir for a test library")
        .keep();
    let source = workspace_root().join(source);
    let library = dir.join(name);
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o"])
        .arg(&library)
        .args(flags)
        .arg(&source)
        .status()
        .expect("running cc (gcc must be installed to build the tests' C libraries)");
    assert!(status.success(), "compiling {}", source.display());
    library
}

/// A tiny HTTP server on `port` that answers every request 200 `[]` and counts them: a process
/// outside the WebUI's tree that could fool a readiness probe.
pub struct Impostor {
    pub requests: Arc<Mutex<usize>>,
}

impl Impostor {
    pub fn start(port: u16) -> Impostor {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("impostor binds");
        let requests = Arc::new(Mutex::new(0));
        let count = Arc::clone(&requests);
        thread::spawn(move || {
            use std::io::{Read, Write};
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                *count.lock().expect("count") += 1;
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]",
                );
            }
        });
        Impostor { requests }
    }

    pub fn count(&self) -> usize {
        *self.requests.lock().expect("count")
    }
}

pub struct Running {
    pub child: Child,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
    readers: Vec<thread::JoinHandle<()>>,
}

impl Running {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Waits until a line containing `needle` has been printed.
    pub fn wait_for_line(&self, needle: &str) -> bool {
        let (store, signal) = &*self.lines;
        let deadline = Instant::now() + PATIENCE;
        let mut lines = store.lock().expect("lines");
        loop {
            if lines.iter().any(|l| l.contains(needle)) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            lines = signal.wait_timeout(lines, left).expect("lines").0;
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.0.lock().expect("lines").clone()
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal worker-runtime");
    }

    /// Waits for exit (killing it after PATIENCE, which fails the test); returns the exit code
    /// (128+n for a signal) and every line.
    pub fn wait(mut self) -> (i32, Vec<String>) {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "worker-runtime did not exit within {PATIENCE:?}:\n{}",
                    self.lines().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        // A process that outlived the runtime still holds the pipe: do not hang on it, the
        // test's own assertions about leftover processes will name it.
        let drained = Instant::now() + Duration::from_secs(5);
        for reader in self.readers.drain(..) {
            while !reader.is_finished() && Instant::now() < drained {
                thread::sleep(Duration::from_millis(10));
            }
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        (code, self.lines())
    }
}

/// Whether `pid` is a live process (zombies count as gone: they run nothing).
pub fn alive(pid: Pid) -> bool {
    process_tree::stat(pid.as_raw()).is_some_and(|s| s.is_live())
}

/// Zombie children of `parent`: processes it has not reaped.
pub fn zombies_of(parent: Pid) -> Vec<Pid> {
    process_tree::snapshot()
        .into_iter()
        .filter(|(_, s)| s.state == 'Z' && s.ppid == parent.as_raw())
        .map(|(pid, _)| Pid::from_raw(pid))
        .collect()
}

/// Index of the first line containing `needle`, for order assertions.
pub fn position(lines: &[String], needle: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line contains {needle:?}:\n{}", lines.join("\n")))
}

pub fn has_line(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}
