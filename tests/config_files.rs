//! The configs we ship are valid: wrangler.toml's deploy and dev configs, and the README's example.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use edge_gateway::config::Config;
use serde_json::Value;

fn gateway_of(toml_text: &str, path: &[&str]) -> Value {
    let doc: toml::Value = toml::from_str(toml_text).expect("valid TOML");
    let mut at = &doc;
    for key in path {
        at = at
            .get(key)
            .unwrap_or_else(|| panic!("missing {key} in {path:?}"));
    }
    serde_json::to_value(at).expect("TOML to JSON")
}

#[test]
fn wrangler_toml_configs_validate() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/wrangler.toml")).unwrap();
    for path in [
        &["vars", "GATEWAY"][..],
        &["env", "dev", "vars", "GATEWAY"][..],
    ] {
        let config = Config::from_value(&gateway_of(&text, path));
        assert!(config.is_ok(), "{path:?}: {config:?}");
    }
    let deploy = Config::from_value(&gateway_of(&text, &["vars", "GATEWAY"])).unwrap();
    assert_eq!(deploy.models["qwen3-max"].fallback.len(), 3);
    assert!(deploy.prices.contains_key("qwen3-max"));
}

#[test]
fn readme_example_is_the_deploy_config() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("(this is the top of `wrangler.toml`):\n\n```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README has the example block");
    let example = Config::from_value(&gateway_of(block, &["vars", "GATEWAY"])).unwrap();
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/wrangler.toml")).unwrap();
    let deploy = Config::from_value(&gateway_of(&text, &["vars", "GATEWAY"])).unwrap();
    assert_eq!(example, deploy);
}
