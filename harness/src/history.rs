//! History: what the previous runs of this binary took, kept under `target/`.
//!
//! The scheduler starts the longest tests first, so a long test registered
//! last does not start last and stretch the run. Durations come from the
//! previous run; tests never seen before are started first (they may be long).
//! The file is written atomically (temporary file, then rename).
//!
//! On a CI matrix, where `target/` does not survive from one run to the
//! next, the history travels as an artifact: `cargo xtask report merge
//! --history DIR` updates `DIR/<binary>.json` with the shards' merged
//! `results.jsonl`, and the next run's shards read it with `--history FILE`
//! ([`History::load_file`], which also takes a `results.jsonl` itself).
//! A run given `--history` still saves what it learns to the usual place,
//! never into the file it was given.
//!
//! Each test's entry also keeps the figures it recorded in its last runs
//! ([`FigureHistory`]), which the report shows as trends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::events::{OutcomeLabel, TestRecord};
use crate::metrics::Metric;
use crate::report::ResultLine;

pub use crate::events::{FigureHistory, Recent};

/// Why a history file given with `--history` cannot be used; names the file
/// and, for a bad line, the line.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file cannot be read (it does not exist, say).
    #[error("--history {path}: cannot read it: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a history (nor a `results.jsonl`).
    #[error("--history {path}, line {line}: not a test history ({reason})")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What the parser said.
        reason: String,
    },
}

/// What was last seen of one test.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// What the test took the last time it ran, in seconds: its wall time
    /// less its wait on suite and session fixtures being set up (every
    /// process pays that once, whichever test asks first: counted in the
    /// test that asked, it made `duration:K/N` deal that test's shard
    /// too little).
    pub duration_s: f64,
    /// The last outcome.
    pub outcome: OutcomeLabel,
    /// The outcomes of the last runs, oldest first (at most [`RECENT`]).
    #[serde(default)]
    pub recent: Vec<OutcomeLabel>,
    /// The figures it recorded in the last runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<FigureHistory>,
}

/// `figures` with this run's `metrics` appended (states are not figures);
/// a figure this run did not record keeps its history.
pub fn with_figures(mut figures: Vec<FigureHistory>, metrics: &[Metric]) -> Vec<FigureHistory> {
    for m in metrics.iter().filter(|m| !m.is_state()) {
        let i = match figures.iter().position(|f| f.is_of(m)) {
            Some(i) => i,
            None => {
                figures.push(FigureHistory {
                    name: m.name.clone(),
                    endpoint: m.endpoint.clone(),
                    unit: m.unit.clone(),
                    values: Vec::new(),
                });
                figures.len() - 1
            }
        };
        let f = &mut figures[i];
        f.unit.clone_from(&m.unit);
        f.values.push(m.value);
        let excess = f.values.len().saturating_sub(RECENT);
        f.values.drain(..excess);
    }
    figures
}

/// How many past outcomes a test's history keeps.
pub const RECENT: usize = 10;

/// The durations and outcomes of this binary's tests, by name.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct History {
    /// Format version.
    pub version: u32,
    /// Entries by test name.
    pub tests: BTreeMap<String, Entry>,
    #[serde(skip)]
    path: Option<PathBuf>,
}

