//! Schema migrations (seed 000, "database schema migration testing"): each
//! service started on its previous schema version holding data, upgraded,
//! serving that data; a migration that fails leaves the version before it
//! intact. A mesh of the test's own ([`OwnMesh`]), whatever the target:
//! only a mesh started here can be started on an older schema.

use harness::service_test;
use healthcare_data::{Generator, Scenario};
use sandbox::{Mesh, MeshConfig, Service, schema};
use serde_json::json;
use suites::OwnMesh;

use crate::common::{intake, saga_trail, visit};

/// Every service's schema version as its `/config` states it, and as its
/// `schema_migrations` table records it.
async fn versions(mesh: &Mesh, db: &tokio_postgres::Client) -> Vec<(Service, u64, u32)> {
    let mut out = Vec::new();
    for s in Service::ALL {
        let c = mesh
            .client(s, "schema-reader")
            .get("/config")
            .await
            .expect("GET /config");
        let stated = c.body["schema_version"].as_u64().unwrap_or(0);
        let recorded = schema::applied_version(db, s.schema())
            .await
            .expect("schema_migrations");
        out.push((s, stated, recorded));
    }
    out
}

/// Asserts every service states and records version `want(service)`.
async fn assert_versions(mesh: &Mesh, db: &tokio_postgres::Client, want: fn(Service) -> u32) {
    for (s, stated, recorded) in versions(mesh, db).await {
        assert_eq!(
            recorded,
            want(s),
            "{s}: the version schema_migrations records"
        );
        assert_eq!(
            stated,
            u64::from(want(s)),
            "{s}: the version /config states"
        );
    }
}

/// Every service one version back.
fn one_version_back(c: &mut MeshConfig) {
    c.schema_versions = Service::ALL
        .iter()
        .map(|s| (*s, schema::previous(*s)))
        .collect();
}

