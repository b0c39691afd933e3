//! Records on their way to the compliance monitor — the audits of calls
//! made, a saga's events, a request's close — sent together when many are
//! queued at once.
//!
//! Each (route, tenant) is a *lane*: at most [`IN_FLIGHT`] exchanges of
//! it at once; what is queued while they are under way goes together in
//! the next (up to [`MAX_BATCH`] records). Alone, a record goes as it
//! did before batching (its own body, under its request id), so a quiet
//! mesh waits for nothing; under load the records of many requests share
//! one exchange (`{"events": [...]}`, under the first record's request
//! id, each record of another request naming its own `request_id`, which
//! the monitor files it under). A record whose caller awaits it
//! ([`ServiceClient::record`]) is answered when its exchange is: it is
//! recorded, or failed with the exchange's error, before the caller goes
//! on.
//!
//! A peer's route that takes a list (`{"events": [...]}`, analytics'
//! `POST /events`) joins the same way ([`ServiceClient::call_joined`]): the
//! lists queued meanwhile go as one list in one call, whose answer each
//! caller gets and audits as its own call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;
use tokio::sync::oneshot;

use super::{Call, CallError, Method, PeerAnswer, ServiceClient};
use crate::service::Service;

/// Exchanges of one lane under way at once.
const IN_FLIGHT: usize = 1;

/// Records in one exchange at most.
const MAX_BATCH: usize = 256;

/// A record that can be filed under another request than its exchange's:
/// it carries an optional `request_id` on the wire.
pub trait Filed {
    /// Takes the request the record names, if it names one (the monitor
    /// files it there; otherwise under the exchange's).
    fn take_request_id(&mut self) -> Option<String>;
}

/// The body a monitor's route takes: one record, or the records of one
/// tenant queued together (of the exchange's request, or each naming its
/// own).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Records<T> {
    /// Several (`{"events": [...]}`), in the order queued.
    Batch {
        /// The records.
        events: Vec<T>,
    },
    /// One.
    One(T),
}

impl<T: Filed> Records<T> {
    /// Every record with the request it is filed under: its own
    /// `request_id`, or `exchange`'s.
    pub fn filed(self, exchange: &str) -> Vec<(String, T)> {
        let all = match self {
            Records::Batch { events } => events,
            Records::One(one) => vec![one],
        };
        all.into_iter()
            .map(|mut r| {
                let request_id = r.take_request_id().unwrap_or_else(|| exchange.to_string());
                (request_id, r)
            })
            .collect()
    }
}

/// One call a service made, as it reports it to the compliance monitor
/// (`POST /audit/service-calls`), numbered within its request id.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CallRecord {
    /// The service called.
    pub target: String,
    /// The HTTP method.
    pub method: String,
    /// The path called.
    pub path: String,
    /// The status answered, if any.
    pub status: Option<u16>,
    /// Attempts made (retries included).
    pub attempts: u32,
    /// How long the call took, retries included.
    pub duration_ms: u64,
    /// `ok`, or what went wrong.
    pub outcome: String,
    /// Its number within the request (a gap is a lost audit event).
    pub seq: u64,
    /// When it started, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// The request it belongs to, when it is not the exchange's own (the
    /// records of several requests of one tenant shipped together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Filed for CallRecord {
    fn take_request_id(&mut self) -> Option<String> {
        self.request_id.take()
    }
}

/// The body of `POST /audit/service-calls`.
pub type CallRecords = Records<CallRecord>;

/// Which bulkhead a lane's exchanges hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Through {
    /// The background audits' (nobody waits for them).
    Audits,
    /// The monitor's, as the requests' own calls (a caller awaits them).
    Peer,
}

/// How a lane's queued bodies make one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Join {
    /// Records filed by request: one alone as it is, several as
    /// `{"events": [...]}`, each of another request naming its own.
    Records,
    /// Lists: every queued list's items in one `{"events": [...]}`.
    Lists,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LaneKey {
    target: Service,
    path: String,
    tenant: String,
    through: Through,
    join: Join,
}

