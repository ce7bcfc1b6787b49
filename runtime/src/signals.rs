//! Which signals the runtime takes and what each one means.
//!
//! Every catchable signal is blocked and read from a signalfd: as PID 1 a signal without a handler
//! is dropped, and outside a container (`cargo xtask run-local`, tests) its default action would
//! end the runtime and orphan the worker. Left at their default: SIGKILL and SIGSTOP (they cannot
//! be caught), the faults the kernel raises in the runtime itself (SIGSEGV, SIGBUS, SIGFPE,
//! SIGILL, SIGTRAP, SIGSYS, SIGABRT: blocking them would only hide a crash), and SIGPIPE, which is
//! ignored (Rust's runtime does so before `main`) so that a closed log pipe is an error, not death.
//!
//! - Stop: SIGTERM, SIGINT, SIGHUP, SIGQUIT. The handler gets SIGTERM for SIGHUP and SIGQUIT
//!   (Python dies of those two and the job in flight would be lost) and SIGINT as it is.
//! - SIGCHLD: reap.
//! - Everything else (SIGUSR1, SIGUSR2, SIGALRM, SIGWINCH, SIGTSTP, real-time signals...): ignored,
//!   and logged.
//!
//! Stop signals that arrive within `BURST` of the first are the same stop (GNU `timeout` signals
//! its child and then the child's group; a supervisor may signal the runtime and its group); a
//! later one is a deliberate second signal and kills at once.

use std::io;
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// Stop signals closer than this to the first are one stop.
pub const BURST: Duration = Duration::from_secs(1);

/// Left to their default action (see the module documentation).
const NOT_BLOCKED: [libc::c_int; 10] = [
    libc::SIGKILL,
    libc::SIGSTOP,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGSYS,
    libc::SIGABRT,
    libc::SIGPIPE,
];

/// What a signal asks of the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    Stop(Signal),
    Child,
    /// Ignored; `quiet` ones (a terminal resize, SIGCONT, SIGURG) are not worth a log line.
    Ignore {
        quiet: bool,
    },
}

pub fn meaning(signo: libc::c_int) -> Meaning {
    match Signal::try_from(signo) {
        Ok(Signal::SIGCHLD) => Meaning::Child,
        Ok(s @ (Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP | Signal::SIGQUIT)) => {
            Meaning::Stop(s)
        }
        Ok(Signal::SIGWINCH | Signal::SIGCONT | Signal::SIGURG) => Meaning::Ignore { quiet: true },
        _ => Meaning::Ignore { quiet: false },
    }
}

/// The signal the handler gets for stop signal `received`.
pub fn forwarded(received: Signal) -> Signal {
    match received {
        Signal::SIGHUP | Signal::SIGQUIT => Signal::SIGTERM,
        other => other,
    }
}

/// `SIGUSR1`, `SIGRTMIN+3`, or `signal 40`.
pub fn name(signo: libc::c_int) -> String {
    match Signal::try_from(signo) {
        Ok(signal) => signal.to_string(),
        Err(_) if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&signo) => {
            format!("SIGRTMIN+{}", signo - libc::SIGRTMIN())
        }
        Err(_) => format!("signal {signo}"),
    }
}

/// Blocks every catchable signal for this thread (and the threads it starts) and returns the
/// signalfd that reads them. Must run before any thread exists.
pub fn take_all() -> io::Result<SignalFd> {
    // SAFETY: sigfillset/sigdelset only write the set they are given, which is initialised here.
    let mask = unsafe {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // glibc leaves its own two thread signals out of a full set.
        if libc::sigfillset(set.as_mut_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        for signo in NOT_BLOCKED {
            libc::sigdelset(set.as_mut_ptr(), signo);
        }
        SigSet::from_sigset_t_unchecked(set.assume_init())
    };
    mask.thread_block()?;
    Ok(SignalFd::with_flags(
        &mask,
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )?)
}

/// How a stop signal relates to those before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    First,
    /// Within `BURST` of the first: the same stop.
    Burst(Duration),
    /// A deliberate second signal.
    Again,
}

#[derive(Debug, Default)]
pub struct StopSignals {
    first: Option<Instant>,
}

impl StopSignals {
    pub fn arrive(&mut self, now: Instant) -> Arrival {
        match self.first {
            None => {
                self.first = Some(now);
                Arrival::First
            }
            Some(first) if now.saturating_duration_since(first) < BURST => {
                Arrival::Burst(now.saturating_duration_since(first))
            }
            Some(_) => Arrival::Again,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_one_stop_and_a_later_signal_is_a_second_one() {
        let mut stops = StopSignals::default();
        let t = Instant::now();
        assert_eq!(stops.arrive(t), Arrival::First);
        assert_eq!(
            stops.arrive(t + Duration::from_millis(1)),
            Arrival::Burst(Duration::from_millis(1))
        );
        assert_eq!(stops.arrive(t + BURST), Arrival::Again);
    }

    #[test]
    fn hup_and_quit_become_term_and_the_rest_is_named() {
        assert_eq!(forwarded(Signal::SIGHUP), Signal::SIGTERM);
        assert_eq!(forwarded(Signal::SIGQUIT), Signal::SIGTERM);
        assert_eq!(forwarded(Signal::SIGINT), Signal::SIGINT);
        assert_eq!(meaning(libc::SIGUSR1), Meaning::Ignore { quiet: false });
        assert_eq!(meaning(libc::SIGWINCH), Meaning::Ignore { quiet: true });
        assert_eq!(name(libc::SIGRTMIN() + 3), "SIGRTMIN+3");
    }
}
