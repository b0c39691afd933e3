//! Cross-service consistency of the target's configuration.

use std::time::Duration;

use harness::service_test;
use sandbox::{Service, Tenant};
use serde_json::Value;
use suites::{SignTokens, Target};

/// Each URL of the target answers `/health` as the service it is declared
/// for, and the API calls each dependency at the address the target names
/// (otherwise the suites would check another instance than the API uses).
#[service_test(
    config,
    health,
    real_services,
    services(healthcare_api, insurance, billing, compliance, bi, doctor),
    timeout = "20s"
)]
async fn every_url_is_the_service_it_is_declared_for(target: &Target) -> Result<(), String> {
    let chaos = target.chaos_if_running().await;
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
    services(healthcare_api, insurance, billing, compliance, bi, doctor),
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
