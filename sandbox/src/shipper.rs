//! The log pipeline's shipper: each PHI violation the log book finds in a
//! service's log line is reported to the compliance monitor
//! (`POST /violations`) under its tenant and request, signing as the
//! monitor.
//!
//! Reports go side by side (up to [`AT_ONCE`] under way), so that one
//! tenant's slow reports (a latency fault, retries) do not hold up the
//! others'. A report the monitor does not take — its breaker open, a
//! timeout, a 5xx — is not lost: it is sent again, waiting 0.25 s doubling
//! to 4 s between tries (at least until the breaker lets a probe through,
//! at most 4 s), for up to [`GIVE_UP_AFTER`]; only a refusal for good (a
//! 4xx other than 408 and 429) or that long a failure drops it, logged. A
//! report sent again after a timeout may be recorded twice: a violation
//! counted twice is better than one lost. At most [`MAX_PENDING`] reports
//! wait at once; past that a new one is dropped, logged.
//!
//! The shipper's client is the monitor's: test mode's
//! `/admin/breakers/reset` on the monitor closes its breakers too.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;

use crate::client::{Call, CallError, Method, ServiceClient};
use crate::logs::LogViolation;
use crate::service::Service;

/// Reports under way at once.
pub(crate) const AT_ONCE: usize = 16;
/// Reports waiting (under way or between tries) at most.
pub(crate) const MAX_PENDING: usize = 10_000;
/// A report still not taken this long after it was found is dropped.
pub(crate) const GIVE_UP_AFTER: Duration = Duration::from_secs(600);
/// The first wait before a report is sent again; it doubles up to
/// [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(250);
/// The longest wait between two tries.
const MAX_WAIT: Duration = Duration::from_secs(4);

/// Ships the violations `rx` receives with `client` until the channel
/// closes (then finishes the reports under way) or the task is aborted
/// (dropping them).
pub(crate) async fn ship(mut rx: UnboundedReceiver<LogViolation>, client: Arc<ServiceClient>) {
    let slots = Arc::new(Semaphore::new(AT_ONCE));
    let pending = Arc::new(AtomicUsize::new(0));
    let mut shipping = JoinSet::new();
    while let Some(v) = rx.recv().await {
        if pending.load(Ordering::Relaxed) >= MAX_PENDING {
            tracing::warn!(
                tenant = v.tenant.as_deref().unwrap_or("system"),
                "violation report from {} dropped: {MAX_PENDING} reports already waiting for the compliance monitor",
                v.service
            );
            continue;
        }
        pending.fetch_add(1, Ordering::Relaxed);
        let (client, slots, pending) = (
            Arc::clone(&client),
            Arc::clone(&slots),
            Arc::clone(&pending),
        );
        shipping.spawn(async move {
            deliver(&client, &slots, v).await;
            pending.fetch_sub(1, Ordering::Relaxed);
        });
        // The finished ones are let go as they come.
        while shipping.try_join_next().is_some() {}
    }
    while shipping.join_next().await.is_some() {}
}

/// Sends `v` until the monitor takes it, it is refused for good, or
/// [`GIVE_UP_AFTER`] has passed; holding one of `slots` only while a try
/// is under way (a report waiting to be sent again holds none up).
async fn deliver(client: &ServiceClient, slots: &Semaphore, v: LogViolation) {
    let found = Instant::now();
    let tenant = v.tenant.clone().unwrap_or_else(|| "system".into());
    let request_id = v
        .request_id
        .clone()
        .unwrap_or_else(crate::ctx::new_request_id);
    let source = v.service;
    let call = Call::new(
        Service::ComplianceMonitor,
        Method::Post,
        "/violations",
        &tenant,
        &request_id,
    )
    .body(&crate::compliance::ViolationReport {
        source: source.name().to_string(),
        channel: "log".to_string(),
        kinds: v.kinds,
        excerpt: v.excerpt,
    });
    let mut wait = FIRST_WAIT;
    let mut tries = 0u32;
    loop {
        let sent = {
            let Ok(_slot) = slots.acquire().await else {
                return;
            };
            client.send(&call).await
        };
        tries += 1;
        let Err(e) = sent else { return };
        if !worth_another_try(&e) || found.elapsed() >= GIVE_UP_AFTER {
            tracing::warn!(tenant = %tenant, request_id = %request_id, "violation report from {source} dropped after {tries} tries: {e}");
            return;
        }
        let until_probe = match &e {
            CallError::NotPermitted { retry_after, .. } => *retry_after,
            _ => Duration::ZERO,
        };
        tokio::time::sleep(wait.max(until_probe).min(MAX_WAIT)).await;
        wait = (wait * 2).min(MAX_WAIT);
    }
}

/// Is a report that failed with `e` worth sending again? Not when the
/// monitor refused it for good (a 4xx other than 408 and 429: a report it
/// will never take).
fn worth_another_try(e: &CallError) -> bool {
    !matches!(e.status(), Some(s) if (400..500).contains(&s) && s != 408 && s != 429)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::BreakerState;

    #[test]
    fn only_a_refusal_for_good_is_not_tried_again() {
        let status = |status| CallError::Status {
            target: Service::ComplianceMonitor,
            status,
            body: serde_json::Value::Null,
            attempts: 1,
        };
        for s in [400, 403, 404, 422] {
            assert!(!worth_another_try(&status(s)), "{s}");
        }
        for s in [408, 429, 500, 503] {
            assert!(worth_another_try(&status(s)), "{s}");
        }
        let open = CallError::NotPermitted {
            target: Service::ComplianceMonitor,
            state: BreakerState::Open,
            retry_after: Duration::from_secs(2),
        };
        assert!(worth_another_try(&open));
    }
}
