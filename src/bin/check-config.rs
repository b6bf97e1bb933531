//! `check-config`: a wrangler.toml's `GATEWAY` configs (at the top and in every `[env.*]`)
//! checked as the Worker checks them, so a build (and with it `wrangler deploy`) with an
//! invalid one fails naming where and what, instead of deploying a gateway that answers every
//! request with 500. Run by `scripts/check-config.sh`; host only (the `check-config` feature).

use edge_gateway::config::Config;
use std::process::ExitCode;
use toml::{Table, Value};

/// Every `GATEWAY` the file sets, with where: `vars.GATEWAY`, `env.<name>.vars.GATEWAY`.
fn configs_of(doc: &Table) -> Vec<(String, &Value)> {
    fn gateway_of(table: &Table) -> Option<&Value> {
        table.get("vars")?.get("GATEWAY")
    }
    let top = gateway_of(doc).map(|config| ("vars.GATEWAY".to_string(), config));
    let envs = doc
        .get("env")
        .and_then(Value::as_table)
        .into_iter()
        .flatten();
    let in_envs = envs.filter_map(|(name, env)| {
        let config = gateway_of(env.as_table()?)?;
        Some((format!("env.{name}.vars.GATEWAY"), config))
    });
    top.into_iter().chain(in_envs).collect()
}

fn main() -> ExitCode {
    let file = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "wrangler.toml".into());
    let doc = match std::fs::read_to_string(&file)
        .map_err(|e| e.to_string())
        .and_then(|text| text.parse::<Table>().map_err(|e| e.to_string()))
    {
        Ok(doc) => doc,
        Err(error) => {
            eprintln!("check-config: {file}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let (mut valid, mut invalid) = (Vec::new(), 0);
    for (at, config) in configs_of(&doc) {
        // A table as the Worker gets it from `[vars]` (JSON), a string as it is.
        let checked = serde_json::to_value(config)
            .map_err(|e| e.to_string())
            .and_then(|config| Config::from_value(&config));
        match checked {
            Ok(_) => valid.push(at),
            Err(error) => {
                eprintln!("check-config: {file}, [{at}]: {error}");
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
