//! Checks that run once, before any test of a run: is the system under test
//! there at all? A failed preflight ends the run with exit code 2 and the
//! check's message, instead of every test failing on its own.
//!
//! A crate registers a check with [`preflight!`](crate::preflight!); the
//! runner calls every registered check after selection, when at least one
//! test is to run (never for `--list` or `--markers`), each bounded by
//! [`PREFLIGHT_TIMEOUT`].
//!
//! ```ignore
//! async fn target_is_up(cx: service_test::preflight::PreflightCx) -> Result<String, String> {
//!     match cx.target_file() {
//!         None => Ok(String::new()), // in-process: nothing to check
//!         Some(path) => Ok(format!("target {} is up", path.display())),
//!     }
//! }
//! service_test::preflight!("target", target_is_up);
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::BoxFuture;

/// How long one preflight check may take before the run is refused.
pub const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a check knows of the run.
#[derive(Debug, Clone)]
pub struct PreflightCx {
    pub(crate) target: Option<PathBuf>,
}

impl PreflightCx {
    /// The run's target file (`--target` or `SERVICE_TEST_TARGET`), if any.
    pub fn target_file(&self) -> Option<&Path> {
        self.target.as_deref()
    }
}

/// A registered check: `Ok(line)` lets the run go on (a non-empty line is
/// printed in the run's header); `Err(message)` refuses it.
pub struct Preflight {
    /// Names the check in messages.
    pub name: &'static str,
    /// The check.
    pub check: fn(PreflightCx) -> BoxFuture<Result<String, String>>,
}

inventory::collect!(Preflight);

/// Registers an `async fn(PreflightCx) -> Result<String, String>` as a
/// preflight check named `$name`.
#[macro_export]
macro_rules! preflight {
    ($name:literal, $check:path $(,)?) => {
        $crate::__private::inventory::submit! {
            $crate::preflight::Preflight {
                name: $name,
                check: |cx| ::std::boxed::Box::pin($check(cx)),
            }
        }
    };
}

/// Runs every registered check, in turn; the first refusal is the error
/// (`preflight `name`: message`). The lines of the checks that passed come
/// back for the header.
pub(crate) fn run_all(cx: &PreflightCx) -> Result<Vec<String>, String> {
    let checks: Vec<&Preflight> = inventory::iter::<Preflight>.into_iter().collect();
    if checks.is_empty() {
        return Ok(Vec::new());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("preflight: cannot start a runtime: {e}"))?;
    let mut lines = Vec::new();
    for p in checks {
        let outcome = runtime.block_on(async {
            tokio::time::timeout(PREFLIGHT_TIMEOUT, (p.check)(cx.clone())).await
        });
        match outcome {
            Err(_) => {
                return Err(format!(
                    "preflight `{}` did not finish within {PREFLIGHT_TIMEOUT:?}",
                    p.name
                ));
            }
            Ok(Err(message)) => return Err(format!("preflight `{}`: {message}", p.name)),
            Ok(Ok(line)) if !line.is_empty() => lines.push(line),
            Ok(Ok(_)) => {}
        }
    }
    Ok(lines)
}
