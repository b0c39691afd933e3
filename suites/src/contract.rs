//! The services' OpenAPI contracts, as the suites hold them to it.
//!
//! A [`Contract`] is one service's OpenAPI 3.1 document: [`Contract::check`]
//! finds the operation a request reached (method and path template) and
//! validates the answer's body against the schema documented for its
//! status (a JSON Schema 2020-12 validator, `jsonschema`). The [`Target`]'s
//! clients check every answer they receive this way, against the document
//! each service serves at `/openapi.json`. [`breaking_changes`] compares a
//! document with an earlier version of it (the checked-in v1 snapshot):
//! a removed path, operation, status or field, a changed type, a field no
//! longer required in an answer or newly required in a request.
//!
//! Violations name the method, path, status, schema and the place in the
//! body (`/claims/0/total_cents`), never the offending value: a body may
//! hold PHI.
//!
//! [`Target`]: crate::Target

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Value, json};

/// Why a document cannot be used as a contract.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// It is not an OpenAPI 3.x document with `paths`.
    #[error("{service}: not an OpenAPI 3 document: {problem}")]
    NotOpenApi {
        /// Whose.
        service: String,
        /// What is wrong.
        problem: String,
    },
}

/// The operation a request reached, as the document names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct OpKey {
    template: String,
    method: String,
    status: String,
}

/// One service's OpenAPI document, with its compiled response schemas.
pub struct Contract {
    service: String,
    doc: Value,
    compiled: Mutex<HashMap<OpKey, Arc<jsonschema::Validator>>>,
}

