//! `junit.xml` through `quick-junit`: one `<testsuite>` per binary; failure,
//! error and skipped kept apart; earlier failed attempts recorded as
//! `flakyFailure` (passed in the end) or `rerunFailure`; markers, services
//! and the seed as properties.

use std::collections::BTreeMap;
use std::time::Duration;

use quick_junit::{
    NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestRerun, TestSuite,
};

use super::{Error, ResultLine, RunInfo};
use crate::events::OutcomeLabel;

fn rerun(kind: NonSuccessKind, message: &str) -> TestRerun {
    let mut r = TestRerun::new(kind);
    r.set_message(message);
    r
}

pub(super) fn junit(lines: &[ResultLine], runs: &[RunInfo]) -> Result<String, Error> {
    let mut report = Report::new("service-test");
    let mut by_binary: BTreeMap<&str, Vec<&ResultLine>> = BTreeMap::new();
    for l in lines {
        by_binary.entry(l.binary.as_str()).or_default().push(l);
    }
    for (binary, tests) in by_binary {
        let mut suite = TestSuite::new(binary);
        if let Some(run) = runs.iter().rev().find(|r| r.binary == binary) {
            suite.add_property(Property::new("seed", run.seed.to_string()));
            if let Some(p) = &run.partition {
                suite.add_property(Property::new("partition", p.as_str()));
            }
        }
        for l in tests {
            let message = l.message.as_deref().unwrap_or("");
            let mut status = match l.outcome {
                OutcomeLabel::Passed => TestCaseStatus::success(),
                OutcomeLabel::Flaky => {
                    let mut s = TestCaseStatus::success();
                    s.add_reruns(
                        l.earlier_failures
                            .iter()
                            .map(|m| rerun(NonSuccessKind::Failure, m)),
                    );
                    s
                }
                OutcomeLabel::Skipped | OutcomeLabel::NotRun => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(message);
                    s
                }
                other => {
                    let kind = if other == OutcomeLabel::Error {
                        NonSuccessKind::Error
                    } else {
                        NonSuccessKind::Failure
                    };
                    let mut s = TestCaseStatus::non_success(kind);
                    s.set_message(message.lines().next().unwrap_or(""));
                    s.set_type(other.as_str());
                    s.set_description(message);
                    s.add_reruns(l.earlier_failures.iter().map(|m| rerun(kind, m)));
                    s
                }
            };
            if l.outcome == OutcomeLabel::Flaky {
                status.set_message("passed after failing");
            }
            let mut case = TestCase::new(l.name.as_str(), status);
            if let Some(out) = &l.stdout {
                case.set_system_out(out.as_str());
            }
            if let Some(err) = &l.stderr {
                case.set_system_err(err.as_str());
            }
            case.set_classname(format!(
                "{binary}::{}",
                l.name.rsplit_once("::").map_or("", |(m, _)| m)
            ));
            case.set_time(Duration::from_secs_f64(l.duration_s.max(0.0)));
            // Where the test is, as CI annotators read it (pytest, nextest).
            if let Some(file) = &l.file {
                case.extra.insert("file".into(), file.as_str().into());
            }
            if let Some(line) = l.line {
                case.extra.insert("line".into(), line.to_string().into());
            }
            for m in &l.markers {
                case.add_property(Property::new("marker", m.as_str()));
            }
            for s in &l.services {
                case.add_property(Property::new("service", s.as_str()));
            }
            case.add_property(Property::new("attempts", l.attempts.to_string()));
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    report.to_string().map_err(|e| Error::Junit(e.to_string()))
}
