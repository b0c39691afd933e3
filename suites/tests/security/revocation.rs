//! Revocation: a person logged out, or given a narrower role, is refused
//! or narrowed by every service within the bound the target declares
//! (`auth.revocation_bound_ms`), and by no more than that person.

use std::time::{Duration, Instant};

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{Role, Service, Tenant};
use serde_json::{Value, json};
use suites::{Edge, Revocation, SignTokens, StoreToxics, Target};

use crate::common::intake;

/// A person's token for each service, issued now (one per audience).
fn tokens_of(tokens: &SignTokens, tenant: &str, sub: &str, role: Role) -> Vec<(Service, String)> {
    Service::ALL
        .into_iter()
        .map(|s| {
            let t = sandbox::token::sign_person(
                tokens.secret(),
                "test-client",
                sub,
                role,
                s.name(),
                tenant,
                Duration::from_secs(300),
            );
            (s, t)
        })
        .collect()
}

/// `GET /config` of `service` with `token`: status, and the body of an
/// error.
async fn config_with(target: &Target, service: Service, token: &str, tenant: &str) -> (u16, Value) {
    let r = target
        .http()
        .get(format!("{}/config", target.url(service)))
        .header("authorization", format!("Bearer {token}"))
        .header("x-tenant-id", tenant)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("GET /config");
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    // The error, when there is one (a configuration says nothing here).
    let said = if status == 200 { Value::Null } else { body };
    (status, said)
}

/// Sleeps until `deadline`.
async fn until(deadline: Instant) {
    tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
}

/// A person logs out: the very tokens they held (one per service, issued
/// before) are refused (`401`, "revoked") by all six services once the
/// declared bound has passed since the logout was answered; a colleague in
/// the same tenant is not affected; and the person, logging in again a
/// second later, is let in everywhere.
///
/// Catches: a service that does not check revocation (a token good for its
/// hour after logout), a service that keeps a person's standing longer than
/// the bound, a logout that revokes the whole tenant, and a logout that
/// locks the person out for good.
#[service_test(
    security,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        compliance_monitor,
        business_intelligence,
        doctor_personalization
    ),
    timeout = "40s"
)]
async fn a_logged_out_persons_tokens_are_refused_by_every_service_within_the_bound(
    target: &Target,
    tokens: SignTokens,
    revocation: Revocation,
    tenant: Tenant,
) {
    let sub = format!("dr-out-{}", tenant.0);
    let colleague = format!("dr-stays-{}", tenant.0);
    let held = tokens_of(&tokens, &tenant, &sub, Role::Clinician);
    let theirs = tokens_of(&tokens, &tenant, &colleague, Role::Clinician);
    for (service, token) in held.iter().chain(&theirs) {
        let (status, body) = config_with(target, *service, token, &tenant).await;
        assert_eq!(status, 200, "{service} before the logout: {body}");
    }

    let api = revocation.person(Service::HealthcareApi, &tenant, &sub, Role::Clinician);
    let r = api.post("/auth/logout", &json!({})).await.expect("logout");
    let answered = Instant::now();
    assert_eq!(r.status, 200, "POST /auth/logout: {}", r.body);
    assert_eq!(r.body["subject"], json!(sub), "{}", r.body);
    let bound = revocation.bound();

    until(answered + bound).await;
    for (service, token) in &held {
        let (status, body) = config_with(target, *service, token, &tenant).await;
        assert_eq!(
            status,
            401,
            "{service} still accepts a logged-out person's token {} ms after the logout (bound {} ms): {body}",
            answered.elapsed().as_millis(),
            bound.as_millis()
        );
        let reason = body["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("revoked"), "{service}: {reason}");
    }
    for (service, token) in &theirs {
        let (status, body) = config_with(target, *service, token, &tenant).await;
        assert_eq!(
            status, 200,
            "{service} refuses a colleague who did not log out: {body}"
        );
    }

    // Logging in again: tokens issued after the logout's second are good.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (service, token) in tokens_of(&tokens, &tenant, &sub, Role::Clinician) {
        let (status, body) = config_with(target, service, &token, &tenant).await;
        assert_eq!(status, 200, "{service} after logging in again: {body}");
    }
}

