//! Target files as a user writes them: the README's example parses, and
//! every kind of mistake names the file, the line and the key.
extern crate service_test_deployment as deployment;

use std::path::Path;

use deployment::{Observed, TargetFile, TargetFileError, parse_base_url};
use harness::service_test;

const SERVICES: [&str; 6] = [
    "healthcare-api",
    "insurance-verification",
    "billing-engine",
    "compliance-monitor",
    "business-intelligence",
    "doctor-personalization",
];

/// The README's complete example (between the `target-file-example` marks).
fn readme_example() -> String {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("<!-- target-file-example -->")
        .expect("README has the target-file example");
    let block = &readme[start..];
    let open = block.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let close = block[open..].find("```").expect("the block closes");
    block[open..open + close].to_string()
}

/// The README's example as a user lays it out: the file, and its CA file
/// beside it in `certs/`. Each call has a directory of its own: the tests
/// run concurrently, and one's cleanup must not remove another's file.
fn load_readme_example() -> TargetFile {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("target-file-{}-{call}", std::process::id()));
    std::fs::create_dir_all(dir.join("certs")).expect("temp dir");
    std::fs::write(dir.join("certs/ca.pem"), "not read by the parser").expect("ca");
    let path = dir.join("staging.toml");
    std::fs::write(&path, readme_example()).expect("write");
    let file = TargetFile::load(&path, &SERVICES).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
    file
}

fn parse(src: &str) -> Result<TargetFile, TargetFileError> {
    TargetFile::parse(src, Path::new("t.toml"), &SERVICES)
}

/// A minimal valid file, with `extra` appended.
fn minimal(extra: &str) -> String {
    let mut s = String::from("name = \"t\"\n[auth]\nsecret_env = \"S\"\n");
    for (i, name) in SERVICES.iter().enumerate() {
        s.push_str(&format!(
            "[services.{name}]\nurl = \"http://127.0.0.1:{}\"\n",
            18000 + i
        ));
    }
    s.push_str(extra);
    s
}

#[service_test(unit, config)]
fn the_readme_example_parses_with_every_section() {
    let file = load_readme_example();
    assert_eq!(file.name, "staging");
    assert_eq!(file.services.len(), 6);
    assert_eq!(
        file.services["billing-engine"].url,
        "http://172.20.0.24:8004"
    );
    assert!(file.capabilities.faults && file.capabilities.logs);
    assert!(!file.capabilities.stop_restart);
    assert_eq!(
        file.capabilities.load.as_ref().map(|l| l.max_connections),
        Some(32)
    );
    let chaos = file.capabilities.chaos.as_ref().expect("chaos");
    assert_eq!(chaos.proxies["billing-engine"], "billing");
    // Endpoint SLOs inherit what they do not set.
    let visits = file.slo.of("POST /visits");
    assert_eq!(visits.p99_ms, Some(250.0));
    assert_eq!(visits.max_error_rate, Some(0.01));
    assert!(file.storage.database_url_env.is_some());
}

#[service_test(unit, config)]
fn slo_defaults_are_seed_004s_criteria() {
    let file = parse(&minimal("")).unwrap_or_else(|e| panic!("{e}"));
    let slo = file.slo.of("POST /patients");
    assert_eq!(slo.p99_ms, Some(100.0));
    assert_eq!(slo.max_error_rate, Some(0.01));
    assert_eq!(slo.min_throughput_rps, Some(1000.0));
    assert_eq!(slo.p50_ms, None);
}

#[service_test(unit, config)]
fn a_misspelt_key_names_the_key_and_its_line() {
    let e = parse(&minimal("[capabilities]\nfaults = true\nlogz = true\n")).expect_err("typo");
    assert_eq!(e.key.as_deref(), Some("logz"), "{e}");
    let line = minimal("").lines().count() + 3;
    assert_eq!(e.line, Some(line), "{e}");
    let text = e.to_string();
    assert!(text.starts_with("target file t.toml, line"), "{text}");
    assert!(text.contains("unknown field `logz`"), "{text}");
}

