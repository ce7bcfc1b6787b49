//! The docker CLI, as the container tests use it. Every container runs with `--network none`: a CI
//! machine may have no bridge network, and the worker must not need one.

use std::io::Write as _;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Figures a developer or CI wants to see even when the tests pass: written straight to stderr,
/// which the test harness does not capture (it captures only the print macros).
pub fn report(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "containers: {line}");
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run docker {args:?}: {e} (run `bash .ci/ensure-docker.sh`)")
        })
}

/// Runs docker and returns its stdout; panics with its stderr when it fails.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn image_exists(image: &str) -> bool {
    docker(&["image", "inspect", "--format", "{{.Id}}", image])
        .status
        .success()
}

pub fn image_size(image: &str) -> u64 {
    let size = docker_ok(&["image", "inspect", "--format", "{{.Size}}", image]);
    size.parse()
        .unwrap_or_else(|_| panic!("odd size for {image}: {size}"))
}

pub fn image_id(image: &str) -> String {
    docker_ok(&["image", "inspect", "--format", "{{.Id}}", image])
}

/// A container of the worker image, removed (forcibly) when dropped, so a failing test leaves
/// nothing running.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `docker run -d --network none` with the given environment and the image's own command.
    pub fn start(image: &str, env: &[(&str, &str)]) -> Container {
        Self::start_with(image, env, &[])
    }

    /// As `start`, with `command` instead of the image's own (when not empty).
    pub fn start_with(image: &str, env: &[(&str, &str)], command: &[&str]) -> Container {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "sd-worker-test-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let mut args: Vec<String> = ["run", "-d", "--network", "none", "--name", &name]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (key, value) in env {
            args.push("-e".into());
            args.push(format!("{key}={value}"));
        }
        args.push(image.to_string());
        args.extend(command.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_ok(&args);
        Container { name }
    }

    /// stdout and stderr together, in the order docker received them.
    pub fn logs(&self) -> String {
        let out = duct::cmd!("docker", "logs", &self.name)
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()
            .unwrap_or_else(|e| panic!("cannot run docker logs: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the logs contain `needle`; panics with the logs after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let started = Instant::now();
        loop {
            let logs = self.logs();
            if logs.contains(needle) {
                return logs;
            }
            if started.elapsed() > timeout || !self.running() {
                panic!(
                    "{needle:?} not in the logs of {} after {:.1} s (running: {}):\n{logs}",
                    self.name,
                    started.elapsed().as_secs_f64(),
                    self.running()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn running(&self) -> bool {
        docker_ok(&["inspect", "--format", "{{.State.Running}}", &self.name]) == "true"
    }

    /// The exit code once the container has stopped; kills it and panics after `timeout`.
    pub fn wait_exit(&self, timeout: Duration) -> i32 {
        let started = Instant::now();
        while self.running() {
            if started.elapsed() > timeout {
                docker(&["kill", &self.name]);
                panic!(
                    "{} still running after {:.1} s; logs:\n{}",
                    self.name,
                    timeout.as_secs_f64(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let code = docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", &self.name]);
        code.parse()
            .unwrap_or_else(|_| panic!("odd exit code {code:?}"))
    }

    /// Runs a command inside the running container; returns its stdout.
    pub fn exec(&self, command: &[&str]) -> String {
        let mut args = vec!["exec", self.name.as_str()];
        args.extend_from_slice(command);
        docker_ok(&args)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}
