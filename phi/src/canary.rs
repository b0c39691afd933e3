//! The canary registry: every PHI value a generator hands out, found again
//! wherever it leaks, verbatim or in the forms leaks take in practice.
//!
//! A registered value is searched case-insensitively together with its
//! variants: separators removed (`123456789` for `123-45-6789`), phone and
//! date re-formattings, names reordered as records store them
//! (`Garcia, Maria`, X12 `GARCIA*MARIA`, HL7 `GARCIA^MARIA`), JSON-escaped
//! and URL-encoded. A hit must stand on its own (not inside a longer word
//! or number). The search is an Aho-Corasick automaton over all variants
//! plus a small one over those registered since it was built (a run that
//! registers while it scans rebuilds the small one, folding it into the
//! large one only when it has grown).

use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, PoisonError, RwLock};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, Input, MatchKind};
use unicode_normalization::UnicodeNormalization;

use crate::Hit;
use crate::Kind;

/// Values shorter than this are not searched (too many accidental hits).
const MIN_LEN: usize = 5;

/// A name part alone (a first or last name) is searched from this many
/// characters, and only where it is written capitalised.
const MIN_PART: usize = 3;

/// A registry of canary values. [`crate::canaries`] is the run-wide one that
/// generators register into; tests may make their own.
#[derive(Default)]
pub struct CanaryRegistry {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    values: HashSet<String>,
    entries: Vec<(Kind, String)>,
    patterns: Vec<String>,
    kinds: Vec<Kind>,
    /// The pattern is one part of a name (`Maria`, `Chen`): it counts only
    /// when the text capitalises it, as a name is written.
    capital: Vec<bool>,
    seen_patterns: HashSet<String>,
    /// Searches the patterns up to its `end`.
    main: Option<Built>,
    /// Searches the patterns registered since `main` was built; remade
    /// (small) after each registration, folded into `main` when it grows.
    recent: Option<Built>,
}

/// An automaton over `patterns[start..end]` with their kinds and flags.
#[derive(Clone)]
struct Built {
    /// The bytes some pattern holds.
    bytes: Arc<[bool; 256]>,
    automaton: Arc<AhoCorasick>,
    kinds: Arc<[Kind]>,
    capital: Arc<[bool]>,
    end: usize,
}

/// Patterns registered since the main automaton was built, beyond which it
/// is rebuilt (or a quarter of it, whichever is more): registering while
/// scanning costs a small automaton per registration, not the whole one.
const FOLD_AFTER: usize = 512;

impl CanaryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a PHI value and its leak variants. Values under five
    /// characters are ignored. Returns `false` if the value was already registered.
    pub fn register(&self, kind: Kind, value: &str) -> bool {
        let value = value.trim();
        if value.len() < MIN_LEN {
            return false;
        }
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if !inner.values.insert(value.to_string()) {
            return false;
        }
        inner.entries.push((kind, value.to_string()));
        for (v, capital) in variants(kind, value) {
            let key = v.to_ascii_lowercase();
            let long_enough = v.len() >= MIN_LEN || capital && v.chars().count() >= MIN_PART;
            if long_enough && inner.seen_patterns.insert(key) {
                inner.patterns.push(v);
                inner.kinds.push(kind);
                inner.capital.push(capital);
            }
        }
        inner.recent = None;
        drop(inner);
        crate::registered(self, kind, value);
        true
    }

    /// True when exactly this value was registered.
    pub fn contains(&self, value: &str) -> bool {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values
            .contains(value.trim())
    }

    /// Every registered value with its kind, in registration order (to
    /// hand a process's canaries to another that scans its output).
    pub fn entries(&self) -> Vec<(Kind, String)> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .clone()
    }

    /// How many values are registered.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values
            .len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The automata to search with (one, or the main one and the recent).
    fn automata(&self) -> Vec<Built> {
        {
            let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
            if inner.patterns.is_empty() {
                return Vec::new();
            }
            if let Some(main) = &inner.main {
                if main.end == inner.patterns.len() {
                    return vec![main.clone()];
                }
                if let Some(recent) = &inner.recent {
                    return vec![main.clone(), recent.clone()];
                }
            }
        }
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let len = inner.patterns.len();
        let main_end = inner.main.as_ref().map_or(0, |m| m.end);
        if inner.main.is_none() || len - main_end > FOLD_AFTER.max(main_end / 4) {
            inner.main = build(&inner, 0);
            inner.recent = None;
        } else if main_end < len && inner.recent.is_none() {
            inner.recent = build(&inner, main_end);
        }
        inner
            .main
            .iter()
            .chain(inner.recent.iter().filter(|_| main_end < len))
            .cloned()
            .collect()
    }

    /// The automata as they are now, to search a text (or its parts) with.
    pub(crate) fn searcher(&self) -> Searcher {
        Searcher(self.automata())
    }
}

