//! The services' Redis cache on a real Redis: a run's keys live under its
//! prefix, and `forget_all` deletes exactly those (what `sandbox bench`
//! does once its run is over).

use std::time::Duration;

use harness::service_test;
use provision::Redis;
use sandbox::store::Cache;

#[service_test(integration, real_services, timeout = "30s")]
async fn forget_all_deletes_the_prefix_keys_and_no_other(redis: &Redis) {
    let run = format!("forget-test:{}:*[x]:", std::process::id());
    let other = format!("forget-test:{}:other-x:", std::process::id());
    let mine = Cache::connect(&redis.endpoint, &run)
        .await
        .expect("connect");
    let theirs = Cache::connect(&redis.endpoint, &other)
        .await
        .expect("connect");
    // More than one SCAN page.
    for i in 0..2500 {
        mine.set_ex(&format!("k{i}"), "v", Duration::from_secs(60))
            .await
            .expect("set");
    }
    theirs
        .set_ex("k0", "kept", Duration::from_secs(60))
        .await
        .expect("set");
    assert_eq!(mine.forget_all().await.expect("forget"), 2500);
    assert_eq!(
        mine.get("k7").await.expect("get"),
        None,
        "a run key is gone"
    );
    assert_eq!(
        theirs.get("k0").await.expect("get").as_deref(),
        Some("kept"),
        "a key outside the prefix (the glob's characters taken literally) stays"
    );
    assert_eq!(theirs.forget_all().await.expect("forget"), 1);
}

harness::main!();
