//! A platform team's tests, written against the `service-test` facade only:
//! its own marker, a fixture of its own, a database per test (`TestDb`),
//! synthetic patients, and a deployment described by a target file
//! (`--target`, or `SERVICE_TEST_TARGET`).

use std::time::Duration;

use service_test::deployment::TargetFile;
use service_test::healthcare_data::Patient;
use service_test::provision::{TestDb, migration};
use service_test::{FixtureCx, FixtureError, fixture, marker, service_test};

marker!(clinic, "the clinic team's checks of its deployment");

/// The services this team's deployment runs (the names its target file uses).
const SERVICES: [&str; 6] = [
    "healthcare-api",
    "insurance-verification",
    "billing-engine",
    "compliance-monitor",
    "business-intelligence",
    "doctor-personalization",
];

// The schema every `TestDb` starts from.
migration!(
    "001_appointments",
    "CREATE TABLE appointments (
        id BIGSERIAL PRIMARY KEY,
        mrn TEXT NOT NULL,
        starts_at TIMESTAMPTZ NOT NULL
    )"
);

/// The deployment under test, read once per run from the target file.
pub struct Deployment {
    file: TargetFile,
    http: reqwest::Client,
}

#[fixture(scope = session)]
async fn deployment(cx: &mut FixtureCx) -> Result<Deployment, FixtureError> {
    let Some(path) = cx.target_file() else {
        return Err(FixtureError::skip(
            "no deployment: pass --target FILE (e.g. the one `sandbox up --write-target` writes)",
        ));
    };
    let file = TargetFile::load(path, &SERVICES).map_err(FixtureError::new)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(FixtureError::new)?;
    Ok(Deployment { file, http })
}

#[service_test(integration, clinic, timeout = "30s")]
async fn every_service_of_the_deployment_is_healthy(deployment: &Deployment) {
    for (name, service) in &deployment.file.services {
        let url = format!("{}/health", service.url);
        let answer = deployment
            .http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: GET {url}: {e}"));
        assert_eq!(answer.status(), 200, "{name}: GET {url}");
        let body: serde_json::Value = answer.json().await.expect("a JSON health body");
        assert_eq!(body["status"], "healthy", "{name}: {body}");
    }
}

#[service_test(integration, clinic, real_services)]
async fn an_appointment_is_stored_and_read_back(db: TestDb, patient: Patient) {
    db.client
        .execute(
            "INSERT INTO appointments (mrn, starts_at) VALUES ($1, now())",
            &[&patient.mrn],
        )
        .await
        .expect("insert");
    let row = db
        .client
        .query_one("SELECT mrn FROM appointments", &[])
        .await
        .expect("one row");
    let mrn: String = row.get(0);
    assert_eq!(mrn, patient.mrn);
}

#[service_test(integration, clinic, real_services)]
async fn each_test_gets_an_empty_database(db: TestDb) {
    let row = db
        .client
        .query_one("SELECT count(*) FROM appointments", &[])
        .await
        .expect("count");
    let n: i64 = row.get(0);
    assert_eq!(n, 0, "{} starts empty", db.name);
}

service_test::main!();
