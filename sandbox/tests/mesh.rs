//! The mesh's own tests, on real PostgreSQL and Redis over real sockets:
//! the claim saga and its compensation, breaker transitions on an injected
//! clock, the retry policy, token checks, tenant isolation, PHI in logs,
//! stop/restart, a chaos proxy in front of a service, and the `up` binary.
//!
//! Tests that break a service (faults that trip breakers, stops) start a
//! mesh of their own on a fresh database; the others share the run's mesh
//! and keep apart by tenant.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use fixtures::chaos::{ChaosProxy, Fault, FaultKind};
use fixtures::services::{RedisConn, Resp};
use fixtures::{Postgres, Redis, Scenario, TestDb};
use harness::service_test;
use sandbox::breaker::{BreakerConfig, BreakerState};
use sandbox::client::{Call, CallError, ClientConfig, Method, ServiceClient};
use sandbox::clock::{ManualClock, SystemClock};
use sandbox::metrics::ServiceMetrics;
use sandbox::retry::RetryPolicy;
use sandbox::token::{self, Claims};
use sandbox::{FaultPlan, Mesh, MeshClient, MeshConfig, Service, Tenant};
use serde_json::{Value, json};

/// Registers the scenario's patient at the API; returns the patient id.
async fn intake(api: &MeshClient, s: &Scenario) -> String {
    let r = api
        .post(
            "/patients",
            &json!({"patient": s.patient, "coverage": s.coverage}),
        )
        .await
        .expect("intake");
    assert_eq!(r.status, 201, "intake: {}", r.body);
    r.body["patient_id"]
        .as_str()
        .expect("patient_id")
        .to_string()
}

fn visit_body(patient_id: &str, s: &Scenario) -> Value {
    json!({"patient_id": patient_id, "visit": s.visit})
}

async fn db(mesh: &Mesh) -> tokio_postgres::Client {
    sandbox::store::connect(&mesh.config().database_url)
        .await
        .expect("connect to the mesh's database")
}

