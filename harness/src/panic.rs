//! Catching panics in futures, and reading a panic's message.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Polls a future inside `catch_unwind`: a panic becomes `Err(payload)`
/// instead of unwinding into the caller. Tokio catches panics only at task
/// boundaries; fixture setup and teardown need it inside one task.
pub(crate) struct CatchUnwind<F>(F);

impl<F> CatchUnwind<F> {
    pub(crate) fn new(inner: F) -> Self {
        CatchUnwind(inner)
    }
}

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// The message a panic was raised with (`panic!("...")` gives a `&str` or a
/// `String`; anything else is described by its absence).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(panic payload is not a string)".to_string()
    }
}

use std::collections::HashMap;
use std::sync::{Mutex, Once, PoisonError};

/// Where panics inside harness tasks happened, by task, until the executor
/// collects them for the failure message.
static TASK_PANICS: Mutex<Option<HashMap<tokio::task::Id, String>>> = Mutex::new(None);

/// Installs a panic hook that, for panics inside a tokio task (tests and
/// fixtures), records the location (and a backtrace when `RUST_BACKTRACE`
/// asks for one) instead of printing it; the message then appears once, in
/// the test's failure. Panics on other threads print as usual.
pub(crate) fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let Some(task) = tokio::task::try_id() else {
                return default(info);
            };
            let mut text = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_else(|| "an unknown location".to_string());
            let bt = std::backtrace::Backtrace::capture();
            if bt.status() == std::backtrace::BacktraceStatus::Captured {
                let full = std::env::var("RUST_BACKTRACE").is_ok_and(|v| v == "full");
                let shown = if full {
                    bt.to_string()
                } else {
                    own_frames(&bt.to_string())
                };
                if !shown.is_empty() {
                    text.push_str(&format!("\nbacktrace:\n{shown}"));
                }
            }
            TASK_PANICS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert_with(HashMap::new)
                .insert(task, text);
        }));
    });
}

/// The frames of a backtrace that are the test's own code: those whose
/// source is not the standard library, a registry crate or the harness
/// (seventy frames of runtime and harness say nothing about a failing
/// assertion). `RUST_BACKTRACE=full` keeps them all.
fn own_frames(backtrace: &str) -> String {
    let mut frames: Vec<Vec<&str>> = Vec::new();
    for line in backtrace.lines() {
        let starts_frame = line
            .trim_start()
            .split_once(':')
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if starts_frame || frames.is_empty() {
            frames.push(vec![line]);
        } else if let Some(f) = frames.last_mut() {
            f.push(line);
        }
    }
    let foreign = [
        "/rustc/",
        "/.cargo/registry/",
        "/.cargo/git/",
        "/library/",
        "harness/src/",
    ];
    let own: Vec<String> = frames
        .into_iter()
        .filter(|f| {
            let at = f.iter().find(|l| l.trim_start().starts_with("at "));
            // Rust sources only (not the C library's thread start).
            at.is_some_and(|at| {
                let file = at.trim_start().trim_start_matches("at ");
                let file = file.split(':').next().unwrap_or(file);
                file.ends_with(".rs") && !foreign.iter().any(|p| at.contains(p))
            })
        })
        .take(12)
        .map(|f| f.join("\n"))
        .collect();
    own.join("\n")
}

/// Takes what the hook recorded for a task's last panic: the location,
/// followed by a backtrace on the next lines when one was captured.
pub(crate) fn take_location(task: tokio::task::Id) -> Option<String> {
    TASK_PANICS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_mut()?
        .remove(&task)
}

/// Moves a recorded panic from one task to another (a sync test panics in a
/// blocking task and is resumed in its supervising task).
pub(crate) fn move_location(from: tokio::task::Id, to: tokio::task::Id) {
    let mut guard = TASK_PANICS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(map) = guard.as_mut() {
        if let Some(text) = map.remove(&from) {
            map.insert(to, text);
        }
    }
}
