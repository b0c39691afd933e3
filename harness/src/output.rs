//! What a test prints, on its way out of the process that runs it.
//!
//! A test may print anything: a generated patient's name, one line of two
//! megabytes, bytes that are not UTF-8, terminal escape sequences. Two
//! things stand between that and a console, a report or a log:
//!
//! - [`sanitize`]: bytes to text that is safe to show — invalid UTF-8 kept
//!   lossily, terminal control sequences stripped, each line cut at
//!   [`LINE_LIMIT`] (so scanning it for PHI is bounded too).
//! - the **pump** ([`install`]): in a process that runs tests and prints
//!   to a console (a shared worker, a single test under nextest or
//!   `--exact`, a run with the supervisor off, `--nocapture`), file
//!   descriptors 1 and 2 are pipes read by a thread each, which redacts
//!   every line with this process's canaries — the values its generators
//!   handed out, registered before the test could print them — and writes
//!   it on. Lines that held PHI are remembered ([`findings_since`]), so
//!   `phi_safe` judges printed output in every mode.
//!
//! A process whose output the supervisor captures to files (an isolated
//! test) is not pumped: its raw output is kept for the crash report, and
//! the supervisor redacts it with the canaries the worker streams to it.

use std::io::Write as _;
use std::os::fd::{FromRawFd as _, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// The longest line kept; the rest of a longer one is cut and counted.
pub const LINE_LIMIT: usize = 16 * 1024;

/// How many lines that held PHI are remembered for `phi_safe` (the oldest
/// are dropped; a test failing on its first finding needs only one).
const FINDINGS_KEPT: usize = 256;

/// Text safe to print from a test's raw output: every line through
/// [`sanitize_line`].
pub fn sanitize(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().min(1 << 20));
    let mut lines = bytes.split(|b| *b == b'\n').peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_none() && line.is_empty() {
            break;
        }
        out.push_str(&sanitize_line(line, 0));
        out.push('\n');
    }
    out
}

/// One line of raw output as safe text: at most [`LINE_LIMIT`] bytes of it
/// (cut at a character boundary, with how much was cut, `already_cut`
/// included), invalid UTF-8 replaced, terminal control sequences (CSI, OSC,
/// other escapes) and control characters other than tab removed.
pub fn sanitize_line(line: &[u8], already_cut: usize) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (kept, cut) = if line.len() > LINE_LIMIT {
        (&line[..LINE_LIMIT], line.len() - LINE_LIMIT + already_cut)
    } else {
        (line, already_cut)
    };
    let text = String::from_utf8_lossy(kept);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => skip_escape(&mut chars),
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    if cut > 0 {
        // A cut through a multi-byte character left a replacement char.
        if out.ends_with('\u{fffd}') {
            out.pop();
        }
        out.push_str(&format!(" … [{cut} more bytes of this line not kept]"));
    }
    out
}

/// Skips the rest of an escape sequence whose ESC was just read.
fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.next() {
        // CSI: parameters and intermediates, then one final byte.
        Some('[') => {
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    break;
                }
            }
        }
        // OSC, DCS, SOS, PM, APC: up to BEL or ESC \.
        Some(']' | 'P' | 'X' | '^' | '_') => {
            while let Some(c) = chars.next() {
                if c == '\u{7}' {
                    break;
                }
                if c == '\u{1b}' {
                    if chars.peek() == Some(&'\\') {
                        chars.next();
                    }
                    break;
                }
            }
        }
        // A two-character escape (ESC c, ESC 7, ...), or ESC at the end.
        _ => {}
    }
}

/// A line that held PHI, described without the values.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    /// Lines pumped before it (to take only a test's own).
    seq: u64,
    /// `stdout line: SSN (registered value) — the line, redacted`.
    pub(crate) text: String,
}

struct Pumps {
    /// Sync markers each pump has written through, by stream.
    synced: Mutex<[u64; 2]>,
    changed: Condvar,
    /// The marker's text, unguessable by a test.
    marker: String,
    next_sync: AtomicU64,
    findings: Mutex<Vec<Finding>>,
}

