//! What the bench needs from the kernel: exit moments of processes it did not start (pidfd), the
//! process tree under a launcher (/proc), a launcher's own memory, free loopback ports, and a way to
//! stop whatever a run left behind.

use std::net::TcpListener;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::mpsc::Sender;
use std::thread;
use std::time::Instant;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use runtime::process_tree;

/// A loopback port nobody listens on right now. The bench takes a fresh one per run, so a WebUI
/// that outlived its run (or anything else on the machine) cannot answer for the next one.
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).context("cannot find a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Sends `event(moment)` when process `pid` ends (becomes a zombie or is gone), from a thread
/// blocked on a pidfd: the exact moment, with no polling, for any process, not only our children.
/// Returns false when the process no longer exists (already reaped): its moment is unknown.
pub fn watch_exit<E: Send + 'static>(
    pid: i32,
    tx: Sender<E>,
    event: impl FnOnce(Instant) -> E + Send + 'static,
) -> bool {
    // nix has no pidfd_open wrapper, so this one call stays raw libc.
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no memory is
    // shared with the kernel.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        return false;
    }
    // SAFETY: a descriptor pidfd_open just returned, owned by nothing else; closed on drop.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    thread::Builder::new()
        .name(format!("exit-of-{pid}"))
        .spawn(move || {
            let mut poll_fd = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            while let Err(Errno::EINTR) = poll(&mut poll_fd, PollTimeout::NONE) {}
            let moment = Instant::now();
            let _ = tx.send(event(moment));
        })
        .is_ok()
}

/// The argv of a process, or empty when it is gone.
pub fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Direct children of `pid`. (The kernel's /proc/<pid>/task/<tid>/children is not built into
/// every kernel (it needs CONFIG_PROC_CHILDREN), so parents are read from each process's stat.)
pub fn children(pid: i32) -> Vec<i32> {
    process_tree::snapshot()
        .into_iter()
        .filter(|(_, stat)| stat.ppid == pid)
        .map(|(child, _)| child)
        .collect()
}

/// Every live process below `root`, at any depth.
pub fn descendants(root: i32) -> Vec<i32> {
    process_tree::live_descendants(process_tree::Pid::from_raw(root))
        .into_iter()
        .map(|p| p.as_raw())
        .collect()
}

/// SIGKILL to `root` and everything below it: how the bench ends a run that would never end on its
/// own (the reference's `wait` on a WebUI that ignores SIGTERM), and its clean-up after an error.
/// The tree is read first, so processes orphaned by the kill are still found.
pub fn kill_tree(root: i32) {
    let mut pids = descendants(root);
    pids.push(root);
    for pid in pids {
        // ESRCH (already gone) is fine.
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// (VmHWM, VmRSS) of one process in KiB: its own peak and current resident memory. Children are
/// separate processes with their own figures, so they are not counted.
pub fn memory_kib(pid: i32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn sees_its_own_child_and_its_exit() {
        let mut child = Command::new("sleep").arg("60").spawn().expect("sleep runs");
        let pid = child.id() as i32;
        let me = std::process::id() as i32;
        assert!(children(me).contains(&pid));
        assert!(descendants(me).contains(&pid));
        assert_eq!(cmdline(pid), ["sleep", "60"]);
        let (tx, rx) = mpsc::channel();
        assert!(watch_exit(pid, tx, |_| ()));
        assert!(
            rx.try_recv().is_err(),
            "an exit reported while it still runs"
        );
        kill_tree(pid);
        rx.recv_timeout(Duration::from_secs(60)).expect("exit seen");
        // Seen as it happens, before anybody reaps it: the process is still a zombie.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("a zombie's stat");
        assert_eq!(
            stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]),
            Some("Z")
        );
        child.wait().expect("reaped");
    }

    #[test]
    fn reads_its_own_memory() {
        let (hwm, rss) = memory_kib(std::process::id() as i32).expect("status readable");
        assert!(hwm >= rss && rss > 0);
    }

    #[test]
    fn finds_a_free_port() {
        let port = free_port().expect("a port");
        assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
}