impl History {
    /// Loads the history of the running binary (empty when there is none or
    /// it cannot be read: history only orders tests, it never fails a run).
    pub fn load_for_current_exe() -> History {
        let Some(path) = default_path() else {
            return History::default();
        };
        let mut h = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<History>(&bytes).ok())
            .unwrap_or_default();
        h.path = Some(path);
        h
    }

    /// Loads the history in `path` for the test binary `binary`: a history
    /// file (`<binary>.json`, as the harness and `cargo xtask report merge`
    /// write them) or, for a name ending in `.jsonl`, a `results.jsonl`
    /// (its lines of `binary`, the latest of each test winning). What the
    /// run learns is saved to the usual place, not to `path`.
    pub fn load_file(path: &Path, binary: &str) -> Result<History, HistoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| HistoryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut h = if path.extension().is_some_and(|e| e == "jsonl") {
            let mut lines = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let parsed: ResultLine =
                    serde_json::from_str(line).map_err(|e| HistoryError::Parse {
                        path: path.to_path_buf(),
                        line: i + 1,
                        reason: format!("not a result line: {e}"),
                    })?;
                lines.push(parsed);
            }
            let mut h = History::default();
            h.record_results(lines.iter().filter(|l| l.binary == binary));
            h
        } else {
            serde_json::from_str::<History>(&text).map_err(|e| HistoryError::Parse {
                path: path.to_path_buf(),
                line: e.line().max(1),
                reason: e.to_string(),
            })?
        };
        h.path = default_path();
        Ok(h)
    }

    /// Records finished tests as `results.jsonl` holds them, in order (a
    /// later line of a test wins); skipped and not-run ones tell nothing.
    pub fn record_results<'a>(&mut self, lines: impl IntoIterator<Item = &'a ResultLine>) {
        for l in lines {
            if l.outcome.is_skip() {
                continue;
            }
            let mut recent = l.recent_outcomes.clone();
            recent.push(l.outcome);
            let excess = recent.len().saturating_sub(RECENT);
            recent.drain(..excess);
            self.tests.insert(
                l.name.clone(),
                Entry {
                    duration_s: l.own_duration_s(),
                    outcome: l.outcome,
                    recent,
                    figures: with_figures(l.recent_figures.clone(), &l.metrics),
                },
            );
        }
    }

    /// Writes the history to `path` (atomically), as [`History::save`]
    /// writes the binary's own.
    pub fn write_to(&mut self, path: &Path) -> std::io::Result<()> {
        self.version = 1;
        write_atomically(path, self)
    }

    /// The outcomes and figures recorded for a test in earlier runs.
    pub fn recent(&self, name: &str) -> Recent {
        self.tests
            .get(name)
            .map(|e| Recent {
                outcomes: e.recent.clone(),
                figures: e.figures.clone(),
                duration_s: Some(e.duration_s),
            })
            .unwrap_or_default()
    }

    /// Did the test fail (fail, error, time out) the last time it ran?
    pub fn failed_last(&self, name: &str) -> bool {
        self.tests.get(name).is_some_and(|e| e.outcome.is_failure())
    }

    /// The last known duration of a test, in seconds.
    pub fn duration_s(&self, name: &str) -> Option<f64> {
        self.tests.get(name).map(|e| e.duration_s)
    }

    /// Records finished tests (skipped and not-run ones tell nothing about duration).
    pub fn record<'a>(&mut self, records: impl IntoIterator<Item = &'a TestRecord>) {
        for r in records {
            let label = r.label();
            if label.is_skip() {
                continue;
            }
            let entry = self.tests.entry(r.name.clone()).or_insert_with(|| Entry {
                duration_s: 0.0,
                outcome: label,
                recent: Vec::new(),
                figures: Vec::new(),
            });
            entry.duration_s = r.duration.saturating_sub(r.shared_setup).as_secs_f64();
            entry.outcome = label;
            entry.recent.push(label);
            let excess = entry.recent.len().saturating_sub(RECENT);
            entry.recent.drain(..excess);
            // Redacted as every report is: a figure's name or endpoint is
            // the test's own text.
            let metrics = crate::report::redacted(r).metrics;
            entry.figures = with_figures(std::mem::take(&mut entry.figures), &metrics);
        }
    }

    /// Writes the history back; a failure is a warning, never an error.
    pub fn save(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        if let Err(e) = self.write_to(&path) {
            eprintln!(
                "warning: could not save test history to {}: {e}",
                path.display()
            );
        }
    }
}

fn write_atomically(path: &Path, h: &History) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(h).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, path)
}

/// `$SERVICE_TEST_HISTORY_DIR/<binary>.json`, else
/// `<target>/service-test/history/<binary>.json`, where `<target>` is found
/// from the executable's path (`<target>/<profile>/deps/<binary>-<hash>`).
fn default_path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let stem = exe.file_stem()?.to_str()?;
    // Cargo names test binaries `<name>-<16 hex digits>`.
    let binary = match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name
        }
        _ => stem,
    };
    let dir = match crate::env::history_dir() {
        Some(dir) => dir,
        None => {
            let deps = exe.parent()?;
            let base = if deps.file_name()? == "deps" {
                deps.parent()?.parent()?
            } else {
                deps.parent()?
            };
            base.join("service-test").join("history")
        }
    };
    Some(dir.join(format!("{binary}.json")))
}

/// The running test binary's name, without cargo's hash suffix
/// (`suites-1a2b3c4d5e6f7a8b` → `suites`).
pub fn binary_name() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(find_binary_name).clone()
}

fn find_binary_name() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_ref()
        .and_then(|e| e.file_stem())
        .and_then(|s| s.to_str())
        .unwrap_or("tests");
    // Cargo names test binaries `<name>-<16 hex digits>`.
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => stem.to_string(),
    }
}