static PUMPS: OnceLock<Pumps> = OnceLock::new();
static LINES: AtomicU64 = AtomicU64::new(0);
static INSTALLING: AtomicBool = AtomicBool::new(false);

/// Is this process's output pumped (see the module docs)?
pub(crate) fn installed() -> bool {
    PUMPS.get().is_some()
}

/// Points file descriptors 1 and 2 at pipes whose pumps redact each line
/// and write it where the descriptor pointed before. Once per process;
/// nothing on a second call.
pub(crate) fn install() -> std::io::Result<()> {
    if INSTALLING.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let marker = format!("\u{1}service-test-sync-{:016x}:", crate::seed::random_u64());
    let pumps = PUMPS.get_or_init(|| Pumps {
        synced: Mutex::new([0, 0]),
        changed: Condvar::new(),
        marker,
        next_sync: AtomicU64::new(1),
        findings: Mutex::new(Vec::new()),
    });
    for (index, fd) in [(0usize, 1 as RawFd), (1, 2)] {
        // Flush what Rust buffered for the old descriptor first.
        let _ = std::io::stdout().flush();
        // SAFETY: plain descriptor calls on this process's own descriptors;
        // each new descriptor is owned by exactly one `File` below.
        let (saved, read) = unsafe {
            let saved = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3);
            if saved < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut ends = [0 as RawFd; 2];
            if libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                libc::close(saved);
                return Err(std::io::Error::last_os_error());
            }
            // The write end replaces `fd` (dup2 leaves it inheritable, as
            // a test's children expect their standard streams).
            if libc::dup2(ends[1], fd) < 0 {
                let e = std::io::Error::last_os_error();
                libc::close(saved);
                libc::close(ends[0]);
                libc::close(ends[1]);
                return Err(e);
            }
            libc::close(ends[1]);
            (
                std::fs::File::from_raw_fd(saved),
                std::fs::File::from_raw_fd(ends[0]),
            )
        };
        let stream = if fd == 1 { "stdout" } else { "stderr" };
        std::thread::Builder::new()
            .name(format!("service-test {stream} pump"))
            .spawn(move || pump(pumps, index, stream, read, saved))?;
    }
    Ok(())
}

/// Reads `read` to its end, line by line, and writes each, sanitized and
/// redacted, to `out`.
fn pump(
    pumps: &'static Pumps,
    index: usize,
    stream: &'static str,
    mut read: std::fs::File,
    out: std::fs::File,
) {
    use std::io::Read as _;
    let mut out = std::io::BufWriter::new(out);
    let mut line = Bounded::default();
    let mut buf = vec![0u8; 64 * 1024];
    let marker = pumps.marker.as_bytes();
    // The detectors are built on first use: before any line waits on them.
    BUSY.fetch_add(1, Ordering::SeqCst);
    let _ = phi::scan("warming up the detectors: 2024-01-01 555-0100");
    BUSY.fetch_sub(1, Ordering::SeqCst);
    loop {
        let n = match read.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        BUSY.fetch_add(1, Ordering::SeqCst);
        let mut chunk = &buf[..n];
        while let Some(end) = chunk.iter().position(|b| *b == b'\n') {
            let part = &chunk[..end];
            chunk = &chunk[end + 1..];
            // A sync marker ends the line before it (a test's unfinished
            // `print!`), and is acknowledged, not printed.
            let Some(at) = find(part, marker) else {
                line.push(part);
                text_out(pumps, stream, &line, &mut out);
                line.clear();
                continue;
            };
            line.push(&part[..at]);
            if !line.bytes.is_empty() {
                text_out(pumps, stream, &line, &mut out);
                line.clear();
            }
            let n = std::str::from_utf8(&part[at + marker.len()..])
                .ok()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            let _ = out.flush();
            let mut synced = pumps.synced.lock().unwrap_or_else(PoisonError::into_inner);
            synced[index] = synced[index].max(n);
            pumps.changed.notify_all();
        }
        line.push(chunk);
        let _ = out.flush();
        BUSY.fetch_sub(1, Ordering::SeqCst);
    }
    if !line.bytes.is_empty() {
        text_out(pumps, stream, &line, &mut out);
    }
    let _ = out.flush();
}

