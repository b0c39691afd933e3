//! Sharding for CI matrices: `--partition hash:K/N`, `slice:K/N` or
//! `duration:K/N`.
//!
//! Every selected test lands in exactly one of the N shards. `hash` puts a
//! test by a stable hash of its name (a test keeps its shard when others
//! are added); `slice` deals the name-sorted list round-robin (shards of
//! equal size); `duration` deals tests by their recorded durations, longest
//! first, each to the shard with the least time so far, so shards finish
//! together (tests never timed count as the mean of those that were).

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
    /// By recorded duration, so shards take equal time.
    Duration {
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
                "invalid partition `{s}`: expected hash:K/N, slice:K/N or duration:K/N with 1 <= K <= N, e.g. hash:1/3"
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
            "duration" => Ok(Partition::Duration { k, n }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partition::Hash { k, n } => write!(f, "hash:{k}/{n}"),
            Partition::Slice { k, n } => write!(f, "slice:{k}/{n}"),
            Partition::Duration { k, n } => write!(f, "duration:{k}/{n}"),
        }
    }
}

impl Partition {
    /// Keeps the tests of this shard. `tests` must be sorted by name;
    /// `duration_s` gives a test's recorded duration (for `duration:K/N`).
    pub fn select<T>(
        &self,
        tests: Vec<T>,
        name: impl Fn(&T) -> &str,
        duration_s: impl Fn(&str) -> Option<f64>,
    ) -> Vec<T> {
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
            Partition::Duration { k, n } => {
                let known: Vec<f64> = tests.iter().filter_map(|t| duration_s(name(t))).collect();
                let mean = if known.is_empty() {
                    1.0
                } else {
                    known.iter().sum::<f64>() / known.len() as f64
                };
                let weights: Vec<f64> = tests
                    .iter()
                    .map(|t| duration_s(name(t)).unwrap_or(mean))
                    .collect();
                let shard = deal_by_weight(&weights, n as usize);
                tests
                    .into_iter()
                    .zip(shard)
                    .filter(|(_, s)| *s as u64 == k - 1)
                    .map(|(t, _)| t)
                    .collect()
            }
        }
    }
}

/// The shard (0-based) of each item: heaviest first (ties by position),
/// each to the lightest shard so far (ties to the lowest index). Every
/// shard computes the same deal from the same weights.
pub fn deal_by_weight(weights: &[f64], shards: usize) -> Vec<usize> {
    let shards = shards.max(1);
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
    let mut load = vec![0.0_f64; shards];
    let mut out = vec![0; weights.len()];
    for i in order {
        let lightest = (0..shards)
            .min_by(|&x, &y| load[x].total_cmp(&load[y]).then(x.cmp(&y)))
            .unwrap_or(0);
        load[lightest] += weights[i];
        out[i] = lightest;
    }
    out
}
