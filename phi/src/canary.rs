//! The canary registry: every PHI value a generator hands out, found again
//! wherever it leaks, verbatim or in the forms leaks take in practice.
//!
//! A registered value is searched case-insensitively together with its
//! variants: separators removed (`123456789` for `123-45-6789`), phone and
//! date re-formattings, names reordered as records store them
//! (`Garcia, Maria`, X12 `GARCIA*MARIA`, HL7 `GARCIA^MARIA`), JSON-escaped
//! and URL-encoded. A hit must stand on its own (not inside a longer word
//! or number). The search is one Aho-Corasick automaton over all variants,
//! rebuilt lazily after registrations.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::Kind;
use crate::detect::Hit;

/// Values shorter than this are not searched (too many accidental hits).
const MIN_LEN: usize = 5;

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
    seen_patterns: HashSet<String>,
    automaton: Option<Arc<AhoCorasick>>,
}

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
        for v in variants(kind, value) {
            let key = v.to_ascii_lowercase();
            if v.len() >= MIN_LEN && inner.seen_patterns.insert(key) {
                inner.patterns.push(v);
                inner.kinds.push(kind);
            }
        }
        inner.automaton = None;
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

    fn automaton(&self) -> Option<(Arc<AhoCorasick>, Vec<Kind>)> {
        {
            let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
            if inner.patterns.is_empty() {
                return None;
            }
            if let Some(a) = &inner.automaton {
                return Some((a.clone(), inner.kinds.clone()));
            }
        }
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let built = match &inner.automaton {
            Some(a) => a.clone(),
            None => {
                let a = AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&inner.patterns)
                    .ok()?;
                let a = Arc::new(a);
                inner.automaton = Some(a.clone());
                a
            }
        };
        Some((built, inner.kinds.clone()))
    }

    pub(crate) fn find(&self, text: &str, out: &mut Vec<Hit>) {
        let Some((automaton, kinds)) = self.automaton() else {
            return;
        };
        let bytes = text.as_bytes();
        for m in automaton.find_iter(text) {
            let glued_before = m.start() > 0 && bytes[m.start() - 1].is_ascii_alphanumeric();
            let glued_after = bytes.get(m.end()).is_some_and(u8::is_ascii_alphanumeric);
            if !glued_before && !glued_after {
                out.push((kinds[m.pattern().as_usize()], m.range()));
            }
        }
    }
}

/// The forms a value takes when it leaks.
fn variants(kind: Kind, value: &str) -> Vec<String> {
    let mut out = vec![value.to_string()];
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
        Kind::Date => {
            if let Some((y, m, d)) = parse_iso_date(value) {
                out.extend([
                    format!("{y:04}{m:02}{d:02}"),
                    format!("{m:02}/{d:02}/{y:04}"),
                    format!("{m}/{d}/{y:04}"),
                    format!("{m:02}-{d:02}-{y:04}"),
                ]);
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
                        parts.join("+"),
                        parts.join("%20"),
                        parts.join("_"),
                    ]);
                }
            }
        }
        _ => {}
    }
    // The automaton folds ASCII case only: add upper- and lower-case forms
    // of values with other letters (ZOË, núñez).
    if !value.is_ascii() {
        let folded: Vec<String> = out
            .iter()
            .flat_map(|v| [v.to_uppercase(), v.to_lowercase()])
            .collect();
        out.extend(folded);
    }
    let mut extra = Vec::new();
    for v in &out {
        let json = json_escape(v);
        if json != *v {
            extra.push(json);
        }
        let url = url_encode(v);
        if url != *v {
            extra.push(url);
        }
    }
    out.extend(extra);
    out
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
