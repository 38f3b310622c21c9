//! How much a plugin may write into the server's log: each line cut to
//! [`MAX_LINE`] bytes with control characters escaped, at most
//! [`MAX_LINES_PER_CALL`] lines and [`MAX_BYTES_PER_CALL`] bytes per call,
//! and a token bucket per plugin (a burst of [`BURST_BYTES`], refilled at
//! [`REFILL_BYTES_PER_SEC`]) across all its calls. Lines over a limit are
//! dropped and counted; the count is reported in one warning at the end of
//! a call, at most once per [`NOTE_EVERY`] per plugin.
//!
//! Without these a plugin could write megabytes per call (thousands of
//! calls to `host.log`) and fill the disk or bury other messages.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest line a plugin may write, in bytes; the rest is cut.
pub(crate) const MAX_LINE: usize = 2 * 1024;
/// Lines one call may write.
pub(crate) const MAX_LINES_PER_CALL: u32 = 32;
/// Bytes one call may write.
pub(crate) const MAX_BYTES_PER_CALL: usize = 16 * 1024;
/// What one plugin may write at once, across calls, in bytes.
pub(crate) const BURST_BYTES: f64 = 64.0 * 1024.0;
/// How fast that allowance comes back, in bytes per second.
pub(crate) const REFILL_BYTES_PER_SEC: f64 = 16.0 * 1024.0;
/// What a line costs at least, whatever its length: the log adds a
/// timestamp, level and plugin name to each, so tiny lines are not free.
const MIN_LINE_COST: usize = 128;
/// Shortest gap between two "lines dropped" notes of one plugin.
pub(crate) const NOTE_EVERY: Duration = Duration::from_secs(1);

/// What one call has written so far.
#[derive(Debug, Default)]
pub(crate) struct CallBudget {
    lines: u32,
    bytes: usize,
}

/// The log allowance of one plugin, shared by all its calls (and kept
/// across reloads, so a reload does not reset it).
#[derive(Debug)]
pub(crate) struct LogLimiter {
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// Lines dropped since the last note.
    dropped: u64,
    last_note: Option<Instant>,
}

impl Default for LogLimiter {
    fn default() -> Self {
        let bucket = Bucket {
            tokens: BURST_BYTES,
            refilled: Instant::now(),
            dropped: 0,
            last_note: None,
        };
        LogLimiter {
            bucket: Mutex::new(bucket),
        }
    }
}

impl LogLimiter {
    /// Whether a line of `len` bytes from a call that has written `call`
    /// may be logged now; charges both budgets when it may, counts the line
    /// as dropped when it may not.
    pub fn admit(&self, call: &mut CallBudget, len: usize) -> bool {
        self.admit_at(Some(call), len, Instant::now())
    }

    /// [`LogLimiter::admit`] for a line the host writes on the plugin's
    /// behalf outside any call budget (a denied outbound request): only the
    /// plugin's bucket applies.
    pub fn admit_host_line(&self, len: usize) -> bool {
        self.admit_at(None, len, Instant::now())
    }

    fn admit_at(&self, call: Option<&mut CallBudget>, len: usize, now: Instant) -> bool {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let over_call = call
            .as_ref()
            .is_some_and(|c| c.lines >= MAX_LINES_PER_CALL || c.bytes + len > MAX_BYTES_PER_CALL);
        let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
        b.tokens = (b.tokens + elapsed * REFILL_BYTES_PER_SEC).min(BURST_BYTES);
        b.refilled = now;
        let cost = len.max(MIN_LINE_COST) as f64;
        if over_call || b.tokens < cost {
            b.dropped += 1;
            return false;
        }
        b.tokens -= cost;
        if let Some(c) = call {
            c.lines += 1;
            c.bytes += len;
        }
        true
    }

    /// How many lines were dropped since the last note, when there are some
    /// and a note is due (at most one per [`NOTE_EVERY`]); the count starts
    /// again from zero.
    pub fn due_note(&self) -> Option<u64> {
        self.due_note_at(Instant::now())
    }

    fn due_note_at(&self, now: Instant) -> Option<u64> {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let due = b
            .last_note
            .is_none_or(|t| now.saturating_duration_since(t) >= NOTE_EVERY);
        if b.dropped == 0 || !due {
            return None;
        }
        b.last_note = Some(now);
        Some(std::mem::take(&mut b.dropped))
    }
}

