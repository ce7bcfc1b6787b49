//! The readiness gate: a socket pair, one end inherited by the handler as `WORKER_READY_FD`.
//! The runtime writes `ready` when the worker can serve, or closes it unwritten when start-up
//! failed. A handler may first write `waiting` to it once its imports are done: the start-up
//! report then knows how long the imports took and how long the handler waited at the gate.
//! A handler that only reads (the protocol of a plain pipe) works unchanged.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How often the watcher looks whether it should stop waiting.
const WATCH_TICK: Duration = Duration::from_secs(1);
/// After the gate opened, how long a handler still importing may take to say `waiting` before
/// the report goes out without its import time (a handler may keep the socket open unread).
const LATE_LIMIT: Duration = Duration::from_secs(60);

type Callback = Box<dyn FnOnce(Option<Instant>) + Send>;

/// What the watcher learnt, and who waits for it.
#[derive(Default)]
struct Arrival {
    /// The watcher is done: the handler said `waiting` (when), or ended without saying it.
    known: Option<Option<Instant>>,
    waiting: Option<Callback>,
    /// Set when the gate opens: the watcher gives up at this moment.
    give_up_at: Option<Instant>,
}

/// The watcher's findings, shared.
#[derive(Default)]
struct Shared {
    arrival: Mutex<Arrival>,
    done: Condvar,
}

/// The runtime's end.
pub struct Gate {
    stream: UnixStream,
    shared: Arc<Shared>,
}

/// Outlives the gate: lets the exit wait for a report that waits for the handler.
#[derive(Clone)]
pub struct Watch {
    shared: Arc<Shared>,
}

/// Creates the gate; returns the runtime's end and the handler's (close-on-exec: the spawn
/// clears that flag for the handler only).
pub fn pair() -> io::Result<(Gate, OwnedFd)> {
    let (ours, theirs) = UnixStream::pair()?;
    let shared = Arc::new(Shared::default());
    let reader = ours.try_clone()?;
    // The watcher wakes up every tick to see whether to give up; only reads on our end (the
    // watcher's) are affected, writing `ready` is not.
    reader.set_read_timeout(Some(WATCH_TICK))?;
    let watched = Arc::clone(&shared);
    thread::Builder::new()
        .name("gate-watch".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let at = watch(reader, &watched.arrival);
            // The callback runs under the lock, so `Watch::finish` returns only after it.
            if let Ok(mut a) = watched.arrival.lock() {
                a.known = Some(at);
                if let Some(callback) = a.waiting.take() {
                    callback(at);
                }
            }
            watched.done.notify_all();
        })?;
    Ok((
        Gate {
            stream: ours,
            shared,
        },
        OwnedFd::from(theirs),
    ))
}

/// Reads the handler's first line: `Some(when)` if it is `waiting`; `None` at any other line,
/// the handler's exit or closing of the gate, or once the gate has been open for LATE_LIMIT.
fn watch(mut reader: UnixStream, arrival: &Mutex<Arrival>) -> Option<Instant> {
    let mut line = Vec::new();
    let mut buf = [0u8; 16];
    while line.len() < 64 && !line.contains(&b'\n') {
        match reader.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => line.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                let give_up = arrival.lock().ok().and_then(|a| a.give_up_at);
                if give_up.is_some_and(|at| Instant::now() >= at) {
                    return None;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let first = line.split(|b| *b == b'\n').next().unwrap_or_default();
    (first.trim_ascii() == b"waiting").then(Instant::now)
}

impl Gate {
    /// Calls `f` with the handler's arrival at the gate (`None`: it never said `waiting`), at
    /// once if that is known, else from the watcher thread once it is.
    pub fn when_arrived(&self, f: impl FnOnce(Option<Instant>) + Send + 'static) {
        let known = match self.shared.arrival.lock() {
            Ok(mut a) => match a.known {
                Some(at) => Some(at),
                None => {
                    a.waiting = Some(Box::new(f));
                    return;
                }
            },
            Err(_) => Some(None),
        };
        if let Some(at) = known {
            f(at);
        }
    }

    /// The arrival, if the handler has already said `waiting`.
    pub fn arrived(&self) -> Option<Instant> {
        self.shared
            .arrival
            .lock()
            .ok()
            .and_then(|a| a.known.flatten())
    }

    pub fn watch(&self) -> Watch {
        Watch {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Tells the handler to serve.
    pub fn open(mut self) -> io::Result<()> {
        if let Ok(mut a) = self.shared.arrival.lock() {
            a.give_up_at = Some(Instant::now() + LATE_LIMIT);
        }
        self.stream.write_all(b"ready\n")
    }
}

impl Drop for Gate {
    /// Ends the write side for every holder at once (the watcher holds a clone): a handler
    /// still waiting then reads end of file.
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

impl Watch {
    /// At exit: if a callback waits, waits up to `limit` for the watcher (the handler is gone,
    /// so it ends at once), then runs the callback with what is known.
    pub fn finish(&self, limit: Duration) {
        let Ok(guard) = self.shared.arrival.lock() else {
            return;
        };
        let Ok((mut a, _)) = self
            .shared
            .done
            .wait_timeout_while(guard, limit, |a| a.known.is_none() && a.waiting.is_some())
        else {
            return;
        };
        if let Some(callback) = a.waiting.take() {
            callback(a.known.flatten());
        }
    }
}
