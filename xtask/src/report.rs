//! `cargo xtask report merge DIR... [--out DIR]`: one report set from the
//! report directories of several shards (or tiers): results.jsonl,
//! runs.jsonl, junit.xml and report.md, same formats.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
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
    },
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Merge { dirs, out } => {
            let out = out.unwrap_or_else(|| target_dir().join("reports"));
            let (lines, runs) = merge(&dirs, &out)?;
            println!(
                "merged {} results of {} runs from {} directories into {}",
                lines,
                runs,
                dirs.len(),
                out.display()
            );
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
