//! Sharding for CI matrices: `--partition hash:K/N` or `slice:K/N`.
//!
//! Every selected test lands in exactly one of the N shards. `hash` puts a
//! test by a stable hash of its name (a test keeps its shard when others
//! are added); `slice` deals the name-sorted list round-robin (shards of
//! equal size).

use std::fmt;
use std::str::FromStr;

/// Which shard of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    /// By a stable hash of the test's name.
    Hash {
        /// 1-based shard.
        k: u64,
        /// Number of shards.
        n: u64,
    },
    /// Round-robin over the name-sorted list.
    Slice {
        /// 1-based shard.
        k: u64,
        /// Number of shards.
        n: u64,
    },
}

impl FromStr for Partition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid partition `{s}`: expected hash:K/N or slice:K/N with 1 <= K <= N, e.g. hash:1/3"
            )
        };
        let (kind, shard) = s.split_once(':').ok_or_else(bad)?;
        let (k, n) = shard.split_once('/').ok_or_else(bad)?;
        let (k, n): (u64, u64) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if k == 0 || n == 0 || k > n {
            return Err(bad());
        }
        match kind.trim() {
            "hash" => Ok(Partition::Hash { k, n }),
            "slice" | "count" => Ok(Partition::Slice { k, n }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partition::Hash { k, n } => write!(f, "hash:{k}/{n}"),
            Partition::Slice { k, n } => write!(f, "slice:{k}/{n}"),
        }
    }
}

impl Partition {
    /// Keeps the tests of this shard. `tests` must be sorted by name.
    pub fn select<T>(&self, tests: Vec<T>, name: impl Fn(&T) -> &str) -> Vec<T> {
        match *self {
            Partition::Hash { k, n } => tests
                .into_iter()
                .filter(|t| crate::seed::derive_seed(0, &[name(t)]) % n == k - 1)
                .collect(),
            Partition::Slice { k, n } => tests
                .into_iter()
                .enumerate()
                .filter(|(i, _)| *i as u64 % n == k - 1)
                .map(|(_, t)| t)
                .collect(),
        }
    }
}
