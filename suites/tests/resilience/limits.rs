//! Resource limits (seed 000): a saturated connection pool answers `503`
//! within its wait and recovers, a tenant over its rate limit is answered
//! `429` with `Retry-After` while other tenants are not, and the services'
//! memory stays under the bound the target declares through a burst.

use std::time::{Duration, Instant};

use harness::{Fixture, FixtureCx, FixtureError, Metrics, service_test};
use healthcare_data::Scenario;
use sandbox::{Service, Tenant};
use serde_json::json;
use suites::{Faults, LoadBudget, Target};
use traffic::load::{self, LoadPlan};

use crate::common::intake;

/// The API's per-tenant rate limit as the target declares it
/// (`capabilities.limits.rate_limit`), when one burst and a margin fit the
/// load budget.
struct DeclaredRateLimit {
    per_second: u32,
    burst: u32,
    /// Requests the test may send.
    most: u64,
}

impl Fixture for DeclaredRateLimit {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let target = cx.get_shared::<Target>().await?;
        let budget = LoadBudget::setup(cx).await?;
        let Some(r) = target.limits().and_then(|l| l.rate_limit.clone()) else {
            return Err(FixtureError::skip(format!(
                "target `{}` declares no rate limit (capabilities.limits.rate_limit)",
                target.name()
            )));
        };
        // The burst, then as much again as the refill may add while it is
        // sent, and a margin.
        let most = u64::from(r.burst) * 2 + 200;
        if most > budget.max_requests {
            return Err(FixtureError::skip(format!(
                "target `{}`: going past a burst of {} takes up to {most} requests, over its load budget of {}",
                target.name(),
                r.burst,
                budget.max_requests
            )));
        }
        Ok(DeclaredRateLimit {
            per_second: r.requests_per_second,
            burst: r.burst,
            most,
        })
    }
}

/// One tenant sends requests to the API 32 at a time until it has been
/// refused twenty times: at most the declared burst plus what the refill
/// allows in the time taken (`burst + rate × elapsed`) are served, and
/// the refusals come before that many were sent past it; each refusal is
/// `429 rate_limited` in the one error shape with a `Retry-After` of the
/// time one request's allowance takes to come back (whole seconds); the
/// API's `/config` states the declared limit; while the tenant is refused,
/// sixteen requests of another tenant sent beside sixteen of its own are
/// all served; after waiting `Retry-After` the tenant is
/// served again (a second: the allowance refills continuously);
/// `http_rate_limited_total` rose by exactly the refusals.
///
/// Catches: no limit (or one far above the declared), a limit shared by
/// every tenant, a 429 without `Retry-After` or with one that does not let
/// the client back in, a limiter that never refills, refusals not counted.
#[service_test(
    resilience,
    load,
    real_services,
    services(healthcare_api),
    timeout = "90s"
)]
async fn a_tenant_over_its_rate_limit_is_answered_429_with_retry_after(
    target: &Target,
    limit: DeclaredRateLimit,
    tenant: Tenant,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let config = api.get("/config").await.expect("GET /config");
    assert_eq!(
        config.body["rate_limit"],
        json!({"per_second": limit.per_second, "burst": limit.burst}),
        "the API's /config and the target's declared rate limit differ"
    );
    let counter = || target.metric(Service::HealthcareApi, "http_rate_limited_total", &[]);
    let counted_before = counter().await.expect("metrics");
    let wait_for_one = (1.0 / f64::from(limit.per_second)).ceil().max(1.0) as u64;
    let started = Instant::now();
    let (mut served, mut refused, mut sent) = (0u64, 0u64, 0u64);
    let mut retry_after = Vec::new();
    while refused < 20 {
        let allowed =
            f64::from(limit.burst) + f64::from(limit.per_second) * started.elapsed().as_secs_f64();
        assert!(
            (sent as f64) < allowed + 100.0 && sent < limit.most,
            "{sent} requests in {:?} and none refused: the limit is {} at once, {} a second",
            started.elapsed(),
            limit.burst,
            limit.per_second
        );
        let mut wave = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let api = api.clone();
            wave.spawn(async move { api.get("/config").await });
        }
        sent += 32;
        while let Some(done) = wave.join_next().await {
            let r = done.expect("a request task").expect("an answer");
            match r.status {
                200 => served += 1,
                429 => {
                    refused += 1;
                    assert_eq!(r.body["error"], "rate_limited", "{}", r.body);
                    assert!(r.body["message"].is_string(), "{}", r.body);
                    retry_after.push(r.retry_after);
                }
                s => panic!("a request answered {s}: {}", r.body),
            }
        }
    }
    let elapsed = started.elapsed();
    let most_served =
        f64::from(limit.burst) + f64::from(limit.per_second) * elapsed.as_secs_f64() + 1.0;
    assert!(
        served as f64 <= most_served,
        "{served} requests served in {elapsed:?}: over the burst of {} and {} a second ({most_served:.0})",
        limit.burst,
        limit.per_second
    );
    assert!(
        // The first /config read took one of the burst.
        served + 1 >= u64::from(limit.burst),
        "only {served} served before refusals: less than the burst of {}",
        limit.burst
    );
    for r in &retry_after {
        assert!(
            r.is_some_and(|s| (1..=wait_for_one + 1).contains(&s)),
            "Retry-After {r:?}: one request's allowance comes back in {wait_for_one} s"
        );
    }

    // Side by side with the refused tenant, sixteen requests of another
    // tenant are all served.
    let other = target.client(Service::HealthcareApi, &format!("{}-other", tenant.0));
    let mut wave = tokio::task::JoinSet::new();
    for i in 0..32 {
        let client = if i % 2 == 0 {
            api.clone()
        } else {
            other.clone()
        };
        wave.spawn(async move { (i % 2, client.get("/config").await) });
    }
    let mut others_served = 0;
    while let Some(done) = wave.join_next().await {
        let (which, r) = done.expect("a request task");
        let r = r.expect("an answer");
        match (which, r.status) {
            (1, 200) => others_served += 1,
            (0, 429) => refused += 1,
            _ => {}
        }
    }
    assert_eq!(
        others_served, 16,
        "another tenant is refused beside the one over its limit"
    );
    let wait = retry_after.last().copied().flatten().expect("Retry-After");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let r = api.get("/config").await.expect("after Retry-After");
    assert_eq!(
        r.status, 200,
        "refused after waiting Retry-After ({wait} s): {}",
        r.body
    );
    assert_eq!(
        counter().await.expect("metrics") - counted_before,
        refused as f64,
        "http_rate_limited_total against the refusals seen"
    );
}