impl std::fmt::Debug for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contract")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Contract {
    /// `doc`, the OpenAPI document of `service`.
    pub fn new(service: &str, doc: Value) -> Result<Contract, ContractError> {
        let problem = match (doc.get("openapi").and_then(Value::as_str), doc.get("paths")) {
            (Some(v), Some(Value::Object(_))) if v.starts_with("3.") => None,
            (Some(v), _) if !v.starts_with("3.") => Some(format!("`openapi` is {v:?}")),
            (None, _) => Some("no `openapi` version".to_string()),
            _ => Some("no `paths` object".to_string()),
        };
        if let Some(problem) = problem {
            return Err(ContractError::NotOpenApi {
                service: service.to_string(),
                problem,
            });
        }
        Ok(Contract {
            service: service.to_string(),
            doc,
            compiled: Mutex::new(HashMap::new()),
        })
    }

    /// The document.
    pub fn document(&self) -> &Value {
        &self.doc
    }

    /// The path template of the document that `path` (query ignored)
    /// matches: a literal segment beats a `{parameter}`.
    pub fn template_of(&self, path: &str) -> Option<&str> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let segments: Vec<&str> = path.split('/').collect();
        self.doc["paths"]
            .as_object()?
            .keys()
            .filter_map(|t| {
                let parts: Vec<&str> = t.split('/').collect();
                if parts.len() != segments.len() {
                    return None;
                }
                let mut params = 0;
                for (p, s) in parts.iter().zip(&segments) {
                    if p.starts_with('{') && p.ends_with('}') && !s.is_empty() {
                        params += 1;
                    } else if p != s {
                        return None;
                    }
                }
                Some((params, t.as_str()))
            })
            .min()
            .map(|(_, t)| t)
    }

    /// Checks an answer: `status` and `body` to `method path`. `Err` names
    /// what breaks the document (an undocumented route, method or status,
    /// or each place the body breaks its schema).
    pub fn check(&self, method: &str, path: &str, status: u16, body: &Value) -> Result<(), String> {
        let what = format!("{} {method} {path} answered {status}", self.service);
        let lower = method.to_ascii_lowercase();
        let op = self
            .template_of(path)
            .map(|t| (t, &self.doc["paths"][t][&lower]))
            .filter(|(_, op)| op.is_object());
        let Some((template, op)) = op else {
            // An unknown route or method: the service promises a 404 or 405
            // in the one error shape.
            return match status {
                404 | 405 => self.validate(
                    &what,
                    &OpKey {
                        template: String::new(),
                        method: lower,
                        status: "error".into(),
                    },
                    &json!({"$ref": "#/components/schemas/ErrorBody"}),
                    body,
                ),
                _ => Err(format!(
                    "{what}: the operation is not in its OpenAPI document"
                )),
            };
        };
        let code = status.to_string();
        let key = if op["responses"].get(&code).is_some() {
            code
        } else if status >= 400 && op["responses"].get("default").is_some() {
            "default".to_string()
        } else {
            return Err(format!(
                "{what}: status {status} is not documented for {method} {template}"
            ));
        };
        let content = &op["responses"][&key]["content"];
        let Some(schema) = content.get("application/json").map(|c| &c["schema"]) else {
            // Text, an event stream or no body: nothing to hold it to.
            return Ok(());
        };
        let key = OpKey {
            template: template.to_string(),
            method: lower,
            status: key,
        };
        self.validate(&what, &key, schema, body)
    }

    /// Validates `body` against `schema` (compiled once per `key`).
    fn validate(
        &self,
        what: &str,
        key: &OpKey,
        schema: &Value,
        body: &Value,
    ) -> Result<(), String> {
        let validator = self.validator(key, schema)?;
        let problems: Vec<String> = validator
            .iter_errors(body)
            .map(|e| {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() { "/".to_string() } else { at };
                format!("at {at}: {}", e.masked())
            })
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        let name = schema["$ref"]
            .as_str()
            .and_then(|r| r.rsplit('/').next())
            .unwrap_or("its schema");
        Err(format!(
            "{what}: the body breaks {name} (documented for {}): {}",
            key.status,
            problems.join("; ")
        ))
    }

    fn validator(&self, key: &OpKey, schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
        let mut compiled = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = compiled.get(key) {
            return Ok(Arc::clone(v));
        }
        // The schema inside a root that holds the document's components,
        // so its `#/components/schemas/…` references resolve.
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc.get("components").cloned().unwrap_or(Value::Null),
            "allOf": [schema],
        });
        let v = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .map_err(|e| {
                format!(
                    "{}: the schema of {} {} {} does not compile: {e}",
                    self.service, key.method, key.template, key.status
                )
            })?;
        let v = Arc::new(v);
        compiled.insert(key.clone(), Arc::clone(&v));
        Ok(v)
    }
}

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// What `new` breaks of `old` (two versions of one service's document),
/// one line each; empty when `new` is backward compatible. Clients of
/// `old` keep working when every path, operation and documented status is
/// still there, every answer field is still there with the same type (and
/// still required if it was), and a request needs no field it did not.
///
/// ```
/// use serde_json::json;
/// use suites::contract::breaking_changes;
///
/// let v1 = json!({"paths": {"/claims/{id}": {"get": {"responses": {"200": {"content": {
///     "application/json": {"schema": {"type": "object", "required": ["claim_id"],
///         "properties": {"claim_id": {"type": "string"}}}}}}}}}}});
/// let mut v2 = v1.clone();
/// v2["paths"]["/claims/{id}"]["get"]["responses"]["200"]["content"]["application/json"]
///     ["schema"]["properties"]["claim_id"]["type"] = json!("integer");
/// assert!(breaking_changes(&v1, &v1).is_empty());
/// assert_eq!(
///     breaking_changes(&v1, &v2),
///     ["GET /claims/{id} 200.claim_id: type changed from {\"string\"} to {\"integer\"}"]
/// );
/// ```
pub fn breaking_changes(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(paths) = old["paths"].as_object() else {
        return out;
    };
    for (path, item) in paths {
        let Some(now) = new["paths"].get(path) else {
            out.push(format!("{path}: removed"));
            continue;
        };
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            let here = format!("{} {path}", m.to_ascii_uppercase());
            let Some(now_op) = now.get(m) else {
                out.push(format!("{here}: removed"));
                continue;
            };
            if let Some(responses) = op["responses"].as_object() {
                for (status, r) in responses {
                    let Some(now_r) = now_op["responses"].get(status) else {
                        out.push(format!("{here} {status}: no longer documented"));
                        continue;
                    };
                    let schemas = (
                        &r["content"]["application/json"]["schema"],
                        &now_r["content"]["application/json"]["schema"],
                    );
                    if !schemas.0.is_null() {
                        let mut cx = Compare {
                            old,
                            new,
                            out: &mut out,
                            answer: true,
                        };
                        cx.schema(&format!("{here} {status}"), schemas.0, schemas.1, 0);
                    }
                }
            }
            let bodies = (
                &op["requestBody"]["content"]["application/json"]["schema"],
                &now_op["requestBody"]["content"]["application/json"]["schema"],
            );
            if !bodies.0.is_null() {
                let mut cx = Compare {
                    old,
                    new,
                    out: &mut out,
                    answer: false,
                };
                cx.schema(&format!("{here} request"), bodies.0, bodies.1, 0);
            }
        }
    }
    out
}

/// One comparison of an old schema with its new version.
struct Compare<'a> {
    old: &'a Value,
    new: &'a Value,
    out: &'a mut Vec<String>,
    /// An answer (the service writes, clients read) or a request (the
    /// reverse).
    answer: bool,
}

/// `schema` with its `$ref` (and a lone `allOf` member) followed in `doc`.
fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..16 {
        if let Some(r) = schema["$ref"].as_str() {
            let pointer = r.trim_start_matches('#');
            schema = doc.pointer(pointer).unwrap_or(&Value::Null);
        } else if let Some([one]) = schema["allOf"].as_array().map(Vec::as_slice) {
            schema = one;
        } else {
            break;
        }
    }
    schema
}

