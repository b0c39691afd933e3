//! Service authentication: every service checks the token of every call.

use std::time::Duration;

use harness::service_test;
use sandbox::token::{self, Claims};
use sandbox::{Service, Tenant};
use serde_json::Value;
use suites::{SignTokens, Target};

async fn status_and_reason(
    target: &Target,
    service: Service,
    path: &str,
    token: Option<&str>,
    tenant: &str,
) -> (u16, String) {
    let mut req = target
        .http()
        .get(format!("{}{path}", target.url(service)))
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

/// Billing checks the token: missing, forged, for another service,
/// expired, for another tenant than `X-Tenant-ID`, or malformed → 401 with
/// the reason; a good one passes (404 here: no such claim).
#[service_test(security, real_services, services(billing), timeout = "20s")]
async fn bad_tokens_get_401_with_the_reason(target: &Target, tokens: SignTokens, tenant: Tenant) {
    let good = tokens.token(Service::BillingEngine, &tenant, Duration::from_secs(60));
    let forged = token::sign(
        b"not the secret",
        "x",
        "billing-engine",
        &tenant,
        Duration::from_secs(60),
    );
    let other_service = tokens.token(
        Service::InsuranceVerification,
        &tenant,
        Duration::from_secs(60),
    );
    let expired = token::sign_claims(
        tokens.secret(),
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
        let (status, got) =
            status_and_reason(target, Service::BillingEngine, "/claims/clm-x", token, t).await;
        assert_eq!(status, 401, "{reason}");
        assert!(got.contains(reason), "want `{reason}`, got `{got}`");
    }
    let (status, _) = status_and_reason(
        target,
        Service::BillingEngine,
        "/claims/clm-x",
        Some(&good),
        &tenant,
    )
    .await;
    assert_eq!(status, 404);
}

/// Every service refuses a request without a token, one whose token names
/// another tenant than `X-Tenant-ID`, and one for another service, with
/// 401 and the reason.
#[service_test(
    security,
    real_services,
    services(healthcare_api, insurance, billing, compliance, bi, doctor),
    timeout = "20s"
)]
async fn every_service_refuses_bad_tokens(target: &Target, tokens: SignTokens, tenant: Tenant) {
    for service in Service::ALL {
        let other = Service::ALL
            .into_iter()
            .find(|s| *s != service)
            .unwrap_or(service);
        let mine = tokens.token(service, &tenant, Duration::from_secs(60));
        let theirs = tokens.token(other, &tenant, Duration::from_secs(60));
        let cases = [
            (None, tenant.0.as_str(), "missing bearer token"),
            (Some(mine.as_str()), "someone-else", "another tenant"),
            (Some(theirs.as_str()), tenant.0.as_str(), "not this service"),
        ];
        for (token, claimed, reason) in cases {
            let (status, got) =
                status_and_reason(target, service, "/anything", token, claimed).await;
            assert!(
                status == 401 && got.contains(reason),
                "{service}: want 401 `{reason}`, got {status} `{got}`"
            );
        }
    }
}
