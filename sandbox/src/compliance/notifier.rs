//! The compliance monitor's notifications of incidents to business
//! intelligence (a `compliance_incidents` event per incident), and its
//! **notifier**: a notification that did not arrive when the incident was
//! opened (analytics down, slow, its breaker open) is sent again, 0.25 s
//! doubling to 4 s apart, until analytics takes it or 10 minutes have
//! passed (then dropped, with a warning in the monitor's log). An incident
//! stays `notified: false` until one arrives.
//!
//! The incidents waiting are kept in memory, in the order they fell due;
//! a monitor that starts again takes up those its previous run left
//! unnotified (opened within the 10 minutes before it started). Every
//! try carries the incident's key (`incident-<id>`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use crate::client::{Call, Method};
use crate::ctx::Ctx;
use crate::service::Service;

/// How long a notification is tried before it is dropped.
const GIVE_UP_AFTER: Duration = crate::retry::REDELIVER_FOR;

/// The wait before try `n` again (from 0): the mesh's background
/// redelivery, 0.25 s doubling to 4 s.
fn backoff(n: u32) -> Duration {
    crate::retry::REDELIVERY.ceiling(n + 1)
}

/// Tells business intelligence of incident `id` (of `tenant`, about
/// request `request_id`) and, once it took it, marks the incident
/// notified. Whether it arrived.
pub(crate) async fn notify(
    ctx: &Ctx,
    tenant: &str,
    request_id: &str,
    id: i64,
    violation: &str,
    severity: &str,
) -> bool {
    let call = Call::new(
        Service::BusinessIntelligence,
        Method::Post,
        "/events",
        tenant,
        request_id,
    )
    .body(&crate::bi::Batch {
        events: vec![crate::bi::Event {
            dimensions: json!({"violation": violation, "severity": severity}),
            ..crate::bi::Event::of("compliance_incidents", 1.0)
        }],
    })
    .key(format!("incident-{id}"));
    if ctx.client.call(call).await.is_err() {
        return false;
    }
    // Sent: a failure to store that is logged, not sent again (it would
    // count the incident twice).
    if let Err(e) = ctx
        .db
        .execute(
            "UPDATE compliance.incidents SET notified = true WHERE id = $1",
            &[&id],
        )
        .await
    {
        tracing::warn!(tenant = %tenant, incident = id, "incident notified, but not marked so: {e}");
    }
    true
}

/// One incident waiting for its notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Waiting {
    /// When it is tried next (first, so the set is in order of it).
    next: Instant,
    id: i64,
    /// Tries failed so far.
    tries: u32,
    /// When it was first handed over.
    since: Instant,
}

/// The monitor's notifier: sends again the notifications handed over on
/// `unnotified`, and those a previous run of the monitor left (opened
/// before `started`, within [`GIVE_UP_AFTER`]). Runs until aborted.
pub(crate) async fn notifier(
    ctx: Arc<Ctx>,
    mut unnotified: UnboundedReceiver<i64>,
    started: std::time::SystemTime,
) {
    let mut waiting: BTreeSet<Waiting> = BTreeSet::new();
    let now = Instant::now();
    for id in left_by_an_earlier_run(&ctx, started).await {
        waiting.insert(Waiting {
            next: now,
            id,
            tries: 0,
            since: now,
        });
    }
    loop {
        let due = waiting.first().map(|w| w.next);
        let handed = tokio::select! {
            id = unnotified.recv() => match id {
                Some(id) => Some(id),
                None => return,
            },
            () = sleep_until(due) => None,
        };
        let now = Instant::now();
        if let Some(id) = handed {
            waiting.insert(Waiting {
                next: now + backoff(0),
                id,
                tries: 0,
                since: now,
            });
            continue;
        }
        let Some(w) = waiting.pop_first() else {
            continue;
        };
        if try_again(&ctx, w.id).await {
            continue;
        }
        let tries = w.tries + 1;
        if now.duration_since(w.since) >= GIVE_UP_AFTER {
            tracing::warn!(
                incident = w.id,
                "notification of incident {} to business-intelligence dropped after {tries} tries over {:?}",
                w.id,
                GIVE_UP_AFTER
            );
            continue;
        }
        waiting.insert(Waiting {
            next: Instant::now() + backoff(tries),
            tries,
            ..w
        });
    }
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Tries incident `id`'s notification again (read from its row): whether
/// it is done (sent now, notified already, or gone).
async fn try_again(ctx: &Ctx, id: i64) -> bool {
    let row = ctx
        .db
        .query_opt(
            "SELECT tenant, COALESCE(request_id, ''), violation, severity, notified
             FROM compliance.incidents WHERE id = $1",
            &[&id],
        )
        .await;
    match row {
        Ok(Some(r)) if !r.get::<_, bool>(4) => {
            let (tenant, request_id, violation, severity): (String, String, String, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            notify(ctx, &tenant, &request_id, id, &violation, &severity).await
        }
        Ok(_) => true,
        // The database unreachable: tried again later.
        Err(_) => false,
    }
}

/// The incidents an earlier run of the monitor left unnotified: opened
/// before `started` (none of this run's), within [`GIVE_UP_AFTER`].
async fn left_by_an_earlier_run(ctx: &Ctx, started: std::time::SystemTime) -> Vec<i64> {
    let started_ms = started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3);
    let window = GIVE_UP_AFTER.as_secs_f64();
    ctx.db
        .query(
            "SELECT id FROM compliance.incidents
             WHERE NOT notified
               AND opened_at < to_timestamp($1::float8 / 1000)
               AND opened_at > to_timestamp($1::float8 / 1000) - make_interval(secs => $2::float8)
             ORDER BY id",
            &[&started_ms, &window],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waits_double_from_a_quarter_second_to_four() {
        let waits: Vec<u128> = (0..7).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 4000, 4000]);
    }
}
