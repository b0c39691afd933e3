extern crate service_test_harness as harness;
use harness::{fixture, service_test, FixtureCx};

pub struct Mesh;
pub struct Patient;

#[fixture(session)]
async fn mesh() -> Mesh {
    Mesh
}

#[fixture]
async fn patient(_cx: &mut FixtureCx) -> Patient {
    Patient
}

/// A session fixture cannot depend on a test-scoped one.
pub struct Registry;

#[fixture(scope = session)]
async fn registry(_p: &Patient) -> Registry {
    Registry
}

/// A shared fixture cannot be moved into one test.
#[service_test(integration)]
async fn takes_the_mesh_by_value(_mesh: Mesh) {}

pub struct Other;

#[fixture(scope = forever)]
async fn other() -> Other {
    Other
}

harness::main!();
