//! Check rules of healthcare and personal identifiers, shared by the PHI
//! detectors (to cut false positives), the generators (to make valid
//! values) and the reference services (to validate claims).

/// The Luhn check digit of `digits` (ASCII digits), as the digit that makes
/// the whole string pass.
fn luhn_check_digit(digits: impl DoubleEndedIterator<Item = u8>) -> u8 {
    let mut sum = 0u32;
    for (i, d) in digits.rev().enumerate() {
        let mut v = u32::from(d);
        if i % 2 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    ((10 - sum % 10) % 10) as u8
}

/// The NPI check digit for a 9-digit body: Luhn over `80840` followed by the body.
///
/// ```
/// # extern crate service_test_phi as phi;
/// assert_eq!(phi::ids::npi_check_digit("123456789"), Some(3));
/// ```
pub fn npi_check_digit(body: &str) -> Option<u8> {
    if body.len() != 9 || !body.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(luhn_check_digit(
        b"80840".iter().chain(body.as_bytes()).map(|b| b - b'0'),
    ))
}

/// A 10-digit NPI starting with 1 or 2 whose last digit is its check digit.
pub fn is_valid_npi(npi: &str) -> bool {
    npi.len() == 10
        && matches!(npi.as_bytes()[0], b'1' | b'2')
        && npi_check_digit(&npi[..9]).is_some_and(|c| npi.as_bytes()[9] == b'0' + c)
}

/// The DEA check digit for six digits: `(d1+d3+d5) + 2·(d2+d4+d6)`, last digit.
pub fn dea_check_digit(six: &str) -> Option<u8> {
    let d: Vec<u32> = six
        .bytes()
        .map(|b| u32::from(b.wrapping_sub(b'0')))
        .collect();
    if d.len() != 6 || d.iter().any(|v| *v > 9) {
        return None;
    }
    Some((((d[0] + d[2] + d[4]) + 2 * (d[1] + d[3] + d[5])) % 10) as u8)
}

/// A DEA registration number: registrant type letter, a letter or `9`,
/// seven digits whose last is the check digit.
///
/// ```
/// # extern crate service_test_phi as phi;
/// assert!(phi::ids::is_valid_dea("AP5836727"));
/// assert!(!phi::ids::is_valid_dea("AB4523763"));
/// ```
pub fn is_valid_dea(dea: &str) -> bool {
    let b = dea.as_bytes();
    b.len() == 9
        && b"ABCDEFGHJKLMPRSTUX".contains(&b[0])
        && (b[1].is_ascii_uppercase() || b[1] == b'9')
        && b[2..].iter().all(u8::is_ascii_digit)
        && dea_check_digit(&dea[2..8]).is_some_and(|c| b[8] == b'0' + c)
}

/// The letters an MBI may use: A–Z without S, L, O, I, B, Z.
pub const MBI_LETTERS: &[u8; 20] = b"ACDEFGHJKMNPQRTUVWXY";

/// The shape of each MBI position: `C A AN N A AN N A A N N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MbiSlot {
    /// 1–9.
    NonZeroDigit,
    /// 0–9.
    Digit,
    /// One of [`MBI_LETTERS`].
    Letter,
    /// A digit or one of [`MBI_LETTERS`].
    LetterOrDigit,
}

/// The 11 positions of an MBI.
pub const MBI_SLOTS: [MbiSlot; 11] = {
    use MbiSlot::*;
    [
        NonZeroDigit,
        Letter,
        LetterOrDigit,
        Digit,
        Letter,
        LetterOrDigit,
        Digit,
        Letter,
        Letter,
        Digit,
        Digit,
    ]
};

/// A Medicare Beneficiary Identifier in its stored form (11 characters,
/// no dashes) or printed form (`1EG4-TE5-MK73`).
pub fn is_valid_mbi(mbi: &str) -> bool {
    let compact: Vec<u8> =
        if mbi.len() == 13 && mbi.as_bytes()[4] == b'-' && mbi.as_bytes()[8] == b'-' {
            mbi.bytes().filter(|b| *b != b'-').collect()
        } else {
            mbi.bytes().collect()
        };
    compact.len() == 11
        && compact.iter().zip(MBI_SLOTS).all(|(c, slot)| match slot {
            MbiSlot::NonZeroDigit => (b'1'..=b'9').contains(c),
            MbiSlot::Digit => c.is_ascii_digit(),
            MbiSlot::Letter => MBI_LETTERS.contains(c),
            MbiSlot::LetterOrDigit => c.is_ascii_digit() || MBI_LETTERS.contains(c),
        })
}

/// An SSN's parts pass the SSA's structural rules: area not 000 or 666,
/// group not 00, serial not 0000. (Areas 900–999 are never issued as SSNs
/// but are ITINs: still a personal identifier, so they pass here.)
pub fn ssn_parts_plausible(area: u16, group: u8, serial: u16) -> bool {
    area != 0
        && area != 666
        && area <= 999
        && group != 0
        && group <= 99
        && serial != 0
        && serial <= 9999
}

/// An ICD-10-CM code's shape (not its existence): letter, digit, digit or
/// letter, then up to four characters after an optional dot.
pub fn is_icd10cm_shape(code: &str) -> bool {
    let compact: Vec<u8> = code.bytes().filter(|b| *b != b'.').collect();
    let dot_ok = match code.find('.') {
        None => true,
        Some(i) => i == 3 && code.matches('.').count() == 1 && code.len() > 4,
    };
    dot_ok
        && (3..=7).contains(&compact.len())
        && compact[0].is_ascii_uppercase()
        && compact[1].is_ascii_digit()
        && (compact[2].is_ascii_digit() || compact[2].is_ascii_uppercase())
        && compact[3..]
            .iter()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
}

/// A CPT (Category I `\d{5}`, II `\d{4}F`, III `\d{4}T`, PLA `\d{4}U`) or
/// HCPCS Level II (`[A-V]\d{4}`) code's shape.
pub fn is_cpt_or_hcpcs_shape(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 5
        && ((b.iter().all(u8::is_ascii_digit))
            || (b[..4].iter().all(u8::is_ascii_digit) && matches!(b[4], b'F' | b'T' | b'U'))
            || ((b'A'..=b'V').contains(&b[0]) && b[1..].iter().all(u8::is_ascii_digit)))
}
