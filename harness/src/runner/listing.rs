//! What the binary lists instead of running: `--markers`, and
//! `--list --format json` (libtest's plain `--list` is the console's).

use std::process::ExitCode;

use super::plan::RunPlan;
use crate::marker::known_markers;
use crate::registry::{TestDef, registered_tests};

pub(super) fn print_markers() {
    let tests = registered_tests();
    let known = known_markers();
    let width = known.iter().map(|m| m.name.len()).max().unwrap_or(0);
    println!("{} markers, {} tests:", known.len(), tests.len());
    for m in &known {
        let n = tests.iter().filter(|(_, d)| d.has_marker(m.name)).count();
        let builtin = if crate::marker::markers::ALL.contains(m) {
            ""
        } else {
            " (user)"
        };
        println!(
            "  {:width$}  {n:>5} test{}  {}{builtin}",
            m.name,
            if n == 1 { " " } else { "s" },
            m.description
        );
    }
}

/// `--list --format json`: one JSON document describing every selected test.
pub(super) fn list_json(plan: &RunPlan, tests: &[(String, &'static TestDef)]) -> ExitCode {
    let entries: Vec<serde_json::Value> = tests
        .iter()
        .map(|(name, def)| {
            let p = plan.policy(def);
            serde_json::json!({
                "name": name,
                "function": def.fn_name,
                "case": def.case.map(|c| serde_json::json!({"index": c.index, "name": c.name})),
                "markers": def.markers,
                "services": def.services,
                "group": def.group,
                "exclusive": def.exclusive,
                "isolated": def.isolated,
                "timeout_s": p.timeout.as_secs_f64(),
                "slow_timeout_s": p.slow_timeout.map(|d| d.as_secs_f64()),
                "retries": p.retry.count,
                "ignored": def.ignored,
                "ignore_reason": def.ignore,
                "source": {"file": def.file, "line": def.line},
            })
        })
        .collect();
    let doc = serde_json::json!({
        "binary": crate::history::binary_name(),
        "profile": plan.config.name,
        "config": plan.config.path.as_ref().map(|p| p.display().to_string()),
        "tests": entries,
    });
    match serde_json::to_string_pretty(&doc) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: --list --format json: {e}");
            ExitCode::FAILURE
        }
    }
}
