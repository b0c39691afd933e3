//! Cross-service consistency of the target's configuration.

use std::time::Duration;

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{FaultPlan, Service, Tenant};
use serde_json::Value;
use suites::{Faults, Logs, SignTokens, Target};

/// Each URL of the target answers `/health` as the service it is declared
/// for, and the API calls each dependency at the address the target names
/// (otherwise the suites would check another instance than the API uses).
#[service_test(
    config,
    health,
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
async fn every_url_is_the_service_it_is_declared_for(target: &Target) -> Result<(), String> {
    let chaos = target.chaos().ok().map(|c| {
        let proxies: std::collections::BTreeMap<Service, String> = c
            .proxies
            .iter()
            .filter_map(|(s, p)| Some((Service::from_name(s)?, p.clone())))
            .collect();
        (c.toxiproxy.trim_end_matches('/').to_string(), proxies)
    });
    for service in Service::ALL {
        let r = target
            .http()
            .get(format!("{}/health", target.url(service)))
            .send()
            .await
            .map_err(|e| format!("{service}: {e}"))?;
        let body: Value = r.json().await.map_err(|e| format!("{service}: {e}"))?;
        if body["service"] != service.name() {
            return Err(format!(
                "{} answers as `{}`, not {service}",
                target.url(service),
                body["service"]
            ));
        }
        if service == Service::HealthcareApi {
            for dep in Service::ALL
                .iter()
                .filter(|s| **s != Service::HealthcareApi)
            {
                let seen = body["dependencies"][dep.name()]["address"]
                    .as_str()
                    .unwrap_or("?");
                let declared = target.addr(*dep)?.to_string();
                let proxy = match &chaos {
                    Some((api, proxies)) => match proxies.get(dep) {
                        Some(name) => Some(proxy_view(target, api, name).await?),
                        None => None,
                    },
                    None => None,
                };
                // Behind a chaos proxy, the API calls the proxy, and the proxy
                // the declared service.
                let ok = match &proxy {
                    Some((listen, upstream)) => seen == listen && *upstream == declared,
                    None => seen == declared,
                };
                if !ok {
                    let via = proxy.map_or_else(String::new, |(l, u)| {
                        format!(" (its chaos proxy listens on {l} and forwards to {u})")
                    });
                    return Err(format!(
                        "the API calls {dep} at {seen}{via}, the target declares {declared}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A chaos proxy's `listen` and `upstream`, from the Toxiproxy API.
async fn proxy_view(target: &Target, api: &str, name: &str) -> Result<(String, String), String> {
    let url = format!("{api}/proxies/{name}");
    let view = target.get_json(&url).await?;
    let field = |k: &str| {
        view[k]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{url}: no `{k}` in {view}"))
    };
    Ok((field("listen")?, field("upstream")?))
}

/// Token audiences match the declared services: a token for a service is
/// accepted at that service's URL (404 here: no such resource) and refused
/// at every other one as "not this service".
#[service_test(
    config,
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
async fn token_audiences_match_the_declared_services(
    target: &Target,
    tokens: SignTokens,
    tenant: Tenant,
) -> Result<(), String> {
    for audience in Service::ALL {
        let token = tokens.token(audience, &tenant, Duration::from_secs(60));
        for at in Service::ALL {
            let r = target
                .http()
                .get(format!("{}/no-such-resource", target.url(at)))
                .header("authorization", format!("Bearer {token}"))
                .header("x-tenant-id", tenant.0.as_str())
                .send()
                .await
                .map_err(|e| format!("{at}: {e}"))?;
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            let refused = status == 401;
            if (at == audience) == refused {
                return Err(format!(
                    "a token for {audience} at {at}: {status} {}",
                    body["reason"]
                ));
            }
            if refused
                && !body["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("not this service")
            {
                return Err(format!(
                    "a token for {audience} at {at}: reason {}",
                    body["reason"]
                ));
            }
        }
    }
    Ok(())
}

/// Every service's effective configuration (`GET /config`): the secret
/// redacted (its length only), a hash of the rest, log redaction on, its own
/// schema (six distinct), TLS alike everywhere, and breaker, retry, timeout
/// and pool settings within sane bounds: a failure threshold in (0, 100] %, an
/// attempt shorter than the whole call, at most 5 attempts, a pool of at
/// least one connection that waits less than the call may take.
#[service_test(
    config,
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
async fn settings_agree_across_services_and_stay_in_bounds(
    target: &Target,
    tenant: Tenant,
) -> Result<(), String> {
    let mut schemas = std::collections::BTreeSet::new();
    let mut tls = std::collections::BTreeSet::new();
    for service in Service::ALL {
        let r = target
            .client(service, &tenant)
            .get("/config")
            .await
            .map_err(|e| format!("{service}: {e}"))?;
        if r.status != 200 {
            return Err(format!("{service}: /config answered {}", r.status));
        }
        let c = &r.body;
        let fail = |what: &str| Err(format!("{service}: {what}: {c}"));
        if c["service"] != service.name() {
            return fail("answers as another service");
        }
        let secret = c["secret"].as_str().unwrap_or_default();
        if !secret.starts_with("[redacted") {
            return fail("the secret is not redacted");
        }
        if c["hash"].as_str().is_none_or(|h| h.len() != 64) {
            return fail("no SHA-256 hash of the configuration");
        }
        if c["log_redaction"] != true {
            return fail("log redaction is off");
        }
        schemas.insert(c["schema"].as_str().unwrap_or_default().to_string());
        tls.insert(c["tls"].as_bool());
        let client = &c["client"];
        let rate = client["breaker"]["failure_rate_threshold"]
            .as_f64()
            .unwrap_or(-1.0);
        if !(rate > 0.0 && rate <= 100.0) {
            return fail("breaker failure threshold outside (0, 100] percent");
        }
        let attempt = client["attempt_timeout_ms"].as_u64().unwrap_or(0);
        let call = client["call_timeout_ms"].as_u64().unwrap_or(0);
        if attempt == 0 || attempt > call {
            return fail("an attempt may outlast the call");
        }
        let attempts = client["retry"]["max_attempts"].as_u64().unwrap_or(0);
        if !(1..=5).contains(&attempts) {
            return fail("retry attempts outside 1..=5");
        }
        let pool = &c["database_pool"];
        if pool["max_size"].as_u64().unwrap_or(0) == 0
            || pool["wait_ms"].as_u64().unwrap_or(u64::MAX) > call
        {
            return fail("the pool is empty or waits longer than a call");
        }
    }
    if schemas.len() != Service::ALL.len() || schemas.contains("") {
        return Err(format!("schemas are not six distinct names: {schemas:?}"));
    }
    if tls.len() != 1 {
        return Err("some services call over TLS and some do not".into());
    }
    Ok(())
}

/// `/config`'s `log_redaction` is what the logs show: for each service
/// that states it, a patient's SSN logged while it handles a request (an
/// injected leak, for the test's tenant) reaches the log book redacted,
/// never in clear. A configuration that only claims redaction fails.
///
/// Catches: a service whose log layer stops redacting (or was never
/// installed) while its `/config` still answers `log_redaction: true`.
#[service_test(
    config,
    compliance,
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
async fn log_redaction_is_what_config_states(
    target: &Target,
    faults: Faults,
    logs: Logs,
    tenant: Tenant,
    s: Scenario,
) -> Result<(), String> {
    let ssn = s.patient.ssn.clone();
    for service in Service::ALL {
        let client = target.client(service, &tenant);
        let config = client
            .get("/config")
            .await
            .map_err(|e| format!("{service}: {e}"))?;
        if config.body["log_redaction"] != true {
            return Err(format!(
                "{service}: /config states log_redaction {}",
                config.body["log_redaction"]
            ));
        }
        let request_id = format!("req-{}-redaction-{}", tenant.0, service.name());
        faults
            .inject(
                service,
                &FaultPlan {
                    leak_phi: Some(format!("SSN {ssn}")),
                    tenant: Some(tenant.0.clone()),
                    request_id: Some(request_id.clone()),
                    ..FaultPlan::default()
                },
            )
            .await?;
        client
            .request(reqwest::Method::GET, "/config", None, Some(&request_id))
            .await
            .map_err(|e| format!("{service}: {e}"))?;
        faults.clear(service, &tenant).await?;
        let lines = logs.lines().await?;
        if lines.iter().any(|l| l.contains(&ssn)) {
            return Err(format!(
                "{service} states log_redaction true, and a log line holds the SSN in clear"
            ));
        }
        let prefix = format!(" {}: ", service.name());
        if !lines
            .iter()
            .any(|l| l.contains(&prefix) && l.contains(&request_id) && l.contains("[PHI:SSN]"))
        {
            return Err(format!(
                "{service}: the leaked SSN's log line (request {request_id}) is not in the log book, redacted"
            ));
        }
    }
    Ok(())
}