/// A record waiting for its exchange.
struct Queued {
    request_id: String,
    /// Its idempotency key (the exchange's is its first record's).
    key: Option<String>,
    record: Value,
    /// Told how its exchange went, when the caller awaits it.
    answer: Option<oneshot::Sender<Result<PeerAnswer, CallError>>>,
}

#[derive(Default)]
struct Lane {
    queued: Vec<Queued>,
    sending: usize,
}

/// A client's lanes; a lane is forgotten once it is idle, so the map holds
/// only the tenants sending now.
#[derive(Default)]
pub(super) struct Lanes(Mutex<HashMap<LaneKey, Lane>>);

impl Lanes {
    /// Queues `q`; `Some` is a batch for the caller to send, when the lane
    /// had room for another exchange.
    fn queue(&self, key: &LaneKey, q: Queued) -> Option<Vec<Queued>> {
        let mut lanes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let lane = lanes.entry(key.clone()).or_default();
        lane.queued.push(q);
        if lane.sending >= IN_FLIGHT {
            return None;
        }
        lane.sending += 1;
        Some(take_batch(lane))
    }

    /// The lane's next batch once an exchange is done, or `None` (the
    /// exchange's slot freed) when nothing is queued.
    fn next(&self, key: &LaneKey) -> Option<Vec<Queued>> {
        let mut lanes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let lane = lanes.get_mut(key)?;
        if lane.queued.is_empty() {
            lane.sending = lane.sending.saturating_sub(1);
            if lane.sending == 0 {
                lanes.remove(key);
            }
            return None;
        }
        Some(take_batch(lane))
    }
}

/// Items in one joined list at most (below analytics' 1000 a call; a
/// list longer alone still goes, alone).
const MAX_ITEMS: usize = 500;

/// The next exchange's share of the queue: up to [`MAX_BATCH`] records,
/// and lists of [`MAX_ITEMS`] items in all.
fn take_batch(lane: &mut Lane) -> Vec<Queued> {
    let mut n = 0;
    let mut items = 0;
    for q in lane.queued.iter().take(MAX_BATCH) {
        let len = q.record.as_array().map_or(1, Vec::len);
        if n > 0 && items + len > MAX_ITEMS {
            break;
        }
        n += 1;
        items += len;
    }
    lane.queued
        .drain(..n.max(1).min(lane.queued.len()))
        .collect()
}

impl ServiceClient {
    /// Sends `record` to the compliance monitor's `path` for `tenant`
    /// under `request_id`, with the records other requests of the tenant
    /// queue meanwhile, and waits until its exchange is answered: `Ok` once
    /// the monitor has it.
    pub async fn record(
        self: &Arc<Self>,
        path: &str,
        tenant: &str,
        request_id: &str,
        key: String,
        record: &impl serde::Serialize,
    ) -> Result<(), CallError> {
        let (tx, rx) = oneshot::channel();
        let lane = LaneKey {
            target: Service::ComplianceMonitor,
            path: path.to_string(),
            tenant: tenant.to_string(),
            through: Through::Peer,
            join: Join::Records,
        };
        self.queue(
            lane,
            Queued {
                request_id: request_id.to_string(),
                key: Some(key),
                // The wire types are structs of strings, numbers and
                // lists: they always serialize.
                record: serde_json::to_value(record).unwrap_or_default(),
                answer: Some(tx),
            },
        );
        let answered =
            crate::timing::measure(crate::timing::Part::Call(Service::ComplianceMonitor), rx);
        answered
            .await
            .unwrap_or_else(|_| Err(dropped(Service::ComplianceMonitor)))
            .map(|_| ())
    }

