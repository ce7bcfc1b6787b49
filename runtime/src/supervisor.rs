//! Process supervision: the one owner of waitpid. Signals arrive through a signalfd (see
//! `signals`), children are reaped in one place, and the launcher sees a stream of events: a stop
//! signal, a deliberate second one, a known child's exit, the API becoming ready, or a deadline.
//!
//! The runtime is a child subreaper (PID 1 in a container is one anyway), so every orphan of the
//! tree it started is reparented to it and reaped here; unknown pids are reaped silently.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::process_tree::live_descendants;
use crate::signals::{self, Arrival, Meaning, StopSignals};

/// How often teardown looks at /proc while it waits for processes to go.
const SWEEP_INTERVAL: Duration = Duration::from_millis(10);
/// A process in uninterruptible sleep ignores even SIGKILL for a while; do not hang on it forever.
const KILL_WAIT_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    GpuCheck,
    Webui,
    Handler,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::GpuCheck => "CUDA check",
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
    /// The first stop signal (a burst right after it is the same stop).
    Stop(Signal),
    /// A deliberate second stop signal: kill at once.
    Again(Signal),
    Exited(Role, ExitStatus),
    Ready,
    Deadline,
}

/// How a wait for one process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    Exited,
    Deadline,
    Stop(Signal),
    Again(Signal),
}

pub struct Supervisor {
    signals: SignalFd,
    stops: StopSignals,
    ready: Option<File>,
    pending: VecDeque<Event>,
    running: HashMap<Pid, Role>,
    process_groups: HashMap<Role, Pid>,
    exited: HashMap<Role, ExitStatus>,
    /// A deliberate second stop signal arrived: no more grace periods.
    forced: bool,
}

