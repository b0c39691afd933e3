//! Authorisation: who may call which route (services by allow-list,
//! people by role), one use per mutating token, and the admin endpoints.

use std::time::Duration;

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{Role, Service, Tenant};
use serde_json::{Value, json};
use suites::{Faults, SignTokens, Target};

use crate::common::{intake, visit};

/// Sends `method path` to `service` with `token`; status and body.
async fn call(
    target: &Target,
    service: Service,
    method: reqwest::Method,
    path: &str,
    token: &str,
    tenant: &str,
    source: Option<&str>,
) -> (u16, Value) {
    let mut req = target
        .http()
        .request(method, format!("{}{path}", target.url(service)))
        .header("authorization", format!("Bearer {token}"))
        .header("x-tenant-id", tenant)
        .json(&json!({}));
    if let Some(s) = source {
        req = req.header("x-source-service", s);
    }
    let r = req.send().await.expect("send");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A token used for a mutating call is refused the second time (`401`,
/// "replayed"); a read may reuse its token.
#[service_test(security, real_services, services(billing_engine), timeout = "20s")]
async fn a_replayed_token_is_refused_on_a_mutating_call(
    target: &Target,
    tokens: SignTokens,
    tenant: Tenant,
) {
    let t = tokens.as_role(
        Role::BillingClerk,
        Service::BillingEngine,
        &tenant,
        Duration::from_secs(60),
    );
    let post = reqwest::Method::POST;
    let cancel = "/claims/clm-none/cancel";
    let first = call(
        target,
        Service::BillingEngine,
        post.clone(),
        cancel,
        &t,
        &tenant,
        None,
    )
    .await;
    assert_eq!(first.0, 404, "first use: {}", first.1);
    let again = call(
        target,
        Service::BillingEngine,
        post,
        cancel,
        &t,
        &tenant,
        None,
    )
    .await;
    assert_eq!(again.0, 401, "{}", again.1);
    let reason = again.1["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("replayed"), "{reason}");
    assert!(!reason.contains(t.as_str()), "the reason echoes the token");
    for _ in 0..2 {
        let get = reqwest::Method::GET;
        let (status, body) = call(
            target,
            Service::BillingEngine,
            get,
            "/claims/clm-none",
            &t,
            &tenant,
            None,
        )
        .await;
        assert_eq!(status, 404, "a read may reuse its token: {body}");
    }
}

/// Each business route has an allow-list of calling services: a peer
/// that is not on it gets `403` naming it; the API, which is, gets
/// through.
#[service_test(
    security,
    real_services,
    services(
        insurance_verification,
        billing_engine,
        compliance_monitor,
        business_intelligence
    ),
    timeout = "20s"
)]
async fn services_off_a_routes_allow_list_get_403(
    target: &Target,
    tokens: SignTokens,
    tenant: Tenant,
) {
    let ttl = Duration::from_secs(60);
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let cases = [
        // (caller, callee, method, path)
        (
            Service::InsuranceVerification,
            Service::BillingEngine,
            post.clone(),
            "/patients/sync",
        ),
        (
            Service::BillingEngine,
            Service::ComplianceMonitor,
            get.clone(),
            "/audit",
        ),
        (
            Service::DoctorPersonalization,
            Service::BillingEngine,
            get.clone(),
            "/claims/clm-none",
        ),
        (
            Service::BillingEngine,
            Service::InsuranceVerification,
            post.clone(),
            "/verify",
        ),
        (
            Service::InsuranceVerification,
            Service::BusinessIntelligence,
            get.clone(),
            "/aggregates",
        ),
    ];
    for (from, to, method, path) in cases {
        let t = tokens.from_service(from, to, &tenant, ttl);
        let (status, body) = call(
            target,
            to,
            method.clone(),
            path,
            &t,
            &tenant,
            Some(from.name()),
        )
        .await;
        assert_eq!(status, 403, "{from} → {to} {method} {path}: {body}");
        let reason = body["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(&format!("service `{from}` may not call")),
            "{reason}"
        );
    }
    let api = Service::HealthcareApi;
    let t = tokens.from_service(api, Service::BillingEngine, &tenant, ttl);
    let (status, body) = call(
        target,
        Service::BillingEngine,
        get,
        "/claims/clm-none",
        &t,
        &tenant,
        Some(api.name()),
    )
    .await;
    assert_eq!(status, 404, "the API is on billing's list: {body}");
}

/// Role × endpoint on the API: each role gets exactly the statuses the
/// policy states, and a billing clerk's patient has no SSN (minimum
/// necessary) while a clinician's has it.
#[service_test(
    security,
    real_services,
    services(
        healthcare_api,
        billing_engine,
        insurance_verification,
        compliance_monitor,
        business_intelligence
    ),
    timeout = "30s"
)]
async fn each_role_reaches_only_its_endpoints(
    target: &Target,
    _tokens: SignTokens,
    tenant: Tenant,
    s: Scenario,
) {
    let admin = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&admin, &s).await;
    let v = visit(&admin, &patient_id, &s).await;
    let visit_id = v.body["visit_id"].as_str().unwrap_or_default().to_string();
    let patient = format!("/patients/{patient_id}");
    let visit_path = format!("/visits/{visit_id}");
    // (path, clinician, billing clerk, compliance officer, admin)
    let matrix: [(&str, [u16; 4]); 4] = [
        (&patient, [200, 200, 200, 200]),
        (&visit_path, [200, 200, 403, 200]),
        ("/audit", [403, 403, 200, 200]),
        ("/analytics/aggregates", [403, 200, 200, 200]),
    ];
    for (path, want) in matrix {
        for (role, want) in Role::ALL.into_iter().zip(want) {
            let c = target.client(Service::HealthcareApi, &tenant).as_role(role);
            let r = c.get(path).await.expect("get");
            assert_eq!(r.status, want, "{role} GET {path}: {}", r.body);
        }
    }
    for (role, want) in Role::ALL.into_iter().zip([201, 403, 403, 201]) {
        let c = target.client(Service::HealthcareApi, &tenant).as_role(role);
        let r = c
            .post(
                "/patients",
                &json!({"patient": s.patient, "coverage": s.coverage}),
            )
            .await
            .expect("post");
        assert_eq!(r.status, want, "{role} POST /patients: {}", r.body);
    }
    let read = |role| {
        let c = target.client(Service::HealthcareApi, &tenant).as_role(role);
        let path = format!("/patients/{patient_id}");
        async move { c.get(&path).await.expect("read").body }
    };
    let clerk = read(Role::BillingClerk).await;
    assert!(
        clerk["patient"].get("ssn").is_none(),
        "a billing clerk sees the SSN"
    );
    assert!(
        !clerk.to_string().contains(&s.patient.ssn),
        "the SSN is elsewhere in the answer"
    );
    let clinician = read(Role::Clinician).await;
    assert_eq!(clinician["patient"]["ssn"], json!(s.patient.ssn));
}