/// A line being read: its first [`LINE_LIMIT`] bytes and one more (so the
/// cut is seen), and how many bytes past those were dropped.
#[derive(Default)]
struct Bounded {
    bytes: Vec<u8>,
    cut: usize,
}

impl Bounded {
    fn push(&mut self, more: &[u8]) {
        let room = (LINE_LIMIT + 1).saturating_sub(self.bytes.len());
        let kept = more.len().min(room);
        self.bytes.extend_from_slice(&more[..kept]);
        self.cut += more.len() - kept;
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.cut = 0;
    }
}

/// Where `needle` starts in `hay` (linear: candidates by its first byte).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut from = 0;
    while let Some(i) = hay[from..].iter().position(|b| *b == first) {
        let at = from + i;
        if hay[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// A line of the test's own: sanitized, redacted, remembered if it held PHI.
fn text_out(pumps: &Pumps, stream: &str, line: &Bounded, out: &mut impl std::io::Write) {
    let seq = LINES.fetch_add(1, Ordering::SeqCst);
    let text = sanitize_line(&line.bytes, line.cut);
    let findings = phi::scan(&text);
    let shown = if findings.is_empty() {
        text
    } else {
        let redacted = crate::redaction::redact(&text);
        let kinds: Vec<String> = findings
            .iter()
            .map(|f| {
                let via = if f.via == phi::Via::Canary {
                    "registered value"
                } else {
                    "pattern"
                };
                format!("{} ({via})", f.kind)
            })
            .collect();
        let mut kept = pumps
            .findings
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if kept.len() >= FINDINGS_KEPT {
            kept.remove(0);
        }
        kept.push(Finding {
            seq,
            text: format!("{stream} line: {} — {redacted}", kinds.join(", ")),
        });
        redacted
    };
    let _ = out.write_all(shown.as_bytes());
    let _ = out.write_all(b"\n");
}

/// How many lines have been pumped: a mark to take findings from.
pub(crate) fn mark() -> u64 {
    LINES.load(Ordering::SeqCst)
}

/// Waits (a second at most) until everything written to descriptors 1 and
/// 2 so far has been through its pump. Nothing when not installed.
pub(crate) fn sync() {
    let Some(pumps) = PUMPS.get() else { return };
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let n = pumps.next_sync.fetch_add(1, Ordering::SeqCst);
    let line = format!("{}{n}\n", pumps.marker);
    for fd in [1, 2] {
        // SAFETY: writes a buffer we own to our own descriptor; a short
        // write of a marker this small into a pipe does not happen.
        unsafe {
            libc::write(fd, line.as_ptr().cast(), line.len());
        }
    }
    // A test that pointed the descriptors elsewhere never acknowledges:
    // the wait ends once the pumps have made no progress for a while (a
    // busy machine may keep them from the marker for longer; the first
    // line also builds the PHI detectors).
    let mut guard = pumps.synced.lock().unwrap_or_else(PoisonError::into_inner);
    let (mut seen, mut idle) = (LINES.load(Ordering::SeqCst), Duration::ZERO);
    while guard[0] < n || guard[1] < n {
        let step = Duration::from_millis(100);
        guard = pumps
            .changed
            .wait_timeout(guard, step)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        let now = LINES.load(Ordering::SeqCst);
        if now != seen || BUSY.load(Ordering::SeqCst) > 0 {
            (seen, idle) = (now, Duration::ZERO);
        } else {
            idle += step;
            if idle >= STALLED {
                return;
            }
        }
    }
}

/// How long [`sync`] waits on pumps that make no progress.
const STALLED: Duration = Duration::from_secs(2);

/// Pumps handling a chunk of output right now.
static BUSY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The lines that held PHI since `mark`, in order (after [`sync`]).
pub(crate) fn findings_since(mark: u64) -> Vec<String> {
    let Some(pumps) = PUMPS.get() else {
        return Vec::new();
    };
    pumps
        .findings
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|f| f.seq >= mark)
        .map(|f| f.text.clone())
        .collect()
}
