//! `chaos-proxy --api 127.0.0.1:8474`: Toxiproxy's HTTP API over our chaos
//! proxy (see `traffic::toxiproxy`), until Ctrl-C. Proxies listen on and
//! forward to loopback only.

use std::process::ExitCode;

const USAGE: &str =
    "usage: chaos-proxy [--api HOST:PORT]   (default 127.0.0.1:8474, loopback only)";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut api = "127.0.0.1:8474".to_string();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--api" | "-api" => match args.next() {
                Some(v) => api = v,
                None => {
                    eprintln!("error: --api needs HOST:PORT\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("error: unknown argument `{other}`\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
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
            eprintln!("error: --api {api}: the API listens on loopback only");
            return ExitCode::from(2);
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
