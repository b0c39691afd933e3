//! Pattern detectors for the HIPAA Safe Harbor identifiers text can carry.
//!
//! Each detector is a regular expression plus a validator (check digits,
//! SSA rules, calendar dates) and, where the shape alone is ambiguous, a
//! context rule: a keyword shortly before the value on the same line
//! (`dob`, `mrn`, `fax`, `member id`, …). The policies, chosen so that
//! ordinary service logs do not trip them:
//!
//! - **Dates** are PHI only next to a person's event (birth, admission,
//!   discharge, death, service/visit, appointment), unless context that
//!   clears stands nearer (a build, a release, a certificate's expiry, a
//!   job); bare timestamps are not. Two-digit years and `on 3/15` count.
//! - **Phone numbers** need separators, parentheses or `+1`, or a phone
//!   keyword; ten bare digits (an NPI, an order number) are not a phone.
//!   A phone preceded by `fax` is a fax number. Toll-free numbers, an
//!   organisation's (a pharmacy's, a payer's) and placeholders are not.
//! - **ZIP codes** need a state abbreviation before them or a ZIP keyword;
//!   five bare digits (a CPT code) are not a ZIP. An organisation's
//!   address (a clinic's, a payer's remit-to) is not PHI.
//! - **URLs and IP addresses** are PHI when they point outside the system:
//!   loopback, private (RFC 1918) and `localhost`/single-label service
//!   hosts are infrastructure, not a person's.
//! - **MRN, member, account, licence and device numbers** have no national
//!   shape: they are found after their keyword (not a certificate's
//!   serial); MBIs by their own format rules anywhere. A DEA number is a
//!   prescriber's, a MAC address a network card's, unless a patient's
//!   licence or a medical device is named.
//! - **Names** after a key, a title, "patient", a relative or a greeting,
//!   or a common given name beside a common surname (see [`crate::names`]);
//!   not a provider's (`Dr.`, `, MD`, `signed by`) or staff's.
//!
//! A value alone on its line (or after a label ending in `:`) reads the
//! context of the line above it: a record printed one field a line.
//!
//! The cost stays linear in the text: a candidate's context is read from
//! a fixed window back, never from its line's start, and the expressions
//! run only where one first pass over each line says they can match (see
//! [`Pass`]), so a service log pays about two passes, not twenty.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{LazyLock, OnceLock};

use aho_corasick::{AhoCorasick, MatchKind};
use regex::{Regex, RegexSet};

use crate::Kind;
use crate::{ids, names};

pub(crate) use crate::Hit;

/// How far back (bytes, same line) a context keyword may stand.
const LOOKBACK: usize = 40;

fn re(pattern: &str) -> Regex {
    // The patterns are constants of this module, exercised by its tests.
    Regex::new(pattern).unwrap_or_else(|e| panic!("bad built-in PHI pattern {pattern:?}: {e}"))
}

/// How far back (bytes, same line) a context that clears a candidate (a
/// build line, a provider's role) may stand: further than a keyword that
/// makes one PHI, as a line often names its subject first.
const CLEAR_LOOKBACK: usize = 100;

/// Context keywords with an automaton that finds them all in one pass
/// over a look-back window: a candidate is judged by one short scan, not
/// by a substring search per keyword (most of a log scan's time went there).
struct Keywords {
    automaton: AhoCorasick,
    /// The longest piece of each keyword without `_` or a space, any
    /// case: a window without one holds no keyword (its `_`s are only
    /// ever inserted between letters), so most windows are ruled out by
    /// one search of their raw bytes.
    pieces: AhoCorasick,
    /// Keywords that are whole words (three letters or fewer: `dob`,
    /// `dos`, `tel`): not the start of a longer one (`dose`, `dos2unix`).
    whole: Vec<bool>,
}

impl Keywords {
    fn new(words: &'static [&'static str]) -> Self {
        // Overlapping matches, so every occurrence of every keyword is seen
        // (the built-in lists cannot fail to build).
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(words)
            .unwrap_or_else(|e| panic!("bad built-in context keywords {words:?}: {e}"));
        let whole = words
            .iter()
            .map(|w| {
                w.len() <= 3 && w.bytes().all(|b| b.is_ascii_alphabetic())
                    || matches!(*w, "visit" | "seen")
            })
            .collect();
        let pieces: Vec<&str> = words
            .iter()
            .map(|w| w.split(['_', ' ']).max_by_key(|p| p.len()).unwrap_or(w))
            .collect();
        let pieces = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&pieces)
            .unwrap_or_else(|e| panic!("bad built-in context keywords {words:?}: {e}"));
        Keywords {
            automaton,
            pieces,
            whole,
        }
    }
}

/// The byte range of `text` a candidate at `start` reads its context
/// from: up to `len` bytes back on its line; for a value alone on its
/// line (or after a label ending in `:`), the end of the line above, where
/// its label stands.
fn window(text: &str, start: usize, len: usize) -> Range<usize> {
    let bytes = text.as_bytes();
    let mut from = start.saturating_sub(len);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let Some(i) = bytes[from..start]
        .iter()
        .rposition(|b| matches!(b, b'\n' | b'\r'))
    else {
        return from..start;
    };
    let line_start = from + i + 1;
    if !bytes[line_start..start].iter().all(u8::is_ascii_whitespace) {
        return line_start..start;
    }
    // The value opens its line: is it the value of the line above? Only
    // when that line ends in `:` or `=` or the value stands alone on its
    // own (the two cheap tests first: every log line opens with a
    // timestamp, and the line above is no label of it).
    let mut end = from + i;
    if end > 0 && bytes[end] == b'\n' && bytes[end - 1] == b'\r' {
        end -= 1;
    }
    let labelled = bytes[..end]
        .iter()
        .rev()
        .take(8)
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b':' | b'='));
    let lone_value = || {
        bytes[start..(start + LOOKBACK).min(bytes.len())]
            .iter()
            .find(|b| b.is_ascii_whitespace())
            .is_none_or(|b| matches!(b, b'\n' | b'\r'))
    };
    if !labelled && !lone_value() {
        return line_start..start;
    }
    let mut above_from = end.saturating_sub(len);
    while !text.is_char_boundary(above_from) {
        above_from += 1;
    }
    let above_from = bytes[above_from..end]
        .iter()
        .rposition(|b| matches!(b, b'\n' | b'\r'))
        .map_or(above_from, |j| above_from + j + 1);
    above_from..end
}

/// Where the nearest keyword of `keywords` in the context window of a
/// candidate at `start` begins, counted back from the window's end
/// (smaller is nearer); `None` when there is none.
fn nearest_context(text: &str, start: usize, keywords: &Keywords, len: usize) -> Option<usize> {
    let range = window(text, start, len);
    let window = &text.as_bytes()[range];
    if window.is_empty() || window.is_ascii() && !keywords.pieces.is_match(window) {
        return None;
    }
    // The window in lower case, a `_` where camelCase starts a word
    // (`dateOfBirth` reads as `date_of_birth`), so keywords are found
    // inside identifiers; letters outside ASCII are lower-cased too. An
    // ASCII window (nearly all) is written on the stack.
    let mut stack = [0u8; 2 * CLEAR_LOOKBACK];
    let mut heap = String::new();
    let mut prev_lower = false;
    let before: &[u8] = if window.is_ascii() && window.len() <= CLEAR_LOOKBACK {
        let mut len = 0;
        for &b in window {
            if prev_lower && b.is_ascii_uppercase() {
                stack[len] = b'_';
                len += 1;
            }
            prev_lower = b.is_ascii_lowercase();
            stack[len] = b.to_ascii_lowercase();
            len += 1;
        }
        &stack[..len]
    } else {
        for c in String::from_utf8_lossy(window).chars() {
            if prev_lower && c.is_uppercase() {
                heap.push('_');
            }
            prev_lower = c.is_lowercase();
            heap.extend(c.to_lowercase());
        }
        heap.as_bytes()
    };
    // A keyword starts a word: "dob" but not inside "adobe". (Overlapping
    // occurrences add none that start a word: the keywords that overlap
    // themselves, `dod`, `died`, `deceased`, do so after a letter.)
    keywords
        .automaton
        .find_overlapping_iter(before)
        .filter(|m| m.start() == 0 || !before[m.start() - 1].is_ascii_alphabetic())
        .filter(|m| {
            !keywords.whole[m.pattern().as_usize()]
                || before
                    .get(m.end())
                    .is_none_or(|b| !b.is_ascii_alphanumeric())
        })
        // A keyword that opens a hyphenated name (`discharge-reminders`,
        // a job; `visit-summary`) is no context; `birth-date` is.
        .filter(|m| !opens_compound(&before[m.end()..]))
        .map(|m| before.len() - m.start())
        .min()
}

