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
    status_and_reason_from(target, service, path, token, tenant, None).await
}

async fn status_and_reason_from(
    target: &Target,
    service: Service,
    path: &str,
    token: Option<&str>,
    tenant: &str,
    source_service: Option<&str>,
) -> (u16, String) {
    let mut req = target
        .http()
        .get(format!("{}{path}", target.url(service)))
        .header("x-tenant-id", tenant);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(s) = source_service {
        req = req.header("x-source-service", s);
    }
    let r = req.send().await.expect("send");
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (
        status,
        body["reason"].as_str().unwrap_or_default().to_string(),
    )
}

/// Every service checks the token (a JWT): missing, forged, for another
/// service, expired, not yet valid, valid too long, `alg: none`, for
/// another tenant than `X-Tenant-ID`, issued by another service than
/// `X-Source-Service`, or malformed → 401 with the reason, never the token;
/// a good one passes (404 here: no such route).
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
    timeout = "30s"
)]
async fn bad_tokens_get_401_with_the_reason(target: &Target, tokens: SignTokens, tenant: Tenant) {
    for service in Service::ALL {
        token_table(target, &tokens, &tenant, service).await;
    }
}

async fn token_table(target: &Target, tokens: &SignTokens, tenant: &Tenant, service: Service) {
    const PATH: &str = "/no-such-route";
    let aud = service.name();
    let good = tokens.token(service, tenant, Duration::from_secs(60));
    let forged = token::sign(b"not the secret", "x", aud, tenant, Duration::from_secs(60));
    let other = Service::ALL
        .into_iter()
        .find(|s| *s != service)
        .unwrap_or(service);
    let other_service = tokens.token(other, tenant, Duration::from_secs(60));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = |iat: u64, nbf: u64, exp: u64| Claims {
        iss: "x".into(),
        aud: aud.into(),
        tenant: tenant.0.clone(),
        exp,
        iat,
        nbf,
        jti: format!("jti-{iat}-{nbf}-{exp}"),
        role: None,
        sub: None,
    };
    let expired = token::sign_claims(tokens.secret(), &claims(now - 120, now - 120, now - 60));
    let not_yet = token::sign_claims(tokens.secret(), &claims(now, now + 600, now + 900));
    let too_long = token::sign_claims(tokens.secret(), &claims(now, now, now + 7 * 24 * 3600));
    // `alg: none`, no signature: the classic forgery.
    let unsigned = {
        use base64::Engine as _;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let body = serde_json::to_value(claims(now, now, now + 60)).expect("claims");
        format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
            b64(&body)
        )
    };
    let cases = [
        (None, tenant.0.as_str(), "missing bearer token"),
        (Some(forged.as_str()), &tenant.0, "bad signature"),
        (Some(other_service.as_str()), &tenant.0, "not this service"),
        (Some(expired.as_str()), &tenant.0, "token expired"),
        (Some(not_yet.as_str()), &tenant.0, "not yet valid"),
        (Some(too_long.as_str()), &tenant.0, "lifetime"),
        (
            Some(unsigned.as_str()),
            &tenant.0,
            "algorithm `none` is not accepted",
        ),
        (Some(good.as_str()), "another-tenant", "another tenant"),
        (Some("garbage"), &tenant.0, "malformed token"),
    ];
    for (token, t, reason) in cases {
        let (status, got) = status_and_reason(target, service, PATH, token, t).await;
        assert_eq!(status, 401, "{service}: {reason}");
        assert!(
            got.contains(reason),
            "{service}: want `{reason}`, got `{got}`"
        );
        if let Some(tok) = token.filter(|t| t.len() > 10) {
            assert!(!got.contains(tok), "{service}: the reason echoes the token");
        }
    }
    // The token's issuer must be the service the request says it is from.
    let (status, got) = status_and_reason_from(
        target,
        service,
        PATH,
        Some(&good),
        tenant,
        Some(other.name()),
    )
    .await;
    assert_eq!(status, 401, "{service}: {got}");
    assert!(
        got.contains(&format!("but X-Source-Service is `{}`", other.name())),
        "{service}: {got}"
    );
    assert!(
        !got.contains(good.as_str()),
        "{service}: the reason echoes the token"
    );
    let (status, _) = status_and_reason(target, service, PATH, Some(&good), tenant).await;
    assert_eq!(status, 404, "{service}: a good token passes");
}

/// Every service refuses a request without a token, one whose token names
/// another tenant than `X-Tenant-ID`, and one for another service, with
/// 401 and the reason.
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

/// The replay guard under load: with far more live tokens than its sweep
/// threshold, every used `jti` is still refused a second time, and an
/// expired one is swept out (so the guard does not grow without bound).
#[service_test(security, unit, timeout = "20s")]
async fn the_replay_guard_refuses_every_reuse_while_it_sweeps() {
    let guard = sandbox::auth::ReplayGuard::default();
    let now = 1_000_000;
    // Expired long ago: swept at the first sweep.
    assert!(guard.first_use("old", now - 3600, now - 3660));
    for i in 0..20_000 {
        assert!(
            guard.first_use(&format!("j{i}"), now + 60, now),
            "j{i} refused on first use"
        );
    }
    for i in (0..20_000).step_by(997) {
        assert!(
            !guard.first_use(&format!("j{i}"), now + 60, now),
            "j{i} replayed"
        );
    }
    assert!(
        guard.first_use("old", now + 60, now),
        "an expired token's jti was never swept"
    );
}