/// Every service is started on its previous schema version, and data is
/// written through the API (a patient, a visit with its verification,
/// claim, analytics and audit trail, a doctor's preferences); the mesh
/// stops and starts again on the latest versions (the same database and
/// data key), each service's `schema_migrations` and `/config` say so, and
/// every record written before is read back through the services as it
/// was.
///
/// Catches: a migration that loses or rewrites rows (a type change whose
/// `USING` drops the old value), a version not recorded (applied again or
/// never), a service left on the old version.
#[service_test(
    integration,
    real_services,
    services(
        healthcare_api,
        insurance_verification,
        billing_engine,
        compliance_monitor,
        business_intelligence,
        doctor_personalization
    ),
    timeout = "120s"
)]
async fn each_service_upgrades_from_its_previous_schema_and_serves_the_old_data(
    own: OwnMesh,
    s: Scenario,
) {
    let db = sandbox::store::connect(own.database_url())
        .await
        .expect("the mesh's database");
    let data_key = sandbox::vault::random_key();
    let tenant = "migrating";
    let old = own
        .start(|c| {
            one_version_back(c);
            c.data_key = data_key.clone();
        })
        .await
        .expect("a mesh on the previous schemas");
    assert_versions(&old, &db, schema::previous).await;

    let api = old.client(Service::HealthcareApi, tenant);
    let patient_id = intake(&api, &s).await;
    let v = visit(&api, &patient_id, &s).await;
    let visit_id = v.body["visit_id"].as_str().expect("visit_id").to_string();
    let claim_id = v.body["claim_id"].as_str().expect("claim_id").to_string();
    let verification_id = v.body["verification_id"]
        .as_str()
        .expect("verification_id")
        .to_string();
    let request_id = v.request_id.clone().expect("X-Request-ID answered");
    let npi = s.visit.rendering_npi.clone();
    let prefs = json!({"note_style": "SOAP", "reminders": {"channel": "sms", "hours": [9, 17]}});
    let put = old
        .client(Service::DoctorPersonalization, tenant)
        .put(&format!("/doctors/{npi}/preferences"), &prefs)
        .await
        .expect("preferences");
    assert_eq!(put.status, 200, "{}", put.body);
    // The audit trail is written in the background: all of it before the
    // mesh stops.
    let monitor = old.client(Service::ComplianceMonitor, tenant);
    let trail = [
        "saga_started:claim",
        "step_completed:verify_insurance",
        "step_completed:create_claim",
        "saga_completed:claim",
    ];
    assert_eq!(
        saga_trail(&monitor, &request_id).await,
        trail,
        "the saga's audit trail before the upgrade"
    );
    drop(old);

    let new = own
        .start(|c| c.data_key = data_key.clone())
        .await
        .expect("the mesh on the latest schemas");
    assert_versions(&new, &db, schema::latest).await;
    for s in Service::ALL {
        assert!(
            schema::latest(s) > schema::previous(s),
            "{s}: nothing upgraded"
        );
    }

    let api = new.client(Service::HealthcareApi, tenant);
    let p = api
        .get(&format!("/patients/{patient_id}"))
        .await
        .expect("patient");
    assert_eq!(p.status, 200, "the patient after the upgrade: {}", p.body);
    assert_eq!(p.body["mrn"], json!(s.patient.mrn), "the MRN read back");
    assert!(
        p.body["patient"]["ssn"] == json!(s.patient.ssn),
        "the sealed SSN does not read back as written"
    );
    let vv = api
        .get(&format!("/visits/{visit_id}"))
        .await
        .expect("visit");
    assert_eq!(vv.status, 200, "{}", vv.body);
    assert_eq!(vv.body["status"], "completed", "{}", vv.body);
    assert_eq!(vv.body["claim_id"], json!(claim_id), "{}", vv.body);

    let claim = new
        .client(Service::BillingEngine, tenant)
        .get(&format!("/claims/{claim_id}"))
        .await
        .expect("claim");
    let total: u64 = s.visit.lines.iter().map(|l| l.charge_cents).sum();
    assert_eq!(claim.status, 200, "{}", claim.body);
    assert_eq!(claim.body["total_cents"], json!(total), "{}", claim.body);
    let ver = new
        .client(Service::InsuranceVerification, tenant)
        .get(&format!("/verifications/{verification_id}"))
        .await
        .expect("verification");
    assert_eq!(ver.status, 200, "{}", ver.body);
    assert_eq!(ver.body["eligible"], true, "{}", ver.body);
    let back = new
        .client(Service::DoctorPersonalization, tenant)
        .get(&format!("/doctors/{npi}/preferences"))
        .await
        .expect("preferences");
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(
        back.body["preferences"], prefs,
        "the preferences after the upgrade"
    );
    let agg = new
        .client(Service::BusinessIntelligence, tenant)
        .get("/aggregates?metric=claim_charge_cents")
        .await
        .expect("aggregates");
    assert_eq!(
        agg.body["aggregates"][0]["sum"],
        json!(total as f64),
        "{}",
        agg.body
    );
    let monitor = new.client(Service::ComplianceMonitor, tenant);
    assert_eq!(
        saga_trail(&monitor, &request_id).await,
        trail,
        "the saga's audit trail after the upgrade"
    );
}

