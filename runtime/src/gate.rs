//! The readiness gate: a socket pair, one end inherited by the handler as `WORKER_READY_FD`.
//! The runtime writes `ready` when the worker can serve, or closes it unwritten when start-up
//! failed. A handler may first write `waiting` to it once its imports are done: the start-up
//! report then knows how long the imports took and how long the handler waited at the gate.
//! A handler that only reads (the protocol of a plain pipe) works unchanged.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Instant;

/// The runtime's end.
pub struct Gate {
    stream: UnixStream,
    arrived: Arc<OnceLock<Instant>>,
}

/// Creates the gate; returns the runtime's end and the handler's (close-on-exec: the spawn
/// clears that flag for the handler only).
pub fn pair() -> io::Result<(Gate, OwnedFd)> {
    let (ours, theirs) = UnixStream::pair()?;
    let arrived = Arc::new(OnceLock::new());
    let reader = ours.try_clone()?;
    let mark = Arc::clone(&arrived);
    thread::Builder::new()
        .name("gate-watch".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut line = String::new();
            // Ends at the handler's line, its exit, or the gate's shutdown below.
            if BufReader::new(reader.take(64)).read_line(&mut line).is_ok()
                && line.trim() == "waiting"
            {
                let _ = mark.set(Instant::now());
            }
        })?;
    Ok((
        Gate {
            stream: ours,
            arrived,
        },
        OwnedFd::from(theirs),
    ))
}

impl Gate {
    /// When the handler said it was waiting (its imports done), if it did.
    pub fn arrived(&self) -> Option<Instant> {
        self.arrived.get().copied()
    }

    /// A shared view of the arrival time, for use after the gate is gone.
    pub fn arrival(&self) -> Arc<OnceLock<Instant>> {
        Arc::clone(&self.arrived)
    }

    /// Tells the handler to serve.
    pub fn open(mut self) -> io::Result<()> {
        self.stream.write_all(b"ready\n")
    }
}

impl Drop for Gate {
    /// Closing for every holder at once (the watcher thread holds a clone): a handler still
    /// waiting then reads end of file.
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}
