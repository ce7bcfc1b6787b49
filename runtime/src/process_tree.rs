//! The runtime's descendants, read from /proc. A setsid'd grandchild has left every process group
//! the runtime knows, and an orphan has lost its parent; as child subreaper the runtime is still
//! their ancestor, so walking parent links from /proc finds them all. (One read per process: no
//! crate needed for it.)

use std::collections::HashMap;
use std::fs;

use nix::unistd::Pid;

/// A process's parent and state letter, from /proc/<pid>/stat.
fn stat(pid: i32) -> Option<(i32, char)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields that follow start after the
    // last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Every live (non-zombie) descendant of `root`, parents before children.
pub fn live_descendants(root: Pid) -> Vec<Pid> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: HashMap<i32, Vec<(i32, char)>> = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some((ppid, state)) = stat(pid) {
            children.entry(ppid).or_default().push((pid, state));
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root.as_raw()];
    while let Some(parent) = queue.pop() {
        for &(pid, state) in children.get(&parent).into_iter().flatten() {
            // A zombie's children (none live) are already reparented; it only awaits waitpid.
            if state != 'Z' && state != 'X' {
                found.push(Pid::from_raw(pid));
            }
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
        let is_grandchild = |p: &Pid| stat(p.as_raw()).is_some_and(|(ppid, _)| ppid == child_pid);
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
