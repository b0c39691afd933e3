//! The tests' client of a running mesh: [`MeshClient`] (one service, one
//! tenant, its credentials), its [`Answer`]s, and what checks each answer
//! ([`AnswerCheck`], the suites' contract check).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::auth::token::{self, Role};
use crate::service::Service;

/// How long the tests' clients keep an idle connection: under the servers'
/// header-read timeout (5 s), and under the keep-alive of common servers.
pub const CLIENT_IDLE: Duration = Duration::from_secs(2);

/// An answer to a [`MeshClient`] request.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: u16,
    /// The body (`null` when empty or not JSON; text bodies as a string).
    pub body: Value,
    /// The `X-Request-ID` the service answered with.
    pub request_id: Option<String>,
    /// The `Retry-After` it answered with, in seconds (a `429` or `503`).
    pub retry_after: Option<u64>,
}

/// What a [`MeshClient`] does with each answer it receives before
/// handing it over: the suites hold every answer to the service's OpenAPI
/// document (and fail the test on a violation).
pub trait AnswerCheck: Send + Sync {
    /// Checks `answer`, received from `service` for `method path`.
    fn check<'a>(
        &'a self,
        service: Service,
        method: &'a reqwest::Method,
        path: &'a str,
        answer: &'a Answer,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;
}

/// How a [`MeshClient`] authenticates.
#[derive(Clone)]
pub enum Credentials {
    /// Signs a fresh token per request with the mesh's secret.
    Secret(Arc<[u8]>),
    /// Sends this bearer token (issued elsewhere, for one tenant).
    Bearer(Arc<str>),
    /// Asks for a fresh token per request (the target's identity
    /// provider, through a command): any tenant, any role.
    Minted(Arc<dyn Minter>),
}

/// Issues bearer tokens: for `service` (the audience), acting for
/// `tenant`, as a person with `role`.
pub trait Minter: Send + Sync {
    /// A fresh token, or why there is none.
    fn mint<'a>(
        &'a self,
        service: Service,
        tenant: &'a str,
        role: Role,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + 'a>>;
}

/// Why a [`MeshClient`] request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request failed on the way (connection, timeout, body).
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    /// No token could be had for it.
    #[error("a token for {service}, tenant `{tenant}`: {why}")]
    Mint {
        /// The token's audience.
        service: Service,
        /// The tenant it acts for.
        tenant: String,
        /// Why.
        why: String,
    },
}

/// Requests [`MeshClient`]s sent again because their connection closed
/// before any answer (see [`connection_retries`]).
static CONNECTION_RETRIES: AtomicU64 = AtomicU64::new(0);

/// How many requests this process's [`MeshClient`]s sent a second time
/// because the pooled connection they went out on was closed before any
/// answer (a keep-alive race, not a failure of the service).
pub fn connection_retries() -> u64 {
    CONNECTION_RETRIES.load(Ordering::Relaxed)
}

/// Was `e` a connection closed (or reset) before the answer began?
fn closed_before_answer(e: &reqwest::Error) -> bool {
    if !e.is_request() && !e.is_connect() {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return true;
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            ) {
                return true;
            }
        }
        source = err.source();
    }
    false
}

/// May this request be sent twice: an idempotent method, or one carrying
/// an idempotency key (HTTP's rule, and the services' own).
fn repeatable(method: &reqwest::Method, headers: &[(&str, &str)]) -> bool {
    method.is_idempotent()
        || headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("idempotency-key"))
}

/// A test's client of one service for one tenant.
#[derive(Clone)]
pub struct MeshClient {
    http: reqwest::Client,
    base: String,
    service: Service,
    tenant: String,
    credentials: Credentials,
    role: Role,
    /// The person its signed tokens name (`sub`), if any.
    subject: Option<Arc<str>>,
    check: Option<Arc<dyn AnswerCheck>>,
}

impl MeshClient {
    /// A client of `service` at `base` (`http://host:port`) for `tenant`.
    pub fn new(
        http: reqwest::Client,
        base: impl Into<String>,
        service: Service,
        tenant: impl Into<String>,
        credentials: Credentials,
    ) -> MeshClient {
        MeshClient {
            http,
            base: base.into(),
            service,
            tenant: tenant.into(),
            credentials,
            role: Role::Admin,
            subject: None,
            check: None,
        }
    }

