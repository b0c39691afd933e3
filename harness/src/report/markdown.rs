//! `report.md`: the seeds' "Distributed System Test Report", every figure
//! taken from the results of the run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::{Counts, ResultLine, RunInfo};
use crate::events::OutcomeLabel;
use crate::metrics::STATE;

fn pct(n: usize, total: usize) -> String {
    if total == 0 {
        "–".to_string()
    } else {
        format!("{:.1}%", n as f64 * 100.0 / total as f64)
    }
}

fn secs(s: f64) -> String {
    if s >= 60.0 {
        format!("{}m {:02}s", (s / 60.0).floor(), (s % 60.0).round() as u64)
    } else if s >= 1.0 {
        format!("{s:.2}s")
    } else {
        format!("{:.0}ms", s * 1000.0)
    }
}

/// A marker for a group of tests: ✅ all passed, ⚠️ passed with flaky or
/// skipped tests, ❌ something failed.
fn status(c: &Counts) -> &'static str {
    if c.failed + c.errors > 0 {
        "❌"
    } else if c.flaky + c.skipped > 0 {
        "⚠️"
    } else {
        "✅"
    }
}

/// The first line of a message, for tables.
fn first_line(m: &str) -> String {
    let line = m.lines().next().unwrap_or("").replace('|', "\\|");
    if line.chars().count() > 120 {
        format!("{}…", line.chars().take(120).collect::<String>())
    } else {
        line
    }
}

