//! PHI detection for test output, logs and reports.
//!
//! Complementary ways of finding protected health information:
//!
//! - the **canary registry** ([`canaries`]): every PHI value the synthetic
//!   data generators hand out is registered, and found again verbatim or in
//!   the forms a leak takes (case, separators, JSON, URL encoding, X12/HL7
//!   name order). No false positives, and it catches names, which no
//!   pattern can;
//! - **pattern detectors** for the HIPAA Safe Harbor identifiers that text
//!   can carry (SSN, phone, fax, e-mail, dates tied to a person, addresses
//!   and ZIPs, URLs, IPs, MRN, member numbers and MBIs, account, licence and
//!   device numbers), validated by check rules and context to keep ordinary
//!   log lines (timestamps, CPT codes, provider NPIs, order numbers) clean;
//!   keys in any spelling (`dateOfBirth`, `name.family`), names in prose
//!   after a title, "patient", a relative or a greeting, or a common given
//!   name beside a common surname (census lists shipped in `data/`), ages
//!   over 89, web addresses without a scheme. Context also clears: a build's
//!   or a certificate's date, a network card's MAC, a Message-ID, a
//!   prescriber's DEA number, a payer's toll-free number, an organisation's
//!   address, an identifier system's URI;
//! - **record parsers** for HL7 v2 `PID`/`NK1`/`PV1`/`IN1`/`GT1` (identifier
//!   types such as `SS` and `MR` in `PID-3`'s repetitions), X12
//!   `NM1`/`N3`/`N4`/`DMG`/`REF`/`CLM`, CSV with a header row and FHIR
//!   resources: the layout says which field is a name or a birth date, and
//!   that a provider's address is not PHI; a record cut by a line break is
//!   read as one;
//! - **decoding layers**: lines holding base64, `%XX`, character references,
//!   JSON `\u` escapes, full-width or decomposed characters or typographic
//!   quotes are decoded and scanned again, and what is found there is
//!   reported at (and redacted over) the encoded bytes.
//!
//! Canaries are also found as a first or last name alone (written
//! capitalised), in both Unicode normalisation forms, HTML-escaped and
//! SQL-escaped, and dates in the other ways dates are written.
//!
//! A scan is linear in its input: context is looked for a fixed window
//! back, never to a line's start, so one huge line costs what as many
//! short lines do. A long text is scanned on two threads, with the same
//! findings.
//!
//! ```
//! # extern crate service_test_phi as phi;
//! phi::canaries().register(phi::Kind::Name, "Maria Garcia");
//! let text = r#"{"patient":"GARCIA*MARIA","ssn":"123-45-6789"}"#;
//! assert_eq!(phi::redact(text), r#"{"patient":"[PHI:NAME]","ssn":"[PHI:SSN]"}"#);
//! ```
#![deny(missing_docs)]

pub mod canary;
mod decode;
mod detect;
pub mod ids;
mod names;
mod records;

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};

pub use canary::CanaryRegistry;

/// A pattern finding: what kind, where.
pub(crate) type Hit = (Kind, Range<usize>);

/// The kinds of PHI found, after the Safe Harbor list (45 CFR 164.514(b)(2)(i)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// (A) Names.
    Name,
    /// (B) Street addresses, cities with them, ZIP codes.
    Address,
    /// (C) Dates directly related to a person (birth, admission, discharge, death, service).
    Date,
    /// (D) Telephone numbers.
    Phone,
    /// (E) Fax numbers.
    Fax,
    /// (F) E-mail addresses.
    Email,
    /// (G) Social security numbers (and ITINs).
    Ssn,
    /// (H) Medical record numbers.
    Mrn,
    /// (I) Health plan beneficiary numbers: member ids, MBIs.
    MemberId,
    /// (J) Account numbers.
    Account,
    /// (K) Certificate and licence numbers (DEA, driver's licence).
    License,
    /// (M) Device identifiers and serial numbers.
    DeviceId,
    /// (N) Web URLs.
    Url,
    /// (O) IP addresses.
    Ip,
}

