//! `chaos-proxy --api 127.0.0.1:8474`: Toxiproxy's HTTP API over our chaos
//! proxy (see `traffic::toxiproxy`), until Ctrl-C. Proxies listen on and
//! forward to loopback only.

extern crate service_test_traffic as traffic;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

/// Toxiproxy's HTTP API over the chaos proxy, until Ctrl-C. Proxies listen on
/// and forward to loopback only.
#[derive(Parser)]
#[command(name = "chaos-proxy", version)]
struct Cli {
    /// Where the API listens (loopback only)
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8474")]
    api: String,
}

fn main() -> ExitCode {
    // Toxiproxy's own server spells its flags with one dash: `-api` too.
    let args = std::env::args_os().map(|a| match a.to_str() {
        Some("-api") => "--api".into(),
        Some(s) if s.starts_with("-api=") => format!("-{s}").into(),
        _ => a,
    });
    let Cli { api } = Cli::parse_from(args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(&api).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {api}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().map_or(api.clone(), |a| a.to_string());
        if !listener.local_addr().is_ok_and(|a| a.ip().is_loopback()) {
            // Bad usage, reported as clap reports it (exit 2).
            Cli::command()
                .error(
                    clap::error::ErrorKind::ValueValidation,
                    format!("--api {api}: the API listens on loopback only"),
                )
                .exit();
        }
        eprintln!(
            "chaos-proxy: Toxiproxy API {} on http://{addr} (Ctrl-C stops)",
            traffic::toxiproxy::API_VERSION
        );
        tokio::select! {
            served = traffic::toxiproxy::serve(listener) => match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: serving the API: {e}");
                    ExitCode::FAILURE
                }
            },
            _ = tokio::signal::ctrl_c() => {
                eprintln!("chaos-proxy: stopping");
                ExitCode::SUCCESS
            }
        }
    })
}
