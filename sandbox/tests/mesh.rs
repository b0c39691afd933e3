//! The sandbox binary's own checks, on real PostgreSQL and Redis: `up`
//! starts six healthy services, and `--write-target` describes them in a
//! target file the suites can load. Everything the mesh does for a test
//! (the saga, breakers, retries, tokens, tenants, PHI in logs, stop and
//! restart) is in the shipped suites (`suites/tests/`), where it reaches
//! the reports.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use harness::service_test;
use provision::{Postgres, Redis};
use sandbox::Service;
use serde_json::Value;

/// A database of its own for one `up` process, dropped after.
async fn fresh_database(pg: &Postgres, name: &str) -> tokio_postgres::Client {
    let db = sandbox::store::connect(&pg.url("postgres"))
        .await
        .expect("connect");
    db.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .expect("drop a leftover database");
    db.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    db
}

/// Starts `sandbox up` with `args`; returns the child and its stdout lines
/// up to "Ctrl-C stops".
async fn up(pg: &Postgres, redis: &Redis, database: &str, args: &[&str]) -> (Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .arg("up")
        .args(args)
        .env("DATABASE_URL", pg.url(database))
        .env("REDIS_URL", redis.url())
        .env_remove("SANDBOX_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sandbox up");
    let stdout = child.stdout.take().expect("stdout");
    let lines = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take_while(|l| l != "Ctrl-C stops")
            .collect::<Vec<_>>()
    })
    .await
    .expect("read stdout");
    (child, lines)
}

mod binary {
    use super::*;

    /// `sandbox up` starts the six services, prints their addresses, and
    /// each `/health` answers 200 with JSON.
    #[service_test(integration, real_services, health, timeout = "60s")]
    async fn up_prints_six_healthy_addresses(pg: &Postgres, redis: &Redis) {
        let name = format!("sandbox_up_{}", std::process::id());
        let db = fresh_database(pg, &name).await;
        let (mut child, lines) = up(pg, redis, &name, &[]).await;
        let urls: Vec<(String, String)> = lines
            .iter()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                let (name, url) = (parts.next()?, parts.next()?);
                (Service::from_name(name).is_some() && url.starts_with("http://127.0.0.1:"))
                    .then(|| (name.to_string(), url.to_string()))
            })
            .collect();
        let result = async {
            assert_eq!(urls.len(), 6, "{lines:?}");
            for (name, url) in &urls {
                let r = reqwest::get(format!("{url}/health")).await.expect("health");
                assert_eq!(r.status(), 200, "{name}");
                let body: Value = r.json().await.expect("JSON");
                assert_eq!(body["service"], name.as_str());
            }
        };
        result.await;
        let _ = child.kill();
        let _ = child.wait();
        let _ = db
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }

    /// `up --test-mode --write-target` writes a target file that loads
    /// with the six URLs `up` printed, a secret file beside it (mode 0600)
    /// whose tokens the services accept, storage URLs, and test mode's
    /// faults and logs declared.
    #[service_test(integration, real_services, config, timeout = "60s")]
    async fn write_target_describes_the_running_mesh(pg: &Postgres, redis: &Redis) {
        let name = format!("sandbox_wt_{}", std::process::id());
        let db = fresh_database(pg, &name).await;
        let dir = std::env::temp_dir().join(format!("sandbox-wt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("t.toml");
        let path_text = path.to_string_lossy().into_owned();
        let (mut child, lines) = up(
            pg,
            redis,
            &name,
            &["--test-mode", "--write-target", &path_text],
        )
        .await;
        let result = async {
            assert!(
                lines.iter().any(|l| l.starts_with("target file: ")),
                "{lines:?}"
            );
            let names = sandbox::target::service_names();
            let file =
                deployment::TargetFile::load(&path, &names).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(file.name, "sandbox");
            assert!(file.capabilities.faults && file.capabilities.logs);
            assert!(!file.capabilities.stop_restart);
            assert_eq!(
                file.storage.database_url.as_deref(),
                Some(pg.url(&name).as_str())
            );
            for s in Service::ALL {
                let url = &file.services[s.name()].url;
                assert!(
                    lines
                        .iter()
                        .any(|l| l.contains(s.name()) && l.contains(url.as_str())),
                    "{url} not printed"
                );
            }
            let secret_path = dir.join("t.secret");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&secret_path)
                    .expect("secret file")
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "secret file mode {mode:o}");
            }
            let secret = std::fs::read(&secret_path).expect("secret");
            let billing = &file.services["billing-engine"].url;
            let token = sandbox::token::sign_user(
                &secret,
                "t",
                sandbox::Role::BillingClerk,
                "billing-engine",
                "demo",
                std::time::Duration::from_secs(60),
            );
            let r = reqwest::Client::new()
                .get(format!("{billing}/claims/clm-none"))
                .header("authorization", format!("Bearer {token}"))
                .header("x-tenant-id", "demo")
                .send()
                .await
                .expect("claims");
            assert_eq!(
                r.status(),
                404,
                "a token signed with the written secret is accepted"
            );
            let admin = sandbox::token::sign_user(
                &secret,
                "t",
                sandbox::Role::Admin,
                "healthcare-api",
                "demo",
                std::time::Duration::from_secs(60),
            );
            let logs: Value = reqwest::Client::new()
                .get(format!(
                    "{}/admin/logs",
                    file.services["healthcare-api"].url
                ))
                .header("authorization", format!("Bearer {admin}"))
                .header("x-tenant-id", "demo")
                .send()
                .await
                .expect("logs")
                .json()
                .await
                .expect("JSON");
            assert!(logs["lines"].is_array(), "{logs}");
        };
        result.await;
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        let _ = db
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}

/// Encryption at rest: the field cipher's contract.
mod vault {
    use harness::service_test;
    use sandbox::vault::FieldCipher;

    #[service_test(unit, security)]
    fn a_sealed_field_opens_only_as_itself_and_under_its_key() {
        let c = FieldCipher::new(&[7u8; 32]).expect("key");
        let sealed = c.seal("ssn", "912-34-5678");
        assert!(sealed.starts_with("enc:v1:") && !sealed.contains("912"));
        assert_ne!(
            sealed,
            c.seal("ssn", "912-34-5678"),
            "a fresh nonce each time"
        );
        assert_eq!(c.open("ssn", &sealed).expect("opens"), "912-34-5678");
        assert!(c.open("birth_date", &sealed).is_err(), "bound to its field");
        let other = FieldCipher::new(&[8u8; 32]).expect("key");
        assert!(other.open("ssn", &sealed).is_err(), "bound to its key");
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert!(c.open("ssn", &tampered).is_err(), "tampering is detected");
        assert!(FieldCipher::new(&[0u8; 16]).is_err(), "AES-256 only");
    }

    #[service_test(unit, security)]
    fn records_are_sealed_at_any_depth_and_open_back() {
        let c = FieldCipher::new(&[1u8; 32]).expect("key");
        let original = serde_json::json!({"patient": {"ssn": "912-34-5678", "birth_date": "1957-03-04", "last_name": "Okafor"}, "list": [{"dob": "1960-01-02"}]});
        let mut r = original.clone();
        c.seal_record(&mut r);
        let text = r.to_string();
        assert!(!text.contains("912-34") && !text.contains("1957") && !text.contains("1960"));
        assert!(text.contains("Okafor"), "only the sealed fields change");
        c.open_record(&mut r).expect("opens");
        assert_eq!(r, original);
    }
}

harness::main!();
