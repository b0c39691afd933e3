//! `cargo xtask report merge DIR... [--out DIR] [--history DIR]`: one report set from the
//! report directories of several shards (or tiers): results.jsonl,
//! runs.jsonl, junit.xml and report.md, same formats.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use harness::history::History;
use harness::report::{self, JsonlSink};

use crate::target_dir;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Merge report directories (shards, tiers) into one set: results.jsonl, runs.jsonl,
    /// junit.xml, report.md
    Merge {
        /// The report directories
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Where the merged set goes, replacing what was there [default: target/reports]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Update the test histories in DIR (`<binary>.json`, made if missing) with the
        /// merged results: the durations and outcomes the next run reads with
        /// `--history DIR/<binary>.json` (for duration:K/N and --last-failed)
        #[arg(long, value_name = "DIR")]
        history: Option<PathBuf>,
    },
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Merge { dirs, out, history } => {
            let out = out.unwrap_or_else(|| target_dir().join("reports"));
            let (lines, runs) = merge(&dirs, &out)?;
            println!(
                "merged {} results of {} runs from {} directories into {}",
                lines,
                runs,
                dirs.len(),
                out.display()
            );
            if let Some(dir) = history {
                for (binary, tests) in update_histories(&out, &dir)? {
                    println!(
                        "history of {binary}: {tests} tests in {}",
                        dir.join(format!("{binary}.json")).display()
                    );
                }
            }
            Ok(())
        }
    }
}

/// Merges the report directories into `out` (replacing what was there).
/// Returns the number of result lines and runs merged.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<(usize, usize)> {
    let (mut lines, mut runs) = (Vec::new(), Vec::new());
    for d in dirs {
        if !d.join(report::RESULTS).exists() {
            bail!(
                "{} has no {}: is it a report directory?",
                d.display(),
                report::RESULTS
            );
        }
        let (l, r) = report::read_dir(d)?;
        lines.extend(l);
        runs.extend(r);
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for f in [report::RESULTS, report::RUNS] {
        let _ = std::fs::remove_file(out.join(f));
    }
    let mut results = JsonlSink::open(out, report::RESULTS)?;
    for l in &lines {
        results.write(l)?;
    }
    let mut run_sink = JsonlSink::open(out, report::RUNS)?;
    for r in &runs {
        run_sink.write(r)?;
    }
    report::write_reports(out, &lines, &runs)?;
    Ok((lines.len(), runs.len()))
}

/// Updates `dir/<binary>.json` for every binary in the merged `results.jsonl`
/// of `reports`: what was there (the history this run's shards read), then
/// the merged results over it, so a test this run skipped keeps its last
/// duration. Returns each binary with its number of tests.
pub fn update_histories(reports: &Path, dir: &Path) -> Result<Vec<(String, usize)>> {
    let (lines, _) = report::read_dir(reports)?;
    let mut binaries: Vec<&str> = lines.iter().map(|l| l.binary.as_str()).collect();
    binaries.sort_unstable();
    binaries.dedup();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for binary in binaries {
        let path = dir.join(format!("{binary}.json"));
        let mut history = if path.exists() {
            History::load_file(&path, binary)?
        } else {
            History::default()
        };
        history.record_results(lines.iter().filter(|l| l.binary == binary));
        history
            .write_to(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push((binary.to_string(), history.tests.len()));
    }
    Ok(written)
}
