//! Simulator configuration: accounts, keys, per-model limits, models and timing knobs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Whole simulator configuration, read from JSON or built in code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Simulated time runs this many times faster than real time, for limit windows only.
    #[serde(default = "default_time_scale")]
    pub time_scale: f64,
    /// Accounts by id; each holds keys that share one budget per model.
    #[serde(default)]
    pub accounts: BTreeMap<String, AccountConfig>,
    /// Models the upstream serves; anything else is `model_not_found`.
    #[serde(default)]
    pub models: Vec<String>,
    /// Served models the Responses API does not serve (DashScope serves it for some models
    /// only): a Responses request naming one is answered 404 `model_not_found`.
    #[serde(default)]
    pub chat_only: Vec<String>,
    /// The models text completion (`/completions`) serves (DashScope: its Qwen Coder models);
    /// a text completion naming another is answered 404 `model_not_found`. Absent: all.
    #[serde(default)]
    pub completion_models: Option<Vec<String>>,
    /// Upper bound of completion tokens per answer (the request's `max_tokens` may lower it).
    #[serde(default = "default_completion_tokens")]
    pub completion_tokens: u32,
    /// Real milliseconds between stream events.
    #[serde(default)]
    pub stream_chunk_delay_ms: u64,
}

/// One upstream account: its keys, billing state and per-model limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// API keys of this account; all of them draw on the same limits.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Billing state; anything but `ok` refuses every chat request.
    #[serde(default)]
    pub state: AccountState,
    /// Limits per model; a served model absent here is unlimited for this account.
    #[serde(default)]
    pub limits: BTreeMap<String, Limits>,
}

/// Billing state of an account, each mapped to the upstream's refusal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountState {
    /// Serves normally.
    #[default]
    Ok,
    /// 429 `insufficient_quota` "Free allocated quota exceeded.".
    FreeQuotaExhausted,
    /// 403 `AllocationQuota.FreeTierOnly`.
    FreeTierOnly,
    /// 400 `Arrearage`.
    Arrears,
    /// 429 `PrepaidBillOverdue`.
    Overdue,
}

impl AccountState {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Ok => "ok",
            AccountState::FreeQuotaExhausted => "free_quota_exhausted",
            AccountState::FreeTierOnly => "free_tier_only",
            AccountState::Arrears => "arrears",
            AccountState::Overdue => "overdue",
        }
    }
}

/// Limits of one account for one model; every field absent means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per simulated minute.
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Requests per simulated second.
    #[serde(default)]
    pub rps: Option<u64>,
    /// Tokens (prompt + completion) per simulated minute.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Tokens per simulated second.
    #[serde(default)]
    pub tps: Option<u64>,
    /// Surge protection: at most `requests` admitted within any `window_ms`.
    #[serde(default)]
    pub burst: Option<Burst>,
    /// Surge protection by rate growth (`limit_burst_rate`, "Request rate increased too
    /// quickly"): a rate may only grow so fast, second over second.
    #[serde(default)]
    pub surge: Option<Surge>,
}

/// Surge protection by rate growth: the requests admitted in any sliding simulated second
/// may exceed `growth` times those admitted in the second before it by at most `floor`. A
/// jump from quiet to a full rate is refused; a smooth ramp of less than `growth` a second
/// passes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Surge {
    /// Requests per second allowed on top of `growth` times the second before (so also from quiet).
    pub floor: u64,
    /// Largest growth of the rate from one second to the next.
    pub growth: f64,
}

/// Surge protection window (`limit_burst_rate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    /// Most admitted requests allowed inside one window.
    pub requests: u64,
    /// Window length in simulated milliseconds.
    pub window_ms: u64,
}

fn default_time_scale() -> f64 {
    1.0
}

fn default_completion_tokens() -> u32 {
    12
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            time_scale: default_time_scale(),
            accounts: BTreeMap::new(),
            models: Vec::new(),
            chat_only: Vec::new(),
            completion_models: None,
            completion_tokens: default_completion_tokens(),
            stream_chunk_delay_ms: 0,
        }
    }
}

