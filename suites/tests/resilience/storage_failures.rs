//! PostgreSQL and Redis failures, through the chaos proxies between the
//! services and their stores (`capabilities.chaos.stores`: in process the
//! mesh's chaos front, on another target its Toxiproxy): the services say
//! so, refuse safely, and come back without a restart. Links are brought
//! back in the fixture's teardown also when a test fails.

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{MeshClient, Service, Tenant};
use serde_json::{Value, json};
use suites::{Edge, Rows, StoreToxics, Target};

use crate::common::{eventually, failed_visit, intake, visit};

async fn claims_of(rows: &Rows, tenant: &str) -> i64 {
    rows.one::<i64>(
        "SELECT count(*) FROM billing.claims WHERE tenant = $1",
        &[&tenant],
    )
    .await
    .expect("count the tenant's claims")
}

/// Billing's PostgreSQL goes away (the proxy between billing and the
/// database is disabled): billing's `/health` answers `503` with the
/// database `down`, the API's `/health` shows billing unhealthy, a visit
/// fails at the claim with billing's `database_unavailable` and is
/// compensated; the other services are untouched. The database back,
/// billing's pool reconnects and visits succeed, with no restart.
#[service_test(
    resilience,
    chaos,
    health,
    exclusive,
    real_services,
    services(healthcare_api, billing_engine),
    timeout = "30s"
)]
async fn billing_loses_its_database_and_reconnects_without_a_restart(
    target: &Target,
    toxics: StoreToxics,
    rows: Rows,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let billing = target.client(Service::BillingEngine, &tenant);
    let patient_id = intake(&api, &s).await;
    visit(&api, &patient_id, &s).await;

    toxics
        .disable(Edge::Postgres(Service::BillingEngine))
        .await
        .expect("take billing's database link down");
    let h = billing.get("/health").await.expect("health");
    assert_eq!(h.status, 503, "{}", h.body);
    assert_eq!(h.body["database"], "down");
    assert_eq!(h.body["redis"], "up");
    let h = api.get("/health").await.expect("health");
    assert_eq!(h.body["database"], "up", "the API's own database is fine");
    assert_eq!(
        h.body["dependencies"]["billing-engine"]["status"], "unhealthy",
        "{}",
        h.body
    );
    let r = failed_visit(&api, &patient_id, &s, 502).await;
    assert_eq!(r.body["failed_step"], "create_claim");
    assert_eq!(
        r.body["cause"]["body"]["error"], "database_unavailable",
        "{}",
        r.body
    );
    assert_eq!(r.body["compensations"][0]["outcome"], "completed");

    toxics
        .enable(Edge::Postgres(Service::BillingEngine))
        .await
        .expect("bring billing's database link back");
    eventually("billing reconnects to its database", || async {
        billing.get("/health").await.is_ok_and(|h| h.status == 200)
    })
    .await;
    visit(&api, &patient_id, &s).await;
    assert_eq!(
        claims_of(&rows, &tenant).await,
        2,
        "the two successful visits' claims, nothing for the failed one"
    );
}

/// A verification request for the scenario, without an idempotency key.
fn verify_body(patient_id: &str, s: &Scenario) -> Value {
    let coverage = serde_json::to_value(&s.coverage).expect("coverage");
    let procedures: Vec<&str> = s.visit.lines.iter().map(|l| l.procedure_code).collect();
    json!({
        "patient_id": patient_id,
        "payer_id": coverage["payer"]["id"],
        "member_id": coverage["member_id"],
        "effective": coverage["effective"],
        "termination": coverage["termination"],
        "coinsurance_pct": coverage["coinsurance_pct"],
        "date_of_service": s.visit.date_of_service,
        "procedures": procedures,
    })
}

async fn post_with_key(client: &MeshClient, path: &str, body: &Value, key: &str) -> (u16, Value) {
    let r = client
        .send(
            reqwest::Method::POST,
            path,
            Some(body),
            &[("idempotency-key", key)],
        )
        .await
        .expect(path);
    (r.status, r.body)
}

/// Redis goes away: the API's `/health` says so (`503`, redis `down`); the
/// eligibility cache degrades to a miss (a verification without an
/// idempotency key still answers, uncached); a create with an idempotency
/// key is refused with `503 cache_unavailable` rather than risk a
/// duplicate (no claim row is written); a visit fails cleanly at its first
/// step. Redis back, visits succeed.
#[service_test(
    resilience,
    chaos,
    exclusive,
    real_services,
    services(healthcare_api, insurance_verification, billing_engine),
    timeout = "30s"
)]
async fn without_redis_the_cache_misses_and_idempotent_creates_are_refused(
    target: &Target,
    toxics: StoreToxics,
    rows: Rows,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let insurance = target.client(Service::InsuranceVerification, &tenant);
    let billing = target.client(Service::BillingEngine, &tenant);
    let patient_id = intake(&api, &s).await;
    let v = visit(&api, &patient_id, &s).await;
    let verification_id = v.body["verification_id"].as_str().expect("verification");

    for service in Service::ALL {
        toxics
            .disable(Edge::Redis(service))
            .await
            .expect("take the Redis links down");
    }
    let h = api.get("/health").await.expect("health");
    assert_eq!(h.status, 503, "{}", h.body);
    assert_eq!(h.body["redis"], "down");
    let r = insurance
        .post("/verify", &verify_body(&patient_id, &s))
        .await
        .expect("verify");
    assert_eq!(r.status, 201, "a cache miss, not a failure: {}", r.body);
    assert_eq!(r.body["cached"], false, "{}", r.body);
    let claim = json!({
        "patient_id": patient_id,
        "verification_id": verification_id,
        "npi": s.visit.rendering_npi,
        "diagnoses": s.visit.diagnoses.iter().map(|d| d.code).collect::<Vec<_>>(),
        "procedures": s.visit.lines.iter().map(|l| json!({"code": l.procedure_code, "charge_cents": l.charge_cents})).collect::<Vec<_>>(),
    });
    let before = claims_of(&rows, &tenant).await;
    let (status, body) = post_with_key(&billing, "/claims", &claim, "redis-down-1").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "cache_unavailable", "{body}");
    assert_eq!(
        claims_of(&rows, &tenant).await,
        before,
        "a refused create writes nothing"
    );
    let r = failed_visit(&api, &patient_id, &s, 502).await;
    assert_eq!(r.body["failed_step"], "verify_insurance", "{}", r.body);

    for service in Service::ALL {
        toxics
            .enable(Edge::Redis(service))
            .await
            .expect("bring the Redis links back");
    }
    eventually("the API sees Redis again", || async {
        api.get("/health").await.is_ok_and(|h| h.status == 200)
    })
    .await;
    visit(&api, &patient_id, &s).await;
}