/// `rest` (after a keyword) goes on with `-` and a word that is not a
/// date's (`-reminders`, not `-date`).
fn opens_compound(rest: &[u8]) -> bool {
    // The rest of the keyword's word first (`discharg|e-reminders`).
    let rest = &rest[rest.iter().take_while(|b| b.is_ascii_lowercase()).count()..];
    let Some(word) = rest.strip_prefix(b"-") else {
        return false;
    };
    let len = word.iter().take_while(|b| b.is_ascii_lowercase()).count();
    len >= 3 && !matches!(&word[..len], b"date" | b"time" | b"day" | b"dt")
}

fn has_context(text: &str, start: usize, keywords: &Keywords) -> bool {
    nearest_context(text, start, keywords, LOOKBACK).is_some()
}

/// A candidate with context that makes it PHI, unless context that clears
/// it stands nearer (`admitted … build 2025-05-14` is a build's date).
fn context_wins(text: &str, start: usize, keywords: &Keywords, clears: &Keywords) -> bool {
    let Some(person) = nearest_context(text, start, keywords, LOOKBACK) else {
        return false;
    };
    nearest_context(text, start, clears, CLEAR_LOOKBACK).is_none_or(|clear| clear > person)
}

/// A match must not be glued to letters or digits on either side.
fn standalone(text: &str, r: &Range<usize>) -> bool {
    let before = text[..r.start].chars().next_back();
    let after = text[r.end..].chars().next();
    !before.is_some_and(|c| c.is_alphanumeric()) && !after.is_some_and(|c| c.is_alphanumeric())
}

static SSN_CONTEXT: LazyLock<Keywords> = LazyLock::new(|| {
    Keywords::new(&[
        "ssn",
        "social security",
        "social_security",
        "socialsecurity",
        "ref*sy*",
        "taxpayer",
        "itin",
        "social",
    ])
});
static PERSON_DATE_CONTEXT: LazyLock<Keywords> = LazyLock::new(|| {
    Keywords::new(&[
        "dob",
        "birth",
        "born",
        "admit",
        "admission",
        "discharg",
        "death",
        "died",
        "deceased",
        "dod",
        "date of service",
        "service_date",
        "servicedate",
        "service date",
        "dos",
        "visit",
        "seen",
        "encounter",
        "appointment",
        "appt",
        "surgery",
        "procedure",
        "follow-up",
        "follow up",
        "d.o.b",
        "bday",
        "dmg*d8*",
        "dtp*472*",
        "dtp*435*",
        "dtp*096*",
    ])
});
static PHONE_CONTEXT: LazyLock<Keywords> = LazyLock::new(|| {
    Keywords::new(&[
        "phone",
        "tel",
        "telephone",
        "mobile",
        "cell",
        "contact",
        "call",
        "te*",
        "hp*",
        "cp*",
        "wp*",
        "fax",
        "sms",
        "text",
        "reach",
    ])
});

/// Context that makes a date a system's, not a person's: builds,
/// releases, certificates, jobs and counters.
static DATE_CLEAR_CONTEXT: LazyLock<Keywords> = LazyLock::new(|| {
    Keywords::new(&[
        "build",
        "built",
        "deploy",
        "release",
        "version",
        "commit",
        "cert",
        "expire",
        "expiry",
        "expiration",
        "not_after",
        "not_before",
        "valid until",
        "backup",
        "snapshot",
        "cron",
        "batch",
        "job",
        "counter",
        "cache",
        "metric",
        "rotated",
        "maintenance",
        "sprint",
        "firmware",
        "migration",
        "changelog",
        "report generated",
        "crawl",
        "schema",
        "column",
        "merged",
        "ticket",
        "rollout",
        "feature flag",
        "reset",
    ])
});

/// Context that makes a phone number, an address or an e-mail address an
/// organisation's: a provider's, a payer's, a pharmacy's.
static ORGANISATION_CONTEXT: LazyLock<Keywords> = LazyLock::new(|| {
    Keywords::new(&[
        "clinic",
        "hospital",
        "medical center",
        "medical group",
        "pharmacy",
        "health plan",
        "payer",
        "remit",
        "pay-to",
        "pay to",
        "billing provider",
        "rendering provider",
        "provider",
        "facility",
        "organization",
        "organisation",
        "practice",
        "headquarters",
        "office",
        "member services",
        "customer service",
        "helpdesk",
        "help desk",
        "hotline",
        "inc.",
        "llc",
        "©",
        "copyright",
        "laboratory",
        "department",
        "lab:",
        "labs",
        "diagnostics",
        "imaging center",
        "urgent care",
        "health system",
        "health center",
        "hospice",
        "nursing home",
        "university",
    ])
});

/// Context that makes a candidate the patient's (nearer than an
/// organisation, it keeps an address or a phone).
static PERSON_CONTEXT: LazyLock<Keywords> = LazyLock::new(|| {
    Keywords::new(&[
        "patient",
        "home",
        "mobile",
        "cell",
        "my ",
        "member:",
        "subscriber",
        "guarantor",
        "ship to",
        "mailing",
        "lives",
        "resides",
        "moved",
        "new address",
        "emergency contact",
    ])
});

/// Context that makes a MAC address a person's device.
static DEVICE_CONTEXT: LazyLock<Keywords> = LazyLock::new(|| {
    Keywords::new(&[
        "glucometer",
        "meter",
        "pump",
        "monitor",
        "pacemaker",
        "implant",
        "wearable",
        "sensor",
        "cgm",
        "inhaler",
        "patient",
        "medical device",
        "hearing aid",
        "oximeter",
        "watch",
        "tracker",
    ])
});

/// A serial number of a certificate, not of a device.
static CERTIFICATE_CONTEXT: LazyLock<Keywords> =
    LazyLock::new(|| Keywords::new(&["certificate", "cert", "tls", "ssl", "x509", "x.509"]));

/// E-mail headers whose values are message ids, not mailboxes.
static MESSAGE_ID_CONTEXT: LazyLock<Keywords> = LazyLock::new(|| {
    Keywords::new(&[
        "message-id",
        "message_id",
        "messageid",
        "msgid",
        "msg-id",
        "in-reply-to",
        "references",
        "content-id",
    ])
});

static FAX_CONTEXT: LazyLock<Keywords> = LazyLock::new(|| Keywords::new(&["fax", "fx*"]));
static ZIP_CONTEXT: LazyLock<Keywords> =
    LazyLock::new(|| Keywords::new(&["zip", "postal", "post code", "postcode"]));

/// The detectors' regular expressions, in the order their hits are
/// reported (the order of [`detect`]).
///
/// A scan first runs every pass's **gate** over each line, all at once (a
/// [`RegexSet`]), and then each pass only where it can match:
///
/// - a pass whose matches never cross a line break searches only the
///   lines its gate (its own pattern) flagged, or the whole text when
///   those are most of it: the same matches, as none spans two lines;
/// - a pass that may cross a line break (`\s` between its parts) has as
///   its gate a part every match holds within one line; it searches the
///   whole text when any line holds that part, and is skipped otherwise.
///
/// Most passes have no literal to look for first and stepped through
/// every byte; one pass of the gates replaces about twenty.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    SsnDashed,
    SsnPlain,
    Phone,
    PhoneLocal,
    Email,
    DateIso,
    DateNumeric,
    DateCompact,
    DateSlashed,
    DateMonthDay,
    DateWords,
    StateZip,
    Zip,
    Street,
    Url,
    Ipv4,
    Ipv6,
    KeyedId,
    X12Id,
    Mbi,
    Dea,
    Mac,
    KeyedName,
    ProseName,
    Age,
    SchemelessUrl,
    ListName,
}

const STREET_SUFFIXES: &str = "Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Drive|Dr|Lane|Ln|Way|Court|Ct|Place|Pl|Terrace|Ter|Parkway|Pkwy|Circle|Cir|Highway|Hwy|Trail|Trl";

