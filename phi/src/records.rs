//! PHI in structured records: HL7 v2 `PID`/`NK1` segments, X12 `NM1`,
//! `N3`, `N4` and `DMG` segments, and CSV with a header row. A record's
//! layout says which field holds what, so these need no keyword: the
//! name in `PID-5` is a name whatever it looks like, and a provider's
//! `NM1*85` is not a patient.

use std::ops::Range;

use crate::Hit;
use crate::Kind;

/// The record parsers' hits (after the detectors'). Returns the spans a
/// record says are not a person's, for `detect::clear`.
pub(crate) fn cleared(text: &str, out: &mut Vec<Hit>) -> Vec<Hit> {
    let mut cleared = Vec::new();
    detect(text, out, &mut cleared);
    cleared
}

/// Runs the record parsers over `text`. Spans a record shows are not a
/// person's PHI (a provider's address) go to `cleared`.
pub(crate) fn detect(text: &str, out: &mut Vec<Hit>, cleared: &mut Vec<Hit>) {
    // A parser finds nothing in a text without its segment tags (a CSV
    // header, without a separator): most text is log lines, which need not
    // be split into segments three times over to learn that.
    // One search for a byte rules most texts out before any for a tag.
    if text.contains('|') && HL7_TAGS.iter().any(|tag| text.contains(tag)) {
        hl7(text, out);
    }
    if text.contains('*') && X12_TAGS.iter().any(|tag| text.contains(tag)) {
        x12(text, out, cleared);
    }
    if text.contains(',') || text.contains(';') {
        csv(text, out);
    }
    fhir(text, cleared);
    if text.contains("\"code\"") || text.contains("\"system\"") {
        fhir_identifiers(text, out);
    }
}

/// The kind of identifier an HL7 v2 identifier type (table 0203) names,
/// as HL7 `CX.5` and FHIR `identifier.type` write it.
fn identifier_kind(code: &str) -> Option<Kind> {
    Some(match code.trim() {
        "SS" | "SB" => Kind::Ssn,
        "MR" | "MRT" | "PI" | "PT" | "PN" => Kind::Mrn,
        "AN" | "AM" | "ANON" => Kind::Account,
        "DL" | "PPN" => Kind::License,
        "MA" | "MC" | "MB" | "MI" | "SN" | "HC" | "NH" | "NI" => Kind::MemberId,
        _ => return None,
    })
}

/// FHIR identifiers typed by code (`{"type":{"coding":[{"code":"MR"}]},
/// "value":"12345"}`): the value after the code is that kind.
fn fhir_identifiers(text: &str, out: &mut Vec<Hit>) {
    static TYPED: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#""code"\s*:\s*"([A-Z]{2,4})"[^{\]]{0,120}?\]?\s*\}?\s*,?\s*(?:"[a-z]+"\s*:\s*"[^"]*"\s*,\s*)*"value"\s*:\s*"([^"]{3,40})""#)
            .unwrap_or_else(|e| panic!("bad built-in FHIR identifier pattern: {e}"))
    });
    for c in TYPED.captures_iter(text) {
        if let (Some(code), Some(value)) = (c.get(1), c.get(2)) {
            if let Some(kind) = identifier_kind(code.as_str()) {
                out.push((kind, value.range()));
            }
        }
    }
    // `{"system":"http://hospital.example.org/mrn","value":"MRN-448812"}`:
    // the system names what the value is.
    static BY_SYSTEM: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#""system"\s*:\s*"([^"]{1,200})"\s*,\s*"value"\s*:\s*"([^"]{3,40})""#)
            .unwrap_or_else(|e| panic!("bad built-in FHIR identifier pattern: {e}"))
    });
    for c in BY_SYSTEM.captures_iter(text) {
        if let (Some(system), Some(value)) = (c.get(1), c.get(2)) {
            if let Some(kind) = system_kind(system.as_str()) {
                out.push((kind, value.range()));
            }
        }
    }
}

