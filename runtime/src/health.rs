//! The health endpoint (`PORT_HEALTH`): `GET /ping` on 0.0.0.0 answers 204 while the worker
//! starts, 200 once it is ready, 503 while it stops or after the WebUI died: what RunPod's
//! load-balancing endpoints ask. `GET /ping?ready` answers 503 instead of 204, for Kubernetes,
//! whose HTTP probes take every 2xx as success.
//!
//! It answers from one atomic: no request ever reaches the WebUI (its API stays on loopback).
//! A small HTTP/1.1 responder written here: one route, no body, `Connection: close`. Each
//! connection gets its own small thread with read and write timeouts and a request-size limit,
//! and the number of connections is capped, so a slow or hostile client cannot hold up probes.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// A probe's request is one line and a few headers.
const MAX_REQUEST: usize = 4 * 1024;
/// Kubernetes probes time out after 1 s by default; a client slower than this is dropped.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once; more are closed unanswered.
const MAX_CONNECTIONS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Starting = 0,
    Ready = 1,
    Stopping = 2,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            0 => State::Starting,
            1 => State::Ready,
            _ => State::Stopping,
        }
    }

    fn status(self) -> (u16, &'static str) {
        match self {
            State::Starting => (204, "No Content"),
            State::Ready => (200, "OK"),
            State::Stopping => (503, "Service Unavailable"),
        }
    }
}

/// The state the endpoint reports; cheap to clone and set from anywhere.
#[derive(Clone)]
pub struct Health {
    state: Arc<AtomicU8>,
}

impl Health {
    /// Binds `0.0.0.0:port` and serves from a thread of its own.
    pub fn serve(port: u16) -> io::Result<Health> {
        let listener = TcpListener::bind(("0.0.0.0", port))?;
        let health = Health {
            state: Arc::new(AtomicU8::new(State::Starting as u8)),
        };
        let state = Arc::clone(&health.state);
        thread::Builder::new()
            .name("health".into())
            .stack_size(64 * 1024)
            .spawn(move || accept_loop(&listener, &state))?;
        Ok(health)
    }

    /// Ready, unless stopping already began (a stop is final).
    pub fn ready(&self) {
        let _ = self.state.compare_exchange(
            State::Starting as u8,
            State::Ready as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    pub fn stopping(&self) {
        self.state.store(State::Stopping as u8, Ordering::SeqCst);
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::SeqCst))
    }
}

fn accept_loop(listener: &TcpListener, state: &Arc<AtomicU8>) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            continue; // dropped: closed unanswered
        }
        let (state, count) = (Arc::clone(state), Arc::clone(&active));
        let spawned = thread::Builder::new()
            .name("health-conn".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let _ = answer(stream, &state);
                count.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn answer(mut stream: TcpStream, state: &AtomicU8) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let _ = stream.set_nodelay(true);
    let head = read_head(&mut stream)?;
    let (status, reason) = match head {
        Head::TooLarge => (431, "Request Header Fields Too Large"),
        Head::Complete(text) => route(&text, State::from_u8(state.load(Ordering::SeqCst))),
    };
    let mut response = format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\n");
    match status {
        // A 204 carries no Content-Length (RFC 9110).
        204 => {}
        405 => response.push_str("Allow: GET\r\nContent-Length: 0\r\n"),
        _ => response.push_str("Content-Length: 0\r\n"),
    }
    response.push_str("\r\n");
    stream.write_all(response.as_bytes())?;
    stream.flush()?;
    if status == 431 {
        // Closing with unread request bytes would reset the connection and lose the answer:
        // read a bounded rest first.
        let _ = stream.shutdown(std::net::Shutdown::Write);
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut sink = [0u8; 1024];
        for _ in 0..64 {
            if matches!(stream.read(&mut sink), Ok(0) | Err(_)) {
                break;
            }
        }
    }
    Ok(())
}

enum Head {
    Complete(String),
    TooLarge,
}

/// Reads up to the blank line that ends the request head (a probe sends no body).
fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if head.len() > MAX_REQUEST {
            return Ok(Head::TooLarge);
        }
    }
    Ok(Head::Complete(String::from_utf8_lossy(&head).into_owned()))
}

/// The status for a request head.
fn route(head: &str, state: State) -> (u16, &'static str) {
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return (400, "Bad Request");
    };
    if !version.starts_with("HTTP/1.") {
        return (400, "Bad Request");
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/ping" {
        return (404, "Not Found");
    }
    if method != "GET" {
        return (405, "Method Not Allowed");
    }
    // Kubernetes counts every status from 200 to 399 as success, 204 included: its readiness
    // probe asks `/ping?ready`, which is 200 only once ready.
    if query.split('&').any(|q| q == "ready") && state == State::Starting {
        return (503, "Service Unavailable");
    }
    state.status()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_ping_is_answered_with_the_state() {
        let get = "GET /ping HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(route(get, State::Starting).0, 204);
        assert_eq!(route(get, State::Ready).0, 200);
        assert_eq!(route(get, State::Stopping).0, 503);
        assert_eq!(
            route("GET /ping?probe=1 HTTP/1.0\r\n\r\n", State::Ready).0,
            200
        );
        let strict = "GET /ping?ready HTTP/1.1\r\n\r\n";
        assert_eq!(route(strict, State::Starting).0, 503);
        assert_eq!(route(strict, State::Ready).0, 200);
        assert_eq!(route(strict, State::Stopping).0, 503);
        assert_eq!(route("POST /ping HTTP/1.1\r\n\r\n", State::Ready).0, 405);
        assert_eq!(
            route("GET /sdapi/v1/txt2img HTTP/1.1\r\n\r\n", State::Ready).0,
            404
        );
        assert_eq!(route("GET /pingx HTTP/1.1\r\n\r\n", State::Ready).0, 404);
        assert_eq!(route("garbage\r\n\r\n", State::Ready).0, 400);
        assert_eq!(route("GET /ping SPDY/3\r\n\r\n", State::Ready).0, 400);
    }

    #[test]
    fn stopping_is_final() {
        let health = Health {
            state: Arc::new(AtomicU8::new(State::Starting as u8)),
        };
        health.stopping();
        health.ready();
        assert_eq!(health.state(), State::Stopping);
    }
}