/// `/admin/*` answers only an admin's token, and only for a loopback
/// `Host` (a page reaching the port by DNS rebinding names another host).
#[service_test(security, real_services, services(billing_engine), timeout = "20s")]
async fn admin_endpoints_need_an_admin_and_a_loopback_host(
    target: &Target,
    _faults: Faults,
    tokens: SignTokens,
    tenant: Tenant,
) {
    let ttl = Duration::from_secs(60);
    let url = format!("{}/admin/faults", target.url(Service::BillingEngine));
    let send = |token: String, host: Option<&'static str>| {
        let mut req = target
            .http()
            .get(&url)
            .header("authorization", format!("Bearer {token}"))
            .header("x-tenant-id", tenant.0.as_str());
        if let Some(h) = host {
            req = req.header("host", h);
        }
        req.send()
    };
    let r = send(
        tokens.as_role(Role::Admin, Service::BillingEngine, &tenant, ttl),
        None,
    )
    .await
    .expect("admin");
    assert_eq!(r.status().as_u16(), 200);
    for role in [Role::Clinician, Role::BillingClerk, Role::ComplianceOfficer] {
        let r = send(
            tokens.as_role(role, Service::BillingEngine, &tenant, ttl),
            None,
        )
        .await
        .expect("send");
        assert_eq!(r.status().as_u16(), 403, "{role}");
    }
    let api = tokens.from_service(Service::HealthcareApi, Service::BillingEngine, &tenant, ttl);
    let r = send(api, None).await.expect("send");
    assert_eq!(r.status().as_u16(), 403, "a service token on /admin");
    let r = send(
        tokens.as_role(Role::Admin, Service::BillingEngine, &tenant, ttl),
        Some("attacker.example"),
    )
    .await
    .expect("send");
    assert_eq!(r.status().as_u16(), 403, "a foreign Host");
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("loopback Host"),
        "{body}"
    );
}