/// Renders the report from the latest result of each test.
pub fn markdown(lines: &[ResultLine], runs: &[RunInfo]) -> String {
    let mut md = String::new();
    let all = Counts::of(lines);
    let wall: f64 = runs.iter().map(|r| r.wall_s).sum();
    let mut seeds: Vec<u64> = runs.iter().map(|r| r.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let seeds_text = if seeds.is_empty() {
        "–".to_string()
    } else {
        seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let binaries: Vec<&str> = {
        let mut b: Vec<&str> = lines.iter().map(|l| l.binary.as_str()).collect();
        b.sort_unstable();
        b.dedup();
        b
    };
    let _ = writeln!(md, "# Distributed System Test Report\n");
    let _ = writeln!(
        md,
        "Generated: {} · run started: {} · binaries: {} · runs: {} · seeds: {}\n",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        started(runs),
        if binaries.is_empty() {
            "none".to_string()
        } else {
            binaries.join(", ")
        },
        runs.len(),
        seeds_text.clone()
    );

    // Summary.
    let _ = writeln!(md, "## Test Execution Summary\n");
    let _ = writeln!(
        md,
        "| total | passed | failed | errors | skipped | flaky | time | seed |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---|");
    let _ = writeln!(
        md,
        "| {} | {} ({}) | {} ({}) | {} | {} | {} | {} | {} |\n",
        all.total,
        all.passed,
        pct(all.passed, all.total),
        all.failed,
        pct(all.failed, all.total),
        all.errors,
        all.skipped,
        all.flaky,
        secs(wall),
        seeds_text.clone()
    );

    // By marker.
    let mut by_marker: BTreeMap<&str, Vec<&ResultLine>> = BTreeMap::new();
    for l in lines {
        for m in &l.markers {
            by_marker.entry(m.as_str()).or_default().push(l);
        }
    }
    let _ = writeln!(md, "## Results by Marker\n");
    if by_marker.is_empty() {
        let _ = writeln!(md, "No test carried a marker.\n");
    } else {
        let _ = writeln!(
            md,
            "| marker | tests | passed | failed | errors | skipped | flaky |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
        for (m, ls) in &by_marker {
            let c = Counts::of(ls.iter().copied());
            let _ = writeln!(
                md,
                "| {} {m} | {} | {} | {} | {} | {} | {} |",
                status(&c),
                c.total,
                c.passed,
                c.failed,
                c.errors,
                c.skipped,
                c.flaky
            );
        }
        let _ = writeln!(md);
    }

    // By service.
    let mut by_service: BTreeMap<&str, Vec<&ResultLine>> = BTreeMap::new();
    for l in lines {
        for s in &l.services {
            by_service.entry(s.as_str()).or_default().push(l);
        }
    }
    let _ = writeln!(md, "## Service Test Results\n");
    if by_service.is_empty() {
        let _ = writeln!(
            md,
            "No test named the services it exercises (`services(...)`).\n"
        );
    }
    for (svc, ls) in &by_service {
        let c = Counts::of(ls.iter().copied());
        let timeouts = ls
            .iter()
            .filter(|l| l.outcome == OutcomeLabel::TimedOut)
            .count();
        let mut reasons = Vec::new();
        if timeouts > 0 {
            reasons.push(format!(
                "{timeouts} timeout{}",
                if timeouts == 1 { "" } else { "s" }
            ));
        }
        let failures = c.failed - timeouts.min(c.failed);
        if failures > 0 {
            reasons.push(format!("{failures} failed"));
        }
        if c.errors > 0 {
            reasons.push(format!(
                "{} error{}",
                c.errors,
                if c.errors == 1 { "" } else { "s" }
            ));
        }
        if c.flaky > 0 {
            reasons.push(format!("{} flaky", c.flaky));
        }
        if c.skipped > 0 {
            reasons.push(format!("{} skipped", c.skipped));
        }
        let reasons = if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        };
        // What the service's tests cover, by marker, with how many each.
        let mut covers: BTreeMap<&str, usize> = BTreeMap::new();
        for l in ls {
            for m in &l.markers {
                if m != "real_services" {
                    *covers.entry(m.as_str()).or_default() += 1;
                }
            }
        }
        let covers = if covers.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = covers.iter().map(|(m, n)| format!("{m} {n}")).collect();
            format!("; covers {}", list.join(", "))
        };
        let _ = writeln!(
            md,
            "- {} {svc}: {}/{} tests passed{reasons}{covers}",
            status(&c),
            c.passed + c.flaky,
            c.total
        );
    }
    let _ = writeln!(md);

    let seen = service_health(&mut md, lines);

    // Failures, with the first line of each (redacted) message.
    let failed: Vec<&ResultLine> = lines.iter().filter(|l| l.is_failure()).collect();
    if !failed.is_empty() {
        let _ = writeln!(md, "## Failures\n");
        let _ = writeln!(md, "| test | outcome | attempts | message |");
        let _ = writeln!(md, "|---|---|---:|---|");
        for l in &failed {
            let msg = l.message.as_deref().map(first_line).unwrap_or_default();
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {msg} |",
                l.name, l.outcome, l.attempts
            );
        }
        let _ = writeln!(md);
    }

    // Integration and end-to-end.
    let integration: Vec<&ResultLine> = lines
        .iter()
        .filter(|l| {
            l.markers
                .iter()
                .any(|m| matches!(m.as_str(), "integration" | "e2e" | "interservice"))
        })
        .collect();
    let _ = writeln!(md, "## Integration Test Results\n");
    if integration.is_empty() {
        let _ = writeln!(md, "No integration, interservice or e2e tests ran.\n");
    } else {
        let _ = writeln!(md, "| | test | services | time | detail |");
        let _ = writeln!(md, "|---|---|---|---:|---|");
        for l in &integration {
            let c = Counts::of([*l]);
            let detail = l.message.as_deref().map(first_line).unwrap_or_default();
            let _ = writeln!(
                md,
                "| {} | `{}` | {} | {} | {detail} |",
                status(&c),
                l.name,
                l.services.join(", "),
                secs(l.duration_s)
            );
        }
        let _ = writeln!(md);
    }

    // Performance figures.
    let _ = writeln!(md, "## Performance\n");
    let mut endpoints: BTreeMap<(String, String), BTreeMap<String, f64>> = BTreeMap::new();
    for l in lines {
        for m in l.metrics.iter().filter(|m| !m.is_state()) {
            let key = (
                m.endpoint.clone().unwrap_or_else(|| "–".to_string()),
                l.name.clone(),
            );
            endpoints
                .entry(key)
                .or_default()
                .insert(m.name.clone(), m.value);
        }
    }
    if endpoints.is_empty() {
        let _ = writeln!(md, "No test recorded performance figures (`Metrics`).\n");
    } else {
        let _ = writeln!(
            md,
            "| endpoint | test | p50 | p95 | p99 | throughput | error rate | other |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---|");
        for ((endpoint, test), figs) in &endpoints {
            let ms = |k: &str| {
                figs.get(k)
                    .map_or("–".to_string(), |v| format!("{v:.1} ms"))
            };
            let thr = figs
                .get("throughput_rps")
                .map_or("–".to_string(), |v| format!("{v:.0} req/s"));
            let err = figs
                .get("error_rate")
                .map_or("–".to_string(), |v| format!("{:.2}%", v * 100.0));
            let other: Vec<String> = figs
                .iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "p50_ms" | "p95_ms" | "p99_ms" | "throughput_rps" | "error_rate"
                    )
                })
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(
                md,
                "| {endpoint} | `{test}` | {} | {} | {} | {thr} | {err} | {} |",
                ms("p50_ms"),
                ms("p95_ms"),
                ms("p99_ms"),
                other.join(", ")
            );
        }
        let _ = writeln!(md);
    }

    let mut alerts = trends(&mut md, lines);
    alerts.extend(slower_tests(lines));
    // Seed 004's alert on the run as a whole.
    let failing = all.failed + all.errors;
    if all.total > 0 && failing * 100 > all.total * FAILURE_RATE_ALERT_PCT {
        alerts.insert(
            0,
            format!(
                "🚨 Alert: {} of the tests failed, over the {FAILURE_RATE_ALERT_PCT} % alert threshold.",
                pct(failing, all.total)
            ),
        );
    }

    // Slowest.
    let mut slow: Vec<&ResultLine> = lines.iter().filter(|l| !l.is_skipped()).collect();
    slow.sort_by(|a, b| b.duration_s.total_cmp(&a.duration_s));
    let _ = writeln!(md, "## Slowest Tests\n");
    if slow.is_empty() {
        let _ = writeln!(md, "No test ran.\n");
    } else {
        let _ = writeln!(md, "| test | time | outcome |");
        let _ = writeln!(md, "|---|---:|---|");
        for l in slow.iter().take(10) {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} |",
                l.name,
                secs(l.duration_s),
                l.outcome
            );
        }
        let _ = writeln!(md);
    }

    // Flaky.
    let flipped = |l: &ResultLine| {
        let mut seen: Vec<bool> = l.recent_outcomes.iter().map(|o| o.is_pass()).collect();
        seen.push(!l.is_failure());
        seen.windows(2).filter(|w| w[0] != w[1]).count()
    };
    let flaky: Vec<&ResultLine> = lines
        .iter()
        .filter(|l| l.outcome == OutcomeLabel::Flaky || flipped(l) > 0)
        .collect();
    let _ = writeln!(md, "## Flaky Tests\n");
    if flaky.is_empty() {
        let _ = writeln!(
            md,
            "No test passed only after a retry, and none changed outcome across recent runs.\n"
        );
    } else {
        let _ = writeln!(
            md,
            "| test | this run | attempts | outcome changes in recent runs |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|");
        for l in &flaky {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} |",
                l.name,
                l.outcome,
                l.attempts,
                flipped(l)
            );
        }
        let _ = writeln!(md);
    }

    // Recommendations, each from the data above.
    let mut recs: Vec<String> = alerts;
    let worst_timeouts = by_service
        .iter()
        .map(|(s, ls)| {
            (
                *s,
                ls.iter()
                    .filter(|l| l.outcome == OutcomeLabel::TimedOut)
                    .count(),
            )
        })
        .filter(|(_, n)| *n > 0)
        .max_by_key(|(_, n)| *n);
    if let Some((svc, n)) = worst_timeouts {
        recs.push(format!("Investigate timeouts in **{svc}**: {n} of its tests timed out, the most of any service."));
    }
    let worst_failures = by_service
        .iter()
        .map(|(s, ls)| {
            (
                *s,
                ls.iter()
                    .filter(|l| l.is_failure() && l.outcome != OutcomeLabel::TimedOut)
                    .count(),
            )
        })
        .filter(|(_, n)| *n > 0)
        .max_by_key(|(_, n)| *n);
    if let Some((svc, n)) = worst_failures {
        recs.push(format!(
            "Fix the {n} failing test{} of **{svc}** first: it has the most failures.",
            if n == 1 { "" } else { "s" }
        ));
    }
    if worst_failures.is_none() && all.failed > 0 {
        let first = lines
            .iter()
            .find(|l| l.is_failure())
            .map(|l| l.name.as_str())
            .unwrap_or("");
        recs.push(format!(
            "Fix the {} failing test{}, starting with `{first}`.",
            all.failed,
            if all.failed == 1 { "" } else { "s" }
        ));
    }
    if all.errors > 0 {
        recs.push(format!("{} test{} could not be judged because a fixture failed to set up: check the environment (services, credentials).", all.errors, if all.errors == 1 { "" } else { "s" }));
    }
    if !flaky.is_empty() {
        recs.push(format!(
            "Stabilise {} flaky test{}: {}.",
            flaky.len(),
            if flaky.len() == 1 { "" } else { "s" },
            flaky
                .iter()
                .take(3)
                .map(|l| format!("`{}`", l.name))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let slow: Vec<&ResultLine> = lines.iter().filter(|l| l.slow).collect();
    if !slow.is_empty() {
        recs.push(format!(
            "{} test{} ran past the slow-timeout (shown SLOW): {}. Split them or give them a profile override.",
            slow.len(),
            if slow.len() == 1 { "" } else { "s" },
            slow.iter()
                .take(3)
                .map(|l| format!("`{}`", l.name))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let skipped_real = lines
        .iter()
        .filter(|l| l.is_skipped() && l.markers.iter().any(|m| m == "real_services"))
        .count();
    if skipped_real > 0 {
        recs.push(format!("{skipped_real} `real_services` test{} were skipped: provide PostgreSQL and Redis (DATABASE_URL / REDIS_URL) or their binaries.", if skipped_real == 1 { "" } else { "s" }));
    }
    let total_time: f64 = lines.iter().map(|l| l.duration_s).sum();
    if let Some(top) = slow.first() {
        if total_time > 0.0 && top.duration_s / total_time > 0.25 && slow.len() > 3 {
            recs.push(format!(
                "`{}` takes {:.0}% of all test time ({}): split it or mark it `slow`.",
                top.name,
                top.duration_s / total_time * 100.0,
                secs(top.duration_s)
            ));
        }
    }
    let slowest_endpoint = endpoints
        .iter()
        .filter_map(|((e, _), f)| f.get("p99_ms").map(|v| (e.as_str(), *v)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((e, p99)) = slowest_endpoint {
        recs.push(format!(
            "The slowest endpoint measured is **{e}** (p99 {p99:.1} ms): start optimisation there."
        ));
    }
    // The services the run saw (their states recorded) that no test
    // names in `services(...)`: the run knows of no others.
    let untested: Vec<&str> = seen
        .iter()
        .map(String::as_str)
        .filter(|s| !by_service.contains_key(s))
        .collect();
    if !by_service.is_empty() && !untested.is_empty() {
        recs.push(format!(
            "No test in this run exercised: {}. Add coverage for them.",
            untested.join(", ")
        ));
    }
    let _ = writeln!(md, "## Recommendations\n");
    if recs.is_empty() {
        let _ = writeln!(
            md,
            "Nothing to act on: every test passed on its first attempt."
        );
    }
    for (i, r) in recs.iter().enumerate() {
        let _ = writeln!(md, "{}. {r}", i + 1);
    }
    md
}

/// When the run started (the earliest of its binaries' runs), UTC.
fn started(runs: &[RunInfo]) -> String {
    match runs.iter().map(|r| r.started_unix).filter(|t| *t > 0).min() {
        Some(t) => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(t),
        )
        .to_string(),
        None => "unknown (no runs.jsonl)".to_string(),
    }
}

/// The `Service Health` section: every state the tests saw a service in
/// (its health, its breakers), how often, and which tests saw it. Returns
/// the services seen.
fn service_health(md: &mut String, lines: &[ResultLine]) -> BTreeSet<String> {
    // (service, what) → state → tests that saw it (a test once per state).
    let mut states: BTreeMap<(&str, &str), BTreeMap<&str, Vec<&str>>> = BTreeMap::new();
    for l in lines {
        for m in &l.metrics {
            let (Some(state), Some(service)) = (m.state.as_deref(), m.endpoint.as_deref()) else {
                continue;
            };
            let tests = states
                .entry((service, m.name.as_str()))
                .or_default()
                .entry(state)
                .or_default();
            if tests.last() != Some(&l.name.as_str()) {
                tests.push(l.name.as_str());
            }
        }
    }
    let _ = writeln!(md, "## Service Health\n");
    if states.is_empty() {
        let _ = writeln!(
            md,
            "No test recorded the state of a service (`Metrics::service_state`).\n"
        );
        return BTreeSet::new();
    }
    let _ = writeln!(
        md,
        "What the services answered while the tests ran (a fault a test injects shows here too).\n"
    );
    let _ = writeln!(md, "| service | of | state | tests that saw it |");
    let _ = writeln!(md, "|---|---|---|---|");
    for ((service, what), by_state) in &states {
        for (state, tests) in by_state {
            let mut named: Vec<String> = tests.iter().take(3).map(|t| format!("`{t}`")).collect();
            if tests.len() > 3 {
                named.push(format!("{} more", tests.len() - 3));
            }
            let _ = writeln!(
                md,
                "| {service} | {what} | {state} | {}: {} |",
                tests.len(),
                named.join(", ")
            );
        }
    }
    let _ = writeln!(md);
    states.keys().map(|(s, _)| s.to_string()).collect()
}

/// How a figure moved against the previous run, if that is a regression
/// worth an alert: a duration, rate or size that doubled, a throughput
/// (`rps`) that halved. Counts and states have no direction.
fn regression(unit: &str, previous: f64, now: f64) -> Option<&'static str> {
    if previous <= 0.0 || unit == "count" || unit == STATE {
        return None;
    }
    if unit == "rps" {
        (now * 2.0 <= previous).then_some("halved")
    } else {
        (now >= previous * 2.0).then_some("doubled")
    }
}

fn figure(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The `Performance Trends` section: each figure this run recorded beside
/// its values in earlier runs (from history), with an alert for each that
/// doubled (or, for a throughput, halved) against the previous run.
/// Returns the alerts, for the recommendations.
fn trends(md: &mut String, lines: &[ResultLine]) -> Vec<String> {
    /// How many earlier values a trend shows.
    const SHOWN: usize = 4;
    let mut rows = Vec::new();
    let mut alerts = Vec::new();
    for l in lines {
        for m in l.metrics.iter().filter(|m| !m.is_state()) {
            let Some(earlier) = l.recent_figures.iter().find(|f| f.is_of(m)) else {
                continue;
            };
            let Some(&previous) = earlier.values.last() else {
                continue;
            };
            let skip = earlier.values.len().saturating_sub(SHOWN);
            let mut trend: Vec<String> =
                earlier.values[skip..].iter().map(|v| figure(*v)).collect();
            if skip > 0 {
                trend.insert(0, "…".to_string());
            }
            trend.push(format!("**{}**", figure(m.value)));
            let change = if previous == 0.0 {
                "–".to_string()
            } else {
                format!("×{:.2}", m.value / previous)
            };
            let endpoint = m.endpoint.as_deref().unwrap_or("–");
            let flag = match regression(&m.unit, previous, m.value) {
                Some(how) => {
                    alerts.push(format!(
                        "🚨 Alert: `{}` of **{endpoint}** (`{}`) {how} against the previous run: {} → {} {}.",
                        m.name,
                        l.name,
                        figure(previous),
                        figure(m.value),
                        m.unit
                    ));
                    " 🚨"
                }
                None => "",
            };
            rows.push(format!(
                "| {endpoint} | `{}` | {} ({}) | {} | {change}{flag} |",
                l.name,
                m.name,
                m.unit,
                trend.join(" → ")
            ));
        }
    }
    let _ = writeln!(md, "## Performance Trends\n");
    if rows.is_empty() {
        let _ = writeln!(
            md,
            "No figure of this run has earlier values in the history: trends show from the next run that reads this one's history (`--history FILE`, or the binary's own).\n"
        );
        return alerts;
    }
    for a in &alerts {
        let _ = writeln!(md, "{a}\n");
    }
    let _ = writeln!(
        md,
        "| endpoint | test | figure | earlier runs → this run | vs previous |"
    );
    let _ = writeln!(md, "|---|---|---|---|---:|");
    for r in &rows {
        let _ = writeln!(md, "{r}");
    }
    let _ = writeln!(md);
    alerts
}

/// A run whose failed share (failed, timed out, crashed or errors) is over
/// this many percent raises an alert (seed 004's "test failure rate > 5 %").
const FAILURE_RATE_ALERT_PCT: usize = 5;

/// Tests shorter than this are left out of the time alert: their time is
/// mostly noise.
const TIME_ALERT_FLOOR_S: f64 = 1.0;

/// Seed 004's "test execution time > 2× baseline": an alert for each test
/// that took at least twice what it took the previous run (its own time,
/// less its wait on shared fixtures), when either is past
/// [`TIME_ALERT_FLOOR_S`].
fn slower_tests(lines: &[ResultLine]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| !l.is_skipped())
        .filter_map(|l| {
            let previous = l.previous_duration_s.filter(|p| *p > 0.0)?;
            let now = l.own_duration_s();
            (now >= 2.0 * previous && now >= TIME_ALERT_FLOOR_S).then(|| {
                format!(
                    "🚨 Alert: `{}` took {} against {} the previous run (×{:.1}).",
                    l.name,
                    secs(now),
                    secs(previous),
                    now / previous
                )
            })
        })
        .collect()
}
