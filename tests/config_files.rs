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

/// `scripts/check-config.sh` (run by every build, and so by `wrangler deploy`) on a
/// wrangler.toml: the output and whether it passed.
fn check_config(toml_text: &str, name: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("check-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("wrangler.toml");
    std::fs::write(&file, toml_text).unwrap();
    let out = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/check-config.sh"
        ))
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn a_build_with_an_invalid_config_fails_naming_where_and_what() {
    let valid = r#"
[vars.GATEWAY.upstreams.ds]
base_url = "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"
profile = "dashscope"
[vars.GATEWAY.accounts.acct-a]
upstream = "ds"
keys = ["KEY_A"]
limits.qwen3-max = { rpm = 600 }
[vars.GATEWAY.models.qwen3-max]
fallback = ["qwen3-max"]
"#;
    // (Silent when this config passed before: a pass is remembered.)
    let (ok, said) = check_config(valid, "valid");
    assert!(ok, "{said}");
    // A staging env whose account names an upstream that does not exist, and one whose GATEWAY
    // is a JSON string with a value of the wrong kind.
    let invalid = format!(
        r#"{valid}
[env.staging.vars.GATEWAY.upstreams.ds]
base_url = "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"
profile = "dashscope"
[env.staging.vars.GATEWAY.accounts.acct-a]
upstream = "dashscope"
keys = ["KEY_A"]
limits.qwen3-max = {{ rpm = 600 }}
[env.staging.vars.GATEWAY.models.qwen3-max]
fallback = ["qwen3-max"]
[env.other.vars]
GATEWAY = '{{"accounts": {{"acct-a": {{"upstream": "ds", "keys": [], "limits": {{"m": {{"rpm": "six"}}}}}}}}}}'
"#
    );
    let (ok, said) = check_config(&invalid, "invalid");
    assert!(!ok, "{said}");
    assert!(
        said.contains(
            "[env.staging.vars.GATEWAY]: accounts.acct-a.upstream: no upstream named 'dashscope'"
        ),
        "{said}"
    );
    assert!(
        said.contains("[env.other.vars.GATEWAY]: invalid GATEWAY config: accounts.acct-a.limits.m.rpm: invalid type"),
        "{said}"
    );
}

#[test]
fn a_build_with_an_unreadable_wrangler_toml_fails_saying_where() {
    let (ok, said) = check_config("[vars.GATEWAY\nupstreams = 1\n", "unreadable");
    assert!(!ok, "{said}");
    assert!(
        said.contains("wrangler.toml: TOML parse error at line 1"),
        "{said}"
    );
}
