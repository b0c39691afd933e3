//! A suite to shard: 64 tests whose durations have a long tail, as a service
//! suite's do (a few take over a second, most a few hundred milliseconds,
//! many a moment), sharing one session fixture that takes a while to start
//! (a deployment). They wait rather than compute, so a busy machine does not
//! skew them. `cargo xtask bench shards` runs it in three shards, `hash` and
//! `duration` from a carried history, and compares their wall times.

use std::time::Duration;

use harness::{FixtureCx, fixture, marker, service_test};

marker!(shardable, "tests of known durations, for sharding");

/// One per process, as a suite's deployment is.
pub struct Deployment;

#[fixture(scope = session)]
async fn deployment(_cx: &mut FixtureCx) -> Deployment {
    tokio::time::sleep(Duration::from_millis(300)).await;
    Deployment
}

macro_rules! timed {
    ($($name:ident = $ms:expr),* $(,)?) => {$(
        #[service_test(shardable)]
        async fn $name(_deployment: &Deployment) {
            tokio::time::sleep(Duration::from_millis($ms)).await;
        }
    )*};
}

mod orders {
    use super::*;
    timed!(
        places_a_bulk_order = 1500,
        cancels_mid_shipment = 700,
        lists_orders = 50,
        pages_orders = 100,
        refunds_an_order = 400,
        reorders = 200,
        tracks = 50,
        splits_a_shipment = 900,
        merges_carts = 300,
        applies_coupons = 100,
        rejects_expired_coupons = 50,
        holds_stock = 400,
        releases_stock = 200,
        back_orders = 500,
        ships_abroad = 300,
        prices_in_currency = 100,
        audits_changes = 200,
        exports_orders = 600,
        imports_orders = 800,
        rate_limits = 50,
        retries_payment = 300,
    );
}

mod claims {
    use super::*;
    timed!(
        files_a_claim = 200,
        denies_a_duplicate = 100,
        appeals = 1300,
        adjusts = 400,
        batches_claims = 1000,
        voids = 50,
        resubmits = 300,
        pends = 100,
        pays = 200,
        reconciles_a_remittance = 600,
        posts_payments = 400,
        writes_off = 50,
        estimates = 100,
        checks_eligibility = 200,
        coordinates_benefits = 500,
        recovers = 300,
        flags_fraud = 800,
        routes_to_review = 100,
        closes = 50,
        reopens = 200,
        archives = 50,
    );
}

mod reports {
    use super::*;
    timed!(
        daily_totals = 1200,
        monthly_totals = 900,
        renders_pdf = 700,
        renders_csv = 300,
        schedules = 100,
        emails = 200,
        dashboards = 600,
        drills_down = 400,
        filters = 100,
        sorts = 50,
        paginates = 50,
        caches = 200,
        invalidates = 100,
        permissions = 300,
        redacts = 200,
        localises = 100,
        timezones = 400,
        large_exports = 500,
        streams = 300,
        cancels_a_report = 50,
        retries_a_report = 200,
        retention = 100,
    );
}

harness::main!();
