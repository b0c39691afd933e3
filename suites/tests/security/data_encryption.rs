//! Encryption in transit and at rest: the services talk TLS to each other
//! and to their clients (plain HTTP is refused), an observer between two
//! services sees no PHI, the database holds no plaintext SSN or date of
//! birth, and the cache holds no PHI at all.

use harness::service_test;
use healthcare_data::Scenario;
use sandbox::{Role, Service, Tenant};
use suites::{CacheKeys, PrivateMesh, Rows, Target, TlsTarget};

use crate::common::{
    HTTP_TELLS, Tap, assert_nothing_in_clear, assert_tls_handshakes, intake, patient_secrets,
    tenant_rows, visit,
};

/// After a journey, no Redis key or string value under the services'
/// prefix holds PHI (the scanner, with every generated patient registered
/// as canaries), and the eligibility answer is among them.
#[service_test(
    security,
    compliance,
    real_services,
    services(healthcare_api, insurance_verification, billing_engine),
    timeout = "30s"
)]
async fn the_cache_holds_no_phi_in_keys_or_values(
    target: &Target,
    mut cache: CacheKeys,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    visit(&api, &patient_id, &s).await;
    let keys = cache.keys().await.expect("SCAN");
    assert!(
        keys.iter().any(|k| k.contains(":elig:")),
        "no eligibility entry among {} keys",
        keys.len()
    );
    for key in &keys {
        if let Some(f) = phi::scan(key).first() {
            panic!("PHI in a Redis key: {f}");
        }
        if let Some(v) = cache.get(key).await.expect("GET")
            && let Some(f) = phi::scan(&v).first()
        {
            panic!("PHI in the value of Redis key {key}: {f}");
        }
    }
    // A self-pay coverage has no member id (empty), which every key "contains".
    let member = &s.coverage.member_id;
    assert!(
        member.is_empty() || !keys.iter().any(|k| k.contains(member.as_str())),
        "a key spells the member id"
    );
}

/// A tap between the API and three of its peers (insurance, billing, the
/// compliance monitor) records every byte of a journey: each connection
/// opens with a TLS handshake both ways, and neither the patient's SSN,
/// name, member id nor any HTTP text crosses in the clear.
#[service_test(
    security,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        compliance_monitor
    ),
    timeout = "40s"
)]
async fn service_to_service_calls_are_tls_with_no_plaintext(own: PrivateMesh, s: Scenario) {
    let mesh = own.start(|_| {}).await.expect("mesh");
    assert!(
        mesh.url(Service::BillingEngine).starts_with("https://"),
        "the test mesh serves plain HTTP"
    );
    let peers = [
        Service::InsuranceVerification,
        Service::BillingEngine,
        Service::ComplianceMonitor,
    ];
    let mut taps = Vec::new();
    for peer in peers {
        let tap = Tap::start(mesh.addr(peer)).await;
        mesh.route(peer, tap.addr()).expect("route through the tap");
        taps.push((peer, tap));
    }
    let api = mesh.client(Service::HealthcareApi, "tls-tap");
    let patient_id = intake(&api, &s).await;
    let v = visit(&api, &patient_id, &s).await;
    assert_eq!(v.status, 201, "the journey: {}", v.body);
    // What must not cross in the clear (labels only in messages: no PHI).
    let mut secrets = patient_secrets(&s, &patient_id);
    secrets.extend(HTTP_TELLS.map(|(what, v)| (what, v.to_string())));
    for (peer, tap) in &taps {
        let used: Vec<_> = tap
            .connections()
            .into_iter()
            .filter(|(up, _)| !up.is_empty())
            .collect();
        assert!(!used.is_empty(), "{peer}: no call went through the tap");
        assert_tls_handshakes(&peer.to_string(), &used);
        assert_nothing_in_clear(&peer.to_string(), &used, &secrets);
    }
}

/// With TLS on, every service refuses plain HTTP: a request in the clear
/// gets no HTTP answer at all (the handshake fails and the connection
/// closes), whatever the route: not a `200`, and neither a `401` nor a
/// `404` — any answer in the clear means the service speaks plain HTTP.
///
/// Catches: a service that serves plain HTTP beside (or instead of) TLS,
/// including one whose plain answers are errors: the request asks for an
/// authenticated route, which in the clear would answer `401`, not `200`.
#[service_test(security, real_services, timeout = "20s")]
async fn plain_http_is_refused_when_tls_is_on(tls: TlsTarget) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for service in Service::ALL {
        let addr = tls.target.addr(service).expect("address");
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"GET /config HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            c.read_to_end(&mut answer),
        )
        .await
        .expect("the connection was neither answered nor closed");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            read.is_err() || !text.starts_with("HTTP/"),
            "{service} answered plain HTTP: {}",
            text.lines().next().unwrap_or_default()
        );
        // And over TLS the same service answers.
        let url = format!("{}/health", tls.target.url(service));
        let ok = tls.target.http().get(&url).send().await.expect("https");
        assert_eq!(ok.status(), 200, "{service} over https");
    }
}

/// After a journey no row of any service's schema for the tenant holds the
/// SSN or the date of birth in the clear (in any of the ways they are
/// written), while a clinician still reads both back through the API: the
/// fields are sealed at rest, not lost.
#[service_test(
    security,
    compliance,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        compliance_monitor,
        doctor_personalization,
        business_intelligence
    ),
    timeout = "30s"
)]
async fn rows_hold_no_plaintext_ssn_or_birth_date(
    target: &Target,
    rows: Rows,
    tenant: Tenant,
    s: Scenario,
) {
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    let v = visit(&api, &patient_id, &s).await;
    assert_eq!(v.status, 201, "the journey: {}", v.body);
    let dob = s.patient.birth_date.to_string();
    let mut forbidden = vec![
        ("the SSN", s.patient.ssn.clone()),
        ("the SSN's digits", s.patient.ssn.replace('-', "")),
    ];
    // A patient covered from birth has a coverage starting on the birth
    // date, kept in the clear with the coverage: then the date alone
    // proves nothing (known, left for the coverage's own sealing).
    if s.coverage.effective != s.patient.birth_date {
        forbidden.push(("the date of birth", dob.clone()));
        forbidden.push(("the compact date of birth", dob.replace('-', "")));
    }
    let mut scanned = 0;
    let mut patients_rows = 0;
    for (schema, table, text) in tenant_rows(&rows, &tenant).await {
        scanned += 1;
        if table == "patients" {
            patients_rows += 1;
        }
        for (what, value) in &forbidden {
            assert!(
                !text.contains(value.as_str()),
                "{schema}.{table}: {what} in the clear"
            );
        }
    }
    assert!(
        patients_rows >= 5,
        "{patients_rows} patient rows (the API's and four holders'); {scanned} rows scanned"
    );
    let clinician = target
        .client(Service::HealthcareApi, &tenant)
        .as_role(Role::Clinician);
    let r = clinician
        .get(&format!("/patients/{patient_id}"))
        .await
        .expect("read");
    assert_eq!(r.status, 200, "read back: {}", r.body);
    assert!(
        r.body["patient"]["ssn"] == s.patient.ssn.as_str()
            && r.body["patient"]["birth_date"] == dob.as_str(),
        "the sealed fields did not open back to what was registered"
    );
}
