//! Process supervision: the one owner of waitpid. Signals arrive through a signalfd (blocked for
//! normal delivery), children are reaped in one place, and the launcher sees a stream of events:
//! a stop signal, a known child's exit, the API becoming ready, or a deadline.
//!
//! The runtime is a child subreaper (PID 1 in a container is one anyway), so every orphan of the
//! tree it started is reparented to it and reaped here; unknown pids are reaped silently.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::process_tree::live_descendants;

/// Signals that ask the worker to stop. SIGTERM is what `docker stop` sends; as PID 1 the runtime
/// would otherwise ignore all of them.
pub const STOP_SIGNALS: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// How often teardown looks at /proc while it waits for processes to go.
const SWEEP_INTERVAL: Duration = Duration::from_millis(10);
/// A process in uninterruptible sleep ignores even SIGKILL for a while; do not hang on it forever.
const KILL_WAIT_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Webui,
    Handler,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Webui => "WebUI",
            Role::Handler => "handler",
        })
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signaled(Signal),
}

impl ExitStatus {
    /// What a shell would report: the code, or 128+n for signal n.
    pub fn as_exit_code(self) -> u8 {
        match self {
            ExitStatus::Code(code) => (code & 0xff) as u8,
            ExitStatus::Signaled(signal) => crate::exit_code::from_signal(signal as i32),
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit status {code}"),
            ExitStatus::Signaled(signal) => write!(f, "killed by {signal}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Stop(Signal),
    Exited(Role, ExitStatus),
    Ready,
    Deadline,
}

pub struct Supervisor {
    signals: SignalFd,
    ready: Option<File>,
    pending: VecDeque<Event>,
    running: HashMap<Pid, Role>,
    process_groups: HashMap<Role, Pid>,
    exited: HashMap<Role, ExitStatus>,
    /// A second stop signal arrived: no more grace periods.
    forced: bool,
}

impl Supervisor {
    /// Must run before any thread exists: threads inherit the blocked mask, and a stop signal
    /// sent meanwhile stays pending instead of killing (or, as PID 1, being lost on) the runtime.
    pub fn new() -> io::Result<Self> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        for signal in STOP_SIGNALS {
            mask.add(signal);
        }
        mask.thread_block()?;
        nix::sys::prctl::set_child_subreaper(true)?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Self {
            signals,
            ready: None,
            pending: VecDeque::new(),
            running: HashMap::new(),
            process_groups: HashMap::new(),
            exited: HashMap::new(),
            forced: false,
        })
    }

    /// Starts `command` in a process group of its own, so a signal reaches its whole tree and a
    /// terminal's Ctrl-C reaches only the runtime. `inherit` names a descriptor the child keeps
    /// across exec (the readiness gate).
    pub fn spawn(
        &mut self,
        role: Role,
        command: &mut Command,
        inherit: Option<RawFd>,
    ) -> io::Result<Pid> {
        command.process_group(0);
        command.env_remove(crate::tcmalloc::REEXEC_MARKER);
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
        // (pthread_sigmask, prctl, fcntl).
        unsafe {
            command.pre_exec(move || {
                // The mask that routes signals to the runtime's signalfd is inherited across exec:
                // a WebUI with SIGTERM blocked could never stop gracefully.
                SigSet::empty().thread_set_mask()?;
                // If the runtime is SIGKILLed, its direct children follow instead of leaking.
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                if let Some(fd) = inherit {
                    let flags = nix::libc::fcntl(fd, nix::libc::F_GETFD);
                    if flags < 0
                        || nix::libc::fcntl(fd, nix::libc::F_SETFD, flags & !nix::libc::FD_CLOEXEC)
                            < 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        // The std Child handle is dropped unwaited on purpose: reaping is done by `reap`, for
        // every pid, in one place.
        let child = command.spawn()?;
        let pid = Pid::from_raw(child.id() as i32);
        self.running.insert(pid, role);
        self.process_groups.insert(role, pid);
        Ok(pid)
    }

    /// The read end of the readiness probe's pipe.
    pub fn watch_ready(&mut self, ready: OwnedFd) {
        self.ready = Some(File::from(ready));
    }

    pub fn is_running(&self, role: Role) -> bool {
        self.running.values().any(|r| *r == role)
    }

    pub fn exit_status(&self, role: Role) -> Option<ExitStatus> {
        self.exited.get(&role).copied()
    }

    pub fn forced(&self) -> bool {
        self.forced
    }

    /// Sends `signal` to the role's whole process group (no-op once it is gone).
    pub fn signal_group(&self, role: Role, signal: Signal) {
        if let Some(pgid) = self.process_groups.get(&role) {
            // ESRCH only means the group is already empty.
            let _ = killpg(*pgid, signal);
        }
    }

    /// Waits for the next event; `Deadline` once `deadline` passes.
    pub fn next(&mut self, deadline: Option<Instant>) -> Event {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return event;
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let timeout = match left {
                None => PollTimeout::NONE,
                // Round up: a poll that wakes early would only spin.
                Some(left) => {
                    let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
                }
            };
            let (signals_ready, probe_ready) = {
                let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
                if let Some(ready) = &self.ready {
                    fds.push(PollFd::new(ready.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::error!("poll failed: {e}");
                        std::thread::sleep(SWEEP_INTERVAL);
                        continue;
                    }
                }
                let readable = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
                (readable(&fds[0]), fds.get(1).is_some_and(readable))
            };
            if signals_ready {
                self.read_signals();
            }
            if probe_ready {
                self.read_probe();
            }
            if self.pending.is_empty() && left.is_some_and(|l| l.is_zero()) {
                return Event::Deadline;
            }
        }
    }

    fn read_signals(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => self.reap(),
                Ok(signal) => self.pending.push_back(Event::Stop(signal)),
                Err(_) => {}
            }
        }
        // SIGCHLD coalesces; reaping on every wake-up also covers one that was merged away.
        self.reap();
    }

    fn read_probe(&mut self) {
        let mut byte = [0u8; 1];
        if let Some(mut ready) = self.ready.take() {
            if matches!(ready.read(&mut byte), Ok(1)) {
                self.pending.push_back(Event::Ready);
            }
        }
    }

    /// The one waitpid loop: records known children's statuses, reaps orphans.
    fn reap(&mut self) {
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, ExitStatus::Signaled(signal)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("waitpid failed: {e}");
                    return;
                }
            };
            match self.running.remove(&pid) {
                Some(role) => {
                    self.exited.insert(role, status);
                    self.pending.push_back(Event::Exited(role, status));
                }
                None => tracing::debug!("reaped orphan {pid} ({status})"),
            }
        }
    }