/// The kind of identifier an identifier system's URI names by its last
/// part (`…/sid/us-ssn`, `…/mrn`, `urn:oid:2.16.840.1.113883.4.1`).
fn system_kind(system: &str) -> Option<Kind> {
    let lower = system.to_ascii_lowercase();
    if lower.ends_with("2.16.840.1.113883.4.1") {
        return Some(Kind::Ssn);
    }
    let last = lower
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or_default();
    let has = |words: &[&str]| words.iter().any(|w| last.contains(w));
    Some(if has(&["ssn", "social"]) {
        Kind::Ssn
    } else if has(&[
        "mbi",
        "medicare",
        "medicaid",
        "member",
        "subscriber",
        "beneficiary",
    ]) {
        Kind::MemberId
    } else if has(&[
        "mrn",
        "medical-record",
        "medicalrecord",
        "patient-id",
        "chart",
    ]) {
        Kind::Mrn
    } else if has(&["driver", "license", "licence"]) {
        Kind::License
    } else if has(&["account", "acct"]) {
        Kind::Account
    } else {
        return None;
    })
}

/// The HL7 segments the parser reads: the patient, next of kin, the
/// visit, the insured and the guarantor.
const HL7_TAGS: [&str; 5] = ["PID|", "NK1|", "PV1|", "IN1|", "GT1|"];

/// The X12 segments the parser reads.
const X12_TAGS: [&str; 6] = ["NM1*", "N3*", "N4*", "DMG*", "REF*", "CLM*"];

/// X12 segments: pieces between `~` and line breaks, a piece that ended
/// at a line break without its `~` joined to the next when that does not
/// open a segment (`XX*`): a file wrapped at a fixed width.
fn x12_segments(text: &str) -> Vec<(&str, usize)> {
    let opens_segment = |s: &str| {
        let b = s.trim_start().as_bytes();
        let tag = b
            .iter()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            .count();
        (2..=3).contains(&tag) && b.get(tag) == Some(&b'*')
    };
    let mut out: Vec<(&str, usize)> = Vec::new();
    let mut open = false;
    for (piece, base) in segments(text, &['~']) {
        let ended_by_tilde = text.as_bytes().get(base + piece.len()) == Some(&b'~');
        match out.last_mut() {
            Some((last, start)) if open && !piece.trim().is_empty() && !opens_segment(piece) => {
                *last = &text[*start..base + piece.len()];
            }
            _ if piece.trim().is_empty() => continue,
            _ => out.push((piece, base)),
        }
        open = !ended_by_tilde && text.contains('~');
    }
    out
}

/// FHIR resources that describe the care side, not a patient: the names
/// and addresses in them are a practitioner's or an organisation's.
const FHIR_NOT_PATIENT: &[&str] = &[
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
];

fn fhir(text: &str, cleared: &mut Vec<Hit>) {
    // `"resourceType":"X"` with whitespace anywhere in it ignored, as in
    // the text compacted of whitespace; found from each quote, so text
    // without quotes (most logs) costs one search for a byte and no copy.
    const KEY: &str = "\"resourceType\":\"";
    let mut resource_types: Vec<String> = Vec::new();
    let mut at = 0;
    while let Some(i) = text[at..].find('"') {
        let quote = at + i;
        let Some(end) = prefix_ignoring_whitespace(&text[quote..], KEY) else {
            at = quote + 1;
            continue;
        };
        let end = quote + end;
        resource_types.push(
            text[end..]
                .chars()
                .take_while(|c| *c != '"')
                .filter(|c| !c.is_whitespace())
                .collect(),
        );
        // Occurrences do not overlap (as `match_indices` found them).
        at = end;
    }
    if !resource_types.is_empty()
        && resource_types
            .iter()
            .all(|t| FHIR_NOT_PATIENT.contains(&t.as_str()))
    {
        cleared.push((Kind::Name, 0..text.len()));
        cleared.push((Kind::Address, 0..text.len()));
        cleared.push((Kind::License, 0..text.len()));
    }
}

/// Where `word` ends in `s` if `s` starts with it once whitespace is ignored.
fn prefix_ignoring_whitespace(s: &str, word: &str) -> Option<usize> {
    let mut chars = s.char_indices().filter(|(_, c)| !c.is_whitespace());
    let mut end = 0;
    for w in word.chars() {
        let (i, c) = chars.next()?;
        if c != w {
            return None;
        }
        end = i + c.len_utf8();
    }
    Some(end)
}

/// The pieces of `s` (at byte `base` of the text) split on `sep`, with their ranges.
fn split_ranges(s: &str, base: usize, sep: char) -> Vec<(&str, Range<usize>)> {
    let mut out = Vec::new();
    let mut at = 0;
    for piece in s.split(sep) {
        out.push((piece, base + at..base + at + piece.len()));
        at += piece.len() + sep.len_utf8();
    }
    out
}