/// The keywords an MRN, member, account, licence or device number follows.
const ID_KEYS: &str = r"mrn|medical[ _]?record(?:[ _]?(?:number|no|num|#))?|chart(?:[ _]?(?:number|no|#))|member(?:[ _]?(?:id|number|no|#))|subscriber(?:[ _]?(?:id|number|no|#))|beneficiary(?:[ _]?(?:id|number|no|#))|policy(?:[ _]?(?:id|number|no|#))|medicaid(?:[ _]?(?:id|number|no|#))|insurance[ _]?id|account(?:[ _]?(?:id|number|no|num|#))?|acct(?:[ _]?(?:number|no|num|#))?|driver'?s?[ _]?licen[cs]e(?:[ _]?(?:number|no|#))?|licen[cs]e(?:[ _]?(?:number|no|#))|dl(?:[ _]?(?:number|no|num|#))?|passport(?:[ _]?(?:number|no|#))?|(?:license[ _]?)?plate(?:[ _]?(?:number|no|#))?|state[ _]?id(?:[ _]?card)?(?:[ _]?(?:number|no|#))?|device(?:[ _]?(?:id|serial|sn|number|no|#))|serial(?:[ _]?(?:number|no|#))?|s/n|udi|imei";

const PERSON_WORDS: &str = "patient|pt|named|resident|caller|this is|it's|i am|i'm|spoke with|called|my name is|name is|hello|hi|dear|welcome back|welcome|thanks|thank you|daughter|son|wife|husband|mother|father|brother|sister|niece|nephew|aunt|uncle|grandson|granddaughter|grandmother|grandfather|grandchild|spouse|partner|caregiver|guardian|cousin|fianc[eé]e?";

/// Words after which one name alone is a person's: a relative, "my name is".
const KINSHIP_WORDS: &[&str] = &[
    "daughter",
    "son",
    "wife",
    "husband",
    "mother",
    "father",
    "brother",
    "sister",
    "niece",
    "nephew",
    "aunt",
    "uncle",
    "grandson",
    "granddaughter",
    "grandmother",
    "grandfather",
    "grandchild",
    "spouse",
    "partner",
    "caregiver",
    "guardian",
    "cousin",
    "fiance",
    "fiancé",
    "fiancee",
    "fiancée",
    "my name is",
    "name is",
];

/// Greetings, after which one common given name is a person's.
const GREETINGS: &[&str] = &[
    "hello",
    "hi",
    "dear",
    "welcome back",
    "welcome",
    "thanks",
    "thank you",
];

impl Pass {
    const ALL: [Pass; 27] = [
        Pass::SsnDashed,
        Pass::SsnPlain,
        Pass::Phone,
        Pass::PhoneLocal,
        Pass::Email,
        Pass::DateIso,
        Pass::DateNumeric,
        Pass::DateCompact,
        Pass::DateSlashed,
        Pass::DateMonthDay,
        Pass::DateWords,
        Pass::StateZip,
        Pass::Zip,
        Pass::Street,
        Pass::Url,
        Pass::Ipv4,
        Pass::Ipv6,
        Pass::KeyedId,
        Pass::X12Id,
        Pass::Mbi,
        Pass::Dea,
        Pass::Mac,
        Pass::KeyedName,
        Pass::ProseName,
        Pass::Age,
        Pass::SchemelessUrl,
        Pass::ListName,
    ];

    fn pattern(self) -> String {
        match self {
            Pass::SsnDashed => r"\b(\d{3})([-. ])(\d{2})([-. ])(\d{4})\b".into(),
            Pass::SsnPlain => r"\b(\d{3})(\d{2})(\d{4})\b".into(),
            // (217) 555-0142, 217-555-0142, 217.555.0142, +1 217 555 0142, 2175550142 (with a keyword).
            Pass::Phone => r"(?:\+1[ .-]?)?(?:\(([2-9]\d{2})\)\s?|\b([2-9]\d{2})([ .-]))([2-9]\d{2})[ .-]?(\d{4})\b|(?:\+1|\b)([2-9]\d{2})([2-9]\d{2})(\d{4})\b".into(),
            // 555-0142: a number without its area code (kept in a field of
            // its own), with a phone keyword.
            Pass::PhoneLocal => r"\b[2-9]\d{2}-\d{4}\b".into(),
            Pass::Email => r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b".into(),
            // An ISO date, with a time of day when one follows (1957-03-04T00:00:00Z).
            Pass::DateIso => r"\b(\d{4})-(\d{2})-(\d{2})(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b".into(),
            // 03/04/1957, 04.03.1957, 03-04-1957: month or day first (a keyword decides it is a date).
            Pass::DateNumeric => r"\b(\d{1,2})([/.-])(\d{1,2})([/.-])(\d{4}|\d{2})\b".into(),
            Pass::DateCompact => r"\b(\d{4})(\d{2})(\d{2})\b".into(),
            // 1957/03/04 (a pass of its own: a second separator in the ISO
            // pattern slowed the search every log line's timestamp makes).
            Pass::DateSlashed => r"\b(\d{4})/(\d{2})/(\d{2})\b".into(),
            // 3/15, 05/14: a month and day without the year, still PHI
            // beside a person's event (`discharged home on 3/15`).
            Pass::DateMonthDay => r"(?i: on )((?:1[0-2]|0?[1-9])/(?:3[01]|[12][0-9]|0?[1-9]))\b".into(),
            Pass::DateWords => format!(
                r"(?i)\b(?:(?:{MONTHS})\.? \d{{1,2}}(?:st|nd|rd|th)?,? \d{{4}}|\d{{1,2}}[ -]?(?:{MONTHS})\.?[ -]?\d{{4}})\b"
            ),
            Pass::StateZip => format!(r"\b(?:{STATES}),?\s+(\d{{5}}(?:-\d{{4}})?)\b"),
            Pass::Zip => r"\b\d{5}(?:-\d{4})?\b".into(),
            Pass::Street => format!(
                r"(?i)\b\d{{1,6}}\s+(?:[NSEW]\.?\s+)?(?:[A-Z][a-z]+\.?\s+){{1,3}}(?:{STREET_SUFFIXES})\b\.?(?:,?\s+(?:Apt|Unit|Suite|Ste|#)\.?\s*[A-Za-z0-9-]+)?"
            ),
            Pass::Url => r#"\bhttps?://(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9.-]+)(?::\d+)?(?:[/?#][^\s"'<>)]*)?"#.into(),
            Pass::Ipv4 => r"\b(?:\d{1,3}\.){3}\d{1,3}\b".into(),
            // A loose IPv6 candidate (compressed `::` forms included); parsing decides.
            Pass::Ipv6 => r"\b[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{0,4}){2,7}\b".into(),
            // A keyword, then separators (: = # " spaces, "number"/"no"/"id"), then the value.
            Pass::KeyedId => format!(
                r#"(?i)(?:\b|_)({ID_KEYS})["']?(?:[.?]\s+[a-z]+:)?\.?\s*[:=#]?\s*["']?\s*(?:is\s+)?((?:\(\d{{2}}\))?[A-Za-z0-9][A-Za-z0-9-]{{3,24}})"#
            ),
            Pass::X12Id => r"(REF\*EA|NM1\*IL\*1\*[^*~]*\*[^*~]*\*[^*~]*\*[^*~]*\*[^*~]*\*MI)\*([A-Za-z0-9-]{4,30})".into(),
            Pass::Mbi => r"\b[1-9][AC-HJKMNP-RT-Y][AC-HJKMNP-RT-Y0-9][0-9]-?[AC-HJKMNP-RT-Y][AC-HJKMNP-RT-Y0-9][0-9]-?[AC-HJKMNP-RT-Y]{2}[0-9]{2}\b".into(),
            Pass::Dea => r"\b[A-Z][A-Z9]\d{7}\b".into(),
            Pass::Mac => r"\b[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}\b".into(),
            Pass::KeyedName => format!(
                r#"(?i)((?:[a-z_.-]*|[a-z]+ )(?:name|family|given|first|last|fname|lname|holder|guarantor|insured|beneficiary|subscriber|display))(?-i)(?:\\?["']|&quot;)?\s*[:=]\s*\[?\s*(?:\\?["']|&quot;)?({NAME_WORD}(?:[ ,]+{NAME_WORD}){{0,3}})"#
            ),
            Pass::ProseName => format!(
                r"(?:\b((?i:{PERSON_WORDS}|pt\.))(?:'s)?(?:[,:=]\s*|\s+)|\b(?:Mr|Mrs|Ms|Miss|Mx)\.?\s+)({NAME_WORD}(?:,?\s+{NAME_WORD}){{0,2}})"
            ),
            Pass::Age => r#"(?i)(?:\b|_)(?:age[d]?["']?\s*[:=]?\s*["']?(\d{2,3})\b|(\d{2,3})[- ](?:years?|yrs?)[- ](?:old\b|of age\b)|(\d{2,3})\s?(?:y/o\b|yo\b|y\.o\.?|yrs? old\b)|((?:ninety|one hundred)(?:[- ](?:one|two|three|four|five|six|seven|eight|nine))?)[- ](?:years?|yrs?)[- ]old\b)"#.into(),
            Pass::ListName => format!(
                r"(?-u:\b)({LIST_WORD})(,? )({LIST_WORD}|[A-ZÀ-ÖØ-Þ]\.)(?: ({LIST_WORD}))?"
            ),
            Pass::SchemelessUrl => format!(
                r#"(?i)\b(www\.[a-z0-9-]+(?:\.[a-z0-9-]+)+|(?:[a-z0-9-]+\.)+(?:{TLDS}))(?::\d+)?(/[^\s"'<>)]*)?"#
            ),
        }
    }