impl Kind {
    /// Every kind, in Safe Harbor order.
    pub const ALL: [Kind; 14] = [
        Kind::Name,
        Kind::Address,
        Kind::Date,
        Kind::Phone,
        Kind::Fax,
        Kind::Email,
        Kind::Ssn,
        Kind::Mrn,
        Kind::MemberId,
        Kind::Account,
        Kind::License,
        Kind::DeviceId,
        Kind::Url,
        Kind::Ip,
    ];

    /// The label used in redactions (`[PHI:SSN]`) and reports.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Name => "NAME",
            Kind::Address => "ADDRESS",
            Kind::Date => "DATE",
            Kind::Phone => "PHONE",
            Kind::Fax => "FAX",
            Kind::Email => "EMAIL",
            Kind::Ssn => "SSN",
            Kind::Mrn => "MRN",
            Kind::MemberId => "MEMBER_ID",
            Kind::Account => "ACCOUNT",
            Kind::License => "LICENSE",
            Kind::DeviceId => "DEVICE_ID",
            Kind::Url => "URL",
            Kind::Ip => "IP",
        }
    }

    /// Parses a label back (`SSN` → [`Kind::Ssn`]).
    pub fn from_label(label: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.label().eq_ignore_ascii_case(label.trim()))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// How a finding was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A registered canary value (or one of its variants).
    Canary,
    /// A pattern detector.
    Pattern,
}

/// One piece of PHI in a text: its kind and byte span. Its `Display` never
/// shows the value itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What kind of identifier.
    pub kind: Kind,
    /// Byte range in the scanned text.
    pub span: Range<usize>,
    /// Canary or pattern.
    pub via: Via,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let via = match self.via {
            Via::Canary => "registered canary",
            Via::Pattern => "pattern",
        };
        write!(
            f,
            "{} at bytes {}..{} ({via})",
            self.kind, self.span.start, self.span.end
        )
    }
}

static CANARIES: LazyLock<CanaryRegistry> = LazyLock::new(CanaryRegistry::new);

/// The run-wide canary registry the generators register into.
pub fn canaries() -> &'static CanaryRegistry {
    &CANARIES
}

/// Called with each value newly registered in the run-wide registry.
static ON_REGISTER: std::sync::OnceLock<fn(Kind, &str)> = std::sync::OnceLock::new();

/// Asks to be told of every value registered in the run-wide registry from
/// now on (once per process; a second hook is refused and `false`
/// returned). A test harness hands its worker's values to the process that
/// prints the worker's output, as they are generated, so that a line
/// printed just before a crash is still redacted.
pub fn on_register(hook: fn(Kind, &str)) -> bool {
    ON_REGISTER.set(hook).is_ok()
}

/// A registry tells of a new value (only the run-wide one calls the hook).
fn registered(registry: &CanaryRegistry, kind: Kind, value: &str) {
    if std::ptr::eq(registry, canaries()) {
        if let Some(hook) = ON_REGISTER.get() {
            hook(kind, value);
        }
    }
}

/// Runs every pattern detector and the record parsers over `text`, the
/// spans a record clears taken out; returns the lines that hold something
/// encoded.
fn patterns(text: &str, out: &mut Vec<Hit>) -> Vec<Range<usize>> {
    let encoded = detect::detect(text, out);
    let cleared = records::cleared(text, out);
    detect::clear(out, &cleared);
    encoded
}