/// Load goes to this machine by its usual names, or to hosts the file
/// declares: a service elsewhere with load allowed and its host undeclared
/// is refused, naming the service, the host and the key.
#[service_test(unit, config)]
fn load_goes_only_to_declared_hosts() {
    let load = "[capabilities.load]\nmax_connections = 4\nmax_requests = 10\n";
    let elsewhere = minimal(load).replace("http://127.0.0.1:18002", "http://127.0.0.2:18002");
    let e = parse(&elsewhere).expect_err("127.0.0.2 is not declared");
    assert_eq!(e.key.as_deref(), Some("capabilities.load.hosts"), "{e}");
    assert!(
        e.message.contains("127.0.0.2") && e.message.contains("billing-engine"),
        "{e}"
    );
    let declared = elsewhere.replace(
        "max_requests = 10\n",
        "max_requests = 10\nhosts = [\"127.0.0.2\"]\n",
    );
    let file = parse(&declared).unwrap_or_else(|e| panic!("{e}"));
    let ceiling = file.capabilities.load.expect("declared");
    assert!(ceiling.allows("127.0.0.2") && ceiling.allows("localhost"));
    assert!(!ceiling.allows("127.0.0.3"));
    // Without load, a service anywhere is fine: nothing is sent in bulk.
    let no_load = minimal("").replace("http://127.0.0.1:18002", "http://127.0.0.2:18002");
    assert!(parse(&no_load).is_ok());
}

#[service_test(unit, config)]
fn mistakes_after_parsing_name_their_key_and_line() {
    let cases = [
        (
            minimal("[services.billing-engne]\nurl = \"http://127.0.0.1:1\"\n"),
            "services.billing-engne",
            "unknown service",
        ),
        (
            minimal("").replace("http://127.0.0.1:18002", "127.0.0.1:18002"),
            "services.billing-engine.url",
            "not a URL",
        ),
        (
            minimal("").replace("http://127.0.0.1:18002", "http://127.0.0.1:99999"),
            "services.billing-engine.url",
            "not a port",
        ),
        (
            minimal("[slo]\np50_ms = 80\np99_ms = 20\n"),
            "slo",
            "must not decrease",
        ),
        (
            minimal("[slo.endpoints.\"/visits\"]\np99_ms = 20\n"),
            "slo.endpoints.\"/visits\"",
            "METHOD /path",
        ),
        (
            minimal("[capabilities.load]\nmax_connections = 0\nmax_requests = 10\n"),
            "capabilities.load",
            "at least 1",
        ),
        (
            minimal("[tls]\nca_file = \"no/such/ca.pem\"\n"),
            "tls.ca_file",
            "does not exist",
        ),
    ];
    for (src, key, words) in cases {
        let e = parse(&src).expect_err(key);
        assert_eq!(e.key.as_deref(), Some(key), "{e}");
        assert!(e.line.is_some(), "no line: {e}");
        assert!(e.message.contains(words), "want `{words}`: {e}");
    }
}

#[service_test(unit, config)]
fn a_missing_service_or_auth_is_refused() {
    let without_doctor = minimal("")
        .replace("[services.doctor-personalization]\n", "")
        .replace("url = \"http://127.0.0.1:18005\"\n", "");
    let e = parse(&without_doctor).expect_err("missing service");
    assert!(e.message.contains("doctor-personalization"), "{e}");
    let e = parse(&minimal("").replace("[auth]\nsecret_env = \"S\"\n", "")).expect_err("no auth");
    assert_eq!(e.key.as_deref(), Some("auth"), "{e}");
    let bearer = minimal("").replace("secret_env = \"S\"", "token_env = \"T\"");
    let e = parse(&bearer).expect_err("bearer without tenant");
    assert_eq!(e.key.as_deref(), Some("auth.tenant"), "{e}");
}

/// `auth.mint`: a command issuing tokens for any tenant needs no
/// `auth.tenant`, must name `{tenant}`, and goes alone.
#[service_test(unit, config)]
fn a_mint_command_issues_for_any_tenant_and_names_it() {
    let mint = minimal("").replace(
        "secret_env = \"S\"",
        "mint = \"idp-token --aud {service} --tenant {tenant} --role {role}\"",
    );
    let file = parse(&mint).expect("a mint command alone");
    assert_eq!(
        file.auth.mint.as_deref(),
        Some("idp-token --aud {service} --tenant {tenant} --role {role}")
    );
    let blind = minimal("").replace("secret_env = \"S\"", "mint = \"idp-token\"");
    let e = parse(&blind).expect_err("a mint command without {tenant}");
    assert_eq!(e.key.as_deref(), Some("auth.mint"), "{e}");
    let both = minimal("").replace(
        "secret_env = \"S\"",
        "secret_env = \"S\"\nmint = \"t {tenant}\"",
    );
    let e = parse(&both).expect_err("a secret and a mint command");
    assert_eq!(e.key.as_deref(), Some("auth"), "{e}");
}

