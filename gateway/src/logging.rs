//! Log output: human-readable text by default, JSON lines with `--log-format json`.
//! Filter with `RUST_LOG` (default `info`).
//!
//! Access-log lines (target `access`) are not written one `write(2)` per
//! request: they go to a buffer that a background thread writes out every
//! 100 ms (or at 64 KiB), and [`flush`] empties it at shutdown. If stderr
//! cannot keep up, lines beyond 8 MiB pending are dropped and counted, so a
//! slow log consumer never blocks a request. Every other line is written at once.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tracing::Metadata;
use tracing_subscriber::fmt::writer::{EitherWriter, MakeWriter};
use tracing_subscriber::EnvFilter;

/// `server.log.format`: how log lines are written.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

const FLUSH_EVERY: Duration = Duration::from_millis(100);
const FLUSH_AT: usize = 64 * 1024;
const MAX_PENDING: usize = 8 * 1024 * 1024;

/// The access-log buffer, once `init` started its writer thread.
static ACCESS: OnceLock<Arc<Batch>> = OnceLock::new();

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(Writers {
            access: start_batch(),
        });
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // a second init (tests) keeps the first subscriber
    let _ = result;
}

/// Write out buffered access-log lines now (call before the process exits).
pub fn flush() {
    if let Some(batch) = ACCESS.get() {
        let pending = std::mem::take(&mut *lock(&batch.buf));
        let _ = io::stderr().write_all(&pending);
    }
}

struct Batch {
    buf: Mutex<Vec<u8>>,
    wake: Condvar,
    dropped: AtomicU64,
}

fn lock(m: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    // a panic while holding the lock leaves plain bytes behind: keep using them
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Start the writer thread; `None` (write directly) if it cannot be started.
fn start_batch() -> Option<Arc<Batch>> {
    if let Some(b) = ACCESS.get() {
        return Some(b.clone());
    }
    let batch = Arc::new(Batch {
        buf: Mutex::new(Vec::with_capacity(FLUSH_AT)),
        wake: Condvar::new(),
        dropped: AtomicU64::new(0),
    });
    let worker = batch.clone();
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || write_batches(&worker))
        .ok()?;
    Some(ACCESS.get_or_init(|| batch).clone())
}

fn write_batches(batch: &Batch) {
    let mut out = Vec::with_capacity(FLUSH_AT);
    loop {
        {
            let mut buf = lock(&batch.buf);
            if buf.len() < FLUSH_AT {
                buf = match batch.wake.wait_timeout(buf, FLUSH_EVERY) {
                    Ok((g, _)) => g,
                    Err(e) => e.into_inner().0,
                };
            }
            std::mem::swap(&mut *buf, &mut out);
        }
        if !out.is_empty() {
            let _ = io::stderr().write_all(&out);
            out.clear();
        }
        let dropped = batch.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                io::stderr(),
                "access log: {dropped} line(s) dropped: stderr is not keeping up"
            );
        }
    }
}

/// Picks the writer per event: access lines to the batch, the rest to stderr.
struct Writers {
    access: Option<Arc<Batch>>,
}

impl<'a> MakeWriter<'a> for Writers {
    type Writer = EitherWriter<io::Stderr, BatchLine<'a>>;

    fn make_writer(&'a self) -> Self::Writer {
        EitherWriter::A(io::stderr())
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        match &self.access {
            Some(batch) if meta.target() == "access" => EitherWriter::B(BatchLine(batch)),
            _ => EitherWriter::A(io::stderr()),
        }
    }
}

/// One access-log line on its way into the batch.
struct BatchLine<'a>(&'a Batch);

impl Write for BatchLine<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut buf = lock(&self.0.buf);
        if buf.len() + data.len() > MAX_PENDING {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(data.len());
        }
        buf.extend_from_slice(data);
        if buf.len() >= FLUSH_AT {
            self.0.wake.notify_one();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_cap_are_dropped_and_counted() {
        let batch = Batch {
            buf: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
        };
        let line = vec![b'x'; 1024 * 1024];
        for _ in 0..10 {
            BatchLine(&batch).write_all(&line).unwrap();
        }
        assert_eq!(lock(&batch.buf).len(), MAX_PENDING);
        assert_eq!(batch.dropped.load(Ordering::Relaxed), 2);
    }
}
