//! Encryption on every link (seed 000, issue 28 item 4): with TLS on, an
//! observer on any link of the mesh — between two services, or between a
//! service and its PostgreSQL or Redis — sees only TLS. Each test runs on a
//! TLS mesh of its own (the reference services' code, whatever the
//! target), its links tapped byte for byte.

use std::net::SocketAddr;

use harness::{Fixture, FixtureCx, FixtureError, service_test};
use healthcare_data::{ComplianceKind, Generator, Scenario};
use sandbox::store_tls::{self, SSL_REQUEST, StoreKind};
use sandbox::{Mesh, Service, Tenant};
use serde_json::json;
use suites::{Edge, OwnMesh, StoreToxics, Target, TlsTarget};

use crate::common::{
    HTTP_TELLS, Tap, assert_nothing_in_clear, assert_tls_handshakes, crosses, disclose_a_breach,
    intake, patient_secrets, visit,
};

/// PostgreSQL's `SSLRequest` as a client sends it: length 8, then the code.
fn ssl_request() -> [u8; 8] {
    let mut m = [0u8; 8];
    m[..4].copy_from_slice(&8u32.to_be_bytes());
    m[4..].copy_from_slice(&SSL_REQUEST.to_be_bytes());
    m
}

/// What the store protocols would show in the clear: SQL text and Redis
/// commands.
const STORE_TELLS: [(&str, &str); 5] = [
    ("SQL text", "INSERT INTO "),
    ("SQL text", "SELECT "),
    ("a Redis command", "\r\nPING\r\n"),
    ("a Redis command", "\r\nSET\r\n"),
    ("a Redis command", "\r\nGET\r\n"),
];

/// Asserts each of `conns` (a link to PostgreSQL) opens with the
/// `SSLRequest`, is answered `S`, and goes on with a TLS handshake both
/// ways.
fn assert_postgres_tls(link: &str, conns: &[(Vec<u8>, Vec<u8>)]) {
    let hello = ssl_request();
    for (up, down) in conns {
        assert!(
            up.starts_with(&hello),
            "{link}: a connection did not open with the SSLRequest"
        );
        assert_eq!(
            up.get(8).copied(),
            Some(0x16),
            "{link}: no TLS handshake after the SSLRequest"
        );
        assert_eq!(
            down.first().copied(),
            Some(b'S'),
            "{link}: the SSLRequest was not accepted"
        );
        assert!(
            down.get(1).is_none_or(|b| *b == 0x16),
            "{link}: the server did not answer with a handshake"
        );
    }
}

/// The server a PostgreSQL URL names, as the fronts key it.
async fn postgres_addr(url: &str) -> SocketAddr {
    store_tls::postgres_upstream(url)
        .await
        .expect("a TCP server in the database URL")
}

