//! The shipped suites: one `harness = false` binary.
//!
//! `mesh/` tests the reference mesh (`sandbox`): six services on real
//! PostgreSQL and Redis, end to end, for compliance, resilience and
//! performance. The modules below it exercise the harness itself against a
//! small real HTTP service on loopback (a session fixture with teardown,
//! test-scoped tenants). Run them with `cargo test -p suites`, select by
//! marker with `cargo test -p suites -- --marker compliance`.

mod demo_service;
mod mesh;

use std::time::{Duration, Instant};

use demo_service::{DemoService, Tenant, get};
use harness::{Metrics, TestRng, service_test};
use rand_core::RngCore;

mod health {
    use super::*;

    #[service_test(integration, health, services(demo))]
    async fn health_answers_200_with_json(svc: &DemoService) -> Result<(), String> {
        let resp = get(svc.addr, "/health", &[]).await?;
        if resp.status != 200 {
            return Err(format!("status {}", resp.status));
        }
        if resp.header("content-type") != Some("application/json") {
            return Err(format!("content-type {:?}", resp.header("content-type")));
        }
        if resp.body != r#"{"status":"healthy"}"# {
            return Err(format!("body {:?}", resp.body));
        }
        Ok(())
    }

    #[service_test(integration, health, api_contract, services(demo))]
    async fn unknown_paths_answer_404(svc: &DemoService) -> Result<(), String> {
        let resp = get(svc.addr, "/no/such/endpoint", &[]).await?;
        (resp.status == 404)
            .then_some(())
            .ok_or(format!("status {}", resp.status))
    }
}

mod compliance {
    use super::*;

    /// Every request is audited with its request id and tenant; the audit
    /// trail is queried per tenant, so concurrent tests do not see each other.
    #[service_test(integration, compliance, audit, services(demo))]
    async fn every_request_is_in_the_audit_trail(
        svc: &DemoService,
        tenant: Tenant,
    ) -> Result<(), String> {
        let ids: Vec<String> = (0..3).map(|i| format!("{}-req-{i}", tenant.0)).collect();
        for id in &ids {
            let r = get(
                svc.addr,
                "/health",
                &[("x-request-id", id), ("x-tenant-id", &tenant.0)],
            )
            .await?;
            if r.status != 200 {
                return Err(format!("status {}", r.status));
            }
        }
        let trail = get(svc.addr, "/audit", &[("x-tenant-id", &tenant.0)]).await?;
        for id in &ids {
            if !trail
                .body
                .lines()
                .any(|l| l.starts_with(&format!("{id} GET /health")))
            {
                return Err(format!(
                    "request {id} is missing from the audit trail:\n{}",
                    trail.body
                ));
            }
        }
        Ok(())
    }

    /// One tenant's audit trail never shows another tenant's requests.
    #[service_test(integration, compliance, security, services(demo))]
    async fn a_tenant_never_sees_another_tenants_audit_trail(
        svc: &DemoService,
        mine: Tenant,
        theirs: Tenant,
    ) -> Result<(), String> {
        get(
            svc.addr,
            "/health",
            &[("x-request-id", "theirs-1"), ("x-tenant-id", &theirs.0)],
        )
        .await?;
        let trail = get(svc.addr, "/audit", &[("x-tenant-id", &mine.0)]).await?;
        if trail.body.contains("theirs-1") {
            return Err(format!(
                "tenant {} saw tenant {}'s request",
                mine.0, theirs.0
            ));
        }
        Ok(())
    }
}

mod resilience {
    use super::*;
    use fixtures::chaos::{ChaosProxy, Fault, FaultKind};