/// A logout by an admin (`POST /users/{sub}/logout`) is refused to anyone
/// else, and ends the person's sessions like their own logout; logging
/// out through a token that names no person is `422`.
///
/// Catches: a non-admin able to log others out, an admin logout that does
/// not reach the services.
#[service_test(
    security,
    real_services,
    services(healthcare_api, billing_engine),
    timeout = "30s"
)]
async fn only_an_admin_logs_someone_else_out(
    target: &Target,
    tokens: SignTokens,
    revocation: Revocation,
    tenant: Tenant,
) {
    let sub = format!("clerk-{}", tenant.0);
    let held = tokens_of(&tokens, &tenant, &sub, Role::BillingClerk);
    let path = format!("/users/{sub}/logout");
    for role in [Role::Clinician, Role::BillingClerk, Role::ComplianceOfficer] {
        let peer = revocation.person(Service::HealthcareApi, &tenant, "someone", role);
        let r = peer.post(&path, &json!({})).await.expect("logout");
        assert_eq!(
            r.status, 403,
            "{role} logged another person out: {}",
            r.body
        );
    }
    let anonymous = target
        .client(Service::HealthcareApi, &tenant)
        .as_role(Role::Clinician);
    let r = anonymous
        .post("/auth/logout", &json!({}))
        .await
        .expect("logout");
    assert_eq!(r.status, 422, "a token without `sub`: {}", r.body);

    let admin = revocation.person(Service::HealthcareApi, &tenant, "it-admin", Role::Admin);
    let r = admin.post(&path, &json!({})).await.expect("logout");
    let answered = Instant::now();
    assert_eq!(r.status, 200, "{}", r.body);
    until(answered + revocation.bound()).await;
    for (service, token) in &held {
        let (status, body) = config_with(target, *service, token, &tenant).await;
        assert_eq!(status, 401, "{service}: {body}");
    }
}

/// Where each service shows the role it gives a caller: a route it refuses
/// both a clinician and a billing clerk, whose `403` names the role.
const REFUSED_TO_BOTH: [(Service, &str, &str); 6] = [
    (Service::HealthcareApi, "GET", "/audit"),
    (Service::InsuranceVerification, "POST", "/verify"),
    (Service::BillingEngine, "POST", "/patients/sync"),
    (Service::ComplianceMonitor, "GET", "/audit"),
    (Service::BusinessIntelligence, "POST", "/events"),
    (Service::DoctorPersonalization, "POST", "/patients/sync"),
];

/// The role each of the six services gives person `sub` (from the `403`
/// of a route refused to both roles), and what the API shows them of
/// `patient_id`.
async fn as_seen(
    revocation: &Revocation,
    tenant: &str,
    sub: &str,
    patient_id: &str,
) -> (Vec<(Service, String)>, Value) {
    let mut roles = Vec::new();
    for (service, method, path) in REFUSED_TO_BOTH {
        // The token still says clinician: the directory decides.
        let c = revocation.person(service, tenant, sub, Role::Clinician);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let r = c
            .request(method, path, Some(&json!({})), None)
            .await
            .expect("probe");
        assert_eq!(r.status, 403, "{service} {path}: {}", r.body);
        let reason = r.body["message"].as_str().unwrap_or_default().to_string();
        roles.push((service, reason));
    }
    let api = revocation.person(Service::HealthcareApi, tenant, sub, Role::Clinician);
    let r = api
        .get(&format!("/patients/{patient_id}"))
        .await
        .expect("read");
    assert_eq!(r.status, 200, "GET /patients: {}", r.body);
    (roles, r.body)
}

