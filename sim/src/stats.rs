//! Counters per key, account and model, and their JSON document (`GET /_sim/stats`).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::config::SimConfig;
use crate::limits::{LimitKind, Window};

/// Error counters every model reports, zero or not.
pub const ERROR_KINDS: [&str; 8] = [
    "limit_requests",
    "limit_burst_rate",
    "insufficient_quota",
    "free_quota",
    "free_tier_only",
    "arrearage",
    "overdue",
    "fault",
];

/// Stats counter name of a limit refusal.
pub fn limit_error_name(kind: LimitKind) -> &'static str {
    match kind {
        LimitKind::Burst => "limit_burst_rate",
        LimitKind::Rps | LimitKind::Rpm => "limit_requests",
        LimitKind::Tps | LimitKind::Tpm => "insufficient_quota",
    }
}

/// Counters and windows of one account x model.
#[derive(Debug, Clone)]
pub struct ModelStats {
    pub(crate) calls: u64,
    pub(crate) ok: u64,
    pub(crate) errors: BTreeMap<&'static str, u64>,
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
    pub(crate) over_limit: u64,
    pub(crate) window: Window,
}

impl Default for ModelStats {
    fn default() -> Self {
        ModelStats {
            calls: 0,
            ok: 0,
            errors: ERROR_KINDS.iter().map(|k| (*k, 0)).collect(),
            prompt_tokens: 0,
            completion_tokens: 0,
            over_limit: 0,
            window: Window::default(),
        }
    }
}

/// Counters of one account, and its models.
#[derive(Debug, Clone, Default)]
pub struct AccountStats {
    pub(crate) calls: u64,
    pub(crate) invalid_requests: u64,
    /// Calls asking for DashScope's session cache (`x-dashscope-session-cache: enable`), in
    /// either dialect.
    pub(crate) session_cache: u64,
    pub(crate) models: BTreeMap<String, ModelStats>,
}

/// Every counter; reset replaces it with a fresh one.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub(crate) total_calls: u64,
    pub(crate) client_disconnects: u64,
    pub(crate) unauthorized: u64,
    pub(crate) keys: BTreeMap<String, u64>,
    pub(crate) accounts: BTreeMap<String, AccountStats>,
}

impl Stats {
    /// The document of `GET /_sim/stats`: every configured key, account and served model,
    /// zero counters included.
    pub fn to_json(&self, config: &SimConfig, time_scale: f64) -> Value {
        let mut keys = Map::new();
        for account in config.accounts.values() {
            for key in &account.keys {
                let calls = self.keys.get(key).copied().unwrap_or(0);
                keys.insert(key.clone(), json!({ "calls": calls }));
            }
        }
        let empty_account = AccountStats::default();
        let empty_model = ModelStats::default();
        let mut accounts = Map::new();
        for (id, account) in &config.accounts {
            let stats = self.accounts.get(id).unwrap_or(&empty_account);
            let mut models = Map::new();
            for model in &config.models {
                let m = stats.models.get(model).unwrap_or(&empty_model);
                let limits = account.limits.get(model).cloned().unwrap_or_default();
                models.insert(
                    model.clone(),
                    json!({
                        "calls": m.calls,
                        "ok": m.ok,
                        "errors": m.errors,
                        "prompt_tokens": m.prompt_tokens,
                        "completion_tokens": m.completion_tokens,
                        "peak": m.window.peak,
                        "limits": limits,
                        "over_limit": m.over_limit,
                    }),
                );
            }
            accounts.insert(
                id.clone(),
                json!({
                    "state": account.state.as_str(),
                    "calls": stats.calls,
                    "invalid_requests": stats.invalid_requests,
                    "session_cache": stats.session_cache,
                    "models": models,
                }),
            );
        }
        json!({
            "total_calls": self.total_calls,
            "client_disconnects": self.client_disconnects,
            "unauthorized": self.unauthorized,
            "time_scale": time_scale,
            "keys": keys,
            "accounts": accounts,
        })
    }
}
