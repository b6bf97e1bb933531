//! `check-config`: wrangler.toml's `GATEWAY` configs checked as the Worker checks them, so a
//! build (and with it `wrangler deploy`) with an invalid one fails instead of deploying a
//! gateway that answers every request with 500 (`scripts/check-config.sh` feeds it).
//!
//! Reads one JSON object a line, `{"at": "env.dev.vars.GATEWAY", "config": <table or JSON
//! string>}`, and says where each invalid config is and what is wrong; exits 1 if any is.

use edge_gateway::config::Config;
use serde::Deserialize;
use serde_json::Value;
use std::io::BufRead;
use std::process::ExitCode;

/// One config found, and where.
#[derive(Deserialize)]
struct Found {
    at: String,
    config: Value,
}

fn main() -> ExitCode {
    let file = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "wrangler.toml".into());
    let (mut valid, mut invalid) = (Vec::new(), 0);
    for line in std::io::stdin().lock().lines() {
        let checked = line.map_err(|e| e.to_string()).and_then(|line| {
            let found: Found = serde_json::from_str(&line).map_err(|e| e.to_string())?;
            Ok((Config::from_value(&found.config), found.at))
        });
        match checked {
            Ok((Ok(_), at)) => valid.push(at),
            Ok((Err(error), at)) => {
                eprintln!("check-config: {file}, [{at}]: {error}");
                invalid += 1;
            }
            Err(error) => {
                eprintln!("check-config: unreadable input: {error}");
                invalid += 1;
            }
        }
    }
    if invalid > 0 {
        return ExitCode::FAILURE;
    }
    match valid.is_empty() {
        true => println!("check-config: {file} sets no GATEWAY config"),
        false => println!("check-config: {file}: {} valid", valid.join(", ")),
    }
    ExitCode::SUCCESS
}