    /// For a pass whose matches may cross a line break, a pattern that
    /// every match holds a match of within one of its lines (the part
    /// before or after its `\s`); `None` when no match crosses a line
    /// break, and the pass's own pattern is its gate.
    fn gate(self) -> Option<String> {
        match self {
            // `\(217\)\s?555-0142`: the parenthesised area code, or the
            // forms without `\s`, whole.
            Pass::Phone => Some(
                r"\([2-9]\d{2}\)|\b[2-9]\d{2}[ .-][2-9]\d{2}[ .-]?\d{4}\b|(?:\+1|\b)[2-9]\d{2}[2-9]\d{2}\d{4}\b"
                    .into(),
            ),
            // The state, then the ZIP on its line or the line's end.
            Pass::StateZip => Some(format!(
                r"\b(?:{STATES}),?(?:[^\S\n]*$|[^\S\n]+\d{{5}})"
            )),
            // The street's suffix after a space or at a line's start.
            Pass::Street => Some(format!(r"(?i)(?:^|\s)(?:{STREET_SUFFIXES})\b")),
            Pass::KeyedId => Some(format!(r"(?i)(?:\b|_)(?:{ID_KEYS})")),
            Pass::X12Id => Some(r"REF\*EA\*|NM1\*IL\*1\*".into()),
            Pass::KeyedName => Some(
                "(?i)name|family|given|first|last|holder|guarantor|insured|beneficiary|subscriber|display"
                    .into(),
            ),
            Pass::ProseName => Some(format!(
                r"\b(?i:{PERSON_WORDS})|\b(?:Mr|Mrs|Ms|Miss|Mx)"
            )),
            Pass::ListName => Some(r"[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ]+,? [A-ZÀ-ÖØ-Þ]".into()),
            Pass::Age => Some(r"(?i)(?:\b|_)age|(?:years?|yrs?)[- ](?:old|of)|y/o|yo|y\.o|yrs? old".into()),
            _ => None,
        }
    }

    /// Whether a match may run across a line break: then the pass has a
    /// gate of its own (a part of every match within one line) and
    /// searches the whole text when any line passes it; otherwise only
    /// the lines that pass.
    fn crosses_lines(self) -> bool {
        self.gate().is_some() && self != Pass::ListName
    }

    /// The pass's expression, compiled the first time a text needs it (a
    /// service log never needs some, and the Unicode classes of the name
    /// passes take a while to compile).
    fn regex(self) -> &'static Regex {
        static REGEXES: [OnceLock<Regex>; Pass::ALL.len()] =
            [const { OnceLock::new() }; Pass::ALL.len()];
        REGEXES[self as usize].get_or_init(|| re(&self.pattern()))
    }
}

/// Every pass's gate, in [`Pass::ALL`]'s order.
static GATES: LazyLock<RegexSet> = LazyLock::new(|| gate_set(|gate| gate));

/// The gates without their word boundaries (`\b`), for lines that are not
/// ASCII: a Unicode word boundary stops the regex crate's fast automaton
/// at the first such byte (it falls back to one many times slower), and a
/// gate that matches more lines only has its pass search more of them.
static LOOSE_GATES: LazyLock<RegexSet> = LazyLock::new(|| gate_set(without_word_boundaries));

/// A line with something the decoding layers read ([`crate::decode`]): a
/// `%XX`, a character reference, a JSON escape, a `+` between words, or a
/// lower-case letter, an upper-case one and within two more another
/// upper-case letter or a digit (`aWEg`, `zLTQ`: base64, in 98 % of the
/// runs that encode a dozen bytes of text or more; a word, a path's
/// segments, camelCase names, have none).
/// Lines outside ASCII are decoded whatever their gates.
const ENCODED_GATE: &str =
    r#"%[0-9A-Fa-f]{2}|&[#A-Za-z]|\\[u/"]|[A-Za-z]\+[A-Z]|[a-z][A-Z][A-Za-z0-9]?[A-Z0-9]"#;

/// Where [`ENCODED_GATE`] stands among the gates: after the passes'.
const ENCODED: usize = Pass::ALL.len();

fn gate_set(adapt: impl Fn(String) -> String) -> RegexSet {
    let gates: Vec<String> = Pass::ALL
        .map(|p| adapt(p.gate().unwrap_or_else(|| p.pattern())))
        .into_iter()
        .chain(std::iter::once(ENCODED_GATE.to_string()))
        .collect();
    // The patterns are constants of this module, exercised by its tests.
    RegexSet::new(&gates).unwrap_or_else(|e| panic!("bad built-in PHI gate: {e}"))
}

/// `pattern` with every `\b` left out (an escaped backslash before a `b` kept).
fn without_word_boundaries(pattern: String) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => {}
            Some(next) => {
                out.push(c);
                out.push(next);
            }
            None => out.push(c),
        }
    }
    out
}

/// The lines of a text whose gates matched, by pass (and last, the lines
/// to decode).
pub(crate) struct GateLines(Vec<Vec<Range<usize>>>);

/// Runs the gates over the lines of `text` in `range` (which starts at a
/// line's start and ends at a line's end).
pub(crate) fn gate_lines(text: &str, range: Range<usize>) -> GateLines {
    let mut lines: Vec<Vec<Range<usize>>> = vec![Vec::new(); ENCODED + 1];
    let mut start = range.start;
    for line in text[range].split('\n') {
        let ascii = line.is_ascii();
        let gates = if ascii { &GATES } else { &LOOSE_GATES };
        let matches = gates.matches(line);
        for i in matches.iter() {
            lines[i].push(start..start + line.len());
        }
        if !ascii && !matches.matched(ENCODED) {
            lines[ENCODED].push(start..start + line.len());
        }
        start += line.len() + 1;
    }
    GateLines(lines)
}

/// Where each pass searches one text (byte ranges of it).
pub(crate) struct Plan {
    regions: Vec<Vec<Range<usize>>>,
    encoded: Vec<Range<usize>>,
}

impl Plan {
    /// The plan for all of `text`.
    pub(crate) fn new(text: &str) -> Plan {
        Plan::from_gates(text, std::iter::once(gate_lines(text, 0..text.len())))
    }

    /// The plan from the gates of every line (as [`gate_lines`] found
    /// them, in order: the text's lines in two parts are two of its calls).
    pub(crate) fn from_gates(text: &str, gates: impl IntoIterator<Item = GateLines>) -> Plan {
        let mut lines: Vec<Vec<Range<usize>>> = vec![Vec::new(); ENCODED + 1];
        for part in gates {
            for (all, more) in lines.iter_mut().zip(part.0) {
                all.extend(more);
            }
        }
        let mut encoded = lines.pop().unwrap_or_default();
        encoded.sort_unstable_by_key(|r| r.start);
        let regions = Pass::ALL
            .iter()
            .zip(lines)
            .map(|(pass, lines)| {
                let flagged: usize = lines.iter().map(ExactSizeIterator::len).sum();
                // One search over most of the text costs less than one per line.
                if !lines.is_empty() && (pass.crosses_lines() || flagged > text.len() / 4) {
                    std::iter::once(0..text.len()).collect()
                } else {
                    lines
                }
            })
            .collect();
        Plan { regions, encoded }
    }

    fn regions(&self, pass: Pass) -> &[Range<usize>] {
        &self.regions[pass as usize]
    }

    /// The lines with something encoded, for [`crate::decode`], in order.
    pub(crate) fn encoded(&self) -> &[Range<usize>] {
        &self.encoded
    }
}

/// A match at its place in the whole text (a pass may search one line).
#[derive(Clone, Copy)]
struct Found<'t> {
    start: usize,
    text: &'t str,
}

