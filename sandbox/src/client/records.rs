//! The records the services send the compliance monitor, as they go on
//! the wire: one alone, or several of one tenant together
//! (`{"events": [...]}`), each of another request than the exchange's
//! naming its own `request_id`. The lanes ([`super::lanes`]) send them;
//! the monitor's routes take them as [`Records`].

use axum::extract::{FromRequest, Request};
use axum::response::Response;
use serde::de::DeserializeOwned;

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
    /// Attempts made (retries included).
    pub attempts: u32,
    /// How long the call took, retries included.
    pub duration_ms: u64,
    /// The HTTP method.
    pub method: String,
    /// `ok`, or what went wrong.
    pub outcome: String,
    /// The path called.
    pub path: String,
    /// The request it belongs to, when it is not the exchange's own (the
    /// records of several requests of one tenant shipped together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Its number within the request (a gap is a lost audit event).
    pub seq: u64,
    /// When it started, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// The status answered, if any.
    pub status: Option<u16>,
    /// The service called.
    pub target: String,
}

impl Filed for CallRecord {
    fn take_request_id(&mut self) -> Option<String> {
        self.request_id.take()
    }
}

/// The body of `POST /audit/service-calls`.
pub type CallRecords = Records<CallRecord>;

/// `{"events": [...]}`: the batch shape alone, for the fast path.
#[derive(serde::Deserialize)]
struct Batch<T> {
    events: Vec<T>,
}

impl<T: DeserializeOwned> Records<T> {
    /// `body` read the way the derived (untagged) `Deserialize` reads it,
    /// without buffering the document first, for records that are structs
    /// (a JSON object each): `None` when that is not decided in one pass,
    /// for the derived path to answer, rejection included.
    ///
    /// The derived path tries the batch, then one record. A body that is
    /// not an object is left to it (a batch may also be written as an
    /// array). An object without the bytes `"events"` and without escapes
    /// (which might spell it) cannot be a batch; one that has them and
    /// reads as a batch is one; any other is left to the derive.
    fn parse_direct(body: &[u8]) -> Option<Self> {
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            None
        } else if body.windows(8).any(|w| w == b"\"events\"") {
            serde_json::from_slice::<Batch<T>>(body)
                .ok()
                .map(|b| Records::Batch { events: b.events })
        } else if !body.contains(&b'\\') {
            serde_json::from_slice::<T>(body).ok().map(Records::One)
        } else {
            None
        }
    }
}

/// A monitor's route takes its records as `axum::Json<Records<T>>` would,
/// with the same rejections, but reads a well-formed body in one pass: the
/// untagged derive buffers the whole document as a tree before trying each
/// shape, which was 2 % of the mesh's CPU under `sandbox bench`.
impl<S, T> FromRequest<S> for Records<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        crate::json::read_with(req, state, Records::parse_direct).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn derived(body: &str) -> Option<Records<CallRecord>> {
        serde_json::from_str(body).ok()
    }

    #[test]
    fn the_direct_read_agrees_with_the_derived_one() {
        let one = r#"{"target":"billing-engine","method":"POST","path":"/claims","status":201,"attempts":1,"duration_ms":3,"outcome":"ok","seq":1,"started_at_ms":5}"#;
        let named = one.replacen('{', r#"{"request_id":"req-2","#, 1);
        let bodies = [
            one.to_string(),
            format!(r#"{{"events":[{one},{named}]}}"#),
            format!(r#"{{ "events" : [ {one} ] }}"#),
            // Not a record, not a batch: both refuse.
            r#"{"target":"x"}"#.to_string(),
            r#"{"events":[{"target":"x"}]}"#.to_string(),
            // An escaped key: left to the derived path.
            format!(r#"{{"\u0065vents":[{one}]}}"#),
            "[1,".to_string(),
            // A batch as an array: left to the derive.
            format!("[[{one}]]"),
        ];
        for body in bodies {
            let direct = Records::<CallRecord>::parse_direct(body.as_bytes());
            let expected = derived(&body);
            match direct {
                Some(d) => assert_eq!(Some(d), expected, "{body}"),
                // Undecided: the derived path answers, whatever it says.
                None => assert!(
                    expected.is_none() || body.contains('\\'),
                    "a body the derive takes was left undecided: {body}"
                ),
            }
        }
        let batch = Records::<CallRecord>::parse_direct(
            format!(r#"{{"events":[{one},{named}]}}"#).as_bytes(),
        );
        let Some(Records::Batch { events }) = batch else {
            panic!("a batch read as {batch:?}");
        };
        assert_eq!(events[1].request_id.as_deref(), Some("req-2"));
    }
}
