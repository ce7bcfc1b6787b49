//! Who holds a listening TCP port. The kernel lists listening sockets with their inodes in
//! /proc/net/tcp and /proc/net/tcp6; a process holds one when a descriptor in /proc/<pid>/fd
//! points at `socket:[inode]`. The readiness probe counts a 200 only when every socket that
//! accepts loopback connections on the WebUI's port belongs to the WebUI's process tree: another
//! process that took the port would otherwise answer in the WebUI's place.

use std::collections::HashSet;
use std::fs;

use nix::unistd::Pid;

use crate::process_tree::live_descendants;

/// The kernel's `st` value for a listening socket.
const LISTEN: &str = "0A";

/// Local addresses that accept a connection to 127.0.0.1, as /proc/net/tcp{,6} spell them (IPv4
/// in host byte order, little-endian here): 127.0.0.1, 0.0.0.0, ::, ::ffff:127.0.0.1.
const IPV4_LOOPBACK_REACHABLE: [&str; 2] = ["0100007F", "00000000"];
const IPV6_LOOPBACK_REACHABLE: [&str; 2] = [
    "00000000000000000000000000000000",
    "0000000000000000FFFF00000100007F",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// Every listening socket on the port belongs to the tree.
    Tree,
    /// At least one belongs to a process outside it.
    Other,
    /// Nothing listens on the port.
    Nobody,
    /// The kernel's socket tables cannot be read here (a restricted /proc): no verdict.
    Unknown,
}

/// Who holds `port` (on a loopback-reachable address) relative to `root` and its descendants.
pub fn holder(port: u16, root: Pid) -> Holder {
    let Some(sockets) = listening_inodes(port) else {
        return Holder::Unknown;
    };
    if sockets.is_empty() {
        return Holder::Nobody;
    }
    let mut pids = vec![root];
    pids.extend(live_descendants(root));
    let held: HashSet<u64> = pids.into_iter().flat_map(socket_inodes).collect();
    if sockets.iter().all(|inode| held.contains(inode)) {
        Holder::Tree
    } else {
        Holder::Other
    }
}

fn listening_inodes(port: u16) -> Option<Vec<u64>> {
    let mut found = Vec::new();
    let mut read_any = false;
    for (table, reachable) in [
        ("/proc/net/tcp", &IPV4_LOOPBACK_REACHABLE[..]),
        ("/proc/net/tcp6", &IPV6_LOOPBACK_REACHABLE[..]),
    ] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        read_any = true;
        found.extend(parse_table(&text, port, reachable));
    }
    read_any.then_some(found)
}

/// Inodes of listening sockets on `port` at one of the `reachable` addresses.
fn parse_table(text: &str, port: u16, reachable: &[&str]) -> Vec<u64> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (address, local_port) = fields.get(1)?.split_once(':')?;
            let listening = *fields.get(3)? == LISTEN;
            let matches = u16::from_str_radix(local_port, 16).ok()? == port
                && reachable.iter().any(|r| r.eq_ignore_ascii_case(address));
            (listening && matches).then(|| fields.get(9)?.parse().ok())?
        })
        .collect()
}

/// The socket inodes among a process's descriptors (none if it is gone or not readable).
fn socket_inodes(pid: Pid) -> Vec<u64> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let target = fs::read_link(entry.path()).ok()?;
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_of_this_process_is_found_and_another_port_is_nobodys() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert_eq!(holder(port, Pid::this()), Holder::Tree);
        let mut stranger = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let stranger_pid = Pid::from_raw(stranger.id() as i32);
        assert_eq!(holder(port, stranger_pid), Holder::Other);
        let _ = stranger.kill();
        let _ = stranger.wait();
        drop(listener);
        // A child that another test thread is spawning holds a copy of every descriptor between
        // its fork and its exec, so the socket may outlive the drop by a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut seen = holder(port, Pid::this());
        while seen != Holder::Nobody && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            seen = holder(port, Pid::this());
        }
        assert_eq!(seen, Holder::Nobody);
    }

    #[test]
    fn table_lines_are_read_by_state_address_and_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0 100 0 0 10 0\n\
   1: 0100007F:0BB8 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1 0 100 0 0 10 0\n\
   2: 0200007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4444 1 0 100 0 0 10 0\n";
        assert_eq!(
            parse_table(table, 3000, &IPV4_LOOPBACK_REACHABLE),
            vec![4242]
        );
        assert_eq!(
            parse_table(table, 3001, &IPV4_LOOPBACK_REACHABLE),
            Vec::<u64>::new()
        );
    }
}