impl<'t> Found<'t> {
    fn start(&self) -> usize {
        self.start
    }
    fn end(&self) -> usize {
        self.start + self.text.len()
    }
    fn range(&self) -> Range<usize> {
        self.start()..self.end()
    }
    fn as_str(&self) -> &'t str {
        self.text
    }
    fn len(&self) -> usize {
        self.text.len()
    }
}

/// A match's groups, at their places in the whole text.
struct Groups<'t> {
    captures: regex::Captures<'t>,
    base: usize,
}

impl<'t> Groups<'t> {
    fn get(&self, i: usize) -> Option<Found<'t>> {
        self.captures.get(i).map(|m| Found {
            start: self.base + m.start(),
            text: m.as_str(),
        })
    }
}

/// Calls `f` with each match of `pass` where `plan` says it searches.
fn each_match<'t>(pass: Pass, text: &'t str, plan: &Plan, mut f: impl FnMut(Found<'t>)) {
    for region in plan.regions(pass) {
        for m in pass.regex().find_iter(&text[region.clone()]) {
            f(Found {
                start: region.start + m.start(),
                text: m.as_str(),
            });
        }
    }
}

/// Calls `f` with each match of `pass`, with its groups, where `plan` says it searches.
fn each_capture<'t>(pass: Pass, text: &'t str, plan: &Plan, mut f: impl FnMut(&Groups<'t>)) {
    for region in plan.regions(pass) {
        for captures in pass.regex().captures_iter(&text[region.clone()]) {
            f(&Groups {
                captures,
                base: region.start,
            });
        }
    }
}

/// Runs every pattern detector over `text` (not the record parsers: see
/// the crate root's `patterns`); returns the lines that hold something
/// encoded.
pub(crate) fn detect(text: &str, out: &mut Vec<Hit>) -> Vec<Range<usize>> {
    let plan = Plan::new(text);
    for detector in DETECTORS {
        detector(text, &plan, out);
    }
    plan.encoded
}

/// A pattern detector: its hits in `text`, searching where `plan` says.
pub(crate) type Detector = fn(&str, &Plan, &mut Vec<Hit>);

/// The detectors in the order their hits are reported (each may run on its
/// own thread; their hits joined in this order are the same as one
/// thread's).
pub(crate) const DETECTORS: [Detector; 17] = [
    ssn,
    phone,
    local_phone,
    email,
    dates,
    zip_and_address,
    urls,
    ips,
    keyed_ids,
    mbi,
    dea,
    mac,
    keyed_names,
    prose_names,
    ages,
    schemeless_urls,
    list_names,
];

/// A record's layout can say a span is not a person's (a provider's
/// address, a practitioner's name): pattern hits of that kind inside go.
pub(crate) fn clear(out: &mut Vec<Hit>, cleared: &[Hit]) {
    if cleared.is_empty() {
        return;
    }
    // By kind, the spans in order of their starts, each with the furthest
    // end of those up to it: a hit lies inside one when the furthest end
    // of those starting at or before it reaches its end. (Trying every
    // span for every hit was quadratic in a long run of provider records.)
    let mut reach: BTreeMap<Kind, Vec<(usize, usize)>> = BTreeMap::new();
    for (kind, c) in cleared {
        reach.entry(*kind).or_default().push((c.start, c.end));
    }
    for spans in reach.values_mut() {
        spans.sort_unstable();
        let mut furthest = 0;
        for (_, end) in spans.iter_mut() {
            furthest = furthest.max(*end);
            *end = furthest;
        }
    }
    out.retain(|(kind, r)| {
        let Some(spans) = reach.get(kind) else {
            return true;
        };
        let before = spans.partition_point(|(start, _)| *start <= r.start);
        before.checked_sub(1).is_none_or(|i| spans[i].1 < r.end)
    });
}

fn ssn(text: &str, plan: &Plan, out: &mut Vec<Hit>) {
    each_capture(Pass::SsnDashed, text, plan, |c| {
        let (Some(m), Some(a), Some(s1), Some(g), Some(s2), Some(s)) =
            (c.get(0), c.get(1), c.get(2), c.get(3), c.get(4), c.get(5))
        else {
            return;
        };
        if s1.as_str() != s2.as_str() || !standalone(text, &m.range()) {
            return;
        }
        let (area, group, serial) = (
            a.as_str().parse().unwrap_or(0),
            g.as_str().parse().unwrap_or(0),
            s.as_str().parse().unwrap_or(0),
        );
        // A space-separated triple is too common (counts, amounts) without a keyword.
        if ids::ssn_parts_plausible(area, group, serial)
            && (s1.as_str() != " " || has_context(text, m.start(), &SSN_CONTEXT))
        {
            out.push((Kind::Ssn, m.range()));
        }
    });
    each_capture(Pass::SsnPlain, text, plan, |c| {
        let (Some(m), Some(a), Some(g), Some(s)) = (c.get(0), c.get(1), c.get(2), c.get(3)) else {
            return;
        };
        let (area, group, serial) = (
            a.as_str().parse().unwrap_or(0),
            g.as_str().parse().unwrap_or(0),
            s.as_str().parse().unwrap_or(0),
        );
        if ids::ssn_parts_plausible(area, group, serial)
            && has_context(text, m.start(), &SSN_CONTEXT)
        {
            out.push((Kind::Ssn, m.range()));
        }
    });
}

fn phone(text: &str, plan: &Plan, out: &mut Vec<Hit>) {
    each_capture(Pass::Phone, text, plan, |c| {
        let Some(m) = c.get(0) else { return };
        let bare = c.get(6).is_some();
        if bare && !has_context(text, m.start(), &PHONE_CONTEXT) {
            return;
        }
        if !bare
            && c.get(3).is_some_and(|sep| sep.as_str() == " ")
            && !has_context(text, m.start(), &PHONE_CONTEXT)
        {
            // "217 555 0142" without a keyword is as likely three numbers.
            return;
        }
        let digits: Vec<u8> = m.as_str().bytes().filter(u8::is_ascii_digit).collect();
        let local = &digits[digits.len().saturating_sub(10)..];
        // Toll-free numbers are a business's (a payer's member line);
        // `(555) 555-5555` is a placeholder.
        let toll_free = matches!(
            local.get(..3),
            Some(b"800" | b"888" | b"877" | b"866" | b"855" | b"844" | b"833")
        );
        let mut distinct = local.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        if toll_free || distinct.len() <= 2 || organisations(text, m.start()) {
            return;
        }
        let kind = if has_context(text, m.start(), &FAX_CONTEXT) {
            Kind::Fax
        } else {
            Kind::Phone
        };
        out.push((kind, m.range()));
    });
}

/// Mailboxes of a role, not a person.
const ROLE_MAILBOXES: &[&str] = &[
    "noreply",
    "no-reply",
    "donotreply",
    "do-not-reply",
    "postmaster",
    "mailer-daemon",
    "support",
    "help",
    "info",
    "billing",
    "claims",
    "admin",
    "abuse",
    "security",
    "privacy",
    "compliance",
    "alerts",
    "notifications",
    "ops",
    "root",
];

fn local_phone(text: &str, plan: &Plan, out: &mut Vec<Hit>) {
    each_match(Pass::PhoneLocal, text, plan, |m| {
        let before = &text.as_bytes()[..m.start()];
        // Not the end of a longer number (`217-555-0142`, `1-800-…`).
        let separators = before
            .iter()
            .rev()
            .take(3)
            .take_while(|b| matches!(b, b'-' | b'.' | b' ' | b')' | b'/'))
            .count();
        let longer = separators > 0
            && before[..before.len() - separators]
                .last()
                .is_some_and(u8::is_ascii_digit);
        if !longer
            && has_context(text, m.start(), &PHONE_CONTEXT)
            && !organisations(text, m.start())
        {
            let kind = if has_context(text, m.start(), &FAX_CONTEXT) {
                Kind::Fax
            } else {
                Kind::Phone
            };
            out.push((kind, m.range()));
        }
    });
}