#[service_test(unit, config)]
fn a_written_file_reads_back_the_same() {
    let mut file = load_readme_example();
    file.tls = None; // the example's CA file does not exist here
    let text = file.to_toml("written by a test").expect("serialise");
    assert!(text.starts_with("# written by a test\n"), "{text}");
    let back = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back, file);
}

#[service_test(unit, config)]
fn base_urls_split_into_scheme_host_and_port() {
    let u = parse_base_url("http://127.0.0.1:8000/").expect("url");
    assert_eq!(
        (u.scheme.as_str(), u.host.as_str(), u.port),
        ("http", "127.0.0.1", 8000)
    );
    assert_eq!(
        parse_base_url("https://api.example").map(|u| u.port),
        Ok(443)
    );
    assert_eq!(
        parse_base_url("http://[::1]:9").map(|u| u.host),
        Ok("::1".into())
    );
    assert!(parse_base_url("http://h:1/api").is_err());
    assert!(parse_base_url("ftp://h:1").is_err());
}

#[service_test(unit, performance)]
fn an_slo_lists_every_breach() {
    let file =
        parse(&minimal("[slo]\np50_ms = 10\np99_ms = 50\n")).unwrap_or_else(|e| panic!("{e}"));
    let slo = file.slo.of("GET /health");
    let good = Observed {
        p50_ms: 5.0,
        p95_ms: 20.0,
        p99_ms: 40.0,
        error_rate: 0.0,
        throughput_rps: 2000.0,
    };
    assert!(slo.breaches(&good).is_empty());
    let bad = Observed {
        p50_ms: 11.0,
        p99_ms: 60.0,
        error_rate: 0.5,
        throughput_rps: 10.0,
        ..good
    };
    let b = slo.breaches(&bad);
    assert_eq!(b.len(), 4, "{b:?}");
    assert!(b[0].starts_with("p50 11.00 ms exceeds 10 ms"), "{b:?}");
    assert!(b[3].contains("below 1000 req/s"), "{b:?}");
}

harness::main!();

/// `auth.revocation_bound_ms`: read when declared, absent by default, and
/// a bound of 0 or over an hour (or not a number) named with its line.
#[service_test(unit, config)]
fn a_revocation_bound_is_read_and_checked() {
    assert_eq!(
        parse(&minimal(""))
            .expect("minimal")
            .auth
            .revocation_bound_ms,
        None
    );
    let with = |v: &str| {
        minimal("").replacen(
            "secret_env = \"S\"\n",
            &format!("secret_env = \"S\"\nrevocation_bound_ms = {v}\n"),
            1,
        )
    };
    let file = parse(&with("1500")).expect("a bound of 1500 ms");
    assert_eq!(file.auth.revocation_bound_ms, Some(1500));
    for bad in ["0", "3600001"] {
        let e = parse(&with(bad)).expect_err(bad);
        assert_eq!(e.key.as_deref(), Some("auth.revocation_bound_ms"), "{e}");
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("1 to 3600000 ms"), "{e}");
    }
    let e = parse(&with("\"1s\"")).expect_err("a string");
    assert_eq!(e.line, Some(4), "{e}");
}

/// `[capabilities.limits]`: the README's example declares both limits;
/// left out, none; a bound under 1 MiB or a zero rate named with its key
/// and line; an unknown key refused.
#[service_test(unit, config)]
fn declared_limits_are_read_and_checked() {
    let file = load_readme_example();
    let limits = file.capabilities.limits.as_ref().expect("limits");
    assert_eq!(limits.max_resident_bytes, Some(536_870_912));
    assert_eq!(
        limits.rate_limit,
        Some(deployment::RateLimit {
            requests_per_second: 50,
            burst: 1000
        })
    );
    assert_eq!(
        parse(&minimal("")).expect("minimal").capabilities.limits,
        None
    );
    let e = parse(&minimal(
        "[capabilities.limits]\nmax_resident_bytes = 4096\n",
    ))
    .expect_err("4 KiB");
    assert_eq!(
        e.key.as_deref(),
        Some("capabilities.limits.max_resident_bytes"),
        "{e}"
    );
    assert_eq!(e.line, Some(17), "{e}");
    let e = parse(&minimal(
        "[capabilities.limits.rate_limit]\nrequests_per_second = 0\nburst = 10\n",
    ))
    .expect_err("a zero rate");
    assert_eq!(
        e.key.as_deref(),
        Some("capabilities.limits.rate_limit"),
        "{e}"
    );
    assert!(e.message.contains("at least 1"), "{e}");
    let e = parse(&minimal("[capabilities.limits]\nmax_rss = 1\n")).expect_err("a typo");
    assert!(e.message.contains("max_rss"), "{e}");
}