/// Every service's link to PostgreSQL and to Redis runs through a tap of
/// its own, placed between the service and the TLS front before the store
/// (where the network would be). Through a journey with a visit and a
/// disclosure, each service's connections to PostgreSQL open with the
/// `SSLRequest`, are answered `S`, and continue with a TLS handshake
/// record (0x16); each connection to Redis opens with a handshake both
/// ways; and no SQL, no Redis command, no key of the mesh, no startup
/// option and none of the patient's identifiers crosses in the clear.
///
/// Catches: a service that reaches PostgreSQL or Redis in the clear when
/// the mesh runs with TLS (a pool built without the TLS connector, an
/// `sslmode` that lets the connection fall back to plain text, a proxied
/// Redis address turned back into a plain `redis://` link), and a front
/// that answers plain text.
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
    timeout = "60s"
)]
async fn every_service_to_store_link_is_tls_with_no_plaintext(
    own: OwnMesh,
    s: Scenario,
    mut g: Generator,
) {
    let mut config = own.config();
    assert!(config.tls.is_some(), "the test mesh runs without TLS");
    let prefix = config.redis_prefix.clone();
    let fronts = store_tls::front_stores(&mut config)
        .await
        .expect("TLS fronts before the stores");
    let pg_front = fronts
        .get(StoreKind::Postgres, postgres_addr(own.database_url()).await)
        .expect("a front before PostgreSQL")
        .addr();
    let redis_front = fronts
        .get(StoreKind::Redis, own.redis_addr())
        .expect("a front before Redis")
        .addr();
    let mut taps = Vec::new();
    for service in Service::ALL {
        let pg = Tap::start(pg_front).await;
        let redis = Tap::start(redis_front).await;
        let url = store_tls::postgres_url_via(&config.database_url, pg.addr()).expect("URL");
        config.database_urls.insert(service, url);
        config.redis_addrs.insert(service, redis.addr());
        taps.push((service, pg, redis));
    }
    // The journey runs on its own task: when it fails (a link refused in
    // the clear, say), what the taps saw is reported first.
    let started = Mesh::start(config).await.map(std::sync::Arc::new);
    let breach = g.compliance_scenario(ComplianceKind::MinimumNecessaryBreach);
    let disclosure = json!({
        "recipient": breach.evidence["recipient"],
        "purpose": breach.evidence["purpose"],
        "payload": breach.evidence["payload"],
    });
    let journey = match &started {
        Ok(mesh) => {
            let (mesh, s) = (std::sync::Arc::clone(mesh), s.clone());
            Some(tokio::spawn(async move { store_journey(&mesh, &s, &disclosure).await }).await)
        }
        Err(_) => None,
    };
    let patient_id = match &journey {
        Some(Ok(id)) => id.clone(),
        _ => String::new(),
    };

    let mut secrets = patient_secrets(&s, &patient_id);
    secrets.extend(STORE_TELLS.map(|(what, v)| (what, v.to_string())));
    secrets.extend([
        ("a startup option", "synchronous_commit".to_string()),
        ("a key of the mesh", prefix),
    ]);
    for (service, pg, redis) in &taps {
        let conns: Vec<_> = pg
            .connections()
            .into_iter()
            .filter(|(up, _)| !up.is_empty())
            .collect();
        assert!(!conns.is_empty(), "{service}: no connection to PostgreSQL");
        assert_postgres_tls(&format!("{service} → PostgreSQL"), &conns);
        assert_nothing_in_clear(&format!("{service} → PostgreSQL"), &conns, &secrets);

        let conns: Vec<_> = redis
            .connections()
            .into_iter()
            .filter(|(up, _)| !up.is_empty())
            .collect();
        assert!(!conns.is_empty(), "{service}: no connection to Redis");
        assert_tls_handshakes(&format!("{service} → Redis"), &conns);
        assert_nothing_in_clear(&format!("{service} → Redis"), &conns, &secrets);
    }
    let mesh = started.expect("mesh");
    if let Some(Err(failed)) = journey {
        std::panic::resume_unwind(failed.into_panic());
    }
    drop(mesh);
    drop(fronts);
}

/// Intake, a visit, a read and a disclosure beyond the minimum necessary:
/// every service reads and writes its stores. The patient's id.
async fn store_journey(mesh: &Mesh, s: &Scenario, disclosure: &serde_json::Value) -> String {
    let api = mesh.client(Service::HealthcareApi, "tls-stores");
    let patient_id = intake(&api, s).await;
    let v = visit(&api, &patient_id, s).await;
    assert_eq!(v.status, 201, "the journey: {}", v.body);
    let read = api
        .get(&format!("/patients/{patient_id}"))
        .await
        .expect("read");
    assert_eq!(read.status, 200, "read back: {}", read.body);
    let d = mesh
        .client(Service::ComplianceMonitor, "tls-stores")
        .post("/disclosures", disclosure)
        .await
        .expect("disclosure");
    assert_eq!(d.status, 201, "the disclosure: {}", d.body["error"]);
    patient_id
}