    /// Waits for the role's leader until `until`; a stop signal meanwhile forces.
    /// Returns whether it exited.
    pub fn wait_until(&mut self, role: Role, until: Instant) -> bool {
        while self.is_running(role) && !self.forced {
            match self.next(Some(until)) {
                Event::Deadline => break,
                Event::Stop(signal) => {
                    tracing::warn!("received {signal} again: killing at once");
                    self.forced = true;
                }
                Event::Exited(..) | Event::Ready => {}
            }
        }
        !self.is_running(role)
    }

    /// SIGTERM to the role's group, SIGKILL after `grace` (at once if forced).
    pub fn stop(&mut self, role: Role, grace: Duration) {
        if !self.is_running(role) {
            return;
        }
        if !self.forced {
            self.signal_group(role, Signal::SIGTERM);
            if self.wait_until(role, Instant::now() + grace) {
                return;
            }
            if !self.forced {
                tracing::warn!(
                    "{role} did not stop within {:.1} s of SIGTERM: SIGKILL",
                    grace.as_secs_f64()
                );
            }
        }
        self.signal_group(role, Signal::SIGKILL);
        self.wait_until(role, Instant::now() + KILL_WAIT_LIMIT);
    }

    /// Waits for the role to exit on its own; a stop signal meanwhile escalates to SIGKILL.
    pub fn wait_forced(&mut self, role: Role) {
        while self.is_running(role) {
            match self.next(None) {
                Event::Stop(signal) if !self.forced => {
                    tracing::warn!("received {signal} again: killing the {role} at once");
                    self.forced = true;
                    self.signal_group(role, Signal::SIGKILL);
                }
                _ => {}
            }
        }
    }

    /// Ends every process left under the runtime: the WebUI's group and whatever left it
    /// (setsid'd, orphaned). SIGTERM, then SIGKILL after `grace`; returns once all are reaped.
    pub fn teardown(&mut self, grace: Duration) {
        let me = Pid::this();
        let first = if self.forced {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        for role in [Role::Webui, Role::Handler] {
            if self.is_running(role) {
                self.signal_group(role, first);
            }
        }
        for pid in live_descendants(me) {
            let _ = kill(pid, first);
        }
        let deadline = Instant::now() + grace;
        while !self.forced && !live_descendants(me).is_empty() {
            if Instant::now() >= deadline {
                tracing::warn!(
                    "processes still running {:.1} s after SIGTERM: SIGKILL",
                    grace.as_secs_f64()
                );
                break;
            }
            if let Event::Stop(signal) = self.next(Some(Instant::now() + SWEEP_INTERVAL)) {
                tracing::warn!("received {signal} again: killing at once");
                self.forced = true;
            }
        }
        let limit = Instant::now() + KILL_WAIT_LIMIT;
        loop {
            let left = live_descendants(me);
            for pid in &left {
                let _ = kill(*pid, Signal::SIGKILL);
            }
            self.reap();
            if left.is_empty() && !self.has_children() {
                break;
            }
            if Instant::now() >= limit {
                tracing::error!("{} processes survived SIGKILL: {left:?}", left.len());
                break;
            }
            std::thread::sleep(SWEEP_INTERVAL);
        }
        // Stop signals that arrived during teardown are answered by the teardown itself.
        self.pending.retain(|e| !matches!(e, Event::Stop(_)));
    }

    /// Whether any child (live or zombie) is still waitable.
    fn has_children(&self) -> bool {
        !matches!(
            nix::sys::wait::waitid(
                nix::sys::wait::Id::All,
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT
            ),
            Err(Errno::ECHILD)
        )
    }
}
