//! Where a request's time goes: a per-request breakdown, off unless
//! [`enable`]d (`sandbox bench --breakdown`, `cargo xtask bench mesh`).
//!
//! While on, the gate runs every request in a task-local [`Spans`]: the
//! pool checkout ([`Part::DbWait`]), the statements ([`Part::Db`]), Redis,
//! the wait for the compliance monitor's audit writer to commit a row, the
//! wait for a bulkhead slot and each peer call add their time to it. The
//! answer carries them as a `Server-Timing` header, and the service keeps
//! one [`Sample`] per request by route ([`Table`], read through
//! `Mesh::breakdown`). Work a request spawns (the background audit of its
//! calls) is not its time and is not counted. Off, each measuring point
//! costs one relaxed atomic load.
//!
//! Parts overlap where a handler waits on several at once (the intake's
//! four syncs run together): their sum may exceed the request's total.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::service::Service;

static ON: AtomicBool = AtomicBool::new(false);

/// Turns the breakdown on for this process's services (it stays on).
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Is the breakdown on?
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// What a request's time is spent on, besides its own work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Queued for a pooled PostgreSQL connection.
    DbWait,
    /// PostgreSQL statements (prepare and run).
    Db,
    /// Redis commands.
    Redis,
    /// The compliance monitor's audit writer: queued, then the batch's
    /// `INSERT` committed.
    AuditWrite,
    /// Queued for a bulkhead slot of a peer (part of that call's time).
    Bulkhead,
    /// A call to a peer, retries and waits included.
    Call(Service),
}

/// Parts tracked: five, then a call per service.
pub const PARTS: usize = 5 + Service::ALL.len();

impl Part {
    /// Its position in [`Spans`].
    pub fn index(self) -> usize {
        match self {
            Part::DbWait => 0,
            Part::Db => 1,
            Part::Redis => 2,
            Part::AuditWrite => 3,
            Part::Bulkhead => 4,
            Part::Call(s) => 5 + s as usize,
        }
    }

    /// Every part, in index order.
    pub fn all() -> [Part; PARTS] {
        let mut all = [Part::DbWait; PARTS];
        for (i, p) in all.iter_mut().enumerate() {
            *p = match i {
                0 => Part::DbWait,
                1 => Part::Db,
                2 => Part::Redis,
                3 => Part::AuditWrite,
                4 => Part::Bulkhead,
                n => Part::Call(Service::ALL[n - 5]),
            };
        }
        all
    }

    /// Its name (`db_wait`, `call:billing-engine`).
    pub fn name(self) -> String {
        match self {
            Part::DbWait => "db_wait".into(),
            Part::Db => "db".into(),
            Part::Redis => "redis".into(),
            Part::AuditWrite => "audit_write".into(),
            Part::Bulkhead => "bulkhead_wait".into(),
            Part::Call(s) => format!("call:{}", s.name()),
        }
    }
}

/// One request's time per part, microseconds, and how many times each was entered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spans {
    /// Time per part.
    pub us: [u32; PARTS],
    /// Entries per part (statements, commands, calls).
    pub n: [u16; PARTS],
    /// Time during which at least one part was under way: the parts'
    /// union (parts a handler waits on at once overlap, and a bulkhead
    /// wait is inside its call, so their sum can exceed the request).
    pub waiting_us: u32,
    /// Parts under way now.
    active: u16,
    /// Since when one has been.
    since: Option<Instant>,
}

tokio::task_local! {
    static CURRENT: RefCell<Spans>;
}

/// `Some(now)` when the breakdown is on: the start of a part, which
/// [`add`] ends.
fn start() -> Option<Instant> {
    if !on() {
        return None;
    }
    let now = Instant::now();
    let _ = CURRENT.try_with(|c| {
        let mut s = c.borrow_mut();
        if s.active == 0 {
            s.since = Some(now);
        }
        s.active = s.active.saturating_add(1);
    });
    Some(now)
}

/// Adds the time since `started` (from [`start`]) to `part` of the
/// current request, if any.
fn add(part: Part, started: Option<Instant>) {
    let Some(started) = started else { return };
    let now = Instant::now();
    let took = now.saturating_duration_since(started);
    let _ = CURRENT.try_with(|c| {
        let mut s = c.borrow_mut();
        let i = part.index();
        s.us[i] = s.us[i].saturating_add(micros(took));
        s.n[i] = s.n[i].saturating_add(1);
        s.active = s.active.saturating_sub(1);
        if s.active == 0
            && let Some(since) = s.since.take()
        {
            s.waiting_us = s
                .waiting_us
                .saturating_add(micros(now.saturating_duration_since(since)));
        }
    });
}

