//! The gateway's configuration: raw JSON (wrangler `[vars]` table or JSON string) to a validated `Config`.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// How an upstream speaks and limits: decides how its answers are classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Alibaba Cloud Model Studio compatible mode: limits per account and model.
    Dashscope,
    /// OpenAI itself: `x-ratelimit-*` headers, `insufficient_quota` is billing.
    Openai,
    /// Any other OpenAI-compatible provider or relay.
    OpenaiCompatible,
}

/// One upstream endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Base URL up to and including the version segment, e.g. `.../compatible-mode/v1`.
    pub base_url: String,
    /// Wire dialect and limit semantics.
    pub profile: Profile,
}

/// Per-model limits of one account; any subset may be set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Requests per second.
    pub rps: Option<u64>,
    /// Tokens (input + output) per minute.
    pub tpm: Option<u64>,
    /// Tokens per second.
    pub tps: Option<u64>,
}

/// One upstream account: its keys share its limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// Id of the upstream this account belongs to.
    pub upstream: String,
    /// Names of the secrets holding this account's API keys (never the keys).
    pub keys: Vec<String>,
    /// Limits per upstream model; the account serves exactly these models.
    #[serde(default)]
    pub limits: BTreeMap<String, Limits>,
}

/// A public model name and the upstream models that may answer it, best first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRoute {
    /// Upstream model names, tried in order.
    pub fallback: Vec<String>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Upstream endpoints by id.
    pub upstreams: BTreeMap<String, Upstream>,
    /// Accounts by id.
    pub accounts: BTreeMap<String, Account>,
    /// Public model names clients may send.
    pub models: BTreeMap<String, ModelRoute>,
}

/// One place the request can go: an account serving an upstream model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Account id.
    pub account: &'a str,
    /// The account's settings.
    pub settings: &'a Account,
    /// The account's upstream.
    pub upstream: &'a Upstream,
    /// The upstream's id.
    pub upstream_id: &'a str,
    /// The model name to send upstream.
    pub model: &'a str,
}

impl Config {
    /// Parses a config given as a JSON object or as a string holding one.
    pub fn from_value(value: &Value) -> Result<Config, String> {
        let parsed: Config = match value {
            Value::String(s) => {
                let mut de = serde_json::Deserializer::from_str(s);
                serde_path_to_error::deserialize(&mut de).map_err(|e| e.to_string())
            }
            other => serde_path_to_error::deserialize(other).map_err(|e| e.to_string()),
        }
        .map_err(|e| format!("invalid GATEWAY config: {e}"))?;
        parsed.validate()?;
        Ok(parsed)
    }

    fn validate(&self) -> Result<(), String> {
        for (id, up) in &self.upstreams {
            let url = up.base_url.as_str();
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(format!(
                    "upstreams.{id}.base_url: must start with https:// or http://"
                ));
            }
            if url.ends_with('/') {
                return Err(format!(
                    "upstreams.{id}.base_url: must not end with '/' (paths such as /chat/completions are appended)"
                ));
            }
        }
        for (id, acct) in &self.accounts {
            if !self.upstreams.contains_key(&acct.upstream) {
                return Err(format!(
                    "accounts.{id}.upstream: no upstream named '{}'",
                    acct.upstream
                ));
            }
            if acct.keys.is_empty() {
                return Err(format!(
                    "accounts.{id}.keys: needs at least one secret name"
                ));
            }
            if let Some(k) = acct.keys.iter().find(|k| k.trim().is_empty()) {
                return Err(format!("accounts.{id}.keys: empty secret name '{k}'"));
            }
        }
        for (name, route) in &self.models {
            if route.fallback.is_empty() {
                return Err(format!("models.{name}.fallback: needs at least one model"));
            }
            for (i, step) in route.fallback.iter().enumerate() {
                if !self.accounts.values().any(|a| a.limits.contains_key(step)) {
                    return Err(format!(
                        "models.{name}.fallback[{i}]: no account lists '{step}' under its limits"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Accounts that can serve upstream `model`, in id order.
    pub fn candidates<'a>(&'a self, model: &'a str) -> impl Iterator<Item = Candidate<'a>> + 'a {
        self.accounts.iter().filter_map(move |(id, acct)| {
            let upstream = self.upstreams.get(&acct.upstream)?;
            acct.limits.contains_key(model).then_some(Candidate {
                account: id,
                settings: acct,
                upstream,
                upstream_id: &acct.upstream,
                model,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "upstreams": {"sim": {"base_url": "http://127.0.0.1:9/compatible-mode/v1", "profile": "dashscope"}},
            "accounts": {
                "acct-a": {"upstream": "sim", "keys": ["KEY_A1", "KEY_A2"], "limits": {"qwen3-max": {"rpm": 6}, "qwen-plus": {}}},
                "acct-b": {"upstream": "sim", "keys": ["KEY_B1"], "limits": {"qwen3-max": {"rpm": 6, "tpm": 1000}}}
            },
            "models": {"qwen3-max": {"fallback": ["qwen3-max", "qwen-plus"]}}
        })
    }

    #[test]
    fn parses_object_and_json_string() {
        let from_obj = Config::from_value(&base()).unwrap();
        let from_str = Config::from_value(&Value::String(base().to_string())).unwrap();
        assert_eq!(from_obj, from_str);
        assert_eq!(
            from_obj.accounts["acct-b"].limits["qwen3-max"].tpm,
            Some(1000)
        );
        let accounts: Vec<_> = from_obj
            .candidates("qwen3-max")
            .map(|c| c.account)
            .collect();
        assert_eq!(accounts, ["acct-a", "acct-b"]);
        assert_eq!(from_obj.candidates("qwen-plus").count(), 1);
    }

    #[test]
    fn errors_name_the_field() {
        let cases: Vec<(fn(&mut Value), &str)> = vec![
            (
                |v| v["upstreams"]["sim"]["base_url"] = json!("ftp://x"),
                "upstreams.sim.base_url",
            ),
            (
                |v| v["upstreams"]["sim"]["base_url"] = json!("http://x/v1/"),
                "upstreams.sim.base_url",
            ),
            (
                |v| v["upstreams"]["sim"]["profile"] = json!("azure"),
                "upstreams.sim.profile: unknown variant `azure`",
            ),
            (
                |v| v["accounts"]["acct-a"]["upstream"] = json!("nope"),
                "accounts.acct-a.upstream",
            ),
            (
                |v| v["accounts"]["acct-b"]["keys"] = json!([]),
                "accounts.acct-b.keys",
            ),
            (
                |v| v["accounts"]["acct-b"]["limits"]["qwen3-max"]["rpn"] = json!(1),
                "accounts.acct-b.limits.qwen3-max.rpn: unknown field `rpn`",
            ),
            (
                |v| v["models"]["qwen3-max"]["fallback"] = json!([]),
                "models.qwen3-max.fallback",
            ),
            (
                |v| v["models"]["qwen3-max"]["fallback"] = json!(["qwen3-max", "qwen-turbo"]),
                "models.qwen3-max.fallback[1]",
            ),
            (
                |v| v["accounts"]["acct-b"]["limits"]["qwen3-max"]["rpm"] = json!(-1),
                "accounts.acct-b.limits.qwen3-max.rpm: invalid value",
            ),
        ];
        for (mutate, expected) in cases {
            let mut v = base();
            mutate(&mut v);
            let err = Config::from_value(&v).unwrap_err();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
    }
}
