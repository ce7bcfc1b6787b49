//! The runtime's descendants, read from /proc. A setsid'd grandchild has left every process group
//! the runtime knows, and an orphan has lost its parent; as child subreaper the runtime is still
//! their ancestor, so walking parent links from /proc finds them all. (One read per process: no
//! crate needed for it.)

use std::collections::HashMap;
use std::fs;

pub use nix::unistd::Pid;

/// A process's parent and scheduler state, from /proc/<pid>/stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub ppid: i32,
    /// `R`, `S`, `D`, ... `Z` for a zombie (exited, not yet reaped).
    pub state: char,
}

impl ProcStat {
    /// Whether it still runs: a zombie or a dead entry runs nothing, it only awaits waitpid.
    pub fn is_live(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

pub fn stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields that follow start after the
    // last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(ProcStat { ppid, state })
}

/// Every process on the machine, as /proc shows it now. Processes come and go while it is read:
/// one that vanished midway is simply missing.
pub fn snapshot() -> Vec<(i32, ProcStat)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?)))
        .collect()
}

/// Every live (non-zombie) descendant of `root`, parents before children.
pub fn live_descendants(root: Pid) -> Vec<Pid> {
    let mut children: HashMap<i32, Vec<(i32, ProcStat)>> = HashMap::new();
    for (pid, stat) in snapshot() {
        children.entry(stat.ppid).or_default().push((pid, stat));
    }
    let mut found = Vec::new();
    let mut queue = vec![root.as_raw()];
    while let Some(parent) = queue.pop() {
        for &(pid, stat) in children.get(&parent).into_iter().flatten() {
            if stat.is_live() {
                found.push(Pid::from_raw(pid));
            }
            // A zombie's own children were reparented already; walking on costs nothing.
            queue.push(pid);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_child_and_its_grandchild() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .expect("sh runs");
        let me = Pid::this();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let child_pid = child.id() as i32;
        let is_grandchild = |p: &Pid| stat(p.as_raw()).is_some_and(|s| s.ppid == child_pid);
        let mut seen = Vec::new();
        while std::time::Instant::now() < deadline {
            seen = live_descendants(me);
            if seen.iter().any(is_grandchild) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let found_grandchild = seen.iter().any(is_grandchild);
        for pid in seen.iter().filter(|p| is_grandchild(p)) {
            let _ = nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(seen.contains(&Pid::from_raw(child_pid)));
        assert!(found_grandchild, "grandchild not found: {seen:?}");
    }
}