/// The doctor service on its previous schema holds two doctors'
/// preferences, one of them text that is not JSON (a row the old schema
/// allowed and the next refuses). Starting on the latest schema fails,
/// naming the service, the version and the step; the step is rolled back
/// whole (the index made by its first statement is gone, the column is
/// still text, both rows as they were, the version the previous one).
/// Once the row is repaired the same start succeeds and both are served;
/// asking for the previous version again is refused (forward only).
///
/// Catches: a step run outside one transaction (half applied), a failure
/// reported without its version and name, a failed step recorded as
/// applied, a downgrade run against a newer schema.
#[service_test(
    integration,
    real_services,
    services(doctor_personalization),
    timeout = "90s"
)]
async fn a_failed_migration_is_rolled_back_and_leaves_the_previous_version(
    own: OwnMesh,
    mut g: Generator,
) {
    let doctor = Service::DoctorPersonalization;
    let db = sandbox::store::connect(own.database_url())
        .await
        .expect("the mesh's database");
    let tenant = "migration-fails";
    let (good, bad) = (
        g.scenario().visit.rendering_npi,
        g.scenario().visit.rendering_npi,
    );
    assert_ne!(good, bad, "two doctors");
    let kept = json!({"language": "en"});
    {
        let old = own
            .start(one_version_back)
            .await
            .expect("the previous schemas");
        let c = old.client(doctor, tenant);
        for npi in [&good, &bad] {
            let r = c
                .put(&format!("/doctors/{npi}/preferences"), &kept)
                .await
                .expect("preferences");
            assert_eq!(r.status, 200, "{}", r.body);
        }
    }
    db.execute(
        "UPDATE doctor.preferences SET preferences = 'reminders: sms' WHERE tenant = $1 AND npi = $2",
        &[&tenant, &bad],
    )
    .await
    .expect("a row that is not JSON");

    let failed = own.start(|_| {}).await.err().expect("the upgrade fails");
    let step = &schema::plan(doctor)[schema::latest(doctor) as usize - 1];
    for part in [
        doctor.name().to_string(),
        format!("v{} ({})", step.version, step.name),
        "rolled back".to_string(),
    ] {
        assert!(
            failed.contains(&part),
            "the failure does not name {part}: {failed}"
        );
    }
    let one = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.expect(sql).get::<_, String>(0) }
    };
    assert_eq!(
        schema::applied_version(&db, doctor.schema())
            .await
            .expect("version"),
        schema::previous(doctor),
        "the failed step is recorded"
    );
    assert_eq!(
        one("SELECT data_type::text FROM information_schema.columns
             WHERE table_schema = 'doctor' AND table_name = 'preferences' AND column_name = 'preferences'")
        .await,
        "text",
        "the column's type changed although its step failed"
    );
    assert_eq!(
        one("SELECT count(*)::text FROM pg_indexes WHERE schemaname = 'doctor' AND indexname = 'preferences_updated'")
            .await,
        "0",
        "the failed step's first statement stayed applied"
    );
    let rows = db
        .query(
            "SELECT npi, preferences::text FROM doctor.preferences WHERE tenant = $1 ORDER BY npi",
            &[&tenant],
        )
        .await
        .expect("rows");
    let rows: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(rows.len(), 2, "rows lost");
    for (npi, text) in &rows {
        if npi == &bad {
            assert_eq!(text, "reminders: sms", "the refused row changed");
        } else {
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(text).ok(),
                Some(kept.clone()),
                "the good row changed"
            );
        }
    }

    db.execute(
        "UPDATE doctor.preferences SET preferences = '{\"reminders\": \"sms\"}' WHERE tenant = $1 AND npi = $2",
        &[&tenant, &bad],
    )
    .await
    .expect("the row repaired");
    {
        let new = own.start(|_| {}).await.expect("the upgrade once repaired");
        assert_eq!(
            schema::applied_version(&db, doctor.schema())
                .await
                .expect("version"),
            schema::latest(doctor)
        );
        let c = new.client(doctor, tenant);
        for (npi, want) in [(&good, kept.clone()), (&bad, json!({"reminders": "sms"}))] {
            let r = c
                .get(&format!("/doctors/{npi}/preferences"))
                .await
                .expect("preferences");
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.body["preferences"], want, "after the upgrade");
        }
    }
    let refused = own
        .start(one_version_back)
        .await
        .err()
        .expect("starting on an older version than the database's");
    assert!(
        refused.contains("forward only"),
        "a downgrade is not refused as such: {refused}"
    );
}
