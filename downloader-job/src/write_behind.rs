//! Writing a staged package on a thread of its own while the caller reads and hashes it.
//!
//! Staging is bound by two things that can overlap: hashing (CPU) and getting the bytes to
//! the disk (the final fsync waits for all of them). The writer thread takes the bytes in
//! large buffers and, every [`WRITE_BACK_EVERY`] bytes, starts their write-back without
//! waiting for it ([`FileSink::start_write_back`]), so the disk works while the caller
//! hashes what comes next, and the caller's own fsync at the end finds little left to
//! write. Nothing about when
//! the file counts as complete changes: the caller still checks the digest of everything it
//! sent, then fsyncs the file, before anything is renamed into place.

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use crate::fs::FileSink;

/// Bytes per write (and per buffer passed to the writer thread).
const BUFFER: usize = 1024 * 1024;

/// Buffers in flight: the reader runs at most this far ahead of the writer.
const IN_FLIGHT: usize = 4;

/// Bytes written between two starts of their write-back.
const WRITE_BACK_EVERY: usize = 8 * 1024 * 1024;

/// Runs `fill` with a writer whose bytes reach `sink` on another thread, in order. Returns
/// `fill`'s result, or the writer thread's write error (which the writer given to `fill`
/// reports only as "stopped"). `sink` is not fsynced at the end: that stays the caller's.
pub fn write_behind<T, E>(
    sink: &mut dyn FileSink,
    fill: impl FnOnce(&mut dyn Write) -> Result<T, E>,
    write_error: impl FnOnce(io::Error) -> E,
) -> Result<T, E> {
    let (full_tx, full_rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(IN_FLIGHT + 1);
    let (filled, written) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || drain(sink, &full_rx, &empty_tx));
        let mut ahead = Ahead {
            buf: Vec::with_capacity(BUFFER),
            full: full_tx,
            empty: empty_rx,
        };
        let filled = fill(&mut ahead);
        if filled.is_ok() {
            // The last bytes. Sending fails only once the writer stopped on an error, which
            // is the one returned.
            let _ = ahead.send();
        }
        // Dropping the sender ends the writer's loop once it has written everything.
        drop(ahead);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the writer thread panicked")));
        (filled, written)
    });
    match (filled, written) {
        (_, Err(e)) => Err(write_error(e)),
        (filled, Ok(())) => filled,
    }
}

/// The error `fill`'s writer reports once the writer thread stopped (its own error is the
/// one returned).
fn stopped() -> io::Error {
    io::Error::other("the writer thread stopped")
}

/// Writes every buffer received to `sink`, handing the emptied buffers back.
fn drain(
    sink: &mut dyn FileSink,
    full: &Receiver<Vec<u8>>,
    empty: &SyncSender<Vec<u8>>,
) -> io::Result<()> {
    let mut unflushed = 0;
    for mut buf in full {
        sink.write_all(&buf)?;
        unflushed += buf.len();
        if unflushed >= WRITE_BACK_EVERY {
            sink.start_write_back()?;
            unflushed = 0;
        }
        buf.clear();
        // The reader may be gone (it failed); the buffer is then dropped.
        let _ = empty.try_send(buf);
    }
    sink.flush()
}

/// The reader's side: fills a buffer, passes it on when full.
struct Ahead {
    buf: Vec<u8>,
    full: SyncSender<Vec<u8>>,
    empty: Receiver<Vec<u8>>,
}

impl Ahead {
    /// Passes the current buffer on (if it holds anything) and takes an empty one.
    fn send(&mut self) -> Result<(), ()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self
            .empty
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BUFFER));
        let full = std::mem::replace(&mut self.buf, next);
        self.full.send(full).map_err(|_| ())
    }
}

impl Write for Ahead {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = bytes.len().min(BUFFER - self.buf.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == BUFFER {
            self.send().map_err(|()| stopped())?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink recording what reached it (and how often its write-back was started), failing
    /// its writes after `fail_after` bytes.
    #[derive(Default)]
    struct Recorder {
        bytes: Vec<u8>,
        write_backs: usize,
        fail_after: Option<usize>,
    }

    impl Write for Recorder {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self
                .fail_after
                .is_some_and(|n| self.bytes.len() + b.len() > n)
            {
                return Err(io::Error::other("disk full"));
            }
            self.bytes.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl FileSink for Recorder {
        fn sync(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn start_write_back(&mut self) -> io::Result<()> {
            self.write_backs += 1;
            Ok(())
        }
    }

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn every_byte_arrives_in_order_and_the_disk_is_asked_along_the_way() {
        let data = content(WRITE_BACK_EVERY * 2 + BUFFER / 3);
        let mut sink = Recorder::default();
        let got = write_behind(
            &mut sink,
            |w| {
                for chunk in data.chunks(65_536 + 13) {
                    w.write_all(chunk)?;
                }
                Ok::<_, io::Error>(7)
            },
            |e| e,
        )
        .expect("written");
        assert_eq!(got, 7);
        assert!(sink.bytes == data, "the bytes differ");
        assert_eq!(sink.write_backs, 2);
    }

    #[test]
    fn a_write_error_is_the_one_reported() {
        let data = content(BUFFER * 8);
        let mut sink = Recorder {
            fail_after: Some(BUFFER * 2),
            ..Recorder::default()
        };
        let err = write_behind(&mut sink, |w| w.write_all(&data), |e| e).expect_err("failed");
        assert_eq!(err.to_string(), "disk full");
    }

    #[test]
    fn a_failure_of_the_filler_is_returned_and_the_writer_ends() {
        let mut sink = Recorder::default();
        let err = write_behind(
            &mut sink,
            |w| {
                w.write_all(b"partial")?;
                Err::<(), _>(io::Error::other("digest mismatch"))
            },
            |e| e,
        )
        .expect_err("failed");
        assert_eq!(err.to_string(), "digest mismatch");
    }
}