/// Scans with a given canary registry plus the pattern detectors. Findings
/// are sorted by position and do not overlap (a canary wins over a pattern,
/// then the longer match).
pub fn scan_with(registry: &CanaryRegistry, text: &str) -> Vec<Finding> {
    let searcher = registry.searcher();
    let (mut canary_hits, mut pattern_hits, encoded) =
        if text.len() >= TWO_THREADS_FROM && two_cores() {
            hits_on_two_threads(&searcher, text)
        } else {
            let mut canary_hits = Vec::new();
            searcher.find(text, 0..text.len(), &mut canary_hits);
            let mut pattern_hits = Vec::new();
            let encoded = patterns(text, &mut pattern_hits);
            (canary_hits, pattern_hits, encoded)
        };
    // The lines with something encoded, decoded, scanned again: their
    // findings cover the encoded bytes of the original.
    if let Some(decoded) = decode::Decoded::of(text, &encoded) {
        let mut hits = Vec::new();
        searcher.find(&decoded.text, 0..decoded.text.len(), &mut hits);
        canary_hits.extend(hits.drain(..).map(|(k, s)| (k, decoded.original(&s))));
        patterns(&decoded.text, &mut hits);
        pattern_hits.extend(hits.into_iter().map(|(k, s)| (k, decoded.original(&s))));
    }
    let mut all: Vec<Finding> = canary_hits
        .into_iter()
        .map(|(kind, span)| Finding {
            kind,
            span,
            via: Via::Canary,
        })
        .chain(pattern_hits.into_iter().map(|(kind, span)| Finding {
            kind,
            span,
            via: Via::Pattern,
        }))
        .filter(|f| !f.span.is_empty())
        .collect();
    all.sort_by(|a, b| {
        a.span
            .start
            .cmp(&b.span.start)
            .then((a.via == Via::Pattern).cmp(&(b.via == Via::Pattern)))
            .then(b.span.end.cmp(&a.span.end))
    });
    let mut out: Vec<Finding> = Vec::with_capacity(all.len());
    for f in all {
        match out.last_mut() {
            // Another kind of PHI inside a URL's path or query (a name, a
            // birth date): the URL is cut around it, so each is reported.
            Some(last)
                if last.kind == Kind::Url
                    && f.kind != Kind::Url
                    && f.span.start < last.span.end
                    && f.span.end <= last.span.end =>
            {
                let rest = Finding {
                    kind: last.kind,
                    span: f.span.end..last.span.end,
                    via: last.via,
                };
                last.span.end = f.span.start;
                if last.span.is_empty() {
                    out.pop();
                }
                out.push(f);
                if !rest.span.is_empty() {
                    out.push(rest);
                }
            }
            Some(last) if f.span.start < last.span.end => {
                // Overlap: a canary keeps its kind; extend to cover both.
                last.span.end = last.span.end.max(f.span.end);
            }
            _ => out.push(f),
        }
    }
    out
}

/// A text from this long is scanned on two threads (below, starting them
/// costs more than they save).
const TWO_THREADS_FROM: usize = 128 * 1024;

fn two_cores() -> bool {
    static CORES: LazyLock<bool> =
        LazyLock::new(|| std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2));
    *CORES
}

/// The canary and pattern hits of `text`, as [`scan_with`] finds them on
/// one thread (the same hits, in the same order), found by two threads in
/// two rounds of small tasks: the canaries in parts of the text and the
/// detectors' line gates in parts of its lines; then each detector.
fn hits_on_two_threads(
    searcher: &canary::Searcher,
    text: &str,
) -> (Vec<detect::Hit>, Vec<detect::Hit>, Vec<Range<usize>>) {
    // The lines are cut at line breaks; the canaries after a byte no canary
    // holds (no match runs across it) that is not a letter or digit (a hit
    // after it is not glued to it), which a line break usually is.
    let mut at = [false; 256];
    at[usize::from(b'\n')] = true;
    let line_parts = parts(text, &at);
    for b in 0..=255u8 {
        at[usize::from(b)] = !searcher.holds(b) && b.is_ascii() && !b.is_ascii_alphanumeric();
    }
    let canary_parts = parts(text, &at);
    enum Found {
        Canaries(Vec<detect::Hit>),
        Gates(detect::GateLines),
    }
    // The gates first: a long line is one task, best started at once.
    let mut first: Vec<Task<'_, Found>> = Vec::new();
    for range in line_parts {
        first.push(Box::new(move || {
            Found::Gates(detect::gate_lines(text, range))
        }));
    }
    for range in canary_parts {
        first.push(Box::new(move || {
            let mut hits = Vec::new();
            searcher.find(text, range, &mut hits);
            Found::Canaries(hits)
        }));
    }
    let mut canary_hits = Vec::new();
    let mut gates = Vec::new();
    for found in shared(first) {
        match found {
            Found::Canaries(hits) => canary_hits.extend(hits),
            Found::Gates(lines) => gates.push(lines),
        }
    }
    let plan = detect::Plan::from_gates(text, gates);
    let plan = &plan;
    let mut second: Vec<Task<'_, (Vec<detect::Hit>, Vec<detect::Hit>)>> = detect::DETECTORS
        .into_iter()
        .map(|detector| -> Task<'_, _> {
            Box::new(move || {
                let mut hits = Vec::new();
                detector(text, plan, &mut hits);
                (hits, Vec::new())
            })
        })
        .collect();
    second.push(Box::new(move || {
        let mut hits = Vec::new();
        let cleared = records::cleared(text, &mut hits);
        (hits, cleared)
    }));
    let mut pattern_hits = Vec::new();
    let mut cleared = Vec::new();
    for (hits, more) in shared(second) {
        pattern_hits.extend(hits);
        cleared.extend(more);
    }
    detect::clear(&mut pattern_hits, &cleared);
    let encoded = plan.encoded().to_vec();
    (canary_hits, pattern_hits, encoded)
}

