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

use super::{Call, CallError, CallRecord, Method, PeerAnswer, ServiceClient};
use crate::service::Service;

/// Exchanges of one lane under way at once.
const IN_FLIGHT: usize = 1;

/// Records in one exchange at most.
const MAX_BATCH: usize = 256;

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
    record: Payload,
    /// Told how its exchange went, when the caller awaits it.
    answer: Option<oneshot::Sender<Result<PeerAnswer, CallError>>>,
}

/// What a queued call carries.
enum Payload {
    /// A record, serialized (a JSON object without `request_id`: the
    /// exchange adds it when the record is not the exchange's request's).
    Record(String),
    /// A list's items, joined with the other lists queued.
    Items(Vec<Value>),
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
        let len = match &q.record {
            Payload::Items(items) => items.len(),
            Payload::Record(_) => 1,
        };
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
                record: Payload::record(record),
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
                    record: Payload::Items(items),
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
                    record: Payload::record(&record),
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
                .flat_map(|q| q.record.take_items())
                .collect();
            serde_json::to_vec(&serde_json::json!({ "events": Value::Array(items) }))
                .unwrap_or_default()
        } else {
            records_body(&request_id, &mut batch)
        };
        let mut call = Call::new(
            lane.target,
            Method::Post,
            lane.path.as_str(),
            &lane.tenant,
            &request_id,
        );
        call.body = Some(body.into());
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

impl Payload {
    /// `record` serialized (the wire types are structs of strings, numbers
    /// and lists: they always serialize).
    fn record(record: &impl serde::Serialize) -> Payload {
        Payload::Record(serde_json::to_string(record).unwrap_or_else(|_| "null".into()))
    }

    /// A list's items, taken (a record's lanes never hold lists: one
    /// record, should it be asked, is a list of one).
    fn take_items(&mut self) -> Vec<Value> {
        match std::mem::replace(self, Payload::Items(Vec::new())) {
            Payload::Items(items) => items,
            Payload::Record(text) => serde_json::from_str(&text).into_iter().collect(),
        }
    }

    /// A record's text, taken (a list's lanes never hold records: a list,
    /// should it be asked, is its array's text).
    fn take_text(&mut self) -> String {
        match std::mem::replace(self, Payload::Items(Vec::new())) {
            Payload::Record(text) => text,
            Payload::Items(items) => serde_json::to_string(&items).unwrap_or_default(),
        }
    }
}

/// The body of an exchange of records under `request_id`'s: one alone as
/// it is, several as `{"events": [...]}`, each record of another request
/// naming its own. Assembled from the records' text, not rebuilt as a tree.
fn records_body(request_id: &str, batch: &mut [Queued]) -> Vec<u8> {
    if let [one] = batch {
        return one.record.take_text().into_bytes();
    }
    let mut body = Vec::with_capacity(batch.len() * 256 + 16);
    body.extend_from_slice(b"{\"events\":[");
    for (i, q) in batch.iter_mut().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let record = q.record.take_text();
        if q.request_id == request_id {
            body.extend_from_slice(record.as_bytes());
        } else {
            filed_under(&mut body, &record, &q.request_id);
        }
    }
    body.extend_from_slice(b"]}");
    body
}

/// Appends `record` (a JSON object's text) to `out` with `request_id` set.
fn filed_under(out: &mut Vec<u8>, record: &str, request_id: &str) {
    let id = serde_json::to_string(request_id).unwrap_or_default();
    match record.strip_prefix('{') {
        // The lanes' records carry no `request_id` of their own: it goes
        // first, the record's fields after it.
        Some(rest) if !record.contains("\"request_id\"") => {
            out.extend_from_slice(b"{\"request_id\":");
            out.extend_from_slice(id.as_bytes());
            if rest.trim_start() != "}" {
                out.push(b',');
            }
            out.extend_from_slice(rest.as_bytes());
        }
        // A record whose text names `request_id` anywhere (a peer's error
        // body quoted in a saga event's cause) goes through a tree, which
        // sets the top-level one whatever the text holds.
        _ => {
            let mut value: Value = serde_json::from_str(record).unwrap_or_default();
            if let Value::Object(fields) = &mut value {
                fields.insert("request_id".into(), Value::String(request_id.into()));
            }
            let _ = serde_json::to_writer(&mut *out, &value);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Records;

    fn call(seq: u64) -> CallRecord {
        CallRecord {
            target: "billing-engine".into(),
            method: "POST".into(),
            path: "/claims".into(),
            status: Some(201),
            attempts: 1,
            duration_ms: 3,
            outcome: "ok".into(),
            seq,
            started_at_ms: 5,
            request_id: None,
        }
    }

    fn queued(request_id: &str, record: &CallRecord) -> Queued {
        Queued {
            request_id: request_id.into(),
            key: None,
            record: Payload::record(record),
            answer: None,
        }
    }

    #[test]
    fn a_batch_files_each_record_under_its_own_request() {
        let mut batch = vec![
            queued("req-1", &call(1)),
            queued("req-2", &call(1)),
            queued("req-1", &call(2)),
            queued("req-\"3\"", &call(1)),
        ];
        let body = records_body("req-1", &mut batch);
        let records: Records<CallRecord> =
            serde_json::from_slice(&body).expect("the monitor reads the body");
        let filed: Vec<(String, u64)> = records
            .filed("req-1")
            .into_iter()
            .map(|(request, r)| (request, r.seq))
            .collect();
        assert_eq!(
            filed,
            [
                ("req-1".to_string(), 1),
                ("req-2".to_string(), 1),
                ("req-1".to_string(), 2),
                ("req-\"3\"".to_string(), 1),
            ]
        );
    }

    #[test]
    fn a_record_alone_goes_as_it_is() {
        let mut batch = vec![queued("req-2", &call(7))];
        let body = records_body("req-2", &mut batch);
        assert_eq!(body, serde_json::to_vec(&call(7)).expect("serializes"));
    }
}