fn email(text: &str, plan: &Plan, out: &mut Vec<Hit>) {
    each_match(Pass::Email, text, plan, |m| {
        // `postgres@db.internal` is a connection string's user, not a person.
        let (local, host) = m.as_str().rsplit_once('@').unwrap_or_default();
        let local = local.to_ascii_lowercase();
        // Inside `<…>`: the `<` may stand before characters the address
        // pattern leaves out (`<CAB7x2=abc@mail.example.net>`).
        let opened = text[..m.start()]
            .bytes()
            .rev()
            .take(64)
            .find(|b| matches!(b, b'<' | b'>') || b.is_ascii_whitespace());
        let bracketed = opened == Some(b'<') && text[m.end()..].starts_with('>');
        let message_id = (bracketed || text[..m.start()].ends_with(['=', ':', ' ']))
            && has_context(text, m.start(), &MESSAGE_ID_CONTEXT);
        if !internal_host(host) && !message_id && !ROLE_MAILBOXES.contains(&local.as_str()) {
            out.push((Kind::Email, m.range()));
        }
    });
}

/// An organisation's context stands nearer than a person's (a clinic's
/// address, a pharmacy's phone).
fn organisations(text: &str, start: usize) -> bool {
    let Some(org) = nearest_context(text, start, &ORGANISATION_CONTEXT, CLEAR_LOOKBACK) else {
        return false;
    };
    nearest_context(text, start, &PERSON_CONTEXT, CLEAR_LOOKBACK).is_none_or(|person| person > org)
}

/// An address whose organisation is named just after it (`PO Box 9100,
/// Austin, TX 78701 (payer address)`), with no word of a person before.
fn organisation_follows(text: &str, start: usize, end: usize) -> bool {
    let mut to = (end + LOOKBACK).min(text.len());
    while !text.is_char_boundary(to) {
        to -= 1;
    }
    let after = &text[end..to];
    let after = after
        .split(['\n', '\r'])
        .next()
        .unwrap_or_default()
        .to_lowercase();
    ORGANISATION_CONTEXT.automaton.is_match(after.as_bytes())
        && nearest_context(text, start, &PERSON_CONTEXT, CLEAR_LOOKBACK).is_none()
}

const MONTHS: &str = "jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?";

fn valid_ymd(y: u32, m: u32, d: u32) -> bool {
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    };
    (1850..=2100).contains(&y) && d >= 1 && d <= days
}

fn dates(text: &str, plan: &Plan, out: &mut Vec<Hit>) {
    let mut push = |m: Found<'_>, valid: bool| {
        if valid && context_wins(text, m.start(), &PERSON_DATE_CONTEXT, &DATE_CLEAR_CONTEXT) {
            out.push((Kind::Date, m.range()));
        }
    };
    let num = |c: &Groups<'_>, i: usize| {
        c.get(i)
            .and_then(|g| g.as_str().parse::<u32>().ok())
            .unwrap_or(0)
    };
    // Every log line starts with an ISO timestamp: its year, month and day
    // are read at their places when those bytes are ASCII (digits and
    // dashes, then), as resolving the groups of each match cost more than
    // finding them.
    each_match(Pass::DateIso, text, plan, |m| {
        let date = m.as_str().get(..10).filter(|d| d.is_ascii());
        let (y, mo, d) = match date {
            Some(d) => {
                let part = |r: Range<usize>| d[r].parse::<u32>().unwrap_or(0);
                (part(0..4), part(5..7), part(8..10))
            }
            None => {
                // Searching from the match's start finds it again, groups and all.
                let Some(c) = Pass::DateIso.regex().captures_at(text, m.start()) else {
                    return;
                };
                let c = Groups {
                    captures: c,
                    base: 0,
                };
                (num(&c, 1), num(&c, 2), num(&c, 3))
            }
        };
        push(m, valid_ymd(y, mo, d));
    });
    each_capture(Pass::DateNumeric, text, plan, |c| {
        let same_separator = c.get(2).map(|g| g.as_str()) == c.get(4).map(|g| g.as_str());
        if let Some(m) = c.get(0) {
            let (a, b, y) = (num(c, 1), num(c, 3), num(c, 5));
            // A two-digit year: this century's up to now, else the last.
            let y = match c.get(5).map(|g| g.len()) {
                Some(2) if y <= 30 => 2000 + y,
                Some(2) => 1900 + y,
                _ => y,
            };
            push(
                m,
                same_separator && (valid_ymd(y, a, b) || valid_ymd(y, b, a)),
            );
        }
    });
    for pass in [Pass::DateCompact, Pass::DateSlashed] {
        each_capture(pass, text, plan, |c| {
            if let Some(m) = c.get(0) {
                push(m, valid_ymd(num(c, 1), num(c, 2), num(c, 3)));
            }
        });
    }
    // `on 3/15` (a fraction, `3/4 batches`, is never "on"), not part of a
    // longer date (`3/15/2025`).
    each_capture(Pass::DateMonthDay, text, plan, |c| {
        if let Some(m) = c.get(1) {
            let after = &text.as_bytes()[m.end()..];
            let longer = matches!(after, [b'/' | b'-' | b'.', d, ..] if d.is_ascii_digit());
            push(m, !longer);
        }
    });
    each_match(Pass::DateWords, text, plan, |m| push(m, true));
}

/// Ages over 89 are PHI under Safe Harbor (counted with dates, element C):
/// `age 92`, `"age": 93`, `94-year-old`, `95 y/o`, `aged 91`.
fn ages(text: &str, plan: &Plan, out: &mut Vec<Hit>) {
    each_capture(Pass::Age, text, plan, |c| {
        if let Some(words) = c.get(4) {
            out.push((Kind::Date, words.range()));
            return;
        }
        let Some(age) = c.get(1).or(c.get(2)).or(c.get(3)) else {
            return;
        };
        if age
            .as_str()
            .parse::<u32>()
            .is_ok_and(|a| (90..=125).contains(&a))
        {
            out.push((Kind::Date, age.range()));
        }
    });
}

const STATES: &str = "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR";

fn zip_and_address(text: &str, plan: &Plan, out: &mut Vec<Hit>) {
    each_capture(Pass::StateZip, text, plan, |c| {
        if let (Some(m), Some(z)) = (c.get(0), c.get(1)) {
            if !organisations(text, z.start()) && !organisation_follows(text, m.start(), z.end()) {
                out.push((Kind::Address, z.range()));
            }
        }
    });
    each_match(Pass::Zip, text, plan, |m| {
        if has_context(text, m.start(), &ZIP_CONTEXT)
            && !organisations(text, m.start())
            && !organisation_follows(text, m.start(), m.end())
        {
            out.push((Kind::Address, m.range()));
        }
    });
    each_match(Pass::Street, text, plan, |m| {
        // "10 tests ... Way" style accidents need a capitalised street name.
        let words: Vec<&str> = m.as_str().split_whitespace().collect();
        let capitalised = |w: &&str| {
            w.chars()
                .next()
                .is_some_and(|c| c.is_uppercase() || c.is_ascii_digit())
        };
        // Every word of the street's name is capitalised: not `10:30 AM with Dr. Patel`.
        let named = words.len() >= 3 && words[1..words.len() - 1].iter().all(capitalised)
            || words.get(1).is_some_and(capitalised) && words.len() < 3;
        if named && !organisations(text, m.start()) {
            out.push((Kind::Address, m.range()));
        }
    });
}

/// Hosts that are infrastructure, not a person's.
fn internal_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || !host.contains('.') && !host.contains(':') {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            v4.is_loopback() || v4.is_private() || v4.is_unspecified() || v4.is_link_local()
        }
        Ok(std::net::IpAddr::V6(v6)) => v6.is_loopback() || v6.is_unspecified(),
        Err(_) => host.ends_with(".local") || host.ends_with(".internal") || host.ends_with(".svc"),
    }
}

/// Hosts of code systems and standards (`http://loinc.org`, FHIR's
/// `http://hl7.org/fhir/sid/us-npi`): a resource names them as
/// identifiers of a vocabulary, never of a person.
fn terminology_host(host: &str) -> bool {
    const HOSTS: &[&str] = &[
        "loinc.org",
        "hl7.org",
        "terminology.hl7.org",
        "snomed.info",
        "unitsofmeasure.org",
        "www.nlm.nih.gov",
        "www.ama-assn.org",
        "www.cms.gov",
        "www.cdc.gov",
        "fhir.org",
    ];
    HOSTS.iter().any(|h| host.eq_ignore_ascii_case(h))
}

fn urls(text: &str, plan: &Plan, out: &mut Vec<Hit>) {
    each_capture(Pass::Url, text, plan, |c| {
        let (Some(m), Some(host)) = (c.get(0), c.get(1)) else {
            return;
        };
        if !internal_host(host.as_str())
            && !terminology_host(host.as_str())
            && !identifier_system(text, m.start(), m.as_str())
        {
            let end = m.end()
                - m.as_str()
                    .len()
                    .saturating_sub(m.as_str().trim_end_matches(['.', ',', ';']).len());
            out.push((Kind::Url, m.start()..end));
        }
    });
}

