//! The WebUI's output, relayed: its stdout and stderr reach the runtime's own, byte for byte, and
//! on the way the lines the start-up report and the readiness failure need are read: A1111's
//! "Startup time: 15.4s (...)." and "Model loaded in 4.3s (...).", and the exception of a failed
//! model load, which A1111 prints (modules/sd_models.py, `SdModelData.get_sd_model`) as
//!
//! ```text
//! loading stable diffusion model: SafetensorError
//! Traceback (most recent call last):
//!   File "...", line 1, in ...
//! safetensors_rust.SafetensorError: Error while deserializing header: HeaderTooLarge
//!
//! Stable diffusion model failed to load
//! ```
//!
//! A slow or dead log reader must never stall the WebUI: a reader thread always drains both
//! pipes and parses, and a writer thread is fed through a bounded queue. When the queue is full
//! the reader drops output (and says how much once it can), it never waits.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// One read from the pipe; also the most a held partial line grows before it is passed on.
const CHUNK: usize = 8 * 1024;
/// Chunks waiting for the writer: with CHUNK, at most about 1 MiB while the log reader stalls.
const QUEUE_CHUNKS: usize = 128;
/// Longer lines are still relayed whole, but only this much of them is parsed.
const MAX_PARSED_LINE: usize = 4 * 1024;
/// A reason is one log line: A1111's tokenizer error alone is 400 characters.
const MAX_REASON: usize = 500;

/// The sentences of A1111's own start-up figures, each followed by the seconds.
pub const STARTUP_TIME: &str = "Startup time: ";
pub const MODEL_LOADED_IN: &str = "Model loaded in ";
const LOAD_FAILED_PREFIX: &str = "loading stable diffusion model: ";
const LOAD_FAILED_END: &str = "Stable diffusion model failed to load";

/// What the WebUI's output has told so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// A1111's "Startup time: N s": imports to the API being set up, by its own timer.
    pub startup_time: Option<f64>,
    /// A1111's first "Model loaded in N s".
    pub model_loaded_in: Option<f64>,
    /// The exception of the last failed model load, as one line.
    pub load_failure: Option<String>,
}

/// Shared between the relay threads and whoever waits on the WebUI's output.
#[derive(Default)]
pub struct WebuiLog {
    facts: Mutex<Facts>,
    changed: Condvar,
    /// Relays whose writer has not finished yet.
    running: Mutex<usize>,
    finished: Condvar,
}

impl WebuiLog {
    pub fn facts(&self) -> Facts {
        self.facts.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// Waits up to `limit` for a model-load failure to be reported; the WebUI prints it before
    /// it answers, but the relay may still be reading it.
    pub fn wait_for_load_failure(&self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        let mut facts = self.facts.lock().ok()?;
        loop {
            if let Some(reason) = &facts.load_failure {
                return Some(reason.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            facts = self.changed.wait_timeout(facts, left).ok()?.0;
        }
    }

    /// Waits up to `limit` until every relay has passed on the WebUI's last output (the WebUI
    /// is gone): the runtime should not exit with the WebUI's last lines still queued.
    pub fn wait_drained(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        while *running > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.finished.wait_timeout(running, left) {
                Ok((guard, _)) => running = guard,
                Err(_) => return,
            }
        }
    }

    fn relay_finished(&self) {
        if let Ok(mut running) = self.running.lock() {
            *running = running.saturating_sub(1);
            self.finished.notify_all();
        }
    }

    fn update(&self, apply: impl FnOnce(&mut Facts)) {
        if let Ok(mut facts) = self.facts.lock() {
            apply(&mut facts);
            self.changed.notify_all();
        }
    }
}

/// Where a relayed stream goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    Stderr,
}

type Chunk = (Sink, Vec<u8>);

/// Starts relaying the WebUI's output pipes (read ends) to the runtime's own streams, parsing
/// into `log`: one thread reads both pipes (so their lines keep the order they were read in),
/// one writes.
pub fn relay(streams: Vec<(OwnedFd, Sink)>, log: Arc<WebuiLog>) -> io::Result<()> {
    let (tx, rx) = sync_channel::<Chunk>(QUEUE_CHUNKS);
    if let Ok(mut running) = log.running.lock() {
        *running += 1;
    }
    let writer_log = Arc::clone(&log);
    thread::Builder::new()
        .name("webui-log-write".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            write_loop(rx);
            writer_log.relay_finished();
        })
        .inspect_err(|_| log.relay_finished())?;
    thread::Builder::new()
        .name("webui-log-read".into())
        .stack_size(64 * 1024)
        .spawn(move || read_loop(streams, &tx, &log))?;
    Ok(())
}

