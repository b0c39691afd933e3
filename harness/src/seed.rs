//! Seeds: one run seed, and per-test streams derived from it.
//!
//! A test's data depends only on (run seed, test name, fixture), never on
//! which tests ran before it or in what order. The derivation is FNV-1a over
//! the parts followed by the SplitMix64 finaliser: stable across Rust
//! versions and platforms, unlike `std`'s hashers.

/// Derives a 64-bit seed from the run seed and a list of parts.
pub fn derive_seed(run_seed: u64, parts: &[&str]) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    };
    eat(&run_seed.to_le_bytes());
    for part in parts {
        // A separator that cannot occur in UTF-8 keeps ("ab","c") apart from ("a","bc").
        eat(&[0xff]);
        eat(part.as_bytes());
    }
    splitmix64(h)
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A fresh seed for a run that was given none: time and process id, so two
/// runs differ. It is printed, so the run can be repeated with `--seed`.
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // Keep it short enough to type: 0..10^9 is plenty of distinct runs.
    splitmix64(nanos ^ u64::from(std::process::id())) % 1_000_000_000
}

/// 64 unpredictable bits (std's per-process random hasher keys), for
/// private file names.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
