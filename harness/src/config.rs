//! The config file: `.config/service-test.toml` at the workspace root (as
//! nextest keeps `.config/nextest.toml`), with profiles and overrides by
//! marker expression.
//!
//! ```toml
//! [profile.default]
//! timeout = "60s"
//! slow-timeout = "20s"
//!
//! [profile.ci]                      # --profile ci (env SERVICE_TEST_PROFILE)
//! retries = { backoff = "exponential", count = 2, delay = "200ms", jitter = true, max-delay = "2s" }
//! max-fail = 5
//! report-dir = "target/reports/ci"
//!
//! [profile.logistics]               # not health data: messages shown as written
//! redact = false
//!
//! [[profile.ci.overrides]]
//! marker = "resilience"             # a marker expression
//! timeout = "90s"
//! retries = 2
//! ```
//!
//! A named profile inherits every setting it leaves out from
//! `[profile.default]`. For each test, a setting comes from (first wins):
//! the test's own attribute, the command line, the first override whose
//! marker expression matches (the profile's overrides, then the default
//! profile's), the profile, the default profile, the built-in default.
//!
//! An unknown key or a bad value is a [`ConfigError`] naming the file, the
//! line and the key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::marker::Expr;

/// Where the config file lives, below the workspace root.
pub const CONFIG_PATH: &str = ".config/service-test.toml";

use crate::env::CONFIG_ENV;

/// A mistake in the config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// The 1-based line, when the mistake has one.
    pub line: Option<usize>,
    /// The key at fault, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config file {}", self.path.display())?;
        if let Some(l) = self.line {
            write!(f, ", line {l}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ", key `{k}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A duration as written in the file (`"500ms"`, `"10s"`, `"2m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        crate::duration::parse(&text)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// How long to wait between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backoff {
    /// The same delay before every retry.
    #[default]
    Fixed,
    /// The delay doubles after each retry, up to `max-delay`.
    Exponential,
}

/// `retries = 2`, or the whole policy as nextest writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RetriesSetting {
    /// A count, retried at once.
    Count(u32),
    /// `{ backoff = "exponential", count = 3, delay = "1s", jitter = true, max-delay = "10s" }`.
    Policy(RetryTable),
}

/// The table form of `retries`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RetryTable {
    /// `fixed` (default) or `exponential`.
    #[serde(default)]
    pub backoff: Backoff,
    /// How many more attempts after the first failure.
    pub count: u32,
    /// The (first) delay before a retry.
    #[serde(default)]
    pub delay: Option<Dur>,
    /// Scale each delay by a random factor in [0.5, 1] (seeded).
    #[serde(default)]
    pub jitter: bool,
    /// The longest delay exponential backoff reaches.
    #[serde(default)]
    pub max_delay: Option<Dur>,
}

/// Which failures are retried.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RetryOnSetting {
    /// `"any"` (failures, errors, timeouts) or `"timeout"`.
    Kind(RetryOnKind),
    /// `{ message = "regex" }`: failures whose message matches.
    Message {
        /// A regular expression searched in the failure message.
        message: String,
    },
}

/// The named `retry-on` kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOnKind {
    /// Every failure, error and timeout.
    Any,
    /// Timeouts only.
    Timeout,
}

/// What a flaky test (passed after failing) counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlakyResult {
    /// A pass, reported flaky.
    #[default]
    Pass,
    /// A failure of the run.
    Fail,
}

/// What a leaked task (still running after its test's teardown) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Leaks {
    /// Not checked.
    #[default]
    Off,
    /// A `LEAK` warning naming the test.
    Warn,
    /// The test fails.
    Fail,
}

/// The least severe log record a test's capture keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Information, warnings and errors.
    #[default]
    Info,
    /// Debugging records too.
    Debug,
    /// Everything.
    Trace,
}

/// How tests run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Tests share one worker process (and its fixtures).
    #[default]
    InProcess,
    /// Each test in a process of its own, its output captured.
    Process,
}