/// One pipe's reading state.
struct Stream {
    pipe: File,
    sink: Sink,
    parser: Parser,
    pending: Vec<u8>,
}

fn read_loop(streams: Vec<(OwnedFd, Sink)>, tx: &SyncSender<Chunk>, log: &WebuiLog) {
    let mut open: Vec<Stream> = streams
        .into_iter()
        .map(|(fd, sink)| Stream {
            pipe: File::from(fd),
            sink,
            parser: Parser::default(),
            pending: Vec::new(),
        })
        .collect();
    let mut buf = vec![0u8; CHUNK];
    let mut dropped: u64 = 0;
    while !open.is_empty() {
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> = open
                .iter()
                .map(|s| PollFd::new(s.pipe.as_fd(), PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
            fds.iter()
                .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        let mut closed = Vec::new();
        for (i, stream) in open.iter_mut().enumerate().filter(|(i, _)| ready[*i]) {
            let n = match stream.pipe.read(&mut buf) {
                Ok(0) => {
                    closed.push(i);
                    continue;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    closed.push(i);
                    continue;
                }
            };
            stream.parser.feed(&buf[..n], log);
            stream.pending.extend_from_slice(&buf[..n]);
            // Whole lines go on together, so the runtime's own log lines never land inside one;
            // a progress bar (\r without \n) or an endless line is passed on in pieces.
            let cut = match stream
                .pending
                .iter()
                .rposition(|&b| b == b'\n' || b == b'\r')
            {
                Some(i) => i + 1,
                None if stream.pending.len() >= CHUNK => stream.pending.len(),
                None => continue,
            };
            let rest = stream.pending.split_off(cut);
            let chunk = std::mem::replace(&mut stream.pending, rest);
            send(tx, (stream.sink, chunk), &mut dropped);
        }
        for i in closed.into_iter().rev() {
            let stream = open.remove(i);
            if !stream.pending.is_empty() {
                send(tx, (stream.sink, stream.pending), &mut dropped);
            }
        }
    }
    if dropped > 0 {
        // The WebUI is gone: waiting for the writer now stalls nobody.
        let _ = tx.send(dropped_note(dropped));
    }
}

fn dropped_note(dropped: u64) -> Chunk {
    let note = format!(
        "[worker-runtime: {dropped} bytes of WebUI output dropped: the log reader was too slow]\n"
    );
    (Sink::Stderr, note.into_bytes())
}

fn send(tx: &SyncSender<Chunk>, chunk: Chunk, dropped: &mut u64) {
    let len = chunk.1.len() as u64;
    if *dropped > 0 {
        match tx.try_send(dropped_note(*dropped)) {
            Ok(()) => *dropped = 0,
            Err(_) => {
                *dropped += len;
                return;
            }
        }
    }
    match tx.try_send(chunk) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => *dropped += len,
        // The writer is gone (cannot happen while the runtime runs): keep draining regardless.
        Err(TrySendError::Disconnected(_)) => {}
    }
}

fn write_loop(rx: Receiver<Chunk>) {
    for (sink, chunk) in rx {
        // A closed log (EPIPE) is not the WebUI's problem: keep taking chunks so the reader
        // never blocks, and drop them.
        let _ = match sink {
            Sink::Stdout => io::stdout().lock().write_all(&chunk),
            Sink::Stderr => io::stderr().lock().write_all(&chunk),
        };
    }
}

/// Line-by-line reading of A1111's output.
#[derive(Default)]
struct Parser {
    line: Vec<u8>,
    overlong: bool,
    /// Inside a "loading stable diffusion model: X" block: X.
    failing: Option<String>,
    /// The block's traceback frames are being read; the next unindented line is the exception.
    in_traceback: bool,
    exception: Option<String>,
}

impl Parser {
    fn feed(&mut self, bytes: &[u8], log: &WebuiLog) {
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if !self.overlong {
                    let line = String::from_utf8_lossy(&self.line).into_owned();
                    self.line_done(&line, log);
                }
                self.line.clear();
                self.overlong = false;
            } else if self.line.len() < MAX_PARSED_LINE {
                self.line.push(b);
            } else {
                self.overlong = true;
            }
        }
    }

    fn line_done(&mut self, line: &str, log: &WebuiLog) {
        if let Some(seconds) = figure_after(line, STARTUP_TIME) {
            log.update(|f| {
                f.startup_time.get_or_insert(seconds);
            });
        } else if let Some(seconds) = figure_after(line, MODEL_LOADED_IN) {
            log.update(|f| {
                f.model_loaded_in.get_or_insert(seconds);
            });
        }
        // Like the figures, the block's first and last lines may follow another thread's
        // unfinished line; they still end the line they are on.
        if let Some((_, kind)) = line.rsplit_once(LOAD_FAILED_PREFIX) {
            self.failing = Some(kind.trim().to_string());
            self.in_traceback = false;
            self.exception = None;
            return;
        }
        let Some(kind) = &self.failing else {
            return;
        };
        if line.trim_end().ends_with(LOAD_FAILED_END) {
            let reason = self.exception.take().unwrap_or_else(|| kind.clone());
            self.failing = None;
            self.in_traceback = false;
            log.update(|f| f.load_failure = Some(one_line(&reason)));
        } else if line.starts_with("Traceback (most recent call last):") {
            self.in_traceback = true;
        } else if self.in_traceback && !line.is_empty() && !line.starts_with(char::is_whitespace) {
            // The first unindented line after the frames: "module.Type: message". With chained
            // exceptions a later traceback follows and its exception replaces this one.
            self.exception = Some(line.to_string());
            self.in_traceback = false;
        }
    }
}

