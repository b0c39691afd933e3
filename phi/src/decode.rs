//! Decoding layers run before detection: the lines of a text that carry a
//! value encoded (base64 and base64url runs, percent-encoding, HTML and
//! XML character references, JSON `\u` escapes) or written in other
//! Unicode forms (decomposed, full-width, typographic quotes, no-break
//! spaces) are decoded into a second text, which the detectors scan too.
//! Every byte of that text knows the bytes of the original it came from,
//! so a finding in it redacts the encoded text where it stands.
//!
//! Only lines the detectors' gates flag (one pass over each line, shared
//! with every detector: a `%XX`, a character reference, a JSON escape, a
//! base64-looking run, a byte outside ASCII) are decoded at all; a line
//! that decodes to itself is left out.
//!
//! Crates: `base64` decodes runs, `percent-encoding` decodes `%XX`
//! sequences, `quick-xml` resolves named HTML5 entities,
//! `unicode-normalization` applies NFKC.

use std::ops::Range;

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// A decoded text and, piece by piece, where it came from.
pub(crate) struct Decoded {
    /// The decoded lines, each ending in `\n`.
    pub(crate) text: String,
    /// Pieces in order of `start` (decoded byte offset).
    pieces: Vec<Piece>,
}

/// A run of the decoded text: copied as it was (`literal`, byte for
/// byte), or decoded from `orig` as a whole.
#[derive(Debug, Clone)]
struct Piece {
    start: usize,
    orig: Range<usize>,
    literal: bool,
}

/// The shortest base64 run tried (nine bytes of text encode in 12).
const MIN_BASE64: usize = 12;

fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')
}

impl Decoded {
    /// The given lines of `text` (those the detectors' gates flagged as
    /// holding something encoded, in order) that decode to something
    /// else, decoded; `None` when there are none.
    pub(crate) fn of(text: &str, lines: &[Range<usize>]) -> Option<Decoded> {
        let mut out = Decoded {
            text: String::new(),
            pieces: Vec::new(),
        };
        // Where the last line decoded ended in the original.
        let mut last_end = None;
        for range in lines {
            let range = range.clone();
            let (text_len, pieces_len) = (out.text.len(), out.pieces.len());
            // Lines that were not neighbours are kept apart by an empty
            // line, so no record (a CSV header and a row) joins them.
            if last_end.is_some_and(|end| end + 1 != range.start) {
                out.push(range.start..range.start, "\n", false);
            }
            if out.line(text, range.clone()) {
                out.push(range.end..(range.end + 1).min(text.len()), "\n", true);
                last_end = Some(range.end);
            } else {
                out.text.truncate(text_len);
                out.pieces.truncate(pieces_len);
            }
        }
        (!out.text.is_empty()).then_some(out)
    }

    /// The original byte range of a decoded span.
    pub(crate) fn original(&self, span: &Range<usize>) -> Range<usize> {
        let at = |offset: usize, end: bool| -> usize {
            // The piece holding `offset` (for an end, the byte before it).
            let probe = if end {
                offset.saturating_sub(1)
            } else {
                offset
            };
            let i = self
                .pieces
                .partition_point(|p| p.start <= probe)
                .saturating_sub(1);
            let Some(p) = self.pieces.get(i) else {
                return 0;
            };
            if p.literal {
                (p.orig.start + (offset - p.start)).min(p.orig.end.max(p.orig.start))
            } else if end {
                p.orig.end
            } else {
                p.orig.start
            }
        };
        let start = at(span.start, false);
        start..at(span.end, true).max(start)
    }

    fn push(&mut self, orig: Range<usize>, s: &str, literal: bool) {
        if s.is_empty() {
            return;
        }
        // Literal pieces next to each other join into one.
        if literal {
            if let Some(last) = self.pieces.last_mut() {
                if last.literal && last.orig.end == orig.start {
                    last.orig.end = orig.end;
                    self.text.push_str(s);
                    return;
                }
            }
        }
        self.pieces.push(Piece {
            start: self.text.len(),
            orig,
            literal,
        });
        self.text.push_str(s);
    }

    /// Decodes one line into `self`; true when anything changed.
    fn line(&mut self, text: &str, range: Range<usize>) -> bool {
        let bytes = text.as_bytes();
        let mut changed = false;
        let mut i = range.start;
        // The end of the base64-alphabet run `i` is in (runs are tried once, at their start).
        let mut run_end = i;
        while i < range.end {
            let b = bytes[i];
            if i >= run_end && is_b64(b) {
                run_end = i + bytes[i..range.end]
                    .iter()
                    .position(|&c| !is_b64(c))
                    .unwrap_or(range.end - i);
                let mut end = run_end;
                while end < range.end && bytes[end] == b'=' && end - run_end < 2 {
                    end += 1;
                }
                if let Some(decoded) = base64_text(&text[i..end]) {
                    self.push(i..end, &decoded, false);
                    changed = true;
                    i = end;
                    run_end = end;
                    continue;
                }
            }
            let step = match b {
                b'%' => self.percent(text, i, range.end),
                b'&' => self.entity(text, i, range.end),
                b'\\' => self.json_escape(text, i, range.end),
                b'+' if i > range.start
                    && bytes[i - 1].is_ascii_alphabetic()
                    && bytes.get(i + 1).is_some_and(u8::is_ascii_uppercase) =>
                {
                    // `Gloria+Estrada`: a space in a query string.
                    self.push(i..i + 1, " ", false);
                    Some(1)
                }
                _ if !b.is_ascii() => self.unicode(text, i, range.end),
                _ => None,
            };
            match step {
                Some(n) => {
                    changed = true;
                    i += n;
                }
                None => {
                    let len = text[i..].chars().next().map_or(1, char::len_utf8);
                    self.push(i..i + len, &text[i..i + len], true);
                    i += len;
                }
            }
        }
        changed
    }

