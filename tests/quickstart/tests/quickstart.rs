use rand_core::RngCore;
use service_test::{FixtureCx, FixtureError, TestRng, fixture, marker, service_test};

marker!(
    billing_rules,
    "claim validation rules of the billing engine"
);

pub struct Claim {
    pub total_cents: u64,
}

#[fixture]
async fn claim(cx: &mut FixtureCx) -> Result<Claim, FixtureError> {
    Ok(Claim {
        total_cents: 1_000 + cx.rng().next_u64() % 10_000,
    })
}

#[service_test(unit, billing_rules, timeout = "5s", services(billing))]
async fn a_claim_has_a_positive_total(claim: Claim) {
    assert!(claim.total_cents > 0);
}

#[service_test(unit, retries = 2)]
fn sync_tests_run_on_the_blocking_pool(mut rng: TestRng) -> Result<(), String> {
    (rng.next_u32() != rng.next_u32())
        .then_some(())
        .ok_or("same draw twice".into())
}

service_test::main!();
