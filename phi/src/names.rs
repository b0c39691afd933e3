//! Common given names and surnames, to tell a person's name in prose from
//! other capitalised words.
//!
//! The lists are the most frequent names of the US Census Bureau's 1990
//! name frequency tables (public domain): 2,854 given names and 7,937
//! surnames, one a line in `phi/data/` (78 kB as plain text; see its
//! README for how they were cut).
//!
//! A name alone is never enough: the detectors ask for a given name
//! beside a surname, or a word of context (a kinship word, a greeting,
//! "my name is"), and leave out names that are also common words
//! ("Will", "May", "Grant") unless the context is strong.

use std::collections::HashSet;
use std::sync::LazyLock;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

static GIVEN: LazyLock<HashSet<String>> =
    LazyLock::new(|| list(include_str!("../data/given_names.txt")));
static SURNAMES: LazyLock<HashSet<String>> =
    LazyLock::new(|| list(include_str!("../data/surnames.txt")));

fn list(text: &str) -> HashSet<String> {
    text.lines()
        .map(|l| l.trim().to_lowercase())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Names that are as often ordinary words, months, places or
/// organisations: they count only beside another name or with strong
/// context, never as the evidence themselves.
const COMMON_WORDS: &[&str] = &[
    "will",
    "may",
    "june",
    "april",
    "august",
    "grant",
    "mark",
    "bill",
    "art",
    "frank",
    "hope",
    "faith",
    "joy",
    "grace",
    "rose",
    "ray",
    "guy",
    "pat",
    "sandy",
    "holly",
    "dawn",
    "summer",
    "autumn",
    "crystal",
    "amber",
    "ruby",
    "pearl",
    "iris",
    "lily",
    "violet",
    "ivy",
    "daisy",
    "page",
    "price",
    "long",
    "young",
    "white",
    "brown",
    "green",
    "black",
    "gray",
    "grey",
    "hill",
    "king",
    "wood",
    "stone",
    "ward",
    "hall",
    "bell",
    "lane",
    "cook",
    "park",
    "rice",
    "bush",
    "case",
    "chase",
    "hunt",
    "love",
    "little",
    "small",
    "best",
    "dean",
    "major",
    "sterling",
    "bay",
    "cross",
    "fields",
    "banks",
    "rivers",
    "woods",
    "mason",
    "cole",
    "church",
    "lake",
    "bond",
    "marsh",
    "moss",
    "pope",
    "power",
    "sharp",
    "strong",
    "west",
    "north",
    "south",
    "east",
    "day",
    "knight",
    "wise",
    "rich",
    "gold",
    "silver",
    "fox",
    "wolf",
    "bird",
    "crane",
    "swan",
    "lamb",
    "bass",
    "pike",
    "fish",
    "honey",
    "jack",
    "job",
    "chance",
    "chip",
    "christian",
    "justice",
    "liberty",
    "star",
    "angel",
    "baby",
    "rusty",
    "temple",
    "clay",
    "cliff",
    "dale",
    "glen",
    "forest",
    "field",
    "ford",
    "gates",
    "wells",
    "mercy",
    "madison",
    "jordan",
    "austin",
    "dallas",
    "houston",
    "lincoln",
    "washington",
    "jackson",
    "georgia",
    "virginia",
    "carolina",
    "florence",
    "paris",
    "sunday",
    "monday",
    "tuesday",
    "friday",
    "don",
    "sue",
    "lee",
    "more",
    "long",
    "see",
    "say",
    "care",
    "health",
    "center",
    "early",
    "good",
    "new",
    "first",
    "case",
    "story",
    "said",
    "head",
    "hand",
    "lord",
    "parks",
    "street",
    "walker",
    "baker",
    "carter",
    "miller",
    "turner",
    "hunter",
    "porter",
    "fisher",
    "taylor",
    "smith",
    "cash",
    "tower",
    "meadows",
    "brooks",
    "hardy",
    "bright",
    "sweet",
    "noble",
    "short",
    "read",
    "reading",
    "major",
    "normal",
    "general",
    "lab",
    "trial",
    "else",
    "even",
    "kind",
    "harm",
    "cure",
    "lucky",
    "self",
    "kitty",
    "team",
    "valued",
];

/// Words after a run of names that make it an organisation or a place.
const ORGANISATION_WORDS: &[&str] = &[
    "hospital",
    "clinic",
    "center",
    "centre",
    "medical",
    "health",
    "healthcare",
    "street",
    "st",
    "avenue",
    "ave",
    "road",
    "rd",
    "drive",
    "dr",
    "boulevard",
    "blvd",
    "lane",
    "way",
    "county",
    "university",
    "college",
    "pharmacy",
    "group",
    "inc",
    "llc",
    "foundation",
    "park",
    "school",
    "labs",
    "laboratory",
    "institute",
    "memorial",
    "plan",
    "insurance",
    "services",
    "associates",
    "partners",
    "church",
    "library",
    "hall",
    "building",
    "wing",
    "unit",
    "campus",
    "syndrome",
    "disease",
    "test",
    "scale",
    "award",
];

/// A word as the lists spell it: lower case, without a possessive, its
/// accents, apostrophes or a trailing dot (`O'Neill's` → `oneill`,
/// `Renée` → `renee`).
fn key_exact(word: &str) -> String {
    word.trim_end_matches(['.', ','])
        .trim_end_matches("'s")
        .trim_end_matches("’s")
        .nfd()
        .filter(|c| !is_combining_mark(*c) && !matches!(c, '\'' | '’'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// A common given name.
pub(crate) fn is_given(word: &str) -> bool {
    GIVEN.contains(&key_exact(word))
}

/// A common surname (one part of a double-barrelled one is enough).
pub(crate) fn is_surname(word: &str) -> bool {
    let key = key_exact(word);
    SURNAMES.contains(&key) || key.contains('-') && key.split('-').any(|p| SURNAMES.contains(p))
}

/// A name that is also a common word, a month or a place.
pub(crate) fn is_common_word(word: &str) -> bool {
    COMMON_WORDS.contains(&key_exact(word).as_str())
}

/// A word that makes the names before it an organisation or a place.
pub(crate) fn is_organisation_word(word: &str) -> bool {
    ORGANISATION_WORDS.contains(&key_exact(word).as_str())
}

/// Is this key (any case, `_`/`.`/`-` ignored) one that holds a person's name?
pub(crate) fn is_name_key(key: &str) -> bool {
    let k: String = key
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    const SUFFIXES: &[&str] = &[
        "firstname",
        "lastname",
        "fullname",
        "givenname",
        "familyname",
        "middlename",
        "maidenname",
        "surname",
        "patientname",
        "ptname",
        "guarantorname",
        "subscribername",
        "membername",
        "insuredname",
        "namefamily",
        "namegiven",
        "first",
        "last",
        "fname",
        "lname",
    ];
    SUFFIXES.iter().any(|s| k.ends_with(s)) || k == "family" || k == "given"
}