/// The API's connection pool as its `/config` states it.
struct Pool {
    max_size: u64,
    wait: Duration,
}

impl Fixture for Pool {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let target = cx.get_shared::<Target>().await?;
        let r = target
            .client(Service::HealthcareApi, "config-reader")
            .get("/config")
            .await
            .map_err(|e| FixtureError::new(format!("healthcare-api GET /config: {e}")))?;
        let pool = &r.body["database_pool"];
        let (Some(max_size), Some(wait_ms)) = (pool["max_size"].as_u64(), pool["wait_ms"].as_u64())
        else {
            return Err(FixtureError::skip(format!(
                "target `{}`: the API's /config states no pool (database_pool.max_size, database_pool.wait_ms)",
                target.name()
            )));
        };
        Ok(Pool {
            max_size,
            wait: Duration::from_millis(wait_ms),
        })
    }
}

/// Every connection of the API's pool is held (test mode's
/// `POST /admin/pool/hold`, for the pool's wait and three seconds more):
/// the pool reports all of them in use, a patient's read is answered
/// `503 database_unavailable` once the pool's wait has passed and not
/// much later (the wait plus two seconds), and counted as a pool timeout;
/// once the connections are let go the same read answers `200` with the
/// patient. The pool is the API's for everyone: the test runs alone.
///
/// Catches: a request that waits for a connection without bound (or far
/// past the stated wait), a saturated pool answered `500` or a hang
/// instead of `503`, a pool that does not recover once connections are
/// free.
#[service_test(
    resilience,
    exclusive,
    real_services,
    services(healthcare_api),
    timeout = "60s"
)]
async fn a_saturated_pool_answers_503_within_its_wait_and_recovers(
    target: &Target,
    _faults: Faults,
    pool: Pool,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    let path = format!("/patients/{patient_id}");
    let read = || api.get(&path);
    assert_eq!(read().await.expect("read").status, 200);
    let timeouts = || target.metric(Service::HealthcareApi, "db_pool_timeouts_total", &[]);
    let timeouts_before = timeouts().await.expect("metrics");

    let hold = pool.wait + Duration::from_secs(3);
    let held = api
        .post("/admin/pool/hold", &json!({"ms": hold.as_millis() as u64}))
        .await
        .expect("POST /admin/pool/hold");
    let held_at = Instant::now();
    assert_eq!(held.status, 200, "{}", held.body);
    assert_eq!(held.body["held"], json!(pool.max_size), "{}", held.body);
    let in_use = target
        .metric(
            Service::HealthcareApi,
            "db_pool_connections",
            &[("state", "in_use")],
        )
        .await
        .expect("metrics");
    assert_eq!(
        in_use, pool.max_size as f64,
        "connections in use while held"
    );

    let asked = Instant::now();
    let r = read().await.expect("a read while the pool is saturated");
    let took = asked.elapsed();
    // The error only: a 200 would carry the patient.
    assert_eq!(
        r.status, 503,
        "a read on a saturated pool: {}",
        r.body["error"]
    );
    assert_eq!(r.body["error"], "database_unavailable", "{}", r.body);
    let bound = pool.wait + Duration::from_secs(2);
    assert!(
        took <= bound,
        "the 503 came after {took:?}: over the pool's wait of {:?} (bound {bound:?})",
        pool.wait
    );
    assert!(
        held_at.elapsed() < hold,
        "the hold ended before the read was answered: the test proves nothing (took {took:?})"
    );
    assert!(
        timeouts().await.expect("metrics") > timeouts_before,
        "the refused read is not counted in db_pool_timeouts_total"
    );

    let deadline = held_at + hold + pool.wait + Duration::from_secs(3);
    tokio::time::sleep(hold.saturating_sub(held_at.elapsed())).await;
    let recovered = loop {
        let r = read().await.expect("a read once released");
        if r.status == 200 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        recovered.status, 200,
        "the pool did not recover once its connections were let go: {}",
        recovered.body["error"]
    );
    assert_eq!(recovered.body["patient_id"], json!(patient_id));
}

