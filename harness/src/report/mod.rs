//! Reports: every reporter reads the same stream of finished tests.
//!
//! With `--report-dir DIR` a test binary writes:
//!
//! - `results.jsonl`: one JSON object ([`ResultLine`]) per finished test,
//!   appended with a single write as each test finishes, so a run that is
//!   interrupted (SIGINT) or aborted keeps a valid line for every test that
//!   finished. Several binaries of one `cargo test` append to the same file.
//! - `runs.jsonl`: one line per binary run ([`RunInfo`]: seed, wall time).
//! - `junit.xml` (via `quick-junit`) and `report.md` (the "Distributed System
//!   Test Report"), rebuilt at the end of each binary's run from everything
//!   in `results.jsonl`, keeping the latest result of each test.
//!
//! Messages pass through [`phi::redact`] before they are written anywhere
//! (unless the profile turns redaction off: the `redaction` module).
//! [`write_reports`] and [`read_dir`] are what `cargo xtask report merge` uses.

pub(crate) mod console;
mod junit;
mod markdown;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::events::{FigureHistory, Recent};
use crate::events::{OutcomeLabel, TestRecord};
use crate::metrics::Metric;
use crate::registry::TestDef;

pub use markdown::markdown;

/// The file names inside a report directory.
pub const RESULTS: &str = "results.jsonl";
/// One line per binary run.
pub const RUNS: &str = "runs.jsonl";
/// JUnit XML.
pub const JUNIT: &str = "junit.xml";
/// The Markdown report.
pub const MARKDOWN: &str = "report.md";

/// Why a report could not be read or written; names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a report file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A line of `results.jsonl` or `runs.jsonl` is not what the harness writes.
    #[error("{path}:{line}: not a result line: {reason}")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What the parser said.
        reason: String,
    },
    /// JUnit serialisation failed.
    #[error("writing JUnit XML: {0}")]
    Junit(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One finished test, as `results.jsonl` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultLine {
    /// The test binary (`suites`).
    pub binary: String,
    /// The test's name (`compliance::audit_is_complete`).
    pub name: String,
    /// Markers it carries.
    pub markers: Vec<String>,
    /// Services it exercises.
    pub services: Vec<String>,
    /// How it ended (`flaky`: passed after failing).
    pub outcome: OutcomeLabel,
    /// Wall time, seconds.
    pub duration_s: f64,
    /// Of `duration_s`, the seconds it waited on suite and session fixtures
    /// being set up (see [`TestRecord::shared_setup`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shared_setup_s: f64,
    /// Attempts run.
    pub attempts: u32,
    /// The run seed.
    pub seed: u64,
    /// Why it did not pass (redacted), if it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Messages of failed attempts before the last (redacted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_failures: Vec<String>,
    /// Figures the test recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
    /// Outcomes of this test in earlier runs (oldest first), from history.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_outcomes: Vec<OutcomeLabel>,
    /// The figures it recorded in earlier runs, from history (the report's
    /// trends).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_figures: Vec<FigureHistory>,
    /// What it took (less its wait on shared fixtures) the last time it
    /// ran, from history: the baseline of the report's time alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_duration_s: Option<f64>,
    /// Ran past its slow-timeout.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub slow: bool,
    /// What it printed to stdout, when it ran in a process of its own
    /// (redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// What it printed to stderr, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// The source file of the test function (as `file!()` names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Its line there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

impl ResultLine {
    /// The line for a finished test, with its message and metrics redacted.
    pub fn new(
        binary: &str,
        def: &TestDef,
        record: &TestRecord,
        seed: u64,
        recent: Recent,
    ) -> Self {
        let record = redacted(record);
        ResultLine {
            binary: binary.to_string(),
            name: record.name.clone(),
            markers: def.markers.iter().map(|m| m.to_string()).collect(),
            services: def.service_names(),
            outcome: record.label(),
            duration_s: record.duration.as_secs_f64(),
            shared_setup_s: record.shared_setup.as_secs_f64(),
            attempts: record.attempts,
            seed,
            message: record.outcome.message(),
            earlier_failures: record.earlier_failures,
            metrics: record.metrics,
            recent_outcomes: recent.outcomes,
            recent_figures: recent.figures,
            previous_duration_s: recent.duration_s,
            slow: record.slow,
            stdout: record.stdout,
            stderr: record.stderr,
            file: Some(def.file.to_string()),
            line: Some(def.line),
        }
    }

    /// What the test costs a shard, in seconds: its wall time less its
    /// wait on shared fixtures' setup (what history keeps).
    pub fn own_duration_s(&self) -> f64 {
        (self.duration_s - self.shared_setup_s).max(0.0)
    }

    /// Failed, error, timed out or crashed.
    pub fn is_failure(&self) -> bool {
        self.outcome.is_failure()
    }

    /// Skipped or not run.
    pub fn is_skipped(&self) -> bool {
        self.outcome.is_skip()
    }
}

fn is_zero(s: &f64) -> bool {
    *s == 0.0
}

/// `record` with every text a test could have put a value in redacted
/// (its message, earlier attempts, metric names and endpoints, captured
/// output), with this process's canaries.
pub(crate) fn redacted(record: &TestRecord) -> TestRecord {
    TestRecord {
        outcome: record.outcome.map_message(crate::redaction::redact),
        earlier_failures: record
            .earlier_failures
            .iter()
            .map(|m| crate::redaction::redact(m))
            .collect(),
        metrics: record
            .metrics
            .iter()
            .map(|m| Metric {
                name: crate::redaction::redact(&m.name),
                endpoint: m.endpoint.as_deref().map(crate::redaction::redact),
                state: m.state.as_deref().map(crate::redaction::redact),
                ..m.clone()
            })
            .collect(),
        stdout: record.stdout.as_deref().map(crate::redaction::redact),
        stderr: record.stderr.as_deref().map(crate::redaction::redact),
        ..record.clone()
    }
}

/// One run of one test binary, as `runs.jsonl` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The binary.
    pub binary: String,
    /// Its seed.
    pub seed: u64,
    /// Wall time of the run, seconds.
    pub wall_s: f64,
    /// When it started (seconds since the Unix epoch).
    pub started_unix: u64,
    /// The partition it ran, if any (`hash:1/3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
}

/// Appends lines to a JSON-lines file, one `write` per line, so readers
/// (and a run killed between two lines) only ever see whole lines.
pub struct JsonlSink {
    path: PathBuf,
    file: File,
}

impl JsonlSink {
    /// Opens (creating the directory and the file) `dir/name` for appending.
    pub fn open(dir: &Path, name: &str) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(name);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok(JsonlSink { path, file })
    }

    /// Writes one value as one line.
    pub fn write<T: Serialize>(&mut self, value: &T) -> Result<(), Error> {
        let mut line = serde_json::to_vec(value).map_err(|e| Error::Io {
            path: self.path.clone(),
            source: e.into(),
        })?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(io(&self.path))
    }
}

fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, Error> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(path)(e)),
    };
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| Error::BadLine {
            path: path.to_path_buf(),
            line: i + 1,
            reason: e.to_string(),
        })?);
    }
    Ok(out)
}

/// Reads a report directory's `results.jsonl` and `runs.jsonl`.
pub fn read_dir(dir: &Path) -> Result<(Vec<ResultLine>, Vec<RunInfo>), Error> {
    Ok((
        read_lines(&dir.join(RESULTS))?,
        read_lines(&dir.join(RUNS))?,
    ))
}

/// The latest line of each (binary, test), in first-seen order.
pub fn latest(lines: &[ResultLine]) -> Vec<ResultLine> {
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut out: Vec<ResultLine> = Vec::new();
    for l in lines {
        match index.get(&(l.binary.as_str(), l.name.as_str())) {
            Some(&i) => out[i] = l.clone(),
            None => {
                index.insert((l.binary.as_str(), l.name.as_str()), out.len());
                out.push(l.clone());
            }
        }
    }
    out
}

/// JUnit XML of one run's lines (what `--format junit` prints).
pub fn junit_xml(lines: &[ResultLine], runs: &[RunInfo]) -> Result<String, Error> {
    junit::junit(lines, runs)
}

/// GitHub Actions workflow commands for the failures among `lines`: one
/// `::error file=…,line=…,title=…::message` each, so the failing test's
/// line is annotated in the pull request.
pub fn github_annotations(lines: &[ResultLine]) -> String {
    // Workflow command escaping: data escapes %, CR, LF; properties also
    // `:` and `,`.
    fn data(s: &str) -> String {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    }
    fn property(s: &str) -> String {
        data(s).replace(':', "%3A").replace(',', "%2C")
    }
    let mut out = String::new();
    for l in lines.iter().filter(|l| l.is_failure()) {
        let mut props = Vec::new();
        if let Some(file) = &l.file {
            props.push(format!("file={}", property(file)));
        }
        if let Some(line) = l.line {
            props.push(format!("line={line}"));
        }
        props.push(format!(
            "title={}",
            property(&format!("{} {}", l.outcome, l.name))
        ));
        let message = l.message.as_deref().unwrap_or("");
        out.push_str(&format!("::error {}::{}\n", props.join(","), data(message)));
    }
    out
}

/// Writes `junit.xml` and `report.md` into `dir` from result lines (the
/// latest of each test) and run infos.
pub fn write_reports(dir: &Path, lines: &[ResultLine], runs: &[RunInfo]) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let lines = latest(lines);
    let junit_path = dir.join(JUNIT);
    let xml = junit::junit(&lines, runs)?;
    std::fs::write(&junit_path, xml).map_err(io(&junit_path))?;
    let md_path = dir.join(MARKDOWN);
    std::fs::write(&md_path, markdown(&lines, runs)).map_err(io(&md_path))?;
    Ok(())
}

/// Counts by outcome, for summaries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Tests.
    pub total: usize,
    /// Passed on the first attempt.
    pub passed: usize,
    /// Failed or timed out.
    pub failed: usize,
    /// Could not be judged (a fixture failed).
    pub errors: usize,
    /// Skipped or not run.
    pub skipped: usize,
    /// Passed after failing.
    pub flaky: usize,
}

impl Counts {
    /// Counts the outcomes of `lines`.
    pub fn of<'a>(lines: impl IntoIterator<Item = &'a ResultLine>) -> Counts {
        let mut c = Counts::default();
        for l in lines {
            c.total += 1;
            match l.outcome {
                OutcomeLabel::Passed => c.passed += 1,
                OutcomeLabel::Flaky => c.flaky += 1,
                OutcomeLabel::Failed | OutcomeLabel::TimedOut | OutcomeLabel::Crashed => {
                    c.failed += 1
                }
                OutcomeLabel::Error => c.errors += 1,
                OutcomeLabel::Skipped | OutcomeLabel::NotRun => c.skipped += 1,
            }
        }
        c
    }
}