/// The registry's automata at one moment.
pub(crate) struct Searcher(Vec<Built>);

impl Searcher {
    /// True when some pattern holds `byte`, so a match may run across it.
    pub(crate) fn holds(&self, byte: u8) -> bool {
        self.0.iter().any(|b| b.bytes[usize::from(byte)])
    }

    /// The hits in `range` of `text`. A part of a text has the hits the
    /// whole has there when no match can run across its ends: it starts
    /// and ends next to bytes no pattern holds (see [`Searcher::holds`]).
    pub(crate) fn find(&self, text: &str, range: Range<usize>, out: &mut Vec<Hit>) {
        for built in &self.0 {
            built.find(text, range.clone(), out);
        }
    }
}

/// An automaton over the patterns from `start` on.
fn build(inner: &Inner, start: usize) -> Option<Built> {
    let automaton = AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostLongest)
        .build(&inner.patterns[start..])
        .ok()?;
    let mut bytes = [false; 256];
    for b in inner.patterns[start..].iter().flat_map(|p| p.bytes()) {
        // Case is folded (ASCII): a letter stands for both its cases.
        for b in [b, b.to_ascii_lowercase(), b.to_ascii_uppercase()] {
            bytes[usize::from(b)] = true;
        }
    }
    Some(Built {
        bytes: Arc::new(bytes),
        automaton: Arc::new(automaton),
        kinds: inner.kinds[start..].into(),
        capital: inner.capital[start..].into(),
        end: inner.patterns.len(),
    })
}

impl Built {
    fn find(&self, text: &str, range: Range<usize>, out: &mut Vec<Hit>) {
        let (kinds, capital) = (&self.kinds, &self.capital);
        for m in self.automaton.find_iter(Input::new(text).span(range)) {
            let i = m.pattern().as_usize();
            let kind = kinds[i];
            let before = text[..m.start()].chars().next_back();
            let after = text[m.end()..].chars().next();
            let glued_before = before.is_some_and(char::is_alphanumeric);
            // A date may run on into a time: 1957-03-04T00:00:00Z.
            let time_follows = kind == Kind::Date
                && after == Some('T')
                && text[m.end() + 1..].starts_with(|c: char| c.is_ascii_digit());
            let glued_after = after.is_some_and(char::is_alphanumeric) && !time_follows;
            let written_as_name = !capital[i]
                || text[m.range()]
                    .chars()
                    .next()
                    .is_some_and(char::is_uppercase);
            if !glued_before && !glued_after && written_as_name {
                out.push((kind, m.range()));
            }
        }
    }
}