/// The resident memory each service's process may reach, as the target
/// declares it (`capabilities.limits.max_resident_bytes`).
struct MemoryBound(f64);

impl Fixture for MemoryBound {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        let target = cx.get_shared::<Target>().await?;
        match target.limits().and_then(|l| l.max_resident_bytes) {
            Some(b) => Ok(MemoryBound(b as f64)),
            None => Err(FixtureError::skip(format!(
                "target `{}` declares no memory bound (capabilities.limits.max_resident_bytes)",
                target.name()
            ))),
        }
    }
}

/// Every service's resident memory, from its `/metrics`.
async fn resident(target: &Target) -> Result<Vec<(Service, f64)>, String> {
    let mut out = Vec::new();
    for s in Service::ALL {
        out.push((
            s,
            target
                .metric(s, "process_resident_memory_bytes", &[])
                .await?,
        ));
    }
    Ok(out)
}

/// A burst on every service at once, up to 600 requests each, 16 at a
/// time, of its `/openapi.json` (the largest answer each serves, built per
/// request; no peer, database or Redis in the way, so the burst measures
/// the services, not their links): every service's resident memory, read
/// from its `/metrics` every quarter second during the burst and once
/// after, stays under the bound the target declares; most of the burst is
/// answered.
///
/// Catches: memory kept per request (a leak the burst multiplies), a
/// burst buffered without bound, a service that stops reporting its
/// memory (0 is a failure, not a pass).
#[service_test(
    performance,
    load,
    exclusive,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        compliance_monitor,
        business_intelligence,
        doctor_personalization
    ),
    timeout = "90s"
)]
async fn memory_stays_under_the_declared_bound_through_a_burst(
    target: &Target,
    budget: LoadBudget,
    bound: MemoryBound,
    metrics: Metrics,
) -> Result<(), String> {
    let before = resident(target).await?;
    let (connections, requests) = budget.cap(16 * 6, 600 * 6);
    let (connections, requests) = (connections as usize / 6, requests / 6);
    let mut burst = tokio::task::JoinSet::new();
    for s in Service::ALL {
        let plan = LoadPlan::closed(target.addr(s)?, "/openapi.json", connections.max(1))
            .max_requests(requests)
            .tls(target.tls())
            .allow(target.load_hosts())
            .duration(Duration::from_secs(40));
        burst.spawn(async move { (s, load::run(&plan).await) });
    }
    let mut peak = before.clone();
    let mut reports = Vec::new();
    while !burst.is_empty() {
        for ((_, p), (_, now)) in peak.iter_mut().zip(resident(target).await?) {
            *p = p.max(now);
        }
        let tick = tokio::time::sleep(Duration::from_millis(250));
        tokio::pin!(tick);
        loop {
            tokio::select! {
                _ = &mut tick => break,
                done = burst.join_next() => match done {
                    Some(done) => {
                        let (s, report) = done.map_err(|e| e.to_string())?;
                        reports.push((s, report.map_err(|e| format!("{s}: {e}"))?));
                    }
                    None => break,
                },
            }
        }
    }
    for ((_, p), (_, now)) in peak.iter_mut().zip(resident(target).await?) {
        *p = p.max(now);
    }
    let mut problems = Vec::new();
    for (s, report) in &reports {
        if report.ok * 2 < requests {
            problems.push(format!(
                "{s}: only {} of {requests} requests of the burst answered 200 ({:?})",
                report.ok, report.errors
            ));
        }
    }
    for ((s, start), (_, top)) in before.iter().zip(&peak) {
        metrics.record(
            "resident_memory_peak_mib",
            top / 1048576.0,
            "MiB",
            Some(s.name()),
        );
        if *top == 0.0 || *start == 0.0 {
            problems.push(format!("{s} reports no process_resident_memory_bytes"));
        } else if *top > bound.0 {
            problems.push(format!(
                "{s}: resident memory reached {:.0} MiB (from {:.0} MiB), over the declared {:.0} MiB",
                top / 1048576.0,
                start / 1048576.0,
                bound.0 / 1048576.0
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