/// A mesh started with TLS on plain store URLs (the sandbox's own
/// PostgreSQL and Redis, which are not reconfigured) puts a TLS front
/// before each store and sends every service there with TLS required, and
/// the fronts refuse a client that talks in the clear: a PostgreSQL
/// startup message gets a `FATAL` error (SQLSTATE 28000), a Redis `PING`
/// gets no `+PONG`.
///
/// Catches: a TLS mesh whose services still reach the stores directly in
/// the clear (no front, or a link left on `sslmode=prefer`/`redis://`),
/// and a front that relays plain text to the store behind it.
#[service_test(security, real_services, timeout = "30s")]
async fn a_tls_mesh_reaches_its_stores_only_through_tls_fronts(own: OwnMesh) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mesh = own.start(|_| {}).await.expect("mesh");
    let stores = mesh.stores();
    let pg_real = postgres_addr(own.database_url()).await;
    let pg_front = stores
        .fronts()
        .get(StoreKind::Postgres, pg_real)
        .expect("no TLS front before PostgreSQL")
        .addr();
    let redis_front = stores
        .fronts()
        .get(StoreKind::Redis, own.redis_addr())
        .expect("no TLS front before Redis")
        .addr();
    for service in Service::ALL {
        let url = stores.database_url(service);
        assert!(
            store_tls::postgres_requires_tls(url),
            "{service}: its PostgreSQL link does not require TLS"
        );
        assert_eq!(
            postgres_addr(url).await,
            pg_front,
            "{service}: its PostgreSQL link does not go to the front"
        );
        let redis = stores.redis(service);
        assert!(redis.is_tls(), "{service}: its Redis link is not rediss://");
        assert_eq!(
            redis.addr(),
            redis_front,
            "{service}: its Redis link does not go to the front"
        );
    }
    // The services work through the fronts.
    let health = mesh
        .client(Service::HealthcareApi, "tls-fronts")
        .get("/health")
        .await
        .expect("health");
    assert_eq!(health.status, 200, "{}", health.body);

    let read_all = |mut c: tokio::net::TcpStream| async move {
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            c.read_to_end(&mut answer),
        )
        .await;
        answer
    };
    // A PostgreSQL startup message (protocol 3.0, user postgres) in the clear.
    let mut startup = Vec::new();
    startup.extend_from_slice(&196_608u32.to_be_bytes());
    startup.extend_from_slice(b"user\0postgres\0database\0postgres\0\0");
    let mut message = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
    message.extend_from_slice(&startup);
    let mut c = tokio::net::TcpStream::connect(pg_front)
        .await
        .expect("connect");
    c.write_all(&message).await.expect("write");
    let answer = read_all(c).await;
    assert_eq!(
        answer.first().copied(),
        Some(b'E'),
        "the PostgreSQL front did not refuse a startup in the clear"
    );
    assert!(
        crosses(&answer, "28000"),
        "the PostgreSQL front's refusal is not SQLSTATE 28000"
    );
    let mut c = tokio::net::TcpStream::connect(redis_front)
        .await
        .expect("connect");
    c.write_all(b"*1\r\n$4\r\nPING\r\n").await.expect("write");
    let answer = read_all(c).await;
    assert!(
        !crosses(&answer, "+PONG"),
        "the Redis front answered a PING in the clear"
    );
}

