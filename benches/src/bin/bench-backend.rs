//! `bench-backend`: the harness's fixed-response backend as its own process.
//!
//! Usage: `bench-backend [ADDR]` (default `127.0.0.1:0`). Prints `listening ADDR`
//! on stdout once bound, then serves on one thread until killed.

#![deny(clippy::unwrap_used)]

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-backend: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bench-backend: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let bound = listener
            .local_addr()
            .map_or_else(|_| addr.clone(), |a| a.to_string());
        let mut out = std::io::stdout();
        if writeln!(out, "listening {bound}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return ExitCode::FAILURE;
        }
        benches::backend::serve(listener).await;
        ExitCode::SUCCESS
    })
}
