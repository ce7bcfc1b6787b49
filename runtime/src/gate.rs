//! The readiness gate: a socket pair, one end inherited by the handler as `WORKER_READY_FD`.
//! The runtime writes `ready` when the worker can serve, or closes it unwritten when start-up
//! failed. A handler may first write `waiting` to it once its imports are done: the start-up
//! report then knows how long the imports took and how long the handler waited at the gate.
//! A handler that only reads (the protocol of a plain pipe) works unchanged.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

type Callback = Box<dyn FnOnce(Option<Instant>) + Send>;

/// What the watcher learnt, and who waits for it.
#[derive(Default)]
struct Arrival {
    /// The watcher is done: the handler said `waiting` (when), or ended without saying it.
    known: Option<Option<Instant>>,
    waiting: Option<Callback>,
}

/// The runtime's end.
pub struct Gate {
    stream: UnixStream,
    arrival: Arc<Mutex<Arrival>>,
}

/// Creates the gate; returns the runtime's end and the handler's (close-on-exec: the spawn
/// clears that flag for the handler only).
pub fn pair() -> io::Result<(Gate, OwnedFd)> {
    let (ours, theirs) = UnixStream::pair()?;
    let arrival = Arc::new(Mutex::new(Arrival::default()));
    let reader = ours.try_clone()?;
    let watched = Arc::clone(&arrival);
    thread::Builder::new()
        .name("gate-watch".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut line = String::new();
            // Ends at the handler's line, its exit or closing of the gate, or our shutdown.
            let at = match BufReader::new(reader.take(64)).read_line(&mut line) {
                Ok(_) if line.trim() == "waiting" => Some(Instant::now()),
                _ => None,
            };
            let callback = watched.lock().ok().and_then(|mut a| {
                a.known = Some(at);
                a.waiting.take()
            });
            if let Some(callback) = callback {
                callback(at);
            }
        })?;
    Ok((
        Gate {
            stream: ours,
            arrival,
        },
        OwnedFd::from(theirs),
    ))
}

impl Gate {
    /// Calls `f` with the handler's arrival at the gate (`None`: it never said `waiting`), at
    /// once if that is known, else from the watcher thread once it is.
    pub fn when_arrived(&self, f: impl FnOnce(Option<Instant>) + Send + 'static) {
        let known = match self.arrival.lock() {
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
        self.arrival.lock().ok().and_then(|a| a.known.flatten())
    }

    /// Tells the handler to serve.
    pub fn open(mut self) -> io::Result<()> {
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