/// Runs `work` as `part` of the current request. Work dropped unfinished
/// (a timeout around it, the request cancelled) counts until it is dropped.
pub async fn measure<T>(part: Part, work: impl std::future::Future<Output = T>) -> T {
    let _under = Under {
        part,
        started: start(),
    };
    work.await
}

/// A part under way: ended when dropped, whether its work finished or not.
struct Under {
    part: Part,
    started: Option<Instant>,
}

impl Drop for Under {
    fn drop(&mut self) {
        add(self.part, self.started);
    }
}

/// Runs `work` (a request) with its own spans, returned with its output.
pub async fn scope<T>(work: impl std::future::Future<Output = T>) -> (T, Spans) {
    CURRENT
        .scope(RefCell::new(Spans::default()), async {
            let out = work.await;
            let spans = CURRENT.with(|c| *c.borrow());
            (out, spans)
        })
        .await
}

/// `path` as a route: each segment holding a digit (an id) as `{id}`.
pub fn route(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.bytes().any(|b| b.is_ascii_digit()) {
                "{id}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// One request as its service saw it.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// From the gate to the answer, microseconds.
    pub total_us: u32,
    /// Its parts.
    pub spans: Spans,
}

impl Sample {
    /// A `Server-Timing` header value: `app` (the total) and each part
    /// entered, milliseconds.
    pub fn server_timing(&self) -> String {
        let mut out = format!("app;dur={:.3}", f64::from(self.total_us) / 1e3);
        for p in Part::all() {
            let i = p.index();
            if self.spans.n[i] > 0 {
                let _ = write!(
                    out,
                    ", {};dur={:.3}",
                    p.name().replace(':', "-"),
                    f64::from(self.spans.us[i]) / 1e3
                );
            }
        }
        out
    }
}

/// Requests kept per route at most (the first ones of a run).
const KEEP_PER_ROUTE: usize = 200_000;

/// A service's samples by route (`POST /claims`).
#[derive(Default)]
pub struct Table {
    rows: Mutex<BTreeMap<String, Vec<Sample>>>,
}

impl Table {
    /// Keeps `sample` under `route`.
    pub fn record(&self, route: &str, total: Duration, spans: Spans) {
        let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        let v = match rows.get_mut(route) {
            Some(v) => v,
            None => rows.entry(route.to_string()).or_default(),
        };
        if v.len() < KEEP_PER_ROUTE {
            v.push(Sample {
                total_us: micros(total),
                spans,
            });
        }
    }

    /// Takes every sample kept so far (the table is emptied).
    pub fn take(&self) -> BTreeMap<String, Vec<Sample>> {
        std::mem::take(&mut *self.rows.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parts_waited_on_at_once_count_once_in_the_waiting() {
        enable();
        let nap = |ms| tokio::time::sleep(Duration::from_millis(ms));
        let ((), spans) = scope(async {
            tokio::join!(
                measure(Part::Db, nap(30)),
                measure(Part::Call(Service::BillingEngine), nap(60)),
            );
            measure(Part::Redis, nap(10)).await;
        })
        .await;
        let sum: u32 = spans.us.iter().sum();
        let longest = spans.us[Part::Call(Service::BillingEngine).index()];
        let redis = spans.us[Part::Redis.index()];
        // The overlap (the 30 ms part, inside the 60 ms one) counts once.
        assert!(spans.waiting_us >= longest + redis, "{spans:?}");
        assert!(spans.waiting_us + 25_000 <= sum, "{spans:?}");
    }

    #[tokio::test]
    async fn a_part_cut_short_ends_where_it_was_dropped() {
        enable();
        let nap = |ms| tokio::time::sleep(Duration::from_millis(ms));
        let ((), spans) = scope(async {
            let cut =
                tokio::time::timeout(Duration::from_millis(20), measure(Part::Db, nap(10_000)));
            let _ = cut.await;
            // The handler's own work after it is not waiting.
            std::thread::sleep(Duration::from_millis(60));
        })
        .await;
        assert_eq!(spans.n[Part::Db.index()], 1, "{spans:?}");
        assert!(spans.waiting_us < 50_000, "{spans:?}");
    }
}