/// The JSON types a schema admits (empty: any).
fn types(schema: &Value) -> BTreeSet<String> {
    match &schema["type"] {
        Value::String(t) => BTreeSet::from([t.clone()]),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => schema["oneOf"]
            .as_array()
            .map(|alts| alts.iter().flat_map(types).collect())
            .unwrap_or_default(),
    }
}

fn required(schema: &Value) -> BTreeSet<String> {
    schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Compare<'_> {
    fn schema(&mut self, at: &str, old: &Value, new: &Value, depth: usize) {
        if depth > 16 {
            return;
        }
        let (old, new) = (resolve(self.old, old), resolve(self.new, new));
        if new.is_null() {
            self.out.push(format!("{at}: no longer has a JSON schema"));
            return;
        }
        let (ot, nt) = (types(old), types(new));
        // An answer may not send a type its old clients do not expect; a
        // request may not refuse a type its old clients send.
        let narrower = |a: &BTreeSet<String>, b: &BTreeSet<String>| {
            !a.is_empty() && (b.is_empty() || !b.is_subset(a))
        };
        let changed = if self.answer {
            narrower(&ot, &nt)
        } else {
            narrower(&nt, &ot)
        };
        if changed {
            let mut line = format!("{at}: type changed from {ot:?} to {nt:?}");
            if !self.answer {
                line.push_str(" (requests)");
            }
            self.out.push(line);
            return;
        }
        let (or, nr) = (required(old), required(new));
        if let Some(props) = old["properties"].as_object() {
            for (name, p) in props {
                let place = format!("{at}.{name}");
                let Some(np) = new["properties"].get(name) else {
                    if self.answer {
                        self.out.push(format!("{place}: removed"));
                    }
                    continue;
                };
                if self.answer && or.contains(name) && !nr.contains(name) {
                    self.out.push(format!("{place}: no longer required"));
                }
                self.schema(&place, p, np, depth + 1);
            }
        }
        if !self.answer {
            for name in nr.difference(&or) {
                self.out
                    .push(format!("{at}.{name}: newly required in requests"));
            }
        }
        if old.get("items").is_some() {
            self.schema(&format!("{at}[]"), &old["items"], &new["items"], depth + 1);
        }
    }
}

/// The contracts of a target's services, each fetched from its
/// `/openapi.json` on first use; checks every answer a [`Target`]'s
/// clients receive (a violation fails the test, naming it).
///
/// A service that serves no document is not checked (said once on
/// stderr); the contract tests fail for it instead.
///
/// [`Target`]: crate::Target
pub struct Contracts {
    http: reqwest::Client,
    urls: std::collections::BTreeMap<sandbox::Service, String>,
    docs: std::collections::BTreeMap<
        sandbox::Service,
        tokio::sync::OnceCell<Result<Arc<Contract>, String>>,
    >,
}

impl Contracts {
    /// The contracts of the services at `urls`, fetched with `http`.
    pub fn new(
        http: reqwest::Client,
        urls: std::collections::BTreeMap<sandbox::Service, String>,
    ) -> Contracts {
        let docs = urls
            .keys()
            .map(|s| (*s, tokio::sync::OnceCell::new()))
            .collect();
        Contracts { http, urls, docs }
    }

    /// The contract `service` serves (fetched once).
    pub async fn of(&self, service: sandbox::Service) -> Result<Arc<Contract>, String> {
        let Some(cell) = self.docs.get(&service) else {
            return Err(format!("{service}: not part of the target"));
        };
        cell.get_or_init(|| async {
            let url = format!("{}/openapi.json", self.urls[&service]);
            let fetched = async {
                let r = self
                    .http
                    .get(&url)
                    .timeout(std::time::Duration::from_secs(10))
                    .send()
                    .await
                    .map_err(|e| format!("GET {url}: {}", crate::error_chain(&e)))?;
                if !r.status().is_success() {
                    return Err(format!("GET {url}: {}", r.status()));
                }
                let doc: Value = r
                    .json()
                    .await
                    .map_err(|e| format!("GET {url}: not JSON: {e}"))?;
                Contract::new(service.name(), doc)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            }
            .await;
            if let Err(e) = &fetched {
                eprintln!("contract checks are off for {service}: {e}");
            }
            fetched
        })
        .await
        .clone()
    }
}

impl sandbox::mesh::AnswerCheck for Contracts {
    fn check<'a>(
        &'a self,
        service: sandbox::Service,
        method: &'a reqwest::Method,
        path: &'a str,
        answer: &'a sandbox::Answer,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let Ok(contract) = self.of(service).await else {
                return;
            };
            if let Err(violation) =
                contract.check(method.as_str(), path, answer.status, &answer.body)
            {
                panic!("contract violation: {violation}");
            }
        })
    }
}
