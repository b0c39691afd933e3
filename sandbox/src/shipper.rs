//! The log pipeline's shipper: each PHI violation the log book finds in a
//! service's log line is reported to the compliance monitor
//! (`POST /violations`) under its tenant and request, signing as the
//! monitor.
//!
//! Reports go side by side (up to [`AT_ONCE`] under way), so that one
//! tenant's slow reports (a latency fault, retries) do not hold up the
//! others'. A report the monitor does not take — its breaker open, a
//! timeout, a 5xx — is not lost: it is sent again, 0.25 s doubling to 4 s
//! after the last try. The wait is never longer than 4 s, even while the
//! breaker says its next probe is further off, so that a breaker closed by
//! a reset is noticed within 4 s (a try the breaker refuses costs nothing).
//! A report is dropped, with a warning in the monitor's log, only when the
//! monitor refuses it for good (a 4xx other than 408 and 429), when
//! [`MAX_TRIES`] tries reached the monitor and failed (a report it always
//! fails on must not keep its breaker open for every tenant), or when it
//! is still not taken [`GIVE_UP_AFTER`] after it was found.
//!
//! A report sent again after a timeout, a lost answer or a 5xx answered
//! after the violation was stored may be recorded twice: a violation
//! counted twice is better than one lost.
//!
//! At most [`MAX_PENDING`] reports wait at once, and at most
//! [`MAX_PENDING_PER_TENANT`] of one tenant (one tenant's backlog does not
//! crowd out the others'); past that a new one is dropped, with a warning.
//!
//! The shipper's client is the monitor's: test mode's
//! `/admin/breakers/reset` on the monitor closes its breakers too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;
use tracing::instrument::WithSubscriber;

use crate::client::{Call, CallError, Method, ServiceClient};
use crate::logs::LogViolation;
use crate::service::Service;

/// Reports under way at once.
pub(crate) const AT_ONCE: usize = 16;
/// Reports waiting (under way or between tries) at most.
pub(crate) const MAX_PENDING: usize = 10_000;
/// Reports of one tenant waiting at most.
pub(crate) const MAX_PENDING_PER_TENANT: usize = 1_000;
/// Tries that reached the monitor (not refused by the breaker or the
/// bulkhead first) and failed, at most, per report.
pub(crate) const MAX_TRIES: u32 = 10;
/// A report still not taken this long after it was found is dropped.
pub(crate) const GIVE_UP_AFTER: Duration = crate::retry::REDELIVER_FOR;
/// The first wait before a report is sent again; it doubles up to
/// [`MAX_WAIT`] (the mesh's background redelivery).
const FIRST_WAIT: Duration = crate::retry::REDELIVERY.base;
/// The longest wait between two tries.
const MAX_WAIT: Duration = crate::retry::REDELIVERY.max_delay;

/// The reports waiting, in all and per tenant.
#[derive(Default)]
struct Backlog {
    all: usize,
    by_tenant: HashMap<String, usize>,
}

/// One report's place in the [`Backlog`], given back when dropped (also
/// when its delivery is aborted).
struct Place {
    backlog: Arc<Mutex<Backlog>>,
    tenant: String,
}

impl Backlog {
    /// A place for a report of `tenant`, if there is room.
    fn enter(backlog: &Arc<Mutex<Backlog>>, tenant: &str) -> Option<Place> {
        let mut b = backlog.lock().unwrap_or_else(PoisonError::into_inner);
        let theirs = b.by_tenant.get(tenant).copied().unwrap_or(0);
        if b.all >= MAX_PENDING || theirs >= MAX_PENDING_PER_TENANT {
            return None;
        }
        b.all += 1;
        b.by_tenant.insert(tenant.to_string(), theirs + 1);
        Some(Place {
            backlog: Arc::clone(backlog),
            tenant: tenant.to_string(),
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut b = self.backlog.lock().unwrap_or_else(PoisonError::into_inner);
        b.all = b.all.saturating_sub(1);
        if let Some(n) = b.by_tenant.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                b.by_tenant.remove(&self.tenant);
            }
        }
    }
}

/// Ships the violations `rx` receives with `client` until the channel
/// closes (then finishes the reports under way) or the task is aborted
/// (dropping them). Its warnings go to `log` (the monitor's log, redacted
/// like every other line).
pub(crate) async fn ship(
    mut rx: UnboundedReceiver<LogViolation>,
    client: Arc<ServiceClient>,
    log: tracing::Dispatch,
) {
    let slots = Arc::new(Semaphore::new(AT_ONCE));
    let backlog = Arc::new(Mutex::new(Backlog::default()));
    let mut shipping = JoinSet::new();
    while let Some(v) = rx.recv().await {
        let tenant = v.tenant.clone().unwrap_or_else(|| "system".into());
        let Some(place) = Backlog::enter(&backlog, &tenant) else {
            tracing::dispatcher::with_default(&log, || {
                tracing::warn!(
                    tenant = %tenant,
                    "violation report from {} dropped: {MAX_PENDING_PER_TENANT} of the tenant's or {MAX_PENDING} in all already waiting for the compliance monitor",
                    v.service
                );
            });
            continue;
        };
        let (client, slots) = (Arc::clone(&client), Arc::clone(&slots));
        shipping.spawn(
            async move {
                deliver(&client, &slots, tenant, v).await;
                drop(place);
            }
            .with_subscriber(log.clone()),
        );
        // The finished ones are let go as they come.
        while shipping.try_join_next().is_some() {}
    }
    while shipping.join_next().await.is_some() {}
}