/// Every service's calls to every other go through a tap before the
/// callee (the mesh's routes are shared by all callers): the API's calls
/// to insurance, billing, the compliance monitor, doctor personalization
/// (a preferences read) and business intelligence (an analytics read), the
/// API's patient syncs to the four holders, every service's audit events
/// to the compliance monitor, and the monitor's incident notice to
/// business intelligence (a disclosure beyond the minimum necessary, made
/// first, so that the analytics tap's first connection is the monitor's
/// and a later one the API's). Every connection opens with a TLS handshake
/// both ways, and neither PHI nor HTTP text nor a bearer token crosses in
/// the clear.
///
/// Catches: any service-to-service client that calls a peer over plain
/// HTTP with TLS on (the existing tap covers three of the API's peers
/// only: not doctor personalization, business intelligence, nor the
/// compliance monitor's own calls).
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
    timeout = "60s"
)]
async fn every_service_to_service_link_is_tls_with_no_plaintext(
    own: OwnMesh,
    s: Scenario,
    mut g: Generator,
) {
    let mesh = own.start(|_| {}).await.expect("mesh");
    assert!(
        mesh.url(Service::HealthcareApi).starts_with("https://"),
        "the test mesh serves plain HTTP"
    );
    let mut taps = Vec::new();
    for service in Service::ALL {
        let tap = Tap::start(mesh.addr(service)).await;
        mesh.route(service, tap.addr())
            .expect("route through the tap");
        taps.push((service, tap));
    }
    let used = |service: Service| -> usize {
        taps.iter()
            .filter(|(s, _)| *s == service)
            .flat_map(|(_, t)| t.connections())
            .filter(|(up, _)| !up.is_empty())
            .count()
    };
    let tenant = "tls-links";
    // The monitor's notice to business intelligence, before anyone else
    // has called it.
    let (d, _) = disclose_a_breach(&mesh.client(Service::ComplianceMonitor, tenant), &mut g).await;
    let incident = d.body["incident_id"].as_i64().expect("an incident opened");
    let listed = mesh
        .client(Service::ComplianceMonitor, tenant)
        .get("/incidents")
        .await
        .expect("incidents");
    let notified = listed.body["incidents"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|i| i["id"] == incident && i["notified"] == true);
    let from_monitor = used(Service::BusinessIntelligence);
    assert!(
        from_monitor >= 1,
        "the compliance monitor's notice did not go through the tap"
    );

    let api = mesh.client(Service::HealthcareApi, tenant);
    let patient_id = intake(&api, &s).await;
    let v = visit(&api, &patient_id, &s).await;
    assert_eq!(v.status, 201, "the journey: {}", v.body);
    let prefs = api
        .get(&format!("/doctors/{}/preferences", s.visit.rendering_npi))
        .await
        .expect("preferences");
    assert!(
        matches!(prefs.status, 200 | 404),
        "preferences through the API: {} {}",
        prefs.status,
        prefs.body
    );
    let agg = api.get("/analytics/aggregates").await.expect("aggregates");
    assert_eq!(agg.status, 200, "analytics through the API: {}", agg.body);
    assert!(
        used(Service::BusinessIntelligence) > from_monitor,
        "the API's analytics read did not go through the tap"
    );

    let mut secrets = patient_secrets(&s, &patient_id);
    secrets.extend(HTTP_TELLS.map(|(what, v)| (what, v.to_string())));
    for (service, tap) in &taps {
        let conns: Vec<_> = tap
            .connections()
            .into_iter()
            .filter(|(up, _)| !up.is_empty())
            .collect();
        // Nothing calls the API: its tap may stay unused; every other
        // service is called during the journey.
        assert!(
            *service == Service::HealthcareApi || !conns.is_empty(),
            "{service}: no call to it went through the tap"
        );
        assert_tls_handshakes(&format!("→ {service}"), &conns);
        assert_nothing_in_clear(&format!("→ {service}"), &conns, &secrets);
    }
    // After the taps: a notice refused for talking in the clear is
    // reported as such above.
    assert!(
        notified,
        "business intelligence was not notified of incident {incident}"
    );
}

/// A TLS target's store proxies (`capabilities.chaos.stores`), each
/// relaying to an address on this machine's loopback, where a tap can
/// stand in its route. Skips on a plain-HTTP target, without store
/// proxies, or when a proxy relays elsewhere (a Toxiproxy in a container).
struct StoreRoutes {
    toxics: StoreToxics,
    /// Each proxied link, where its proxy relays to.
    links: Vec<(Service, Edge, SocketAddr)>,
}

impl Fixture for StoreRoutes {
    async fn setup(cx: &mut FixtureCx) -> Result<Self, FixtureError> {
        cx.get::<TlsTarget>().await?;
        let toxics = cx.get::<StoreToxics>().await?;
        let mut links = Vec::new();
        for service in Service::ALL {
            for edge in [Edge::Postgres(service), Edge::Redis(service)] {
                if !toxics.controls(edge) {
                    continue;
                }
                let upstream = toxics.upstream(edge).await.map_err(FixtureError::new)?;
                let addr = tokio::net::lookup_host(upstream.as_str())
                    .await
                    .ok()
                    .and_then(|mut a| a.next())
                    .filter(|a| a.ip().is_loopback())
                    .ok_or_else(|| {
                        FixtureError::skip(format!(
                            "the proxy on {edge} relays to `{upstream}`, not to this machine's loopback: a tap here cannot stand in its route"
                        ))
                    })?;
                links.push((service, edge, addr));
            }
        }
        if links.is_empty() {
            return Err(FixtureError::skip("no store proxy to route through a tap"));
        }
        Ok(StoreRoutes { toxics, links })
    }
}