/// `range` trimmed of trailing component separators and of spaces.
fn trimmed(text: &str, range: Range<usize>, trailing: &[char]) -> Range<usize> {
    let s = &text[range.clone()];
    let start = range.start + (s.len() - s.trim_start().len());
    let end = range.start + s.trim_end_matches(trailing).trim_end().len();
    start..end.max(start)
}

/// Segments of a text: pieces between `\r`, `\n` and the given terminators,
/// each with its start offset.
fn segments<'a>(text: &'a str, terminators: &[char]) -> Vec<(&'a str, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c == '\r' || c == '\n' || terminators.contains(&c) {
            out.push((&text[start..i], start));
            start = i + c.len_utf8();
        }
    }
    out.push((&text[start..], start));
    out
}

/// HL7 segments: the text's lines, a line that does not open a segment
/// (`XXX|`) joined to the segment before it (a record wrapped or split
/// across lines).
fn hl7_segments(text: &str) -> Vec<(&str, usize)> {
    let opens_segment = |s: &str| {
        let b = s.as_bytes();
        b.len() >= 4
            && b[0].is_ascii_uppercase()
            && b[1..3]
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            && b[3] == b'|'
    };
    let mut out: Vec<(&str, usize)> = Vec::new();
    let mut in_segment = false;
    for (piece, base) in segments(text, &[]) {
        let tagged = HL7_TAGS.iter().any(|t| piece.contains(t));
        match out.last_mut() {
            Some((last, start))
                if in_segment && !piece.is_empty() && !opens_segment(piece) && !tagged =>
            {
                *last = &text[*start..base + piece.len()];
            }
            _ => {
                in_segment = tagged;
                out.push((piece, base));
            }
        }
    }
    out
}

fn hl7(text: &str, out: &mut Vec<Hit>) {
    for (segment, base) in hl7_segments(text) {
        // A segment may follow a log prefix: `msg=PID|1||…`.
        for tag in HL7_TAGS {
            let Some(at) = segment.find(tag) else {
                continue;
            };
            if segment[..at]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric)
            {
                continue;
            }
            let fields = split_ranges(&segment[at..], base + at, '|');
            let layout: &[(usize, Kind)] = match tag {
                "PID|" => &[
                    (2, Kind::Mrn),
                    (3, Kind::Mrn),
                    (4, Kind::Mrn),
                    (5, Kind::Name),
                    (6, Kind::Name),
                    (7, Kind::Date),
                    (9, Kind::Name),
                    (11, Kind::Address),
                    (13, Kind::Phone),
                    (14, Kind::Phone),
                    (18, Kind::Account),
                    (19, Kind::Ssn),
                    (20, Kind::License),
                    (29, Kind::Date),
                ],
                "NK1|" => &[
                    (2, Kind::Name),
                    (4, Kind::Address),
                    (5, Kind::Phone),
                    (6, Kind::Phone),
                    (16, Kind::Date),
                ],
                // The insured's name, birth date, address and policy number.
                "IN1|" => &[
                    (16, Kind::Name),
                    (18, Kind::Date),
                    (19, Kind::Address),
                    (36, Kind::MemberId),
                ],
                // The guarantor's name, address, phones, birth date, SSN.
                "GT1|" => &[
                    (3, Kind::Name),
                    (5, Kind::Address),
                    (6, Kind::Phone),
                    (7, Kind::Phone),
                    (8, Kind::Date),
                    (12, Kind::Ssn),
                ],
                // The admission and discharge times.
                _ => &[(44, Kind::Date), (45, Kind::Date)],
            };
            for &(n, kind) in layout {
                let Some((value, range)) = fields.get(n) else {
                    continue;
                };
                if !value.chars().any(char::is_alphanumeric) {
                    continue;
                }
                if matches!(kind, Kind::Mrn | Kind::Account | Kind::License) {
                    // An identifier list: each repetition's first component
                    // is the number, its fifth the type (`SS`, `MR`, `AN`).
                    let mut at = range.start;
                    for repetition in value.split('~') {
                        let mut components = repetition.split('^');
                        let id = components.next().unwrap_or_default();
                        let kind = components.nth(3).and_then(identifier_kind).unwrap_or(kind);
                        let r = trimmed(text, at..at + id.len(), &['^', '~', '&']);
                        if !r.is_empty() && text[r.clone()].chars().any(char::is_alphanumeric) {
                            out.push((kind, r));
                        }
                        at += repetition.len() + 1;
                    }
                    continue;
                }
                let range = trimmed(text, range.clone(), &['^', '~', '&']);
                if !range.is_empty() {
                    out.push((kind, range));
                }
            }
        }
    }
}

