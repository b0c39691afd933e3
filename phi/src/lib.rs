//! PHI detection for test output, logs and reports.
//!
//! Two complementary ways of finding protected health information:
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
//!   after a title or "patient", ages over 89, web addresses without a
//!   scheme;
//! - **record parsers** for HL7 v2 `PID`/`NK1`, X12 `NM1`/`N3`/`N4`/`DMG`,
//!   CSV with a header row and FHIR resources: the layout says which field
//!   is a name or a birth date, and that a provider's address is not PHI.
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
//! phi::canaries().register(phi::Kind::Name, "Maria Garcia");
//! let text = r#"{"patient":"GARCIA*MARIA","ssn":"123-45-6789"}"#;
//! assert_eq!(phi::redact(text), r#"{"patient":"[PHI:NAME]","ssn":"[PHI:SSN]"}"#);
//! ```

pub mod canary;
mod detect;
pub mod ids;
mod records;

use std::fmt;
use std::ops::Range;
use std::sync::LazyLock;

pub use canary::CanaryRegistry;

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

/// Scans with a given canary registry plus the pattern detectors. Findings
/// are sorted by position and do not overlap (a canary wins over a pattern,
/// then the longer match).
pub fn scan_with(registry: &CanaryRegistry, text: &str) -> Vec<Finding> {
    let searcher = registry.searcher();
    let (canary_hits, pattern_hits) = if text.len() >= TWO_THREADS_FROM && two_cores() {
        hits_on_two_threads(&searcher, text)
    } else {
        let mut canary_hits = Vec::new();
        searcher.find(text, 0..text.len(), &mut canary_hits);
        let mut pattern_hits = Vec::new();
        detect::detect(text, &mut pattern_hits);
        (canary_hits, pattern_hits)
    };
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
/// one thread (the same hits, in the same order), in two rounds of two
/// halves of the work: the canaries in each half of the text with the
/// detectors' line gates in each half of its lines; then each half of
/// the detectors.
fn hits_on_two_threads(
    searcher: &canary::Searcher,
    text: &str,
) -> (Vec<detect::Hit>, Vec<detect::Hit>) {
    // The lines split at a line break; the canaries there too, or, in one
    // long line, after a byte no canary holds (no match runs across it)
    // that is not a letter or digit (a hit after it is not glued to it).
    let mut cuts = [false; 256];
    cuts[usize::from(b'\n')] = true;
    let lines_at = split_after(text, &cuts, text.len() / 2).unwrap_or(text.len());
    for b in 0..=255u8 {
        cuts[usize::from(b)] = !searcher.holds(b) && b.is_ascii() && !b.is_ascii_alphanumeric();
    }
    // When the lines cannot be cut (one long line), the first thread gates
    // them all and takes only a quarter of the canaries.
    let canaries_near = if lines_at == text.len() {
        text.len() / 4
    } else {
        text.len() / 2
    };
    let canaries_at = split_after(text, &cuts, canaries_near).unwrap_or(text.len());
    let ((mut canary_hits, gates_first), (canary_rest, gates_rest)) = both(
        || {
            let mut hits = Vec::new();
            searcher.find(text, 0..canaries_at, &mut hits);
            (hits, detect::gate_lines(text, 0..lines_at))
        },
        || {
            let mut hits = Vec::new();
            searcher.find(text, canaries_at..text.len(), &mut hits);
            let gates =
                (lines_at < text.len()).then(|| detect::gate_lines(text, lines_at..text.len()));
            (hits, gates)
        },
    );
    canary_hits.extend(canary_rest);
    let plan = detect::Plan::from_gates(text, std::iter::once(gates_first).chain(gates_rest));
    let (mut pattern_hits, (rest, cleared)) = both(
        || {
            let mut hits = Vec::new();
            detect::detect_first(text, &plan, &mut hits);
            hits
        },
        || {
            let mut hits = Vec::new();
            let cleared = detect::detect_second(text, &plan, &mut hits);
            (hits, cleared)
        },
    );
    pattern_hits.extend(rest);
    detect::clear(&mut pattern_hits, &cleared);
    (canary_hits, pattern_hits)
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

/// Runs `a` here and `b` on another thread, at once.
fn both<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    std::thread::scope(|s| {
        let b = s.spawn(b);
        let a = a();
        // A panic on the other thread is this one's.
        (a, b.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
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