    /// A run of `%XX` at `i`: its bytes decoded as UTF-8, char by char.
    fn percent(&mut self, text: &str, i: usize, end: usize) -> Option<usize> {
        let bytes = text.as_bytes();
        let mut j = i;
        while j + 3 <= end
            && bytes[j] == b'%'
            && bytes[j + 1].is_ascii_hexdigit()
            && bytes[j + 2].is_ascii_hexdigit()
        {
            j += 3;
        }
        if j == i {
            return None;
        }
        let raw: Vec<u8> = percent_encoding::percent_decode_str(&text[i..j]).collect();
        let decoded = String::from_utf8(raw).ok()?;
        // Each char took three bytes of the original per byte of its own.
        let mut at = i;
        for c in decoded.chars() {
            let len = 3 * c.len_utf8();
            let mut buf = [0u8; 4];
            self.push(at..at + len, c.encode_utf8(&mut buf), false);
            at += len;
        }
        Some(j - i)
    }

    /// An HTML or XML character reference at `i`: `&#58;`, `&#x3a;`, `&eacute;`.
    fn entity(&mut self, text: &str, i: usize, end: usize) -> Option<usize> {
        let rest = &text[i + 1..end];
        let semi = rest.get(..rest.len().min(33))?.find(';')?;
        let name = &rest[..semi];
        let decoded: String = if let Some(num) = name.strip_prefix('#') {
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(code)?.to_string()
        } else if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric()) {
            quick_xml::escape::resolve_html5_entity(name)?.to_string()
        } else {
            return None;
        };
        let decoded = normalized(&decoded);
        self.push(i..i + semi + 2, &decoded, false);
        Some(semi + 2)
    }

    /// A JSON escape at `i`: `\u00e9` (a surrogate pair as one char), `\/`, `\"`.
    fn json_escape(&mut self, text: &str, i: usize, end: usize) -> Option<usize> {
        let bytes = text.as_bytes();
        let hex4 = |at: usize| -> Option<u32> {
            let s = text.get(at..at + 4).filter(|_| at + 4 <= end)?;
            u32::from_str_radix(s, 16).ok()
        };
        match bytes.get(i + 1) {
            Some(b'u') => {
                let unit = hex4(i + 2)?;
                let (c, len) = if (0xD800..0xDC00).contains(&unit) {
                    let low = (bytes.get(i + 6) == Some(&b'\\') && bytes.get(i + 7) == Some(&b'u'))
                        .then(|| hex4(i + 8))
                        .flatten()
                        .filter(|low| (0xDC00..0xE000).contains(low))?;
                    let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                    (char::from_u32(code)?, 12)
                } else {
                    (char::from_u32(unit)?, 6)
                };
                let decoded = normalized(&c.to_string());
                self.push(i..i + len, &decoded, false);
                Some(len)
            }
            Some(&c @ (b'/' | b'"' | b'\\')) if i + 2 <= end => {
                self.push(
                    i..i + 2,
                    if c == b'/' {
                        "/"
                    } else if c == b'"' {
                        "\""
                    } else {
                        "\\"
                    },
                    false,
                );
                Some(2)
            }
            _ => None,
        }
    }

    /// A character outside ASCII at `i`, with the combining marks after it,
    /// in NFKC with typographic quotes and dashes made plain; `None` when
    /// that changes nothing.
    fn unicode(&mut self, text: &str, i: usize, end: usize) -> Option<usize> {
        let mut chars = text[i..end].char_indices();
        let (_, first) = chars.next()?;
        let mut len = first.len_utf8();
        for (at, c) in chars {
            if !is_combining_mark(c) {
                break;
            }
            len = at + c.len_utf8();
        }
        let cluster = &text[i..i + len];
        let decoded = normalized(cluster);
        if decoded == cluster {
            return None;
        }
        self.push(i..i + len, &decoded, false);
        Some(len)
    }
}

/// `s` in NFKC, typographic quotes, dashes and spaces made plain.
fn normalized(s: &str) -> String {
    s.nfkc()
        .map(|c| match c {
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' => '\'',
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}' => '"',
            '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}' | '\u{2212}' => '-',
            c if c != '\n' && c.is_whitespace() => ' ',
            c => c,
        })
        .collect()
}

/// A base64 or base64url run decoded, when it holds text: valid UTF-8,
/// printable, at least six characters.
fn base64_text(run: &str) -> Option<String> {
    const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    let b = run.as_bytes();
    let body = run.trim_end_matches('=');
    if body.len() < MIN_BASE64
        || !b.iter().any(u8::is_ascii_uppercase)
        || !b.iter().any(u8::is_ascii_lowercase)
    {
        return None;
    }
    let engine = if run.contains(['-', '_']) {
        if run.contains(['+', '/']) {
            return None;
        }
        URL_SAFE
    } else {
        STANDARD
    };
    let bytes = engine.decode(run).ok()?;
    let s = String::from_utf8(bytes).ok()?;
    let printable = s
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .count();
    let letters = s.chars().filter(|c| c.is_alphanumeric()).count();
    let total = s.chars().count();
    (total >= 6 && printable == total && letters * 2 >= total)
        .then(|| s.replace(['\n', '\r', '\t'], " "))
}