impl SimConfig {
    /// Three accounts (`acct-a`: sk-a1, sk-a2; `acct-b`: sk-b1; `acct-c`: sk-c1) serving
    /// qwen3-max, qwen-plus, qwen-turbo, text-embedding-v4 and qwen-coder-turbo (the one
    /// text completion serves, as on DashScope) with small limits, at real time.
    pub fn demo() -> SimConfig {
        let models = [
            "qwen3-max",
            "qwen-plus",
            "qwen-turbo",
            "text-embedding-v4",
            "qwen-coder-turbo",
        ];
        let limits = |rpm, rps, tpm| Limits {
            rpm: Some(rpm),
            rps: Some(rps),
            tpm: Some(tpm),
            tps: None,
            burst: None,
            surge: None,
        };
        let per_model: BTreeMap<String, Limits> = [
            ("qwen3-max", limits(6, 2, 20_000)),
            ("qwen-plus", limits(12, 3, 40_000)),
            ("qwen-turbo", limits(30, 5, 100_000)),
            ("text-embedding-v4", limits(30, 5, 100_000)),
            ("qwen-coder-turbo", limits(30, 5, 100_000)),
        ]
        .into_iter()
        .map(|(m, l)| (m.to_string(), l))
        .collect();
        let account = |keys: &[&str]| AccountConfig {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            state: AccountState::Ok,
            limits: per_model.clone(),
        };
        SimConfig {
            time_scale: 1.0,
            accounts: [
                ("acct-a", account(&["sk-a1", "sk-a2"])),
                ("acct-b", account(&["sk-b1"])),
                ("acct-c", account(&["sk-c1"])),
            ]
            .into_iter()
            .map(|(id, a)| (id.to_string(), a))
            .collect(),
            models: models.iter().map(|m| m.to_string()).collect(),
            chat_only: Vec::new(),
            completion_models: Some(vec!["qwen-coder-turbo".into()]),
            completion_tokens: 12,
            stream_chunk_delay_ms: 0,
        }
    }

    /// Parses a JSON configuration and checks it.
    pub fn from_json(text: &str) -> Result<SimConfig, String> {
        let config: SimConfig =
            serde_json::from_str(text).map_err(|e| format!("invalid simulator config: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: a usable time scale, unique keys, sane burst windows.
    pub fn validate(&self) -> Result<(), String> {
        check_time_scale(self.time_scale)?;
        let mut seen = BTreeMap::new();
        for (id, account) in &self.accounts {
            for key in &account.keys {
                if key.is_empty() {
                    return Err(format!("account {id} has an empty key"));
                }
                if let Some(other) = seen.insert(key.as_str(), id.as_str()) {
                    return Err(format!("key {key} belongs to both {other} and {id}"));
                }
            }
            for (model, limits) in &account.limits {
                limits
                    .validate()
                    .map_err(|e| format!("account {id}, model {model}: {e}"))?;
            }
        }
        Ok(())
    }
}

impl Limits {
    /// Rejects a burst window that could never admit anything or never end, and a surge rule
    /// that could never let a rate grow.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(b) = self.burst {
            if b.window_ms == 0 {
                return Err("burst.window_ms must be positive".into());
            }
        }
        if let Some(s) = self.surge {
            if s.floor == 0 || !(s.growth.is_finite() && s.growth >= 1.0) {
                return Err("surge: floor must be at least 1 and growth a number >= 1".into());
            }
        }
        Ok(())
    }
}

/// A time scale must be a positive finite number, or windows would never move.
pub fn check_time_scale(scale: f64) -> Result<(), String> {
    if scale.is_finite() && scale > 0.0 {
        Ok(())
    } else {
        Err(format!("time_scale must be a positive number, got {scale}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = r#"{
          "time_scale": 1.0,
          "accounts": {
            "acct-a": { "keys": ["sk-a1", "sk-a2"], "state": "ok",
                        "limits": { "qwen3-max": { "rpm": 600, "rps": 10, "tpm": 1000000, "tps": null,
                                                    "burst": { "requests": 5, "window_ms": 200 } } } }
          },
          "models": ["qwen3-max", "qwen-plus", "qwen-turbo"],
          "completion_tokens": 12,
          "stream_chunk_delay_ms": 0
        }"#;
        let c = SimConfig::from_json(text).unwrap();
        let l = &c.accounts["acct-a"].limits["qwen3-max"];
        assert_eq!(l.rpm, Some(600));
        assert_eq!(l.tps, None);
        assert_eq!(
            l.burst,
            Some(Burst {
                requests: 5,
                window_ms: 200
            })
        );
    }

    #[test]
    fn rejects_shared_keys_and_bad_scale() {
        let mut c = SimConfig::demo();
        c.validate().unwrap();
        c.accounts
            .get_mut("acct-b")
            .unwrap()
            .keys
            .push("sk-a1".into());
        assert!(c.validate().unwrap_err().contains("sk-a1"));
        let mut c = SimConfig::demo();
        c.time_scale = 0.0;
        assert!(c.validate().is_err());
        assert!(SimConfig::from_json(r#"{"accounts":{"x":{"state":"broke"}}}"#).is_err());
    }
}