/// The per-test settings of a profile or an override, each optional:
/// unset means "ask the next layer".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Per-test timeout.
    pub timeout: Option<Dur>,
    /// When a running test is shown `SLOW` (`"0s"`: never).
    pub slow_timeout: Option<Dur>,
    /// Retry count or policy.
    pub retries: Option<RetriesSetting>,
    /// Which failures are retried.
    pub retry_on: Option<RetryOnSetting>,
    /// Whether a flaky pass fails the run.
    pub flaky_result: Option<FlakyResult>,
    /// Whether tasks left running after teardown are reported.
    pub leaks: Option<Leaks>,
}

/// `[profile.NAME]`. The per-test fields are spelt out here and in
/// [`Override`] rather than flattened, so that toml's errors point at the
/// key at fault.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Profile {
    /// How many tests run at once.
    pub test_threads: Option<usize>,
    /// Stop after the first failure.
    pub fail_fast: Option<bool>,
    /// Stop after this many failures.
    pub max_fail: Option<usize>,
    /// Where reports go (relative to the workspace root).
    pub report_dir: Option<PathBuf>,
    /// How tests run.
    pub isolation: Option<Isolation>,
    /// How much of each output stream of an isolated test is kept (its
    /// end), in bytes; 4 MiB by default.
    pub capture_limit: Option<usize>,
    /// How long processes a test leaves behind get to end before they are
    /// reported as a leak and killed; 500 ms by default.
    pub leak_timeout: Option<Dur>,
    /// The least severe `log` record and `tracing` event captured with a
    /// test (`error`, `warn`, `info`, `debug`, `trace`); `info` by default.
    pub log_level: Option<LogLevel>,
    /// Whether failure messages, captured output and reports are redacted
    /// of PHI; on by default, `false` for data that is not health data
    /// (see the harness's `redaction` module).
    pub redact: Option<bool>,
    /// Per-test timeout.
    pub timeout: Option<Dur>,
    /// When a running test is shown `SLOW`.
    pub slow_timeout: Option<Dur>,
    /// Retry count or policy.
    pub retries: Option<RetriesSetting>,
    /// Which failures are retried.
    pub retry_on: Option<RetryOnSetting>,
    /// Whether a flaky pass fails the run.
    pub flaky_result: Option<FlakyResult>,
    /// Whether tasks left running after teardown are reported.
    pub leaks: Option<Leaks>,
    /// Settings for the tests a marker expression selects.
    #[serde(default)]
    pub overrides: Vec<Override>,
}

impl Profile {
    /// Its per-test settings.
    pub fn settings(&self) -> Settings {
        Settings {
            timeout: self.timeout,
            slow_timeout: self.slow_timeout,
            retries: self.retries.clone(),
            retry_on: self.retry_on.clone(),
            flaky_result: self.flaky_result,
            leaks: self.leaks,
        }
    }
}

/// `[[profile.NAME.overrides]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Override {
    /// The marker expression selecting the tests.
    pub marker: String,
    /// Per-test timeout.
    pub timeout: Option<Dur>,
    /// When a running test is shown `SLOW`.
    pub slow_timeout: Option<Dur>,
    /// Retry count or policy.
    pub retries: Option<RetriesSetting>,
    /// Which failures are retried.
    pub retry_on: Option<RetryOnSetting>,
    /// Whether a flaky pass fails the run.
    pub flaky_result: Option<FlakyResult>,
    /// Whether tasks left running after teardown are reported.
    pub leaks: Option<Leaks>,
}

impl Override {
    /// Its per-test settings.
    pub fn settings(&self) -> Settings {
        Settings {
            timeout: self.timeout,
            slow_timeout: self.slow_timeout,
            retries: self.retries.clone(),
            retry_on: self.retry_on.clone(),
            flaky_result: self.flaky_result,
            leaks: self.leaks,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    profile: std::collections::BTreeMap<String, Profile>,
}

/// The profile in force: the named profile over the default one, with the
/// overrides' marker expressions parsed.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The profile's name (`default` when none was asked for).
    pub name: String,
    /// The file it came from, if any.
    pub path: Option<PathBuf>,
    /// Run-wide settings, the named profile's over the default's.
    pub run: Profile,
    /// Per-test settings of the profile (over the default profile's).
    pub settings: Settings,
    /// Overrides in the order they are tried.
    pub overrides: Vec<(Expr, Settings)>,
}

impl Config {
    /// Are failure messages, output and reports redacted (`redact`, on
    /// unless a profile says `false`)?
    pub fn redacts(&self) -> bool {
        self.run.redact.unwrap_or(true)
    }