    /// The same client, passing each answer to `check` first.
    pub fn checked_by(mut self, check: Arc<dyn AnswerCheck>) -> MeshClient {
        self.check = Some(check);
        self
    }

    /// The same client acting as a person with `role` (an admin by
    /// default): its signed tokens carry that role.
    pub fn as_role(mut self, role: Role) -> MeshClient {
        self.role = role;
        self
    }

    /// The same client acting as person `sub` with `role`: its signed
    /// tokens name the person, so that a logout or a role change applies
    /// to them (bearer and minted tokens are sent as they are).
    pub fn as_person(mut self, sub: &str, role: Role) -> MeshClient {
        self.role = role;
        self.subject = Some(sub.into());
        self
    }

    /// The tenant it acts for.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The service it talks to.
    pub fn service(&self) -> Service {
        self.service
    }

    /// Sends a request with a fresh token (and `request_id`, when given).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        request_id: Option<&str>,
    ) -> Result<Answer, RequestError> {
        let headers: Vec<(&str, &str)> = request_id
            .map(|id| ("x-request-id", id))
            .into_iter()
            .collect();
        self.send(method, path, body, &headers).await
    }

    /// Sends a request with a fresh token and extra `headers`
    /// (`idempotency-key`, `x-request-id`, …).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, RequestError> {
        let body = body.map(|b| (b.to_string().into_bytes(), "application/json"));
        self.exchange(method, path, body, headers).await
    }

    /// Sends `body` as is, as `content_type` (malformed JSON, say), with a
    /// fresh token.
    pub async fn send_bytes(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<Answer, RequestError> {
        self.exchange(method, path, Some((body, content_type)), &[])
            .await
    }

    async fn exchange(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, RequestError> {
        // A token per attempt: the services refuse a token used twice.
        let build = |token: String| {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .header("authorization", format!("Bearer {token}"))
                .header("x-tenant-id", &self.tenant)
                .timeout(Duration::from_secs(20));
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            if let Some((bytes, content_type)) = &body {
                req = req
                    .header("content-type", *content_type)
                    .body(bytes.clone());
            }
            req
        };
        let resp = match build(self.token().await?).send().await {
            Ok(resp) => resp,
            // A pooled connection the server closed as the request left:
            // nothing was answered, so a request that may be repeated is,
            // once, on a fresh connection.
            Err(e) if closed_before_answer(&e) && repeatable(&method, headers) => {
                CONNECTION_RETRIES.fetch_add(1, Ordering::Relaxed);
                build(self.token().await?).send().await?
            }
            Err(e) => return Err(e.into()),
        };
        let status = resp.status().as_u16();
        let request_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(if text.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        });
        let answer = Answer {
            status,
            body,
            request_id,
            retry_after,
        };
        if let Some(check) = &self.check {
            check.check(self.service, &method, path, &answer).await;
        }
        Ok(answer)
    }

    /// A token for one request.
    async fn token(&self) -> Result<String, RequestError> {
        Ok(match &self.credentials {
            Credentials::Secret(secret) => match &self.subject {
                Some(sub) => token::sign_person(
                    secret,
                    "test-client",
                    sub,
                    self.role,
                    self.service.name(),
                    &self.tenant,
                    Duration::from_secs(60),
                ),
                None => token::sign_user(
                    secret,
                    "test-client",
                    self.role,
                    self.service.name(),
                    &self.tenant,
                    Duration::from_secs(60),
                ),
            },
            Credentials::Bearer(t) => t.to_string(),
            Credentials::Minted(minter) => minter
                .mint(self.service, &self.tenant, self.role)
                .await
                .map_err(|why| RequestError::Mint {
                    service: self.service,
                    tenant: self.tenant.clone(),
                    why,
                })?,
        })
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Answer, RequestError> {
        self.request(reqwest::Method::GET, path, None, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Answer, RequestError> {
        self.request(reqwest::Method::POST, path, Some(body), None)
            .await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> Result<Answer, RequestError> {
        self.request(reqwest::Method::PUT, path, Some(body), None)
            .await
    }
}