/// Is every service answering `/health` with its database and Redis up?
async fn all_stores_up(target: &Target) -> bool {
    for service in Service::ALL {
        let Ok(r) = target
            .http()
            .get(format!("{}/health", target.url(service)))
            .send()
            .await
        else {
            return false;
        };
        let Ok(body) = r.json::<serde_json::Value>().await else {
            return false;
        };
        if body["database"] != "up" || body["redis"] != "up" {
            return false;
        }
        // And the API sees every peer healthy again (their reconnecting
        // may have failed a probe).
        if service == Service::HealthcareApi
            && body["dependencies"]
                .as_object()
                .is_none_or(|d| d.values().any(|v| v["status"] != "healthy"))
        {
            return false;
        }
    }
    true
}

/// The target's own links to its stores, tapped where its chaos proxies
/// stand (each proxy relays through a tap on its way to the store): after
/// the services reconnect and a journey runs, every connection a service
/// made to PostgreSQL opens with the `SSLRequest`, is answered `S` and
/// goes on in TLS; every connection to Redis is TLS from its first byte;
/// no SQL, Redis command, key or patient identifier crosses in the clear.
/// Runs on a TLS target with store proxies on this machine
/// (`sandbox up --tls --chaos-api`), in process too.
///
/// Catches: a target serving HTTPS whose services still talk to their
/// database or cache in the clear, and a sandbox whose store proxies sit
/// between a TLS front and the store (carrying plain text) rather than
/// between the service and the front.
#[service_test(
    security,
    chaos,
    exclusive,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        compliance_monitor,
        doctor_personalization,
        business_intelligence
    ),
    timeout = "60s"
)]
async fn the_targets_store_links_carry_only_tls(
    target: &Target,
    routes: StoreRoutes,
    tenant: Tenant,
    s: Scenario,
) {
    let mut taps = Vec::new();
    for (service, edge, upstream) in &routes.links {
        let tap = Tap::start(*upstream).await;
        routes
            .toxics
            .reroute(*edge, &tap.addr().to_string())
            .await
            .expect("route the store link through the tap");
        taps.push((*service, *edge, tap));
    }
    // The proxies dropped their connections: the services connect again,
    // now through the taps.
    crate::common::eventually("every service reaches its stores again", || {
        all_stores_up(target)
    })
    .await;
    let api = target.client(Service::HealthcareApi, &tenant);
    let patient_id = intake(&api, &s).await;
    let v = visit(&api, &patient_id, &s).await;
    assert_eq!(v.status, 201, "the journey: {}", v.body);
    let read = api
        .get(&format!("/patients/{patient_id}"))
        .await
        .expect("read");
    assert_eq!(read.status, 200, "read back: {}", read.body);

    let mut secrets = patient_secrets(&s, &patient_id);
    secrets.extend(STORE_TELLS.map(|(what, v)| (what, v.to_string())));
    if tenant.0.len() >= 5 {
        secrets.push(("the tenant", tenant.0.clone()));
    }
    let mut judged = Vec::new();
    for (service, edge, tap) in &taps {
        let conns: Vec<_> = tap
            .connections()
            .into_iter()
            .filter(|(up, _)| !up.is_empty())
            .collect();
        match edge {
            Edge::Postgres(_) => assert_postgres_tls(&format!("{service} → PostgreSQL"), &conns),
            _ => assert_tls_handshakes(&format!("{service} → Redis"), &conns),
        }
        assert_nothing_in_clear(&format!("{edge}"), &conns, &secrets);
        if !conns.is_empty() {
            judged.push(format!("{edge}"));
        }
    }
    // Health checks alone reach every store: each link was judged.
    assert_eq!(
        judged.len(),
        taps.len(),
        "links with no connection through their tap: only {judged:?} had one"
    );
    for (_, edge, _) in &taps {
        routes
            .toxics
            .restore_route(*edge)
            .await
            .expect("route the store link straight again");
    }
    crate::common::eventually("every service reaches its stores after the taps", || {
        all_stores_up(target)
    })
    .await;
}