    /// Finds the config file (the `SERVICE_TEST_CONFIG` variable, else
    /// `.config/service-test.toml` in the current directory or the nearest
    /// ancestor that has one) and selects `profile` (else `default`). No
    /// file is the built-in defaults, unless a profile other than `default`
    /// was asked for.
    pub fn discover(profile: Option<&str>) -> Result<Config, ConfigError> {
        let path = crate::env::config_file().or_else(|| {
            let cwd = std::env::current_dir().ok()?;
            cwd.ancestors()
                .map(|d| d.join(CONFIG_PATH))
                .find(|p| p.is_file())
        });
        match path {
            Some(p) => Config::load(&p, profile),
            None => match profile {
                None | Some("default") => Ok(Config {
                    name: "default".into(),
                    ..Config::default()
                }),
                Some(other) => Err(ConfigError {
                    path: PathBuf::from(CONFIG_PATH),
                    line: None,
                    key: None,
                    message: format!(
                        "--profile {other}: no config file found (looked for {CONFIG_PATH} here and in every parent directory, and {CONFIG_ENV})"
                    ),
                }),
            },
        }
    }

    /// Reads `path` and selects `profile`.
    pub fn load(path: &Path, profile: Option<&str>) -> Result<Config, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: None,
            key: None,
            message: format!("cannot read it: {e}"),
        })?;
        Config::parse(&source, path, profile)
    }

    /// Parses `source` (the contents of `path`) and selects `profile`.
    pub fn parse(source: &str, path: &Path, profile: Option<&str>) -> Result<Config, ConfigError> {
        let error = |line: Option<usize>, key: Option<String>, message: String| ConfigError {
            path: path.to_path_buf(),
            line,
            key,
            message,
        };
        let file: File = toml::from_str(source).map_err(|e| {
            let line = e.span().map(|s| line_at(source, s.start));
            error(
                line,
                e.span().and_then(|s| key_at(source, s.start)),
                e.message().trim().to_string(),
            )
        })?;
        let name = profile.unwrap_or("default").to_string();
        let default = file.profile.get("default").cloned().unwrap_or_default();
        let chosen = match file.profile.get(&name) {
            Some(p) => p.clone(),
            None if name == "default" => Profile::default(),
            None => {
                let known: Vec<&str> = file.profile.keys().map(String::as_str).collect();
                return Err(error(
                    None,
                    Some(format!("profile.{name}")),
                    format!(
                        "no profile `{name}`; the file defines: {}",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        };
        let mut layers: Vec<(&str, &Profile)> = vec![(name.as_str(), &chosen)];
        if name != "default" {
            layers.push(("default", &default));
        }
        let known = crate::marker::known_markers();
        let names: Vec<&str> = known.iter().map(|m| m.name).collect();
        let mut overrides = Vec::new();
        for (pname, p) in layers {
            check_settings(&p.settings(), &format!("profile.{pname}"), source, &error)?;
            for (i, o) in p.overrides.iter().enumerate() {
                let at = format!("profile.{pname}.overrides[{i}]");
                let expr = Expr::parse(&o.marker)
                    .map_err(|e| e.to_string())
                    .and_then(|expr| {
                        expr.check_known(&o.marker, &names)
                            .map_err(|e| e.to_string())
                            .map(|()| expr)
                    })
                    .map_err(|m| {
                        error(line_of(source, &o.marker), Some(format!("{at}.marker")), m)
                    })?;
                check_settings(&o.settings(), &at, source, &error)?;
                overrides.push((expr, o.settings()));
            }
        }
        let settings = chosen.settings().or(&default.settings());
        let run = Profile {
            test_threads: chosen.test_threads.or(default.test_threads),
            fail_fast: chosen.fail_fast.or(default.fail_fast),
            max_fail: chosen.max_fail.or(default.max_fail),
            report_dir: chosen.report_dir.clone().or(default.report_dir.clone()),
            isolation: chosen.isolation.or(default.isolation),
            capture_limit: chosen.capture_limit.or(default.capture_limit),
            leak_timeout: chosen.leak_timeout.or(default.leak_timeout),
            log_level: chosen.log_level.or(default.log_level),
            redact: chosen.redact.or(default.redact),
            ..Profile::default()
        };
        Ok(Config {
            name,
            path: Some(path.to_path_buf()),
            run,
            settings,
            overrides,
        })
    }

    /// The settings for a test carrying `markers`: the first matching
    /// override per setting, then the profile's.
    pub fn settings_for(&self, markers: &[&str]) -> Settings {
        let mut out = Settings::default();
        for (expr, s) in &self.overrides {
            if expr.matches(markers) {
                out = out.or(s);
            }
        }
        out.or(&self.settings)
    }

    /// The directory the config file's relative paths start from: the one
    /// holding `.config/`.
    pub fn root(&self) -> Option<PathBuf> {
        let p = self.path.as_ref()?;
        let dir = p.parent()?;
        Some(if dir.file_name().is_some_and(|n| n == ".config") {
            dir.parent().unwrap_or(dir).to_path_buf()
        } else {
            dir.to_path_buf()
        })
    }
}

impl Settings {
    /// Each field of `self`, or `other`'s where `self` has none.
    pub fn or(self, other: &Settings) -> Settings {
        Settings {
            timeout: self.timeout.or(other.timeout),
            slow_timeout: self.slow_timeout.or(other.slow_timeout),
            retries: self.retries.or_else(|| other.retries.clone()),
            retry_on: self.retry_on.or_else(|| other.retry_on.clone()),
            flaky_result: self.flaky_result.or(other.flaky_result),
            leaks: self.leaks.or(other.leaks),
        }
    }
}

/// Checks what serde cannot: a `retry-on` message is a regular expression.
fn check_settings(
    s: &Settings,
    at: &str,
    source: &str,
    error: &impl Fn(Option<usize>, Option<String>, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if s.timeout.is_some_and(|d| d.0 < Duration::from_millis(1)) {
        return Err(error(
            line_of_key(source, "timeout"),
            Some(format!("{at}.timeout")),
            "a timeout must be at least 1ms".into(),
        ));
    }
    if let Some(RetryOnSetting::Message { message }) = &s.retry_on {
        regex::Regex::new(message).map_err(|e| {
            error(
                line_of(source, message),
                Some(format!("{at}.retry-on.message")),
                format!("not a regular expression: {e}"),
            )
        })?;
    }
    Ok(())
}

/// The key a toml error at `offset` is about: the name before `=` on
/// that line, else the table header there.
fn key_at(source: &str, offset: usize) -> Option<String> {
    let start = source[..offset.min(source.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = source[start..].lines().next()?;
    let key = match line.split_once('=') {
        Some((k, _)) => k,
        None => line,
    };
    let key = key.trim().trim_matches(['[', ']', '"']).trim();
    (!key.is_empty() && key.len() < 80).then(|| key.to_string())
}

/// The 1-based line of byte `offset`.
fn line_at(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())].matches('\n').count() + 1
}

/// The first line that sets `key`.
fn line_of_key(source: &str, key: &str) -> Option<usize> {
    source
        .lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// The line where the string `value` first appears quoted.
fn line_of(source: &str, value: &str) -> Option<usize> {
    let quoted = format!("\"{value}\"");
    let single = format!("'{value}'");
    source
        .find(&quoted)
        .or_else(|| source.find(&single))
        .map(|at| line_at(source, at))
}