/// Sets `command` up the way every child of the runtime starts: in a process group of its own (a
/// signal reaches its whole tree, and a terminal's Ctrl-C reaches only the runtime), stdin from
/// /dev/null (a child reading a terminal it does not own would be stopped by SIGTTIN), no blocked
/// signal, and SIGKILL when the runtime dies. `inherit` names a descriptor the child keeps across
/// exec (the readiness gate).
pub fn prepare(command: &mut Command, inherit: Option<RawFd>) {
    command.process_group(0).stdin(Stdio::null());
    command.env_remove(crate::tcmalloc::REEXEC_MARKER);
    let parent = Pid::this();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (pthread_sigmask, prctl, getppid, fcntl).
    unsafe {
        command.pre_exec(move || {
            // The mask that routes signals to the runtime's signalfd is inherited across exec:
            // a WebUI with SIGTERM blocked could never stop gracefully. (std resets it too; this
            // does not depend on that.)
            SigSet::empty().thread_set_mask()?;
            // If the runtime is SIGKILLed, its direct children follow instead of leaking.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The runtime died between fork and prctl: the signal will never come.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::other(
                    "worker-runtime exited while starting a child",
                ));
            }
            if let Some(fd) = inherit {
                let flags = nix::libc::fcntl(fd, nix::libc::F_GETFD);
                if flags < 0
                    || nix::libc::fcntl(fd, nix::libc::F_SETFD, flags & !nix::libc::FD_CLOEXEC) < 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

impl Supervisor {
    /// Must run before any thread exists: threads inherit the blocked mask, and a stop signal
    /// sent meanwhile stays pending instead of killing (or, as PID 1, being lost on) the runtime.
    pub fn new() -> io::Result<Self> {
        let signals = signals::take_all()?;
        nix::sys::prctl::set_child_subreaper(true)?;
        Ok(Self {
            signals,
            stops: StopSignals::default(),
            ready: None,
            pending: VecDeque::new(),
            running: HashMap::new(),
            process_groups: HashMap::new(),
            exited: HashMap::new(),
            forced: false,
        })
    }

    /// Starts `command` as a child set up by [`prepare`].
    pub fn spawn(
        &mut self,
        role: Role,
        command: &mut Command,
        inherit: Option<RawFd>,
    ) -> io::Result<Pid> {
        prepare(command, inherit);
        Ok(self.start(role, command)?.0)
    }

    /// `spawn` with the child's stdout as a pipe, returned.
    pub fn spawn_piped(
        &mut self,
        role: Role,
        command: &mut Command,
    ) -> io::Result<(Pid, ChildStdout)> {
        prepare(command, None);
        command.stdout(Stdio::piped());
        let (pid, stdout) = self.start(role, command)?;
        let stdout = stdout.ok_or_else(|| io::Error::other("no stdout pipe"))?;
        Ok((pid, stdout))
    }

    fn start(
        &mut self,
        role: Role,
        command: &mut Command,
    ) -> io::Result<(Pid, Option<ChildStdout>)> {
        // The std Child handle is dropped unwaited on purpose: reaping is done by `reap`, for
        // every pid, in one place.
        let mut child = command.spawn()?;
        let pid = Pid::from_raw(child.id() as i32);
        self.running.insert(pid, role);
        self.process_groups.insert(role, pid);
        Ok((pid, child.stdout.take()))
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
            let signo = info.ssi_signo as i32;
            match signals::meaning(signo) {
                Meaning::Child => self.reap(),
                Meaning::Stop(signal) => match self.stops.arrive(Instant::now()) {
                    Arrival::First => self.pending.push_back(Event::Stop(signal)),
                    Arrival::Burst(after) => tracing::info!(
                        "received {signal} {} ms after the first stop signal: the same stop (a \
                         second signal kills at once from {:.0} s after the first)",
                        after.as_millis(),
                        signals::BURST.as_secs_f64()
                    ),
                    Arrival::Again => self.pending.push_back(Event::Again(signal)),
                },
                Meaning::Ignore { quiet: true } => {
                    tracing::debug!("received {}: ignored", signals::name(signo))
                }
                Meaning::Ignore { quiet: false } => tracing::info!(
                    "received {}: ignored (worker-runtime acts on SIGTERM, SIGINT, SIGHUP and \
                     SIGQUIT only)",
                    signals::name(signo)
                ),
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

    /// Waits until the role's leader exits, `until` passes, or a stop signal arrives.
    pub fn wait_exit(&mut self, role: Role, until: Instant) -> Waited {
        while self.is_running(role) {
            match self.next(Some(until)) {
                Event::Deadline => return Waited::Deadline,
                Event::Stop(signal) => return Waited::Stop(signal),
                Event::Again(signal) => return Waited::Again(signal),
                Event::Exited(..) | Event::Ready => {}
            }
        }
        Waited::Exited
    }

    /// SIGKILL to the role's group, at once; waits (bounded) until its leader is reaped. Other
    /// events meanwhile (a stop signal) stay queued for the caller.
    pub fn kill_now(&mut self, role: Role) {
        self.signal_group(role, Signal::SIGKILL);
        let limit = Instant::now() + KILL_WAIT_LIMIT;
        let mut kept = Vec::new();
        while self.is_running(role) && Instant::now() < limit {
            match self.next(Some((Instant::now() + SWEEP_INTERVAL).min(limit))) {
                Event::Exited(r, _) if r == role => {}
                Event::Deadline => {}
                other => kept.push(other),
            }
        }
        for event in kept.into_iter().rev() {
            self.pending.push_front(event);
        }
    }

    /// Kill everything at once from here on (a deliberate second stop signal).
    pub fn force(&mut self) {
        self.forced = true;
    }

    /// Ends every process left under the runtime, with one deadline for all: SIGTERM now to the
    /// known groups and every live descendant (setsid'd, orphaned), SIGKILL to whatever remains
    /// at `deadline`. `spare` keeps one role's group out of the SIGTERM (a handler that was
    /// already told to stop, or that the closed gate tells to leave, and may still finish
    /// cleanly): it gets only the SIGKILL at the deadline, if it is still there. A deliberate
    /// second stop signal kills at once. Returns once every child is reaped.
    pub fn terminate(&mut self, deadline: Instant, grace: Duration, spare: Option<Role>) {
        let me = Pid::this();
        if !self.forced {
            self.term_all(spare);
        }
        while !self.forced {
            let left = live_descendants(me);
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    "{} processes still running at the stop deadline ({:.1} s, SHUTDOWN_GRACE): \
                     SIGKILL",
                    left.len(),
                    grace.as_secs_f64()
                );
                break;
            }
            let wake = (Instant::now() + SWEEP_INTERVAL).min(deadline);
            match self.next(Some(wake)) {
                Event::Stop(signal) => tracing::info!(
                    "received {signal} while shutting down: everything is already stopping, \
                     within {:.1} s (a second signal kills at once)",
                    deadline
                        .saturating_duration_since(Instant::now())
                        .as_secs_f64()
                ),
                Event::Again(signal) => {
                    tracing::warn!("received {signal} again: killing at once");
                    self.forced = true;
                }
                Event::Exited(..) | Event::Ready | Event::Deadline => {}
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
        self.pending
            .retain(|e| !matches!(e, Event::Stop(_) | Event::Again(_)));
    }

    /// SIGTERM to every known group and every live descendant, except `spare`'s group.
    fn term_all(&self, spare: Option<Role>) {
        let spared_group = spare.and_then(|role| self.process_groups.get(&role).copied());
        for role in [Role::GpuCheck, Role::Webui, Role::Handler] {
            if Some(role) != spare && self.is_running(role) {
                self.signal_group(role, Signal::SIGTERM);
            }
        }
        for pid in live_descendants(Pid::this()) {
            if spared_group.is_some() && nix::unistd::getpgid(Some(pid)).ok() == spared_group {
                continue;
            }
            let _ = kill(pid, Signal::SIGTERM);
        }
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