/// An admin narrows a clinician to a billing clerk (`PUT /users/{sub}/role`):
/// within the bound every service treats the person's tokens (which still
/// say clinician) as a billing clerk's: each names `billing_clerk` in its
/// refusals, the API no longer shows the SSN and refuses the doctor's
/// preferences, billing lets the clerk read claims. Removing the directory's
/// role (`DELETE`) gives the clinician back their access.
///
/// Catches: a service that trusts the token's role over the directory's, a
/// narrowed person still seeing SSNs, a role change slower than the bound.
#[service_test(
    security,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        compliance_monitor,
        business_intelligence,
        doctor_personalization
    ),
    timeout = "40s"
)]
async fn a_narrowed_role_is_enforced_by_every_service_within_the_bound(
    target: &Target,
    _tokens: SignTokens,
    revocation: Revocation,
    tenant: Tenant,
    s: Scenario,
) {
    let admin = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&admin, &s).await;
    let sub = format!("dr-narrowed-{}", tenant.0);
    let npi = s.visit.rendering_npi.clone();
    let prefs = format!("/doctors/{npi}/preferences");

    let (roles, record) = as_seen(&revocation, &tenant, &sub, &patient_id).await;
    for (service, reason) in &roles {
        assert!(
            reason.contains("role `clinician`"),
            "{service} before: {reason}"
        );
    }
    assert_eq!(
        record["patient"]["ssn"],
        json!(s.patient.ssn),
        "a clinician sees the SSN"
    );
    let billing = revocation.person(Service::BillingEngine, &tenant, &sub, Role::Clinician);
    let r = billing.get("/claims/clm-none").await.expect("claims");
    assert_eq!(r.status, 403, "a clinician on billing's claims: {}", r.body);

    let path = format!("/users/{sub}/role");
    let r = admin
        .put(&path, &json!({"role": "billing_clerk"}))
        .await
        .expect("role change");
    let answered = Instant::now();
    assert_eq!(r.status, 200, "PUT {path}: {}", r.body);
    until(answered + revocation.bound()).await;

    let (roles, record) = as_seen(&revocation, &tenant, &sub, &patient_id).await;
    for (service, reason) in &roles {
        assert!(
            reason.contains("role `billing_clerk`"),
            "{service} {} ms after the role change (bound {} ms) still applies the token's role: {reason}",
            answered.elapsed().as_millis(),
            revocation.bound().as_millis()
        );
    }
    assert!(
        record["patient"].get("ssn").is_none(),
        "the narrowed person still sees the SSN"
    );
    assert!(
        !record.to_string().contains(&s.patient.ssn),
        "the SSN is elsewhere in the answer"
    );
    let api = revocation.person(Service::HealthcareApi, &tenant, &sub, Role::Clinician);
    let r = api.get(&prefs).await.expect("preferences");
    assert_eq!(
        r.status, 403,
        "a billing clerk reads a doctor's preferences: {}",
        r.body
    );
    let doctor = revocation.person(
        Service::DoctorPersonalization,
        &tenant,
        &sub,
        Role::Clinician,
    );
    let r = doctor.get(&prefs).await.expect("preferences");
    assert_eq!(r.status, 403, "doctor-personalization: {}", r.body);
    let r = billing.get("/claims/clm-none").await.expect("claims");
    assert_eq!(
        r.status, 404,
        "billing lets a billing clerk look for a claim: {}",
        r.body
    );

    let r = admin
        .request(reqwest::Method::DELETE, &path, None, None)
        .await
        .expect("delete");
    let answered = Instant::now();
    assert_eq!(r.status, 200, "DELETE {path}: {}", r.body);
    until(answered + revocation.bound()).await;
    let (roles, record) = as_seen(&revocation, &tenant, &sub, &patient_id).await;
    for (service, reason) in &roles {
        assert!(
            reason.contains("role `clinician`"),
            "{service} after DELETE: {reason}"
        );
    }
    assert_eq!(
        record["patient"]["ssn"],
        json!(s.patient.ssn),
        "the clinician's role back"
    );
}

/// Whether a person's token was revoked cannot be told while billing's
/// Redis is unreachable: billing refuses the person (`503`) rather than let
/// a possibly revoked token through, while a service's token (never
/// revoked) still gets in; Redis back, the person is let in again.
///
/// Catches: a gate that fails open (lets a person in when the revocation
/// list cannot be read), and one that fails every caller, services too.
#[service_test(
    security,
    chaos,
    exclusive,
    real_services,
    services(billing_engine),
    timeout = "40s"
)]
async fn a_person_is_refused_while_revocation_cannot_be_checked(
    target: &Target,
    toxics: StoreToxics,
    tokens: SignTokens,
    revocation: Revocation,
    tenant: Tenant,
) {
    let sub = format!("clerk-redis-{}", tenant.0);
    let clerk = revocation.person(Service::BillingEngine, &tenant, &sub, Role::BillingClerk);
    let r = clerk.get("/claims/clm-none").await.expect("claims");
    assert_eq!(r.status, 404, "the clerk is let in: {}", r.body);

    toxics
        .disable(Edge::Redis(Service::BillingEngine))
        .await
        .expect("billing's Redis down");
    // Whatever the service kept of the person's standing is stale by now.
    tokio::time::sleep(revocation.bound()).await;
    let r = clerk.get("/claims/clm-none").await.expect("claims");
    assert_eq!(
        r.status, 503,
        "a person let in while revocation cannot be checked: {}",
        r.body
    );
    assert_eq!(r.body["error"], "revocation_unavailable", "{}", r.body);
    let api_token = tokens.from_service(
        Service::HealthcareApi,
        Service::BillingEngine,
        &tenant,
        Duration::from_secs(60),
    );
    let r = target
        .http()
        .get(format!(
            "{}/claims/clm-none",
            target.url(Service::BillingEngine)
        ))
        .header("authorization", format!("Bearer {api_token}"))
        .header("x-tenant-id", tenant.0.as_str())
        .header("x-source-service", Service::HealthcareApi.name())
        .send()
        .await
        .expect("claims");
    assert_eq!(
        r.status().as_u16(),
        404,
        "a service's token needs no revocation check"
    );

    toxics
        .enable(Edge::Redis(Service::BillingEngine))
        .await
        .expect("billing's Redis back");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = clerk.get("/claims/clm-none").await.expect("claims");
        if r.status == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the clerk is still refused 15 s after Redis came back: {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