/// The forms a value takes when it leaks, each with whether it is a lone
/// name part (which must be written capitalised to count).
fn variants(kind: Kind, value: &str) -> Vec<(String, bool)> {
    let mut out = vec![value.to_string()];
    let mut parts_alone = Vec::new();
    let alnum: String = value.chars().filter(|c| c.is_alphanumeric()).collect();
    if alnum.len() != value.len()
        && alnum.len() >= MIN_LEN
        && kind != Kind::Name
        && kind != Kind::Address
    {
        out.push(alnum.clone());
    }
    match kind {
        Kind::Phone | Kind::Fax
            if alnum.len() == 10 && alnum.bytes().all(|b| b.is_ascii_digit()) =>
        {
            let (a, e, n) = (&alnum[..3], &alnum[3..6], &alnum[6..]);
            out.extend([
                format!("({a}) {e}-{n}"),
                format!("({a}){e}-{n}"),
                format!("{a}-{e}-{n}"),
                format!("{a}.{e}.{n}"),
                format!("{a} {e} {n}"),
                format!("+1{alnum}"),
                format!("1{alnum}"),
            ]);
        }
        Kind::Ssn if alnum.len() == 9 && alnum.bytes().all(|b| b.is_ascii_digit()) => {
            let (a, g, n) = (&alnum[..3], &alnum[3..5], &alnum[5..]);
            out.extend([
                format!("{a}-{g}-{n}"),
                format!("{a}.{g}.{n}"),
                format!("{a} {g} {n}"),
            ]);
        }
        Kind::Date => {
            if let Some((y, m, d)) = parse_iso_date(value) {
                out.extend([
                    format!("{y:04}{m:02}{d:02}"),
                    format!("{m:02}/{d:02}/{y:04}"),
                    format!("{m}/{d}/{y:04}"),
                    format!("{m:02}-{d:02}-{y:04}"),
                    format!("{d:02}/{m:02}/{y:04}"),
                    format!("{d:02}.{m:02}.{y:04}"),
                    format!("{y:04}/{m:02}/{d:02}"),
                    format!("{m}-{d}-{y:04}"),
                    // Two-digit years, as notes write them (3/4/57).
                    format!("{m}/{d}/{:02}", y % 100),
                    format!("{m:02}/{d:02}/{:02}", y % 100),
                ]);
                if let Some(i) = usize::try_from(m).ok().and_then(|m| m.checked_sub(1)) {
                    if let (Some(short), Some(long)) = (MONTH_ABBR.get(i), MONTH_NAMES.get(i)) {
                        out.extend([
                            format!("{d} {short} {y:04}"),
                            format!("{d:02} {short} {y:04}"),
                            format!("{d} {long} {y:04}"),
                            format!("{short} {d}, {y:04}"),
                            format!("{long} {d}, {y:04}"),
                            format!("{short} {d} {y:04}"),
                            format!("{long} {d} {y:04}"),
                            format!("{d}-{short}-{y:04}"),
                            format!("{d:02}{short}{y:04}"),
                        ]);
                    }
                }
            }
        }
        Kind::Name => {
            let parts: Vec<&str> = value.split_whitespace().collect();
            if let [first @ .., last] = parts.as_slice() {
                if !first.is_empty() {
                    let given = first.join(" ");
                    let first_only = first[0];
                    out.extend([
                        format!("{last}, {given}"),
                        format!("{last},{given}"),
                        format!("{last}*{first_only}"),
                        format!("{last}^{first_only}"),
                        format!("{last}, {first_only}"),
                        format!("{first_only} {last}"),
                        format!("{last} {first_only}"),
                        parts.join("+"),
                        parts.join("%20"),
                        parts.join("_"),
                    ]);
                    // A first or a last name alone, as prose and records use them.
                    parts_alone.extend(parts.iter().map(|p| (*p).to_string()));
                }
            }
        }
        _ => {}
    }
    let mut tagged: Vec<(String, bool)> = out.into_iter().map(|v| (v, false)).collect();
    tagged.extend(parts_alone.into_iter().map(|p| (p, true)));
    // The automaton folds ASCII case only: add upper- and lower-case forms
    // of values with other letters (ZOË, núñez), and both Unicode
    // normalisation forms (a decomposed é is another byte string).
    if !value.is_ascii() {
        let more: Vec<(String, bool)> = tagged
            .iter()
            .flat_map(|(v, capital)| {
                let cased = [(v.to_uppercase(), *capital), (v.to_lowercase(), false)];
                cased
                    .into_iter()
                    .chain(std::iter::once((v.clone(), *capital)))
                    .flat_map(|(v, c)| [(v.nfd().collect::<String>(), c), (v.nfc().collect(), c)])
                    .collect::<Vec<_>>()
            })
            .collect();
        tagged.extend(more);
    }
    let mut extra = Vec::new();
    for (v, capital) in &tagged {
        for escaped in [json_escape(v), url_encode(v), html_escape(v), sql_escape(v)] {
            if escaped != *v {
                extra.push((escaped, *capital));
            }
        }
        if v.contains('\'') {
            extra.push((v.replace('\'', "&#x27;"), *capital));
            extra.push((v.replace('\'', "&apos;"), *capital));
            extra.push((v.replace('\'', "\\'"), *capital));
        }
    }
    tagged.extend(extra);
    tagged
}

const MONTH_ABBR: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The value as HTML writes it: `&`, `<`, `>`, `"` and `'` as entities,
/// other non-ASCII characters as numeric character references.
pub fn html_escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            '\'' => s.push_str("&#39;"),
            c if !c.is_ascii() => s.push_str(&format!("&#{};", c as u32)),
            c => s.push(c),
        }
    }
    s
}

/// The value inside a SQL string literal: quotes doubled.
pub fn sql_escape(v: &str) -> String {
    v.replace('\'', "\'\'")
}

fn parse_iso_date(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.splitn(3, '-');
    let y = it.next()?.parse().ok()?;
    let m = it.next()?.parse().ok()?;
    let d = it.next()?.parse().ok()?;
    (v.len() == 10).then_some((y, m, d))
}

/// The value as it appears inside a JSON string (without the quotes).
pub fn json_escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '/' => s.push_str("\\/"),
            c if (c as u32) < 0x20 || !c.is_ascii() => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    s.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => s.push(c),
        }
    }
    s
}

/// The value percent-encoded as in a URL (unreserved characters kept).
pub fn url_encode(v: &str) -> String {
    let mut s = String::with_capacity(v.len() * 3);
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}