/// Into how many parts a text is cut for the threads to share: small
/// enough that one thread held back by a busy machine leaves little for
/// the other to wait on.
const PARTS: usize = 8;

/// `text` cut into up to [`PARTS`] ranges, each after a byte `at` marks
/// near an even share (fewer where there is none).
fn parts(text: &str, at: &[bool; 256]) -> Vec<Range<usize>> {
    let mut bounds = vec![0];
    for i in 1..PARTS {
        if let Some(cut) = split_after(text, at, text.len() * i / PARTS) {
            if bounds.last().is_some_and(|&last| cut > last) && cut < text.len() {
                bounds.push(cut);
            }
        }
    }
    bounds.push(text.len());
    bounds.windows(2).map(|w| w[0]..w[1]).collect()
}

/// One piece of work for [`shared`].
type Task<'a, T> = Box<dyn FnOnce() -> T + Send + 'a>;

/// Runs `tasks` on this thread and one more, each thread taking the next
/// task nobody has taken: a thread the machine holds back leaves its
/// share to the other instead of keeping it waiting. The results are in
/// the tasks' order.
fn shared<T: Send>(tasks: Vec<Task<'_, T>>) -> Vec<T> {
    let results: Vec<Mutex<Option<T>>> = tasks.iter().map(|_| Mutex::new(None)).collect();
    let tasks: Vec<Mutex<Option<Task<'_, T>>>> =
        tasks.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(task) = tasks.get(i) else { break };
            let task = task.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let (Some(task), Some(result)) = (task, results.get(i)) {
                let done = task();
                *result.lock().unwrap_or_else(PoisonError::into_inner) = Some(done);
            }
        }
    };
    std::thread::scope(|s| {
        let helper = s.spawn(work);
        work();
        // A panic on the other thread is this one's.
        helper
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
    });
    // Every task ran: the two threads took every index between them.
    results
        .into_iter()
        .filter_map(|r| r.into_inner().unwrap_or_else(PoisonError::into_inner))
        .collect()
}

/// How far either side of the best place to cut a text a place to cut it
/// is looked for (without one, a single thread takes that part of the work).
const CUT_WITHIN: usize = 64 * 1024;

/// Where to cut `text` in two: after the byte nearest `middle` (within
/// [`CUT_WITHIN`]) that `cuts` marks.
fn split_after(text: &str, cuts: &[bool; 256], middle: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let cut = |b: &u8| cuts[usize::from(*b)];
    let after = bytes[middle..(middle + CUT_WITHIN).min(bytes.len())]
        .iter()
        .position(cut)
        .map(|i| middle + i + 1);
    after.or_else(|| {
        let from = middle.saturating_sub(CUT_WITHIN);
        bytes[from..middle]
            .iter()
            .rposition(cut)
            .map(|i| from + i + 1)
    })
}

/// Scans with the run-wide canary registry plus the pattern detectors.
pub fn scan(text: &str) -> Vec<Finding> {
    scan_with(canaries(), text)
}

/// Replaces every finding with `[PHI:KIND]`, using the given registry.
pub fn redact_with(registry: &CanaryRegistry, text: &str) -> String {
    let findings = scan_with(registry, text);
    if findings.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in findings {
        out.push_str(&text[at..f.span.start]);
        out.push_str("[PHI:");
        out.push_str(f.kind.label());
        out.push(']');
        at = f.span.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Replaces every finding with `[PHI:KIND]`, using the run-wide registry.
pub fn redact(text: &str) -> String {
    redact_with(canaries(), text)
}