/// X12 entity identifiers that are people whose data is PHI: the insured
/// (subscriber), the patient, a dependent.
const X12_PEOPLE: &[&str] = &["IL", "QC", "03"];

fn x12(text: &str, out: &mut Vec<Hit>, cleared: &mut Vec<Hit>) {
    // Whether the last NM1 named a person (an address after it is theirs).
    let mut person = true;
    for (segment, base) in x12_segments(text) {
        // Tolerate a log prefix before the segment: `edi: NM1*IL*1*…`.
        let Some(at) = X12_TAGS
            .iter()
            .filter_map(|tag| {
                segment.find(tag).filter(|&i| {
                    !segment[..i]
                        .chars()
                        .next_back()
                        .is_some_and(char::is_alphanumeric)
                })
            })
            .min()
        else {
            continue;
        };
        let elements = split_ranges(&segment[at..], base + at, '*');
        let element = |i: usize| elements.get(i).filter(|(v, _)| !v.trim().is_empty());
        match elements.first().map(|(tag, _)| *tag) {
            Some("NM1") => {
                let entity = element(1).map_or("", |(v, _)| *v);
                let is_person = element(2).is_some_and(|(v, _)| *v == "1");
                person = X12_PEOPLE.contains(&entity) && is_person;
                if !person {
                    continue;
                }
                let last = element(3).or(element(4)).map(|(_, r)| r.clone());
                let first = element(5).or(element(4)).map(|(_, r)| r.clone());
                if let (Some(l), Some(f)) = (last, first) {
                    out.push((Kind::Name, l.start..f.end.max(l.end)));
                }
                if let (Some((qualifier, _)), Some((_, id))) = (element(8), element(9)) {
                    let kind = if *qualifier == "34" {
                        Kind::Ssn
                    } else {
                        Kind::MemberId
                    };
                    out.push((kind, id.clone()));
                }
            }
            Some("N3" | "N4") if !person => {
                cleared.push((Kind::Address, base + at..base + segment.len()));
            }
            Some("N3") => {
                if let Some((_, r)) = element(1) {
                    let end = element(2).map_or(r.end, |(_, r2)| r2.end);
                    out.push((Kind::Address, r.start..end));
                }
            }
            Some("N4") => {
                if let Some((_, r)) = element(1) {
                    let end = element(3).or(element(2)).map_or(r.end, |(_, r3)| r3.end);
                    out.push((Kind::Address, r.start..end));
                }
            }
            Some("REF") if person => {
                let qualifier = element(1).map_or("", |(v, _)| v.trim());
                let kind = match qualifier {
                    "SY" => Kind::Ssn,
                    "EA" => Kind::Mrn,
                    "1W" | "F6" | "0F" | "HJ" | "IG" | "NQ" => Kind::MemberId,
                    "EJ" => Kind::Account,
                    _ => continue,
                };
                if let Some((_, r)) = element(2) {
                    out.push((kind, r.clone()));
                }
            }
            Some("CLM") => {
                // The patient control number: the provider's account for the patient.
                if let Some((_, r)) = element(1) {
                    out.push((Kind::Account, r.clone()));
                }
            }
            Some("DMG") => {
                if let Some((_, r)) = element(2) {
                    out.push((Kind::Date, r.clone()));
                }
            }
            _ => {}
        }
    }
}