/// "Startup time: 15.4s (...)." -> 15.4. The sentence normally starts the line, but A1111 loads
/// the model on a thread of its own while the main thread prints its start-up time, and Python's
/// `print` writes the text and its newline separately: "Loading weights [..] from x.ckptStartup
/// time: 15.4s (...)." is a line A1111 really writes. Inside a line only A1111's whole sentence
/// counts, up to the line's end, so a line that merely mentions the words is not a figure.
pub fn figure_after(line: &str, prefix: &str) -> Option<f64> {
    if let Some(rest) = line.strip_prefix(prefix) {
        return seconds_then(rest).map(|(figure, _)| figure);
    }
    let (at, _) = line.match_indices(prefix).last()?;
    let (figure, tail) = seconds_then(&line[at + prefix.len()..])?;
    let tail = tail.trim_end();
    let whole_sentence = tail == "." || (tail.starts_with(" (") && tail.ends_with(")."));
    whole_sentence.then_some(figure)
}

/// "15.4s (...)." -> (15.4, " (...).").
fn seconds_then(rest: &str) -> Option<(f64, &str)> {
    let digits = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let tail = rest[digits..].strip_prefix('s')?;
    Some((rest[..digits].parse().ok()?, tail))
}

/// A reason fit for one log line: no control characters, bounded length.
pub fn one_line(text: &str) -> String {
    let flat: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    if flat.chars().count() > MAX_REASON {
        let cut: String = flat.chars().take(MAX_REASON).collect();
        format!("{cut}...")
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Facts {
        let log = WebuiLog::default();
        let mut parser = Parser::default();
        // Split at an awkward place: lines arrive in arbitrary pieces.
        let (a, b) = text.as_bytes().split_at(text.len() / 3);
        parser.feed(a, &log);
        parser.feed(b, &log);
        log.facts()
    }

    #[test]
    fn a1111s_own_start_up_figures_are_read() {
        let facts = parse(
            "Startup time: 15.4s (prepare environment: 0.1s, import torch: 10.3s, other: 5.0s).\n\
             Creating model from config: /x/v1-inference.yaml\n\
             Model loaded in 4.3s (load weights from disk: 0.6s, create model: 0.4s).\n\
             Model loaded in 9.9s (a later checkpoint switch).\n",
        );
        assert_eq!(facts.startup_time, Some(15.4));
        assert_eq!(facts.model_loaded_in, Some(4.3));
        assert_eq!(facts.load_failure, None);
    }

    #[test]
    fn a_failed_model_load_gives_the_exception_line() {
        let facts = parse(
            "loading stable diffusion model: SafetensorError\n\
             Traceback (most recent call last):\n  \
               File \"/w/modules/sd_models.py\", line 693, in get_sd_model\n    \
                 load_model()\n\
             safetensors_rust.SafetensorError: Error while deserializing header: HeaderTooLarge\n\
             \n\
             Stable diffusion model failed to load\n",
        );
        assert_eq!(
            facts.load_failure.as_deref(),
            Some("safetensors_rust.SafetensorError: Error while deserializing header: HeaderTooLarge")
        );
    }

    #[test]
    fn a_failure_block_glued_to_other_output_is_still_read() {
        let facts = parse(
            "warning: something slowloading stable diffusion model: SafetensorError\n\
             Traceback (most recent call last):\n  File \"a\", line 1\n\
             safetensors_rust.SafetensorError: HeaderTooLarge\n\
             \n\
             tqdm 3/3Stable diffusion model failed to load\n",
        );
        assert_eq!(
            facts.load_failure.as_deref(),
            Some("safetensors_rust.SafetensorError: HeaderTooLarge")
        );
    }

    #[test]
    fn chained_exceptions_give_the_last_one_and_a_bare_block_its_type() {
        let facts = parse(
            "loading stable diffusion model: OSError\n\
             Traceback (most recent call last):\n  File \"a\", line 1\n\
             ValueError: inner\n\nDuring handling of the above exception, another exception occurred:\n\n\
             Traceback (most recent call last):\n  File \"b\", line 2\n\
             OSError: Can't load tokenizer for 'openai/clip-vit-large-patch14'.\n\n\
             Stable diffusion model failed to load\n",
        );
        assert_eq!(
            facts.load_failure.as_deref(),
            Some("OSError: Can't load tokenizer for 'openai/clip-vit-large-patch14'.")
        );
        let bare = parse(
            "loading stable diffusion model: MemoryError\nStable diffusion model failed to load\n",
        );
        assert_eq!(bare.load_failure.as_deref(), Some("MemoryError"));
    }

    #[test]
    fn a_figure_glued_to_the_model_loaders_line_is_still_read() {
        let facts = parse(
            "Loading weights [0123abcd] from /m/test-a.ckptStartup time: 15.4s (import torch: 9.9s).\n\n\
             Applying attention optimization: Doggettx... done.Model loaded in 4.3s.\n",
        );
        assert_eq!(facts.startup_time, Some(15.4));
        assert_eq!(facts.model_loaded_in, Some(4.3));
        let glued_after = parse("Startup time: 15.4s (other: 5.0s).Loading weights [0123abcd]\n");
        assert_eq!(glued_after.startup_time, Some(15.4));
    }

    #[test]
    fn look_alike_lines_are_not_figures() {
        let facts = parse(
            "Startup time: soon\nprint('Model loaded in 3s')\nlog: Startup time: 3s (x) was slow\n",
        );
        assert_eq!(facts, Facts::default());
        assert_eq!(
            figure_after("Model loaded in 12s.", "Model loaded in "),
            Some(12.0)
        );
    }

    #[test]
    fn a_stalled_writer_drops_output_instead_of_blocking_the_reader() {
        let (tx, rx) = sync_channel::<Chunk>(2);
        let mut dropped = 0;
        for _ in 0..5 {
            send(&tx, (Sink::Stdout, vec![b'x'; 10]), &mut dropped);
        }
        assert_eq!(dropped, 30);
        drop(rx.try_recv());
        send(&tx, (Sink::Stdout, vec![b'y'; 10]), &mut dropped);
        let queued: Vec<Chunk> = rx.try_iter().collect();
        assert_eq!(queued[1].0, Sink::Stderr);
        assert!(String::from_utf8_lossy(&queued[1].1).contains("30 bytes of WebUI output dropped"));
    }

    #[test]
    fn reasons_are_one_bounded_line() {
        assert_eq!(one_line("a\n  b\tc\r\n"), "a b c");
        assert_eq!(one_line(&"x".repeat(900)).len(), MAX_REASON + 3);
    }
}