/// Sends `v` until the monitor takes it or it is dropped (see the module's
/// doc); holding one of `slots` only while a try is under way (a report
/// waiting to be sent again holds none up).
async fn deliver(client: &ServiceClient, slots: &Semaphore, tenant: String, v: LogViolation) {
    let found = Instant::now();
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
    let mut failed_at_the_monitor = 0u32;
    loop {
        let sent = {
            let Ok(_slot) = slots.acquire().await else {
                return;
            };
            client.send(&call).await
        };
        let Err(e) = sent else { return };
        if reached_the_monitor(&e) {
            failed_at_the_monitor += 1;
        }
        let why = if !worth_another_try(&e) {
            Some("refused")
        } else if failed_at_the_monitor >= MAX_TRIES {
            Some("failed at the monitor too often")
        } else if found.elapsed() >= GIVE_UP_AFTER {
            Some("not taken in time")
        } else {
            None
        };
        if let Some(why) = why {
            // The request id is the caller's: redacted like any text.
            tracing::warn!(tenant = %tenant, request_id = %phi::redact(&request_id), "violation report from {source} dropped ({why}): {e}");
            return;
        }
        let (now, next) = waits(wait, &e);
        tokio::time::sleep(now).await;
        wait = next;
    }
}

/// After a try that failed with `e`, with `wait` the report's current
/// wait: how long to wait now, and the wait after the next failure
/// (doubling up to [`MAX_WAIT`]). A breaker's next probe further off than
/// `wait` is waited for, up to [`MAX_WAIT`].
fn waits(wait: Duration, e: &CallError) -> (Duration, Duration) {
    let until_probe = match e {
        CallError::NotPermitted { retry_after, .. } => *retry_after,
        _ => Duration::ZERO,
    };
    (
        wait.max(until_probe).min(MAX_WAIT),
        (wait * 2).min(MAX_WAIT),
    )
}

/// Is a report that failed with `e` worth sending again? Not when the
/// monitor refused it for good (a 4xx other than 408 and 429: a report it
/// will never take).
fn worth_another_try(e: &CallError) -> bool {
    !matches!(e.status(), Some(s) if (400..500).contains(&s) && s != 408 && s != 429)
}

/// Did the try reach the monitor (and fail there), rather than being
/// refused on our side first (the breaker open, the bulkhead full)?
fn reached_the_monitor(e: &CallError) -> bool {
    !matches!(
        e,
        CallError::NotPermitted { .. } | CallError::BulkheadFull { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::BreakerState;

    fn status(status: u16) -> CallError {
        CallError::Status {
            target: Service::ComplianceMonitor,
            status,
            body: serde_json::Value::Null,
            attempts: 1,
        }
    }

    fn open(retry_after: Duration) -> CallError {
        CallError::NotPermitted {
            target: Service::ComplianceMonitor,
            state: BreakerState::Open,
            retry_after,
        }
    }

    #[test]
    fn only_a_refusal_for_good_is_not_tried_again() {
        for s in [400, 403, 404, 422] {
            assert!(!worth_another_try(&status(s)), "{s}");
        }
        for s in [408, 429, 500, 503] {
            assert!(worth_another_try(&status(s)), "{s}");
        }
        assert!(worth_another_try(&open(Duration::from_secs(2))));
        assert!(reached_the_monitor(&status(503)));
        assert!(!reached_the_monitor(&open(Duration::ZERO)));
    }

    #[test]
    fn the_wait_doubles_to_four_seconds_and_waits_for_a_probe_up_to_that() {
        let ms = Duration::from_millis;
        let mut wait = FIRST_WAIT;
        let mut now = Vec::new();
        for _ in 0..6 {
            let (n, next) = waits(wait, &status(503));
            now.push(n);
            wait = next;
        }
        assert_eq!(now, [250, 500, 1000, 2000, 4000, 4000].map(ms));
        // The breaker's next probe in 1.5 s: waited for; in 30 s: 4 s at most.
        assert_eq!(waits(FIRST_WAIT, &open(ms(1500))).0, ms(1500));
        assert_eq!(waits(FIRST_WAIT, &open(ms(30_000))).0, MAX_WAIT);
    }

    #[test]
    fn a_tenant_has_a_bounded_share_of_the_backlog_given_back_when_done() {
        let backlog = Arc::new(Mutex::new(Backlog::default()));
        let theirs: Vec<Place> = (0..MAX_PENDING_PER_TENANT)
            .map(|_| Backlog::enter(&backlog, "a").expect("room"))
            .collect();
        assert!(
            Backlog::enter(&backlog, "a").is_none(),
            "over the tenant's share"
        );
        let other = Backlog::enter(&backlog, "b");
        assert!(other.is_some(), "another tenant still has room");
        drop(theirs);
        assert!(
            Backlog::enter(&backlog, "a").is_some(),
            "room again once sent"
        );
        drop(other);
        let b = backlog.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!((b.all, b.by_tenant.len()), (0, 0));
    }
}