/// The kind of PHI a CSV column holds, from its header.
fn column_kind(header: &str) -> Option<Kind> {
    let k: String = header
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    let is = |names: &[&str]| names.contains(&k.as_str());
    Some(
        if is(&[
            "name",
            "patient",
            "patientname",
            "fullname",
            "first",
            "last",
            "given",
            "family",
            "surname",
        ]) || crate::names::is_name_key(&k)
        {
            Kind::Name
        } else if is(&[
            "dob",
            "birthdate",
            "dateofbirth",
            "birthday",
            "dod",
            "dateofdeath",
            "admitdate",
            "admissiondate",
            "dischargedate",
            "servicedate",
            "dos",
            "visitdate",
        ]) {
            Kind::Date
        } else if is(&["ssn", "socialsecurity", "socialsecuritynumber"]) {
            Kind::Ssn
        } else if is(&[
            "phone",
            "tel",
            "telephone",
            "mobile",
            "cell",
            "homephone",
            "phonenumber",
        ]) {
            Kind::Phone
        } else if is(&["fax", "faxnumber"]) {
            Kind::Fax
        } else if is(&["email", "emailaddress", "mail"]) {
            Kind::Email
        } else if is(&[
            "address",
            "addr",
            "address1",
            "address2",
            "street",
            "streetaddress",
            "city",
            "zip",
            "zipcode",
            "postalcode",
            "postcode",
        ]) {
            Kind::Address
        } else if is(&["mrn", "medicalrecordnumber", "chart", "chartnumber"]) {
            Kind::Mrn
        } else if is(&[
            "memberid",
            "subscriberid",
            "policynumber",
            "mbi",
            "insuranceid",
        ]) {
            Kind::MemberId
        } else if is(&["account", "accountnumber", "acct"]) {
            Kind::Account
        } else if is(&["url", "website", "homepage"]) {
            Kind::Url
        } else if is(&["ip", "ipaddress"]) {
            Kind::Ip
        } else {
            return None;
        },
    )
}

/// The fields of one CSV line with their byte ranges (quotes handled, not unescaped).
fn csv_fields(line: &str, base: usize, sep: char) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(base + start..base + i);
            start = i + 1;
        }
    }
    out.push(base + start..base + line.len());
    out
}

fn csv(text: &str, out: &mut Vec<Hit>) {
    let lines = segments(text, &[]);
    let mut columns: Option<(char, Vec<Option<Kind>>)> = None;
    // A record cut by a line break goes on at this column on the next line.
    let mut carry: Option<usize> = None;
    for (line, base) in lines {
        if line.trim().is_empty() {
            columns = None;
            continue;
        }
        if let Some((sep, kinds)) = &columns {
            let fields = csv_fields(line, base, *sep);
            let from = carry.take().filter(|c| fields.len() <= kinds.len() - c);
            let from = match from {
                Some(c) => Some(c),
                // A short row (two fields or more) goes on on the next line.
                None if fields.len() == kinds.len() || (2..kinds.len()).contains(&fields.len()) => {
                    Some(0)
                }
                None => None,
            };
            if let Some(from) = from {
                let last_empty = fields
                    .last()
                    .is_some_and(|r| text[r.clone()].trim().is_empty());
                if from + fields.len() < kinds.len() || last_empty {
                    carry = Some(from + fields.len() - 1);
                }
                for (range, kind) in fields.into_iter().zip(&kinds[from..]) {
                    let Some(kind) = kind else { continue };
                    let raw = &text[range.clone()];
                    let lead = raw.len() - raw.trim_start_matches([' ', '"']).len();
                    let inner = raw.trim_matches([' ', '"']);
                    if inner.chars().any(char::is_alphanumeric) {
                        out.push((*kind, range.start + lead..range.start + lead + inner.len()));
                    }
                }
                continue;
            }
            columns = None;
        }
        // A header: two or more plain column names, at least one of them PHI.
        for sep in [',', ';'] {
            let names: Vec<&str> = line
                .split(sep)
                .map(|f| f.trim().trim_matches('"'))
                .collect();
            let plain = names.len() >= 2
                && names.iter().all(|n| {
                    !n.is_empty()
                        && n.len() <= 40
                        && n.chars()
                            .all(|c| c.is_alphanumeric() || matches!(c, '_' | ' ' | '.' | '-'))
                        && n.starts_with(|c: char| c.is_alphabetic())
                });
            if !plain {
                continue;
            }
            let kinds: Vec<Option<Kind>> = names.iter().map(|n| column_kind(n)).collect();
            // A bare `name` column names anything (a service, a plan); it
            // holds a person's name only beside another PHI column.
            let specific = names
                .iter()
                .zip(&kinds)
                .any(|(n, k)| k.is_some() && !n.eq_ignore_ascii_case("name"));
            if specific {
                columns = Some((sep, kinds));
                break;
            }
        }
    }
}