/// The one value the query `sql` selects (the row must exist).
async fn one<T: tokio_postgres::types::FromSqlOwned>(
    db: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> T {
    match db.query_one(sql, params).await {
        Ok(row) => row.get(0),
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// The saga events of a request, in order, as `event_type:step`.
async fn saga_trail(mesh: &Mesh, tenant: &str, request_id: &str) -> Vec<String> {
    let monitor = mesh.client(Service::ComplianceMonitor, tenant);
    let r = monitor
        .get(&format!("/audit?request_id={request_id}&kind=saga_event"))
        .await
        .expect("audit query");
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["event_type"].as_str().unwrap_or("?"),
                e["detail"]["step"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// A mesh of the test's own, on a fresh database, with `tune` applied.
async fn own_mesh(db: &TestDb, redis: &Redis, tune: impl FnOnce(&mut MeshConfig)) -> Mesh {
    let mut config = MeshConfig::for_tests(&db.url, redis.addr, 7);
    tune(&mut config);
    Mesh::start(config).await.expect("start a mesh")
}

/// Polls `check` every 50 ms for up to 5 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

mod saga {
    use super::*;

    /// Intake then a visit: the claim's rows are in PostgreSQL, the
    /// eligibility answer is in Redis with a TTL, the saga's events are in
    /// the audit trail under the visit's request id, in order.
    #[service_test(integration, e2e, real_services, audit, timeout = "30s")]
    async fn intake_and_visit_create_a_claim(mesh: &Mesh, tenant: Tenant, s: Scenario) {
        let api = mesh.client(Service::HealthcareApi, &tenant);
        let patient_id = intake(&api, &s).await;
        let r = api
            .post("/visits", &visit_body(&patient_id, &s))
            .await
            .expect("visit");
        assert_eq!(r.status, 201, "visit: {}", r.body);
        let claim_id = r.body["claim_id"].as_str().expect("claim_id");
        let verification_id = r.body["verification_id"].as_str().expect("verification_id");
        let request_id = r.request_id.clone().expect("X-Request-ID answered");

        let db = db(mesh).await;
        let claim = db
            .query_one(
                "SELECT tenant, patient_id, verification_id, status, total_cents FROM billing.claims WHERE id = $1",
                &[&claim_id],
            )
            .await
            .expect("the claim's row");
        assert_eq!(claim.get::<_, String>(0), tenant.0);
        assert_eq!(claim.get::<_, String>(1), patient_id);
        assert_eq!(claim.get::<_, String>(2), verification_id);
        assert_eq!(claim.get::<_, String>(3), "submitted");
        let expected: u64 = s.visit.lines.iter().map(|l| l.charge_cents).sum();
        assert_eq!(claim.get::<_, i64>(4) as u64, expected);
        let status: String = one(
            &db,
            "SELECT status FROM insurance.verifications WHERE id = $1",
            &[&verification_id],
        )
        .await;
        assert_eq!(status, "active");
        let visit: String = one(
            &db,
            "SELECT status FROM api.visits WHERE claim_id = $1",
            &[&claim_id],
        )
        .await;
        assert_eq!(visit, "claimed");
        // Synced to the four services that hold patient data.
        for schema in ["billing", "insurance", "doctor", "compliance"] {
            let n: i64 = one(
                &db,
                &format!(
                    "SELECT count(*) FROM {schema}.patients WHERE tenant = $1 AND patient_id = $2"
                ),
                &[&tenant.0, &patient_id],
            )
            .await;
            assert_eq!(n, 1, "patient copy in {schema}");
        }

        // The eligibility answer is cached, with a TTL.
        let procs: Vec<String> = s
            .visit
            .lines
            .iter()
            .map(|l| l.procedure_code.to_string())
            .collect();
        let key = format!(
            "{}{}",
            mesh.config().redis_prefix,
            sandbox::insurance::eligibility_key(
                &tenant,
                s.coverage.payer.id,
                &s.coverage.member_id,
                &s.visit.date_of_service.to_string(),
                &procs
            )
        );
        let mut redis = RedisConn::connect(mesh.config().redis)
            .await
            .expect("redis");
        let ttl = redis.cmd(&["PTTL", &key]).await.expect("PTTL");
        match ttl {
            Resp::Int(ms) => assert!(
                ms > 0 && ms <= 300_000,
                "eligibility cached with TTL {ms} ms"
            ),
            other => panic!("PTTL: {other:?}"),
        }

        // The saga's events, in order, under the visit's request id.
        assert_eq!(
            saga_trail(mesh, &tenant, &request_id).await,
            [
                "saga_started:claim",
                "step_completed:verify_insurance",
                "step_completed:create_claim",
                "saga_completed:claim"
            ]
        );
        // The API's calls are audited too (in the background).
        let monitor = mesh.client(Service::ComplianceMonitor, &tenant);
        eventually("service calls audited", || async {
            let r = monitor
                .get(&format!("/audit?request_id={request_id}&kind=service_call"))
                .await
                .expect("audit");
            let targets: Vec<&str> = r.body["events"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e["detail"]["target"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            [
                "insurance-verification",
                "billing-engine",
                "business-intelligence",
            ]
            .iter()
            .all(|t| targets.contains(t))
        })
        .await;
        // Analytics recorded.
        let bi = mesh.client(Service::BusinessIntelligence, &tenant);
        let agg = bi
            .get("/aggregates?metric=claims_created")
            .await
            .expect("bi");
        assert_eq!(agg.body["aggregates"][0]["count"], 1, "{}", agg.body);
    }

    /// Billing refuses the claim (a bad NPI check digit): 422 with billing's
    /// field errors; the verification is cancelled (compensation) and both
    /// the failure and the compensation are in the audit trail; no claim.
    #[service_test(integration, real_services, audit, timeout = "30s")]
    async fn a_refused_claim_cancels_the_verification(mesh: &Mesh, tenant: Tenant, s: Scenario) {
        let api = mesh.client(Service::HealthcareApi, &tenant);
        let patient_id = intake(&api, &s).await;
        let mut body = visit_body(&patient_id, &s);
        let npi = s.visit.rendering_npi.clone();
        let last = npi.as_bytes()[9] - b'0';
        let bad = format!("{}{}", &npi[..9], (last + 1) % 10);
        body["visit"]["rendering_npi"] = json!(bad);
        let r = api.post("/visits", &body).await.expect("visit");
        assert_eq!(r.status, 422, "{}", r.body);
        assert_eq!(r.body["failed_step"], "create_claim");
        assert_eq!(r.body["cause"]["body"]["fields"][0]["field"], "npi");
        assert_eq!(
            r.body["cause"]["body"]["fields"][0]["code"],
            "npi_check_digit"
        );
        assert_eq!(
            r.body["compensations"],
            json!([{"step": "verify_insurance", "outcome": "completed"}])
        );
        let db = db(mesh).await;
        let cancelled: i64 = one(&db, "SELECT count(*) FROM insurance.verifications WHERE tenant = $1 AND status = 'cancelled' AND cancelled_at IS NOT NULL", &[&tenant.0]).await;
        assert_eq!(cancelled, 1);
        let claims: i64 = one(
            &db,
            "SELECT count(*) FROM billing.claims WHERE tenant = $1",
            &[&tenant.0],
        )
        .await;
        assert_eq!(claims, 0);
        let request_id = r.request_id.expect("request id");
        assert_eq!(
            saga_trail(mesh, &tenant, &request_id).await,
            [
                "saga_started:claim",
                "step_completed:verify_insurance",
                "saga_failed:create_claim",
                "compensation_completed:verify_insurance"
            ]
        );
    }

    /// Billing down hard (every request 503): the claim step is retried
    /// (it carries an idempotency key), then fails; the verification is
    /// cancelled and the compensation audited.
    #[service_test(integration, real_services, resilience, timeout = "30s")]
    async fn a_failing_billing_engine_is_compensated(db: TestDb, redis: &Redis, s: Scenario) {
        let mesh = own_mesh(&db, redis, |c| {
            c.client.retry = RetryPolicy {
                max_attempts: 3,
                base: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
            };
        })
        .await;
        let api = mesh.client(Service::HealthcareApi, "t1");
        let patient_id = intake(&api, &s).await;
        mesh.inject(
            Service::BillingEngine,
            &FaultPlan {
                fail_next: 100,
                status: Some(503),
                path_prefix: Some("/claims".into()),
                ..FaultPlan::default()
            },
        )
        .await
        .expect("inject");
        let r = api
            .post("/visits", &visit_body(&patient_id, &s))
            .await
            .expect("visit");
        assert_eq!(r.status, 502, "{}", r.body);
        assert_eq!(r.body["failed_step"], "create_claim");
        assert_eq!(r.body["cause"]["status"], 503);
        assert_eq!(r.body["compensations"][0]["outcome"], "completed");
        assert_eq!(
            mesh.counter(
                Service::HealthcareApi,
                "client_retries_total",
                "target=\"billing-engine\""
            ),
            2,
            "three attempts in all"
        );
        let ins = mesh.client(Service::InsuranceVerification, "t1");
        let vid = sandbox_verification_of(&mesh, "t1")
            .await
            .expect("a verification");
        let v = ins
            .get(&format!("/verifications/{vid}"))
            .await
            .expect("read");
        assert_eq!(v.body["status"], "cancelled");
        let request_id = r.request_id.expect("request id");
        let trail = saga_trail(&mesh, "t1", &request_id).await;
        assert_eq!(
            trail.last().map(String::as_str),
            Some("compensation_completed:verify_insurance")
        );
    }

    async fn sandbox_verification_of(mesh: &Mesh, tenant: &str) -> Option<String> {
        db(mesh)
            .await
            .query_opt(
                "SELECT id FROM insurance.verifications WHERE tenant = $1",
                &[&tenant],
            )
            .await
            .ok()
            .flatten()
            .map(|r| r.get(0))
    }

    /// A repeated create with the same idempotency key returns the same
    /// claim; a second identical eligibility question is answered from
    /// the cache.
    #[service_test(integration, real_services, api_contract, timeout = "20s")]
    async fn idempotency_keys_and_the_eligibility_cache(mesh: &Mesh, tenant: Tenant, s: Scenario) {
        let billing = mesh.client(Service::BillingEngine, &tenant);
        let claim = json!({
            "patient_id": "pat-x",
            "verification_id": "ver-x",
            "npi": s.visit.rendering_npi,
            "diagnoses": s.visit.diagnoses.iter().map(|d| d.code).collect::<Vec<_>>(),
            "procedures": [{"code": "99213", "charge_cents": 12500}],
        });
        let send = |key: &'static str| {
            let billing = billing.clone();
            let claim = claim.clone();
            async move {
                let token = mesh.token(
                    Service::BillingEngine,
                    billing.tenant(),
                    Duration::from_secs(60),
                );
                reqwest::Client::new()
                    .post(format!("{}/claims", mesh.url(Service::BillingEngine)))
                    .header("authorization", format!("Bearer {token}"))
                    .header("x-tenant-id", billing.tenant())
                    .header("idempotency-key", key)
                    .json(&claim)
                    .send()
                    .await
                    .expect("create")
            }
        };
        let first = send("k1").await;
        assert_eq!(first.status(), 201);
        let first: Value = first.json().await.expect("json");
        let again = send("k1").await;
        assert_eq!(again.status(), 200);
        let again: Value = again.json().await.expect("json");
        assert_eq!(again["claim_id"], first["claim_id"]);
        assert_eq!(again["replayed"], true);
        let other: Value = send("k2").await.json().await.expect("json");
        assert_ne!(other["claim_id"], first["claim_id"]);

        let ins = mesh.client(Service::InsuranceVerification, &tenant);
        let q = json!({
            "patient_id": "pat-x", "payer_id": s.coverage.payer.id,
            "member_id": s.coverage.member_id, "effective": s.coverage.effective.to_string(),
            "date_of_service": s.visit.date_of_service.to_string(), "procedures": ["99213"],
        });
        let a = ins.post("/verify", &q).await.expect("verify");
        let b = ins.post("/verify", &q).await.expect("verify");
        assert_eq!((a.status, b.status), (201, 201));
        assert_eq!(a.body["cached"], false);
        assert_eq!(b.body["cached"], true);
        assert_ne!(a.body["verification_id"], b.body["verification_id"]);
    }
}

mod resilience {
    use super::*;

    /// The API's breaker for billing on an injected clock: closed → open
    /// after the failure rate reaches the threshold (calls then refused
    /// without reaching billing, `/health` shows it) → half-open once the
    /// wait has passed on the clock → closed after a successful probe.
    #[service_test(
        integration,
        real_services,
        resilience,
        circuit_breaker,
        timeout = "30s"
    )]
    async fn the_breaker_opens_refuses_and_recovers_on_an_injected_clock(
        db: TestDb,
        redis: &Redis,
        s: Scenario,
    ) {
        let clock = ManualClock::new();
        let mesh = own_mesh(&db, redis, |c| {
            c.clock = Arc::new(clock.clone());
            c.client.retry.max_attempts = 1;
            c.client.breaker = BreakerConfig {
                window_size: 4,
                failure_rate_threshold: 50.0,
                minimum_calls: 4,
                open_wait: Duration::from_secs(30),
                half_open_calls: 1,
            };
        })
        .await;
        let api = mesh.client(Service::HealthcareApi, "t1");
        let patient_id = intake(&api, &s).await;
        let body = visit_body(&patient_id, &s);
        let fail_claims = FaultPlan {
            fail_next: 2,
            status: Some(500),
            path_prefix: Some("/claims".into()),
            ..FaultPlan::default()
        };
        // Success, success (the intake's sync is not billing's /claims):
        // billing's window holds the sync call; two good visits.
        for _ in 0..1 {
            assert_eq!(api.post("/visits", &body).await.expect("visit").status, 201);
        }
        assert_eq!(
            mesh.breaker_state(Service::BillingEngine),
            Some(BreakerState::Closed)
        );
        mesh.inject(Service::BillingEngine, &fail_claims)
            .await
            .expect("inject");
        // Window: sync ok, claim ok, claim fail, claim fail → 2/4 = 50% → open.
        for _ in 0..2 {
            assert_eq!(api.post("/visits", &body).await.expect("visit").status, 502);
        }
        assert_eq!(
            mesh.breaker_state(Service::BillingEngine),
            Some(BreakerState::Open)
        );
        let refused = api.post("/visits", &body).await.expect("visit");
        assert_eq!(refused.status, 503, "{}", refused.body);
        let cause = refused.body["cause"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(cause.contains("circuit breaker open"), "{cause}");
        assert_eq!(
            mesh.counter(Service::BillingEngine, "faults_injected_total", ""),
            2,
            "the refused call never reached billing"
        );
        let health = mesh
            .client(Service::HealthcareApi, "t1")
            .get("/health")
            .await
            .expect("health");
        assert_eq!(
            health.body["dependencies"]["billing-engine"]["circuit_breaker"],
            "open"
        );
        assert_eq!(health.body["status"], "degraded");
        // Not yet: 29 s on the clock.
        clock.advance(Duration::from_secs(29));
        assert_eq!(api.post("/visits", &body).await.expect("visit").status, 503);
        // 30 s: a probe is let through; it succeeds (no faults left): closed.
        clock.advance(Duration::from_secs(1));
        let probe = api.post("/visits", &body).await.expect("visit");
        assert_eq!(probe.status, 201, "{}", probe.body);
        assert_eq!(
            mesh.breaker_state(Service::BillingEngine),
            Some(BreakerState::Closed)
        );
    }

    fn client_for(
        mesh: &Mesh,
        retry: RetryPolicy,
        attempt_timeout: Duration,
    ) -> Arc<ServiceClient> {
        let routes = Arc::new(RwLock::new(
            mesh.addrs()
                .iter()
                .map(|(s, a)| (*s, *a))
                .collect::<HashMap<_, _>>(),
        ));
        Arc::new(ServiceClient::new(
            "test-client",
            routes,
            ClientConfig {
                retry,
                attempt_timeout,
                call_timeout: Duration::from_secs(5),
                // This test is about retries: a breaker that will not open.
                breaker: BreakerConfig::default(),
                ..ClientConfig::default()
            },
            mesh.config().secret.clone().into(),
            Arc::new(SystemClock),
            1,
            Arc::new(ServiceMetrics::default()),
        ))
    }

    /// The retry policy over the wire: a `POST` without an idempotency key
    /// is not repeated; with one, transient failures are retried; a `422`
    /// is never retried; a `GET` is.
    #[service_test(integration, real_services, resilience, retry, timeout = "30s")]
    async fn only_repeatable_requests_are_retried(db: TestDb, redis: &Redis) {
        let mesh = own_mesh(&db, redis, |_| {}).await;
        let policy = RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(2),
            max_delay: Duration::from_millis(10),
        };
        let client = client_for(&mesh, policy, Duration::from_secs(2));
        let fail = |n| FaultPlan {
            fail_next: n,
            status: Some(503),
            ..FaultPlan::default()
        };
        let event = json!({"events": [{"metric": "m", "value": 1}]});
        let post = |key: Option<&str>| {
            let mut c = Call::new(
                Service::BusinessIntelligence,
                Method::Post,
                "/events",
                "t1",
                "req-retry",
            )
            .json(event.clone());
            if let Some(k) = key {
                c = c.key(k);
            }
            c
        };
        mesh.inject(Service::BusinessIntelligence, &fail(1))
            .await
            .expect("inject");
        match client.send(&post(None)).await {
            Err(CallError::Status {
                status: 503,
                attempts: 1,
                ..
            }) => {}
            other => panic!("a POST without a key must not be retried: {other:?}"),
        }
        mesh.inject(Service::BusinessIntelligence, &fail(2))
            .await
            .expect("inject");
        let ok = client
            .send(&post(Some("k1")))
            .await
            .expect("retried to success");
        assert_eq!(ok.attempts, 3);
        mesh.inject(Service::BusinessIntelligence, &fail(2))
            .await
            .expect("inject");
        let get = Call::new(
            Service::BusinessIntelligence,
            Method::Get,
            "/aggregates",
            "t1",
            "req-retry",
        );
        assert_eq!(client.send(&get).await.expect("GET retried").attempts, 3);
        mesh.inject(Service::BusinessIntelligence, &fail(5))
            .await
            .expect("inject");
        match client.send(&post(Some("k2"))).await {
            Err(CallError::Status {
                status: 503,
                attempts: 3,
                ..
            }) => {}
            other => panic!("three attempts, then the failure: {other:?}"),
        }
        mesh.clear_faults(Service::BusinessIntelligence)
            .await
            .expect("clear");
        let bad = Call::new(
            Service::BusinessIntelligence,
            Method::Post,
            "/events",
            "t1",
            "req-retry",
        )
        .json(json!({"events": [{"metric": "", "value": 1}]}))
        .key("k3");
        match client.send(&bad).await {
            Err(CallError::Status {
                status: 422,
                attempts: 1,
                ..
            }) => {}
            other => panic!("a 422 is final: {other:?}"),
        }
    }

    /// A chaos proxy in front of billing: latency beyond the per-attempt
    /// timeout fails the claim step with a timeout (compensated); without
    /// the fault the same visit goes through the proxy.
    #[service_test(integration, real_services, resilience, chaos, timeout = "30s")]
    async fn a_slow_link_to_billing_times_out_and_is_compensated(
        db: TestDb,
        redis: &Redis,
        s: Scenario,
    ) {
        let mesh = own_mesh(&db, redis, |c| {
            c.client.attempt_timeout = Duration::from_millis(300);
            c.client.call_timeout = Duration::from_millis(1500);
            c.client.retry.max_attempts = 2;
        })
        .await;
        let proxy = ChaosProxy::start(mesh.addr(Service::BillingEngine))
            .await
            .expect("proxy");
        mesh.route(Service::BillingEngine, proxy.addr())
            .expect("route");
        let api = mesh.client(Service::HealthcareApi, "t1");
        let patient_id = intake(&api, &s).await;
        let slow = proxy.add(Fault::new(FaultKind::Latency {
            latency: Duration::from_millis(800),
            jitter: Duration::ZERO,
        }));
        let r = api
            .post("/visits", &visit_body(&patient_id, &s))
            .await
            .expect("visit");
        assert_eq!(r.status, 504, "{}", r.body);
        assert_eq!(r.body["failed_step"], "create_claim");
        assert_eq!(r.body["compensations"][0]["outcome"], "completed");
        proxy.remove(slow);
        let r = api
            .post("/visits", &visit_body(&patient_id, &s))
            .await
            .expect("visit");
        assert_eq!(r.status, 201, "{}", r.body);
    }

    /// Stop billing: the API's `/health` reports it unreachable and
    /// degraded, a visit fails and is compensated; restart it on the same
    /// port: healthy again and visits succeed.
    #[service_test(integration, real_services, resilience, health, timeout = "30s")]
    async fn stop_and_restart_a_service_on_its_port(db: TestDb, redis: &Redis, s: Scenario) {
        let mesh = own_mesh(&db, redis, |c| {
            c.client.retry.base = Duration::from_millis(5);
        })
        .await;
        let api = mesh.client(Service::HealthcareApi, "t1");
        let patient_id = intake(&api, &s).await;
        let addr = mesh.addr(Service::BillingEngine);
        mesh.stop(Service::BillingEngine).await;
        let h = api.get("/health").await.expect("health");
        assert_eq!(h.status, 200);
        assert_eq!(h.body["status"], "degraded");
        assert_eq!(
            h.body["dependencies"]["billing-engine"]["status"],
            "unreachable"
        );
        let r = api
            .post("/visits", &visit_body(&patient_id, &s))
            .await
            .expect("visit");
        assert_eq!(r.status, 502, "{}", r.body);
        assert_eq!(r.body["compensations"][0]["outcome"], "completed");
        mesh.restart(Service::BillingEngine).await.expect("restart");
        assert_eq!(mesh.addr(Service::BillingEngine), addr);
        let h = api.get("/health").await.expect("health");
        assert_eq!(h.body["status"], "healthy", "{}", h.body);
        let r = api
            .post("/visits", &visit_body(&patient_id, &s))
            .await
            .expect("visit");
        assert_eq!(r.status, 201, "{}", r.body);
    }
}

mod sync {
    use super::*;

    /// Intake syncs the patient to the services that hold patient data; one
    /// of them down: the intake still succeeds, names the failed sync, and
    /// the failure is in the audit trail for manual resync.
    #[service_test(integration, real_services, audit, interservice, timeout = "30s")]
    async fn a_failed_patient_sync_is_audited(db: TestDb, redis: &Redis, s: Scenario) {
        let mesh = own_mesh(&db, redis, |c| {
            c.client.retry.base = Duration::from_millis(5);
        })
        .await;
        mesh.stop(Service::DoctorPersonalization).await;
        let api = mesh.client(Service::HealthcareApi, "t1");
        let r = api
            .post(
                "/patients",
                &json!({"patient": s.patient, "coverage": s.coverage}),
            )
            .await
            .expect("intake");
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["sync_failed"], json!(["doctor-personalization"]));
        assert_eq!(r.body["synced"].as_array().map(Vec::len), Some(3));
        let patient_id = r.body["patient_id"].as_str().expect("patient_id");
        let monitor = mesh.client(Service::ComplianceMonitor, "t1");
        let trail = monitor
            .get(&format!("/audit?patient_id={patient_id}&kind=sync_failure"))
            .await
            .expect("audit");
        let events = trail.body["events"].as_array().expect("events");
        assert_eq!(events.len(), 1, "{}", trail.body);
        assert_eq!(
            events[0]["detail"]["service_name"],
            "doctor-personalization"
        );
        assert_eq!(events[0]["detail"]["requires_manual_sync"], true);
    }
}

mod security {
    use super::*;

    async fn status_and_reason(mesh: &Mesh, token: Option<&str>, tenant: &str) -> (u16, String) {
        let mut req = reqwest::Client::new()
            .get(format!("{}/claims/clm-x", mesh.url(Service::BillingEngine)))
            .header("x-tenant-id", tenant);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let r = req.send().await.expect("send");
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        (
            status,
            body["reason"].as_str().unwrap_or_default().to_string(),
        )
    }

    /// Every service checks the token: missing, forged, for another
    /// service, expired, or for another tenant than `X-Tenant-ID` → 401
    /// with the reason; a good one passes (404 here: no such claim).
    #[service_test(integration, real_services, security, timeout = "20s")]
    async fn bad_tokens_get_401_with_the_reason(mesh: &Mesh, tenant: Tenant) {
        let secret = &mesh.config().secret;
        let good = mesh.token(Service::BillingEngine, &tenant, Duration::from_secs(60));
        let forged = token::sign(
            b"not the secret",
            "x",
            "billing-engine",
            &tenant,
            Duration::from_secs(60),
        );
        let other_service = mesh.token(
            Service::InsuranceVerification,
            &tenant,
            Duration::from_secs(60),
        );
        let expired = token::sign_claims(
            secret,
            &Claims {
                iss: "x".into(),
                aud: "billing-engine".into(),
                tenant: tenant.0.clone(),
                exp: 1,
            },
        );
        let cases = [
            (None, tenant.0.as_str(), "missing bearer token"),
            (Some(forged.as_str()), &tenant, "bad signature"),
            (Some(other_service.as_str()), &tenant, "not this service"),
            (Some(expired.as_str()), &tenant, "token expired"),
            (Some(good.as_str()), "another-tenant", "another tenant"),
            (Some("garbage"), &tenant, "malformed token"),
        ];
        for (token, t, reason) in cases {
            let (status, got) = status_and_reason(mesh, token, t).await;
            assert_eq!(status, 401, "{reason}");
            assert!(got.contains(reason), "want `{reason}`, got `{got}`");
        }
        assert_eq!(status_and_reason(mesh, Some(&good), &tenant).await.0, 404);
    }

    /// One tenant never reads another's data: patients, visits,
    /// verifications, claims, audit events, preferences.
    #[service_test(integration, real_services, security, timeout = "30s")]
    async fn tenants_cannot_read_each_others_data(mesh: &Mesh, a: Tenant, b: Tenant, s: Scenario) {
        assert_ne!(a, b);
        let api_a = mesh.client(Service::HealthcareApi, &a);
        let api_b = mesh.client(Service::HealthcareApi, &b);
        let patient_id = intake(&api_a, &s).await;
        let v = api_a
            .post("/visits", &visit_body(&patient_id, &s))
            .await
            .expect("visit");
        assert_eq!(v.status, 201, "{}", v.body);
        assert_eq!(
            api_a
                .get(&format!("/patients/{patient_id}"))
                .await
                .expect("read")
                .status,
            200
        );
        let id = |k: &str| v.body[k].as_str().unwrap_or_default().to_string();
        // A's resources, read as B: each service answers 404.
        for (service, path) in [
            (Service::HealthcareApi, format!("/patients/{patient_id}")),
            (
                Service::HealthcareApi,
                format!("/visits/{}", id("visit_id")),
            ),
            (
                Service::BillingEngine,
                format!("/claims/{}", id("claim_id")),
            ),
            (
                Service::InsuranceVerification,
                format!("/verifications/{}", id("verification_id")),
            ),
        ] {
            let r = mesh.client(service, &b).get(&path).await.expect("read");
            assert_eq!(r.status, 404, "{service}{path}");
        }
        // B cannot run a visit on A's patient either.
        let r = api_b
            .post("/visits", &visit_body(&patient_id, &s))
            .await
            .expect("visit");
        assert_eq!(r.status, 404);
        let audit_b = mesh.client(Service::ComplianceMonitor, &b);
        let rid = v.request_id.clone().unwrap_or_default();
        let trail = audit_b
            .get(&format!("/audit?request_id={rid}"))
            .await
            .expect("audit");
        assert_eq!(trail.body["events"], json!([]));
        let trail = audit_b
            .get(&format!("/audit?patient_id={patient_id}"))
            .await
            .expect("audit");
        assert_eq!(trail.body["events"], json!([]));
        let doc_a = mesh.client(Service::DoctorPersonalization, &a);
        let doc_b = mesh.client(Service::DoctorPersonalization, &b);
        let npi = &s.visit.rendering_npi;
        let put = doc_a
            .put(
                &format!("/doctors/{npi}/preferences"),
                &json!({"note_style": "SOAP"}),
            )
            .await
            .expect("put");
        assert_eq!(put.status, 200, "{}", put.body);
        assert_eq!(
            doc_a
                .get(&format!("/doctors/{npi}/preferences"))
                .await
                .expect("get")
                .body["preferences"]["note_style"],
            "SOAP"
        );
        assert_eq!(
            doc_b
                .get(&format!("/doctors/{npi}/preferences"))
                .await
                .expect("get")
                .status,
            404
        );
    }
}

mod compliance {
    use super::*;

    /// A PHI leak injected into billing's log is redacted before any line
    /// is kept, and reported to the compliance monitor as a violation that
    /// holds the kinds, never the value.
    #[service_test(integration, real_services, compliance, phi_safe, timeout = "20s")]
    async fn a_phi_leak_in_a_log_is_redacted_and_reported(
        mesh: &Mesh,
        tenant: Tenant,
        s: Scenario,
    ) {
        let leak = format!("SSN {}", s.patient.ssn);
        mesh.inject(
            Service::BillingEngine,
            &FaultPlan {
                leak_phi: Some(leak.clone()),
                tenant: Some(tenant.0.clone()),
                ..FaultPlan::default()
            },
        )
        .await
        .expect("inject");
        let billing = mesh.client(Service::BillingEngine, &tenant);
        billing.get("/claims/clm-none").await.expect("request");
        let monitor = mesh.client(Service::ComplianceMonitor, &tenant);
        let deadline = Instant::now() + Duration::from_secs(5);
        let found = loop {
            let r = monitor
                .get("/violations?source=billing-engine")
                .await
                .expect("violations");
            if !r.body["violations"][0].is_null() {
                break r.body["violations"][0].clone();
            }
            assert!(Instant::now() < deadline, "no violation recorded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(found["channel"], "log");
        assert!(
            found["kinds"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "SSN")),
            "{found}"
        );
        let excerpt = found["excerpt"].as_str().unwrap_or_default();
        assert!(excerpt.contains("[PHI:SSN]"), "{excerpt}");
        assert!(!excerpt.contains(&s.patient.ssn));
        assert!(mesh.logs().iter().all(|l| !l.contains(&s.patient.ssn)));
        assert!(mesh.logs().iter().any(|l| l.contains("[PHI:SSN]")));
    }

    /// The scanner endpoint finds PHI in text, answers with kinds and
    /// spans and a redacted copy, and records a violation.
    #[service_test(integration, real_services, compliance, timeout = "20s")]
    async fn the_scan_endpoint_finds_and_records_phi(mesh: &Mesh, tenant: Tenant, s: Scenario) {
        let monitor = mesh.client(Service::ComplianceMonitor, &tenant);
        let text = format!("call {} about MRN {}", s.patient.phone, s.patient.mrn);
        let r = monitor
            .post("/phi/scan", &json!({"text": text, "source": "notes"}))
            .await
            .expect("scan");
        assert_eq!(r.status, 200);
        assert_eq!(r.body["phi_found"], true);
        let redacted = r.body["redacted"].as_str().unwrap_or_default();
        assert!(
            !redacted.contains(&s.patient.phone) && !redacted.contains(&s.patient.mrn),
            "{redacted}"
        );
        let clean = monitor
            .post("/phi/scan", &json!({"text": "claim totals by payer"}))
            .await
            .expect("scan");
        assert_eq!(clean.body["phi_found"], false);
        let v = monitor
            .get("/violations?source=notes")
            .await
            .expect("violations");
        assert_eq!(v.body["violations"].as_array().map(Vec::len), Some(1));
    }

    /// `/metrics` is Prometheus text with request counts, saga outcomes
    /// and breaker states.
    #[service_test(integration, real_services, health, timeout = "20s")]
    async fn metrics_are_prometheus_text(mesh: &Mesh, tenant: Tenant, s: Scenario) {
        let api = mesh.client(Service::HealthcareApi, &tenant);
        let patient_id = intake(&api, &s).await;
        api.post("/visits", &visit_body(&patient_id, &s))
            .await
            .expect("visit");
        let text = reqwest::get(format!("{}/metrics", mesh.url(Service::HealthcareApi)))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert!(
            text.contains("# TYPE http_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains("saga_total{service=\"healthcare-api\",outcome=\"completed\"}"),
            "{text}"
        );
        assert!(text.contains(
            "circuit_breaker_state{service=\"healthcare-api\",target=\"billing-engine\",state=\"closed\"} 1"
        ));
    }
}

mod binary {
    use super::*;

    /// `sandbox up` starts the six services, prints their addresses, and
    /// each `/health` answers 200 with JSON.
    #[service_test(integration, real_services, health, timeout = "60s")]
    async fn up_prints_six_healthy_addresses(pg: &Postgres, redis: &Redis) {
        let db = sandbox::store::connect(&pg.url("postgres"))
            .await
            .expect("connect");
        let name = format!("sandbox_up_{}", std::process::id());
        db.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .expect("drop a leftover database");
        db.batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let mut child = Command::new(env!("CARGO_BIN_EXE_sandbox"))
            .arg("up")
            .env("DATABASE_URL", pg.url(&name))
            .env("REDIS_URL", format!("redis://{}", redis.addr))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sandbox up");
        let stdout = child.stdout.take().expect("stdout");
        let lines = tokio::task::spawn_blocking(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .take_while(|l| l != "Ctrl-C stops")
                .collect::<Vec<_>>()
        })
        .await
        .expect("read stdout");
        let urls: Vec<(String, String)> = lines
            .iter()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                let (name, url) = (parts.next()?, parts.next()?);
                (Service::from_name(name).is_some() && url.starts_with("http://127.0.0.1:"))
                    .then(|| (name.to_string(), url.to_string()))
            })
            .collect();
        let result = async {
            assert_eq!(urls.len(), 6, "{lines:?}");
            for (name, url) in &urls {
                let r = reqwest::get(format!("{url}/health")).await.expect("health");
                assert_eq!(r.status(), 200, "{name}");
                let body: Value = r.json().await.expect("JSON");
                assert_eq!(body["service"], name.as_str());
            }
        };
        result.await;
        let _ = child.kill();
        let _ = child.wait();
        let _ = db
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}

harness::main!();
