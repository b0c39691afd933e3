//! `report.md` says what the run's data says: one name per service, every
//! service state the tests saw, when the run started, and how each figure
//! moved since the previous runs, with an alert when one doubled.

extern crate service_test_harness as harness;

use harness::history::{FigureHistory, History};
use harness::report::{ResultLine, RunInfo, markdown};
use harness::{Metric, Metrics, OutcomeLabel, service_test};

fn line(name: &str, services: &[&str], metrics: Vec<Metric>) -> ResultLine {
    ResultLine {
        binary: "suites".into(),
        name: name.into(),
        markers: vec!["integration".into()],
        services: services.iter().map(|s| s.to_string()).collect(),
        outcome: OutcomeLabel::Passed,
        duration_s: 0.5,
        shared_setup_s: 0.0,
        attempts: 1,
        seed: 7,
        message: None,
        earlier_failures: Vec::new(),
        metrics,
        recent_outcomes: Vec::new(),
        recent_figures: Vec::new(),
        previous_duration_s: None,
        slow: false,
        stdout: None,
        stderr: None,
        file: None,
        line: None,
    }
}

fn run(started_unix: u64) -> RunInfo {
    RunInfo {
        binary: "suites".into(),
        seed: 7,
        wall_s: 3.0,
        started_unix,
        partition: None,
    }
}

/// States recorded through `Metrics::service_state`, as a test records them.
fn states(seen: &[(&str, &str, &str)]) -> Vec<Metric> {
    let m = Metrics::default();
    for (service, what, state) in seen {
        m.service_state(service, what, state);
    }
    m.recorded()
}

fn figure(name: &str, endpoint: &str, unit: &str, value: f64) -> Metric {
    Metric {
        name: name.into(),
        value,
        unit: unit.into(),
        endpoint: Some(endpoint.into()),
        state: None,
    }
}