    /// Through the chaos proxy, a partition turns into a client timeout and
    /// taking the proxy down into an immediate refusal; healing restores
    /// service.
    #[service_test(integration, resilience, chaos, services(demo), timeout = "10s")]
    async fn partitions_and_outages_through_the_chaos_proxy(
        svc: &DemoService,
    ) -> Result<(), String> {
        let proxy = ChaosProxy::start(svc.addr)
            .await
            .map_err(|e| e.to_string())?;
        let healthy = get(proxy.addr(), "/health", &[]).await?;
        if healthy.status != 200 {
            return Err(format!("through the proxy: {}", healthy.status));
        }
        let cut = proxy.partition();
        if tokio::time::timeout(
            Duration::from_millis(200),
            get(proxy.addr(), "/health", &[]),
        )
        .await
        .is_ok()
        {
            return Err("a partitioned service answered".into());
        }
        proxy.remove(cut);
        proxy.add(Fault::new(FaultKind::Latency {
            latency: Duration::from_millis(150),
            jitter: Duration::ZERO,
        }));
        let t = Instant::now();
        get(proxy.addr(), "/health", &[]).await?;
        if t.elapsed() < Duration::from_millis(150) {
            return Err(format!("latency fault not applied: {:?}", t.elapsed()));
        }
        proxy.clear();
        proxy.down().await;
        match get(proxy.addr(), "/health", &[]).await {
            Err(e) if e.contains("refused") => {}
            other => {
                return Err(format!(
                    "a down proxy should refuse: {:?}",
                    other.map(|r| r.status)
                ));
            }
        }
        proxy.up().await.map_err(|e| e.to_string())?;
        get(proxy.addr(), "/health", &[]).await.map(|_| ())
    }

    /// The service's slow endpoint takes as long as asked; a client deadline
    /// shorter than that fails fast instead of hanging.
    #[service_test(integration, resilience, services(demo), timeout = "5s")]
    async fn a_client_deadline_cuts_a_slow_call_short(svc: &DemoService) -> Result<(), String> {
        let call = get(svc.addr, "/slow?ms=2000", &[]);
        match tokio::time::timeout(Duration::from_millis(100), call).await {
            Err(_elapsed) => Ok(()),
            Ok(r) => Err(format!(
                "the slow call returned before the deadline: {:?}",
                r.map(|r| r.status)
            )),
        }
    }

    #[service_test(integration, resilience, slow, services(demo), timeout = "5s")]
    async fn a_slow_call_completes_when_given_time(svc: &DemoService) -> Result<(), String> {
        let r = get(svc.addr, "/slow?ms=300", &[]).await?;
        (r.status == 200)
            .then_some(())
            .ok_or(format!("status {}", r.status))
    }
}

mod performance {
    use super::*;

    /// 100 sequential health checks: latency percentiles, throughput and
    /// error rate, recorded for the report.
    #[service_test(integration, performance, services(demo), timeout = "30s")]
    async fn health_latency_is_recorded(svc: &DemoService, metrics: Metrics) -> Result<(), String> {
        let mut samples = Vec::with_capacity(100);
        let mut errors = 0u32;
        let started = Instant::now();
        for _ in 0..100 {
            let t = Instant::now();
            match get(svc.addr, "/health", &[]).await {
                Ok(r) if r.status == 200 => {}
                _ => errors += 1,
            }
            samples.push(t.elapsed());
        }
        let elapsed = started.elapsed().as_secs_f64();
        metrics.latencies("GET /health", &samples);
        metrics.throughput("GET /health", samples.len() as f64 / elapsed);
        metrics.error_rate("GET /health", f64::from(errors) / samples.len() as f64);
        (errors == 0)
            .then_some(())
            .ok_or(format!("{errors} of 100 health checks failed"))
    }
}

mod unit {
    use super::*;

    /// Tenants drawn for one test are distinct: tests stay apart by tenant.
    #[service_test(unit)]
    fn tenants_drawn_in_one_test_are_distinct(a: Tenant, b: Tenant) {
        assert_ne!(a.0, b.0);
    }

    /// The per-test generator is seeded: two draws differ, and a fresh
    /// generator from the same seed repeats them.
    #[service_test(unit)]
    fn the_per_test_generator_is_seeded(mut rng: TestRng) {
        let replay = rng.clone();
        let first = [rng.next_u64(), rng.next_u64()];
        let mut replay = replay;
        assert_eq!(first, [replay.next_u64(), replay.next_u64()]);
        assert_ne!(first[0], first[1]);
    }
}

harness::main!();