/// A URL that names a code or identifier system (`"system":
/// "https://ids.example.org/mrn"`, FHIR's `/sid/`, `/CodeSystem/`
/// canonical URLs), not a place on the web a person has.
fn identifier_system(text: &str, start: usize, url: &str) -> bool {
    const PATHS: &[&str] = &[
        "/sid/",
        "/codesystem/",
        "/valueset/",
        "/structuredefinition/",
        "/namingsystem/",
        "/conceptmap/",
    ];
    let lower = url.to_ascii_lowercase();
    if PATHS.iter().any(|p| lower.contains(p)) {
        return true;
    }
    let before = text[window(text, start, 24)].to_ascii_lowercase();
    let before = before.trim_end_matches([' ', '"', '\'', ':', '=']);
    before.ends_with("system") || before.ends_with("url") && before.contains("canonical")
}

/// Top-level domains a person's web address ends in; a name with another
/// suffix (`config.toml`, `main.rs`) is a file.
const TLDS: &str = "com|org|net|edu|gov|io|health|us|info|biz|co|me|care|clinic|app|dev|uk|ca";

/// A web address written without a scheme: `www.` anything, or a domain
/// with a path (`portal.example.org/patients/4411`).
fn schemeless_urls(text: &str, plan: &Plan, out: &mut Vec<Hit>) {
    each_capture(Pass::SchemelessUrl, text, plan, |c| {
        let (Some(m), Some(host)) = (c.get(0), c.get(1)) else {
            return;
        };
        let before = &text[..m.start()];
        // Inside a URL with a scheme or an e-mail address, others decide.
        if before.ends_with("://") || before.ends_with('@') || before.ends_with('.') {
            return;
        }
        let has_path = c.get(2).is_some_and(|p| p.len() > 1);
        let www = host.as_str().to_ascii_lowercase().starts_with("www.");
        if (www || has_path) && !internal_host(host.as_str()) && !terminology_host(host.as_str()) {
            let trimmed = m.as_str().trim_end_matches(['.', ',', ';']).len();
            out.push((Kind::Url, m.start()..m.start() + trimmed));
        }
    });
}

fn ips(text: &str, plan: &Plan, out: &mut Vec<Hit>) {
    let mut judge = |m: Found<'_>| {
        // Inside a URL the URL detector decides.
        let before = &text[..m.start()];
        if before.ends_with("://") || before.ends_with("://[") {
            return;
        }
        // Part of a longer dotted or coloned run: an OID
        // (`urn:oid:1.2.36.146.595`), a certificate serial (`4A:3F:91:…`).
        let after = &text.as_bytes()[m.end()..];
        let longer = matches!(after, [b'.' | b':', d, ..] if d.is_ascii_hexdigit())
            || before.ends_with("oid:")
            || m.as_str().split(':').all(|g| g.len() == 2) && m.as_str().contains(':');
        if longer {
            return;
        }
        if let Ok(ip) = m.as_str().parse::<std::net::IpAddr>() {
            if !internal_host(&ip.to_string()) && !version_like(text, &m.range()) {
                out.push((Kind::Ip, m.range()));
            }
        }
    };
    each_match(Pass::Ipv4, text, plan, &mut judge);
    each_match(Pass::Ipv6, text, plan, &mut judge);
}

/// `v1.2.3.4` or `version 1.2.3.4` is a version, not an address.
fn version_like(text: &str, r: &Range<usize>) -> bool {
    let before = text[window(text, r.start, LOOKBACK)].to_ascii_lowercase();
    before.ends_with('v') || before.trim_end().ends_with("version")
}

fn keyed_ids(text: &str, plan: &Plan, out: &mut Vec<Hit>) {
    each_capture(Pass::KeyedId, text, plan, |c| {
        let (Some(key), Some(value)) = (c.get(1), c.get(2)) else {
            return;
        };
        let key = key.as_str().to_ascii_lowercase();
        let v = value.as_str();
        if !v.bytes().any(|b| b.is_ascii_digit()) {
            return; // "account locked", "member services"
        }
        let kind =
            if key.starts_with("mrn") || key.starts_with("medical") || key.starts_with("chart") {
                Kind::Mrn
            } else if key.starts_with("member")
                || key.starts_with("subscriber")
                || key.starts_with("beneficiary")
                || key.starts_with("policy")
                || key.starts_with("medicaid")
                || key.starts_with("insurance")
            {
                Kind::MemberId
            } else if key.starts_with("acc") || key.starts_with("acct") {
                Kind::Account
            } else if key.starts_with("driver")
                || key.starts_with("licen")
                || key.starts_with("dl")
                || key.starts_with("plate")
                || key.starts_with("passport")
                || key.starts_with("state")
            {
                Kind::License
            } else {
                Kind::DeviceId
            };
        if kind == Kind::DeviceId && has_context(text, value.start(), &CERTIFICATE_CONTEXT) {
            return; // a certificate's serial number
        }
        if kind == Kind::License
            && nearest_context(text, value.start(), &PROVIDER_CONTEXT, CLEAR_LOOKBACK).is_some()
        {
            return; // a prescriber's or a physician's licence
        }
        out.push((kind, value.range()));
    });
    each_capture(Pass::X12Id, text, plan, |c| {
        let (Some(seg), Some(value)) = (c.get(1), c.get(2)) else {
            return;
        };
        let kind = if seg.as_str().starts_with("REF") {
            Kind::Mrn
        } else {
            Kind::MemberId
        };
        out.push((kind, value.range()));
    });
}

fn mbi(text: &str, plan: &Plan, out: &mut Vec<Hit>) {
    each_match(Pass::Mbi, text, plan, |m| {
        if ids::is_valid_mbi(m.as_str()) {
            out.push((Kind::MemberId, m.range()));
        }
    });
}

/// A DEA registration is a prescriber's or a pharmacy's, never a
/// patient's: found by its shape, it is PHI only where a patient's
/// licence is asked for (`patient license no. AB1234563`, which the
/// keyed detector finds).
fn dea(text: &str, plan: &Plan, out: &mut Vec<Hit>) {
    each_match(Pass::Dea, text, plan, |m| {
        if ids::is_valid_dea(m.as_str()) && has_context(text, m.start(), &PATIENT_LICENCE_CONTEXT) {
            out.push((Kind::License, m.range()));
        }
    });
}

static PATIENT_LICENCE_CONTEXT: LazyLock<Keywords> =
    LazyLock::new(|| Keywords::new(&["patient's licen", "patient licen"]));

/// A MAC address is a person's device only beside a word for one (a
/// glucometer, a pump, a patient's): a network card's, a printer's and
/// the first six bytes of a certificate serial are not.
fn mac(text: &str, plan: &Plan, out: &mut Vec<Hit>) {
    each_match(Pass::Mac, text, plan, |m| {
        let longer = text[m.end()..].starts_with(':') || text[..m.start()].ends_with(':');
        if !longer && has_context(text, m.start(), &DEVICE_CONTEXT) {
            out.push((Kind::DeviceId, m.range()))
        }
    });
}

/// One capitalised word of a name in prose (`Jennings`, `O'Brien`).
///
/// Latin letters only: the lists hold Latin names (looked up without
/// accents), and Unicode-wide classes cost more to compile and run.
const LIST_WORD: &str =
    r"[A-ZÀ-ÖØ-Þ](?:[a-zß-öø-ÿ\u{300}-\u{36f}]|['’-]?[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ])*[a-zß-öø-ÿ]";

/// One name word: letters (any script, composed or decomposed), with
/// apostrophes, hyphens and HTML entities (`O&#39;Brien`).
const NAME_WORD: &str = r"(?:\p{Lu}(?:[\p{L}\p{M}'’.-]|&#?[0-9a-zA-Z]+;)+|\p{Lo}+)";

/// Values of a person's key that are no name (`guarantor: Same as patient`).
const ROLE_VALUES: &[&str] = &[
    "self",
    "same",
    "as",
    "patient",
    "member",
    "primary",
    "secondary",
    "spouse",
    "child",
    "other",
    "unknown",
    "yes",
    "no",
    "active",
    "inactive",
    "none",
    "n/a",
];