fn section<'a>(md: &'a str, title: &str) -> &'a str {
    let start = md
        .find(&format!("## {title}\n"))
        .unwrap_or_else(|| panic!("no `{title}` section:\n{md}"));
    let rest = &md[start + 3..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

const SIX: [&str; 6] = [
    "healthcare-api",
    "insurance-verification",
    "billing-engine",
    "compliance-monitor",
    "business-intelligence",
    "doctor-personalization",
];

/// A service identifier of `services(...)` is reported with hyphens, the
/// name a service gives itself (`billing_engine` is `billing-engine`).
#[service_test(unit)]
fn service_identifiers_are_reported_by_the_services_own_names() {
    assert_eq!(
        harness::registry::service_name("billing_engine"),
        "billing-engine"
    );
    assert_eq!(
        harness::registry::service_name("healthcare_api"),
        "healthcare-api"
    );
}

/// Each service has one line among the service results, and no
/// recommendation asks to cover a service the tests exercise (it used to
/// ask for "personalization" beside a doctor service with 24 tests).
#[service_test(unit)]
fn every_service_has_one_line_and_none_is_called_untested_when_tested() {
    let health: Vec<(&str, &str, &str)> = SIX.iter().map(|s| (*s, "health", "healthy")).collect();
    let mut lines = vec![line("health::every_service", &SIX, states(&health))];
    for s in SIX {
        lines.push(line(&format!("t::{s}"), &["healthcare-api", s], Vec::new()));
    }
    let md = markdown(&lines, &[run(1_765_000_000)]);
    let results = section(&md, "Service Test Results");
    for s in SIX {
        let n = results
            .lines()
            .filter(|l| l.contains(&format!(" {s}: ")))
            .count();
        assert_eq!(n, 1, "{s} has {n} lines:\n{results}");
    }
    assert_eq!(results.lines().filter(|l| l.starts_with("- ")).count(), 6);
    let recs = section(&md, "Recommendations");
    assert!(!recs.contains("exercised"), "{recs}");
    assert!(!md.contains("personalization,"), "{md}");
}

/// A service the run saw (its state recorded) that no test names is the
/// one recommended for coverage, and only it.
#[service_test(unit)]
fn a_service_seen_but_never_named_is_recommended_for_coverage() {
    let health: Vec<(&str, &str, &str)> = SIX.iter().map(|s| (*s, "health", "healthy")).collect();
    let lines = vec![line("health::every_service", &SIX[..5], states(&health))];
    let md = markdown(&lines, &[run(1_765_000_000)]);
    let recs = section(&md, "Recommendations");
    assert!(
        recs.contains("No test in this run exercised: doctor-personalization. "),
        "{recs}"
    );
}

/// The service health section lists every state seen, by service, with
/// the tests that saw it: a breaker seen open by one test and closed by
/// another shows both.
#[service_test(unit)]
fn service_health_lists_the_states_the_tests_saw() {
    let lines = vec![
        line(
            "health::all",
            &["healthcare-api"],
            states(&[
                ("healthcare-api", "health", "healthy"),
                ("healthcare-api", "breaker to billing-engine", "closed"),
                ("billing-engine", "health", "healthy"),
            ]),
        ),
        line(
            "resilience::breaker",
            &["healthcare-api", "billing-engine"],
            states(&[
                ("healthcare-api", "health", "degraded"),
                ("healthcare-api", "breaker to billing-engine", "open"),
            ]),
        ),
    ];
    let md = markdown(&lines, &[run(1_765_000_000)]);
    let health = section(&md, "Service Health");
    for row in [
        "| healthcare-api | health | healthy | 1: `health::all` |",
        "| healthcare-api | health | degraded | 1: `resilience::breaker` |",
        "| healthcare-api | breaker to billing-engine | open | 1: `resilience::breaker` |",
        "| healthcare-api | breaker to billing-engine | closed | 1: `health::all` |",
        "| billing-engine | health | healthy | 1: `health::all` |",
    ] {
        assert!(health.contains(row), "no `{row}`:\n{health}");
    }
    // States are not performance figures.
    assert!(
        section(&md, "Performance").contains("No test recorded performance figures"),
        "{md}"
    );
    let none = markdown(&[line("t", &["billing-engine"], Vec::new())], &[]);
    assert!(
        section(&none, "Service Health").contains("No test recorded the state of a service"),
        "{none}"
    );
}

/// The report says when it was generated and when the run started, in
/// UTC.
#[service_test(unit)]
fn the_report_carries_the_runs_timestamp() {
    let md = markdown(
        &[line("t", &["billing-engine"], Vec::new())],
        &[run(1_765_000_000), run(1_765_000_100)],
    );
    assert!(md.contains("run started: 2025-12-06T05:46:40Z"), "{md}");
    let generated = md
        .lines()
        .find_map(|l| l.strip_prefix("Generated: "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no `Generated:` line:\n{md}"));
    let when = humantime::parse_rfc3339(generated).expect("an RFC 3339 time");
    let age = std::time::SystemTime::now()
        .duration_since(when)
        .unwrap_or_default();
    assert!(age < std::time::Duration::from_secs(60), "{generated}");
    let md = markdown(&[line("t", &["billing-engine"], Vec::new())], &[]);
    assert!(md.contains("run started: unknown (no runs.jsonl)"), "{md}");
}

/// Each figure is shown beside its earlier values; a latency that doubled
/// against the previous run, or a throughput that halved, raises an alert
/// (in the trends and first among the recommendations); one that grew by
/// half does not.
#[service_test(unit)]
fn trends_show_earlier_runs_and_alert_when_a_figure_doubles() {
    let earlier = |name: &str, unit: &str, values: &[f64]| FigureHistory {
        name: name.into(),
        endpoint: Some("POST /visits".into()),
        unit: unit.into(),
        values: values.to_vec(),
    };
    let mut l = line(
        "performance::visits",
        &["healthcare-api"],
        vec![
            figure("p99_ms", "POST /visits", "ms", 90.0),
            figure("p50_ms", "POST /visits", "ms", 15.0),
            figure("throughput_rps", "POST /visits", "rps", 40.0),
            figure("samples", "POST /visits", "count", 400.0),
        ],
    );
    l.recent_figures = vec![
        earlier("p99_ms", "ms", &[30.0, 35.0, 40.0]),
        earlier("p50_ms", "ms", &[10.0]),
        earlier("throughput_rps", "rps", &[100.0]),
        earlier("samples", "count", &[100.0]),
    ];
    let md = markdown(&[l], &[run(1_765_000_000)]);
    let trends = section(&md, "Performance Trends");
    assert!(
        trends.contains("| POST /visits | `performance::visits` | p99_ms (ms) | 30 → 35 → 40 → **90** | ×2.25 🚨 |"),
        "{trends}"
    );
    assert!(
        trends.contains("🚨 Alert: `p99_ms` of **POST /visits** (`performance::visits`) doubled against the previous run: 40 → 90 ms."),
        "{trends}"
    );
    assert!(
        trends.contains("🚨 Alert: `throughput_rps` of **POST /visits** (`performance::visits`) halved against the previous run: 100 → 40 rps."),
        "{trends}"
    );
    assert_eq!(trends.matches("🚨 Alert").count(), 2, "{trends}");
    let recs = section(&md, "Recommendations");
    assert!(
        recs.starts_with("Recommendations\n\n1. 🚨 Alert: `p99_ms`"),
        "{recs}"
    );

    let first = markdown(
        &[line(
            "performance::visits",
            &["healthcare-api"],
            vec![figure("p99_ms", "POST /visits", "ms", 90.0)],
        )],
        &[],
    );
    assert!(
        section(&first, "Performance Trends").contains("No figure of this run has earlier values"),
        "{first}"
    );
}

/// History keeps each figure's last values (a figure not recorded keeps
/// its own), and hands them to the next run's result lines.
#[service_test(unit)]
fn history_keeps_each_figures_recent_values() {
    let mut h = History::default();
    for p99 in [10.0, 12.0, 30.0] {
        let mut l = line(
            "performance::visits",
            &["healthcare-api"],
            vec![figure("p99_ms", "POST /visits", "ms", p99)],
        );
        let recent = h.recent(&l.name);
        l.recent_outcomes = recent.outcomes;
        l.recent_figures = recent.figures;
        h.record_results([&l]);
    }
    let mut l = line("performance::visits", &["healthcare-api"], Vec::new());
    let recent = h.recent(&l.name);
    l.recent_outcomes = recent.outcomes;
    l.recent_figures = recent.figures;
    h.record_results([&l]);
    let recent = h.recent("performance::visits");
    assert_eq!(recent.figures.len(), 1, "{:?}", recent.figures);
    assert_eq!(recent.figures[0].values, [10.0, 12.0, 30.0]);
    assert_eq!(recent.figures[0].unit, "ms");
    assert_eq!(recent.outcomes.len(), 4);
}

/// Seed 004's alerts: a test that took twice its previous time (past a
/// second: shorter ones are noise), and a run whose failures are over 5 %.
#[service_test(unit)]
fn a_test_twice_as_slow_and_a_failure_rate_over_five_percent_raise_alerts() {
    let timed = |name: &str, now: f64, previous: f64| {
        let mut l = line(name, &["billing-engine"], Vec::new());
        l.duration_s = now;
        l.previous_duration_s = Some(previous);
        l
    };
    let mut lines = vec![
        timed("slower", 3.0, 1.2),
        timed("steady", 3.0, 2.0),
        timed("tiny", 0.4, 0.1),
    ];
    let md = markdown(&lines, &[run(1_765_000_000)]);
    let recs = section(&md, "Recommendations");
    assert!(
        recs.contains("🚨 Alert: `slower` took 3.00s against 1.20s the previous run (×2.5)."),
        "{recs}"
    );
    assert_eq!(recs.matches("🚨 Alert").count(), 1, "{recs}");
    for i in 0..19 {
        lines.push(line(&format!("ok{i}"), &["billing-engine"], Vec::new()));
    }
    let mut failed = line("failed", &["billing-engine"], Vec::new());
    failed.outcome = OutcomeLabel::Failed;
    lines.push(failed.clone());
    let one_in_23 = markdown(&lines, &[run(1_765_000_000)]);
    assert!(!one_in_23.contains("alert threshold"), "{one_in_23}");
    lines.push(failed);
    lines.last_mut().unwrap().name = "failed too".into();
    let md = markdown(&lines, &[run(1_765_000_000)]);
    assert!(
        section(&md, "Recommendations")
            .contains("1. 🚨 Alert: 8.3% of the tests failed, over the 5 % alert threshold."),
        "{md}"
    );
}

harness::main!();