    /// Makes `call`, whose body is `{"events": items}`, together with the
    /// calls to the same peer, route and tenant that other requests make
    /// meanwhile: their items go in one list, in one exchange. Each caller
    /// gets the exchange's answer and audits it as its own call (numbered
    /// in its request). For a route that takes a list and answers for it
    /// as a whole.
    pub async fn call_joined(
        self: &Arc<Self>,
        call: &Call<'_>,
        items: Vec<Value>,
    ) -> Result<PeerAnswer, CallError> {
        let (tx, rx) = oneshot::channel();
        let lane = LaneKey {
            target: call.target,
            path: call.path.clone(),
            tenant: call.tenant.to_string(),
            through: Through::Peer,
            join: Join::Lists,
        };
        let target = call.target;
        let sending = async move {
            self.queue(
                lane,
                Queued {
                    request_id: call.request_id.to_string(),
                    key: call.idempotency_key.clone(),
                    record: Value::Array(items),
                    answer: Some(tx),
                },
            );
            rx.await.unwrap_or_else(|_| Err(dropped(target)))
        };
        let (result, audit) = self.audited(call, sending).await;
        if let Some(record) = audit {
            self.ship(call.tenant, call.request_id, vec![record]);
        }
        result
    }

    /// Hands calls' audit records to the monitor's `/audit/service-calls`
    /// lane of `tenant`, in the background, through the audits' own
    /// bulkhead: the calls of many requests made meanwhile are audited in
    /// one exchange.
    pub fn ship(self: &Arc<Self>, tenant: &str, request_id: &str, records: Vec<CallRecord>) {
        let lane = LaneKey {
            target: Service::ComplianceMonitor,
            path: "/audit/service-calls".to_string(),
            tenant: tenant.to_string(),
            through: Through::Audits,
            join: Join::Records,
        };
        for record in records {
            self.queue(
                lane.clone(),
                Queued {
                    request_id: request_id.to_string(),
                    key: None,
                    record: serde_json::to_value(&record).unwrap_or_default(),
                    answer: None,
                },
            );
        }
    }

    fn queue(self: &Arc<Self>, lane: LaneKey, q: Queued) {
        let Some(batch) = self.lanes.queue(&lane, q) else {
            return;
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut batch = batch;
            loop {
                this.exchange(&lane, batch).await;
                match this.lanes.next(&lane) {
                    Some(next) => batch = next,
                    None => return,
                }
            }
        });
    }

    /// Sends one batch and tells its awaiting callers how it went.
    async fn exchange(&self, lane: &LaneKey, mut batch: Vec<Queued>) {
        let Some(first) = batch.first() else { return };
        let request_id = first.request_id.clone();
        let key = first.key.as_ref().map(|k| match batch.len() {
            1 => k.clone(),
            n => format!("{k}+{}", n - 1),
        });
        let body = if lane.join == Join::Lists {
            let items = batch
                .iter_mut()
                .flat_map(|q| match std::mem::take(&mut q.record) {
                    Value::Array(items) => items,
                    other => vec![other],
                })
                .collect();
            serde_json::json!({ "events": Value::Array(items) })
        } else if batch.len() == 1 {
            std::mem::take(&mut batch[0].record)
        } else {
            let events = batch
                .iter_mut()
                .map(|q| {
                    let mut record = std::mem::take(&mut q.record);
                    if q.request_id != request_id
                        && let Value::Object(fields) = &mut record
                    {
                        fields.insert(
                            "request_id".to_string(),
                            Value::String(q.request_id.clone()),
                        );
                    }
                    record
                })
                .collect();
            serde_json::json!({ "events": Value::Array(events) })
        };
        let mut call = Call::new(
            lane.target,
            Method::Post,
            lane.path.as_str(),
            &lane.tenant,
            &request_id,
        )
        .json(body);
        call.idempotency_key = key;
        let bulkhead = match lane.through {
            Through::Audits => &self.audits,
            Through::Peer => &self.bulkheads[&lane.target],
        };
        let result = self.send_through(&call, bulkhead).await;
        for q in batch {
            if let Some(answer) = q.answer {
                let _ = answer.send(result.clone());
            }
        }
    }
}

/// The answer to a caller whose exchange was dropped unanswered.
fn dropped(target: Service) -> CallError {
    CallError::Connection {
        target,
        message: "the exchange was dropped before it was answered".into(),
        attempts: 0,
        maybe_delivered: true,
    }
}