/// `s` made safe for a one-line log entry: line breaks and other control
/// characters escaped (so a plugin cannot forge log lines of its own), and
/// cut to at most `max` bytes on a character boundary.
pub(crate) fn sanitize(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    let mut buf = [0u8; 4];
    for c in s.chars() {
        let escaped;
        let piece = if c.is_control() && c != '\t' {
            escaped = c.escape_default().to_string();
            escaped.as_str()
        } else {
            &*c.encode_utf8(&mut buf)
        };
        if out.len() + piece.len() > max {
            break;
        }
        out.push_str(piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_writes_at_most_its_lines_and_bytes() {
        let log = LogLimiter::default();
        let mut call = CallBudget::default();
        let admitted = (0..100).filter(|_| log.admit(&mut call, 10)).count();
        assert_eq!(admitted, MAX_LINES_PER_CALL as usize);

        let log = LogLimiter::default();
        let mut call = CallBudget::default();
        let admitted = (0..100).filter(|_| log.admit(&mut call, MAX_LINE)).count();
        assert_eq!(admitted, MAX_BYTES_PER_CALL / MAX_LINE);
        assert_eq!(
            log.due_note(),
            Some(100 - admitted as u64),
            "every dropped line is counted"
        );
    }

    #[test]
    fn the_plugin_bucket_bounds_many_calls_and_refills_over_time() {
        let log = LogLimiter::default();
        let start = Instant::now();
        let mut admitted = 0usize;
        for _ in 0..1000 {
            let mut call = CallBudget::default();
            admitted += (0..MAX_LINES_PER_CALL)
                .filter(|_| log.admit_at(Some(&mut call), MAX_LINE, start))
                .count();
        }
        assert_eq!(
            admitted * MAX_LINE,
            BURST_BYTES as usize,
            "a burst, then nothing"
        );
        assert!(
            !log.admit_at(None, MAX_LINE, start),
            "host lines share the bucket"
        );
        let later = start + Duration::from_secs(1);
        let mut call = CallBudget::default();
        let refilled = (0..MAX_LINES_PER_CALL)
            .filter(|_| log.admit_at(Some(&mut call), MAX_LINE, later))
            .count();
        assert_eq!(refilled * MAX_LINE, REFILL_BYTES_PER_SEC as usize);
    }

    #[test]
    fn tiny_lines_still_cost_something() {
        let log = LogLimiter::default();
        let start = Instant::now();
        let admitted = (0..100_000)
            .filter(|_| log.admit_at(None, 0, start))
            .count();
        assert_eq!(admitted, BURST_BYTES as usize / MIN_LINE_COST);
    }

    #[test]
    fn notes_come_at_most_once_per_interval_and_carry_the_count() {
        let log = LogLimiter::default();
        let start = Instant::now();
        assert_eq!(
            log.due_note_at(start),
            None,
            "nothing dropped, nothing to say"
        );
        let mut call = CallBudget::default();
        for _ in 0..MAX_LINES_PER_CALL + 5 {
            log.admit_at(Some(&mut call), 1, start);
        }
        assert_eq!(log.due_note_at(start), Some(5));
        log.admit_at(Some(&mut call), 1, start);
        assert_eq!(
            log.due_note_at(start + Duration::from_millis(10)),
            None,
            "too soon"
        );
        log.admit_at(Some(&mut call), 1, start);
        assert_eq!(
            log.due_note_at(start + NOTE_EVERY),
            Some(2),
            "the pending count is kept"
        );
    }

    #[test]
    fn sanitizing_escapes_line_breaks_and_cuts() {
        assert_eq!(sanitize("ok\tfine", 100), "ok\tfine");
        assert_eq!(
            sanitize("a\nINFO forged\r\u{1b}[31m", 100),
            "a\\nINFO forged\\r\\u{1b}[31m"
        );
        assert_eq!(sanitize("héllo", 2), "h");
        assert_eq!(sanitize(&"x".repeat(10_000), MAX_LINE).len(), MAX_LINE);
        assert!(
            sanitize(&"\n".repeat(10_000), MAX_LINE).len() <= MAX_LINE,
            "escapes count against the cap"
        );
    }
}