/// Is this key one that names a person by their role (`policy holder`,
/// `guarantor`, `subscriber`), whose value is a name when it reads as one?
fn is_person_key(key: &str) -> bool {
    let k: String = key
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    [
        "holder",
        "guarantor",
        "insured",
        "beneficiary",
        "subscriber",
    ]
    .iter()
    .any(|s| k.ends_with(s))
        // A bare `name` (of anything: a service, a plan) or a FHIR
        // reference's `display`: a person's when the value reads as one.
        || k == "name"
        || k == "display"
}

fn keyed_names(text: &str, plan: &Plan, out: &mut Vec<Hit>) {
    // "patient_name": "Maria Garcia", first_name=Maria, lastName: 'O''Brien',
    // name.family=Chen, "given": ["Wei"]
    each_capture(Pass::KeyedName, text, plan, |c| {
        let (Some(key), Some(value)) = (c.get(1), c.get(2)) else {
            return;
        };
        if names::is_name_key(key.as_str()) {
            out.push((Kind::Name, value.range()));
        } else if is_person_key(key.as_str()) {
            // `subscriber: Active` is a status: a person's key holds two
            // words, or one common name.
            let words: Vec<&str> = value
                .as_str()
                .split([' ', ','])
                .filter(|w| !w.is_empty())
                .collect();
            let listed = |w: &&str| {
                (names::is_given(w) || names::is_surname(w)) && !names::is_common_word(w)
            };
            let named = words.iter().any(listed)
                && !words.iter().any(|w| {
                    let w = w.to_lowercase();
                    NOT_NAMES.contains(&w.as_str()) || ROLE_VALUES.contains(&w.as_str())
                });
            if named {
                out.push((Kind::Name, value.range()));
            }
        }
    });
}

/// Words that follow "patient" or a title without being a name.
const NOT_NAMES: &[&str] = &[
    "id",
    "ids",
    "record",
    "records",
    "portal",
    "service",
    "services",
    "intake",
    "sync",
    "data",
    "api",
    "search",
    "list",
    "count",
    "summary",
    "event",
    "events",
    "the",
    "a",
    "an",
    "not",
    "was",
    "is",
    "has",
    "with",
    "for",
    "and",
    "or",
    "of",
    "in",
    "on",
    "to",
    "from",
    "visit",
    "visits",
    "status",
    "tenant",
    "safety",
    "care",
    "education",
    "experience",
    "identifier",
    "name",
    "names",
    "mrn",
    "phi",
    "access",
    "consent",
    "created",
    "updated",
    "deleted",
    "found",
    "missing",
    "unknown",
    "none",
    "null",
    "admission",
    "discharge",
    "chart",
    "info",
    "information",
    "level",
    "no",
    "number",
    "demographics",
    "lookup",
    "matching",
    "merge",
    "dr",
    "doctor",
];

/// Names in prose: a capitalised name after "patient", a courtesy title or
/// "named" (`seen patient Maria Garcia`, `Mrs. Núñez called`).
fn prose_names(text: &str, plan: &Plan, out: &mut Vec<Hit>) {
    each_capture(Pass::ProseName, text, plan, |c| {
        let (Some(m), Some(name)) = (c.get(0), c.get(2)) else {
            return;
        };
        let trigger = c.get(1).map(|t| t.as_str().to_lowercase());
        let titled = trigger.is_none();
        let kin = trigger
            .as_deref()
            .is_some_and(|t| KINSHIP_WORDS.contains(&t));
        let greeting = trigger.as_deref().is_some_and(|t| GREETINGS.contains(&t));
        // After a greeting, a name starts with a common given name
        // (`Dear Valued Member` is no one).
        let is_title =
            |w: &str| ["Mr", "Mrs", "Ms", "Miss", "Mx"].contains(&w.trim_end_matches('.'));
        let mut name_words = name.as_str().split_whitespace();
        let first_word = name_words.next().unwrap_or_default();
        let given_first = if is_title(first_word) {
            name_words.next().is_some()
        } else {
            names::is_given(first_word) && !names::is_common_word(first_word)
        };
        if greeting && !given_first {
            return;
        }
        // Keep the words up to the first that is not a name.
        let mut end = name.start();
        let mut words = Vec::new();
        for w in name.as_str().split_whitespace() {
            let lower = w.trim_end_matches(['.', ',']).to_lowercase();
            // An acronym ends the name, unless it is a name in capitals
            // (`patient: DOE, JANE`).
            let acronym = w.len() > 1
                && w.chars().all(|ch| ch.is_uppercase() || ch.is_ascii_digit())
                && !((names::is_given(w) || names::is_surname(w)) && !names::is_common_word(w));
            if NOT_NAMES.contains(&lower.as_str()) || names::is_organisation_word(w) || acronym {
                break;
            }
            let at = text[end..].find(w).map_or(end, |i| end + i);
            end = at + w.trim_end_matches(['.', ',']).len();
            words.push(w);
        }
        // `Thanks, Mr. Castellano`: the title, not the greeting, decides.
        let titled = titled
            || words.first().is_some_and(|w| {
                ["Mr", "Mrs", "Ms", "Miss", "Mx"].contains(&w.trim_end_matches('.'))
            });
        if titled && words.len() > 1 && trigger.is_some() {
            words.remove(0);
        }
        if words.is_empty() {
            return;
        }
        // One word after "patient" is too often a noun; a title, a
        // relative or "my name is" makes it a name, a greeting a common one.
        let one_is_enough = titled || kin || greeting;
        if (words.len() >= 2 || one_is_enough) && !a_providers_name(text, m.start(), end) {
            out.push((Kind::Name, name.start()..end));
        }
    });
}

/// Words before a name that make it a provider's (not PHI).
static PROVIDER_CONTEXT: LazyLock<Keywords> = LazyLock::new(|| {
    Keywords::new(&[
        "dr.",
        "dr ",
        "doctor",
        "provider",
        "physician",
        "prescriber",
        "attending",
        "signed by",
        "nurse",
        "resident:",
        "surgeon",
        "pharmacist",
        "therapist",
        "referring",
        "ordering",
        "rendering",
        "supervising",
        "supervisor",
        "manager",
        "coordinator",
        "lead:",
        "approved by",
        "reviewed by",
        "assigned to",
        "technician",
        "scribe",
        "representative",
        "worker",
    ])
});

/// Credentials written after a provider's name.
const CREDENTIALS: &[&str] = &[
    "md", "do", "rn", "np", "pa", "pa-c", "pharmd", "dds", "dmd", "phd", "lpn", "cnm", "crna",
    "facp", "facc",
];

/// A name that a provider's role or credential stands next to.
fn a_providers_name(text: &str, start: usize, end: usize) -> bool {
    let after = text[end..]
        .trim_start_matches([',', ' '])
        .split(|c: char| !c.is_alphanumeric() && c != '-')
        .next()
        .unwrap_or_default()
        .to_lowercase();
    CREDENTIALS.contains(&after.as_str())
        || nearest_context(text, start, &PROVIDER_CONTEXT, 24).is_some()
}

/// Names in prose without a keyword: a common given name and a common
/// surname side by side (`Harold Jennings`, `Gutierrez, Elena`), unless
/// both are also ordinary words (`Grant Park`), an organisation's word
/// follows (`Grace Medical Center`) or they are a provider's.
fn list_names(text: &str, plan: &Plan, out: &mut Vec<Hit>) {
    each_capture(Pass::ListName, text, plan, |c| {
        let (Some(m), Some(w1), Some(sep), Some(w2)) = (c.get(0), c.get(1), c.get(2), c.get(3))
        else {
            return;
        };
        let w3 = c.get(4);
        let (a, b) = (w1.as_str(), w2.as_str());
        let is_name = if sep.as_str().contains(',') {
            w3.is_none() && names::is_surname(a) && names::is_given(b)
        } else {
            let last = w3.map_or(b, |w| w.as_str());
            let middle_ok =
                w3.is_none() || b.ends_with('.') || names::is_given(b) || names::is_surname(b);
            names::is_given(a)
                && middle_ok
                && (names::is_surname(last) || names::is_given(last))
                && !names::is_organisation_word(last)
        };
        let (first, last) = (a, w3.map_or(b, |w| w.as_str()));
        let common = names::is_common_word(first) && names::is_common_word(last);
        let next = text[m.end()..]
            .trim_start_matches(' ')
            .split(|ch: char| !ch.is_alphanumeric())
            .next()
            .unwrap_or_default();
        if is_name
            && !common
            && !names::is_organisation_word(next)
            && !a_providers_name(text, m.start(), m.end())
        {
            out.push((Kind::Name, m.range()));
        }
    });
}
