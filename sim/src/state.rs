//! Shared mutable simulator state: current config, clock, faults, and the recording of outcomes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

use crate::clock::SimClock;
use crate::config::{check_time_scale, AccountState, Limits, SimConfig};
use crate::faults::FaultQueue;
use crate::limits::{RateInfo, Refusal};
use crate::stats::{limit_error_name, AccountStats, ModelStats, Stats};

/// One `x-ratelimit-*` family in real time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Configured limit.
    pub limit: u64,
    /// Left now.
    pub remaining: u64,
    /// Real milliseconds until the oldest use expires.
    pub reset_ms: u64,
}

/// Outcome of the limiter for one request, in real time.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// Set when a limit refused the request.
    pub refusal: Option<Refusal>,
    /// Real milliseconds until the refused window has room (at least 1 when refused).
    pub wait_ms: u64,
    /// Request limit view, when one is set.
    pub requests: Option<Rate>,
    /// Token limit view, when one is set.
    pub tokens: Option<Rate>,
}

/// The shortest prefix the implicit prompt cache keeps (DashScope: 256 tokens).
pub const MIN_CACHED_TOKENS: u64 = 256;

/// The shortest prefix the explicit cache keeps (DashScope: 1,024 tokens).
pub const MIN_EXPLICIT_TOKENS: u64 = 1_024;

/// How long the explicit cache keeps a prefix since it was last used (DashScope: 5 minutes).
const EXPLICIT_LIFE_NS: u64 = 300_000_000_000;

/// Everything that changes while the simulator runs.
#[derive(Debug)]
pub struct SimState {
    initial: SimConfig,
    /// Current configuration (account states and limits may change at run time).
    pub config: SimConfig,
    key_owner: HashMap<String, String>,
    /// Simulated clock of the limit windows.
    pub clock: SimClock,
    /// Queued faults.
    pub faults: FaultQueue,
    stats: Stats,
    next_id: u64,
    /// Responses API answers, by id: the account that holds each, the answer and its input
    /// items (a follow-up naming one, `previous_response_id`, from another account is
    /// refused, as the upstream keeps them).
    stored: HashMap<String, Stored>,
    /// The implicit prompt cache: the prompt prefixes each (account, model) has seen.
    caches: HashMap<(String, String), HashSet<u64>>,
    /// The explicit cache: the marked prefixes each (account, model) keeps, with the
    /// simulated time (ns) each lapses.
    explicit: HashMap<(String, String), HashMap<u64, u64>>,
    /// What the gateway's alert webhook received (`/_sim/hooks/<name>`), oldest first.
    pub hooks: Vec<Value>,
    /// The status those posts are answered with (200; set to see the gateway's failure path).
    pub hook_status: u16,
}

/// A response kept by the upstream: whose it is, the answer, and the input it answered.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The account holding it.
    pub account: String,
    /// The `response` object as answered.
    pub answer: String,
    /// Its input items, as sent.
    pub input: Vec<Value>,
}

impl Stored {
    /// The tokens of the conversation it ends: its input and its output, as its usage says.
    pub fn context_tokens(&self) -> u64 {
        let answer: Value = serde_json::from_str(&self.answer).unwrap_or_default();
        let usage = &answer["usage"];
        let count = |k: &str| usage[k].as_u64().unwrap_or(0);
        count("input_tokens") + count("output_tokens")
    }
}

/// Locks the state, recovering from a panicked holder (the counters stay usable).
pub fn lock(state: &Mutex<SimState>) -> MutexGuard<'_, SimState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SimState {
    /// Fresh state for a validated config.
    pub fn new(config: SimConfig) -> SimState {
        let key_owner = config
            .accounts
            .iter()
            .flat_map(|(id, a)| a.keys.iter().map(move |k| (k.clone(), id.clone())))
            .collect();
        SimState {
            clock: SimClock::new(config.time_scale),
            initial: config.clone(),
            config,
            key_owner,
            faults: FaultQueue::default(),
            stats: Stats::default(),
            next_id: 0,
            stored: HashMap::new(),
            caches: HashMap::new(),
            explicit: HashMap::new(),
            hooks: Vec::new(),
            hook_status: 200,
        }
    }

    /// DashScope's explicit cache for a request's `marked` prefix at `account` and `model`:
    /// (tokens read, tokens written). Read when the account keeps it (its 5 minutes start
    /// again), else written; a prefix under `MIN_EXPLICIT_TOKENS` is neither. Per account and
    /// model, like the implicit cache.
    pub fn explicit_cache(&mut self, account: &str, model: &str, marked: (u64, u64)) -> (u64, u64) {
        let (hash, tokens) = marked;
        if tokens < MIN_EXPLICIT_TOKENS {
            return (0, 0);
        }
        let now = self.clock.now_ns();
        let kept = self
            .explicit
            .entry((account.to_string(), model.to_string()))
            .or_default();
        kept.retain(|_, lapses| *lapses > now);
        let read = kept.contains_key(&hash);
        kept.insert(hash, now + EXPLICIT_LIFE_NS);
        match read {
            true => (tokens, 0),
            false => (0, tokens),
        }
    }

    /// The tokens of the longest of a request's prompt `prefixes` that `account` has seen on
    /// `model` (DashScope's implicit cache: per account and model, prefixes of at least
    /// `MIN_CACHED_TOKENS`); 0 for none.
    pub fn cached_tokens(&self, account: &str, model: &str, prefixes: &[(u64, u64)]) -> u64 {
        let Some(seen) = self.caches.get(&(account.to_string(), model.to_string())) else {
            return 0;
        };
        let hits = prefixes.iter().filter(|(hash, _)| seen.contains(hash));
        let longest = hits.map(|(_, tokens)| *tokens).max().unwrap_or(0);
        if longest >= MIN_CACHED_TOKENS {
            longest
        } else {
            0
        }
    }

    /// Caches a served request's prompt prefixes at `account` for `model`.
    pub fn warm_cache(&mut self, account: &str, model: &str, prefixes: &[(u64, u64)]) {
        let key = (account.to_string(), model.to_string());
        let seen = self.caches.entry(key).or_default();
        // Bounded: a long run forgets, as the upstream's cache does.
        if seen.len() > 100_000 {
            seen.clear();
        }
        seen.extend(prefixes.iter().map(|(hash, _)| *hash));
    }

    /// Keeps a response under the account that answered it.
    pub fn store_response(&mut self, id: String, stored: Stored) {
        self.stored.insert(id, stored);
    }

    /// The response `id`, if `account` holds it.
    pub fn stored_response(&self, account: &str, id: &str) -> Option<&Stored> {
        self.stored.get(id).filter(|s| s.account == account)
    }

    /// Deletes the response `id` if `account` holds it; whether it did.
    pub fn delete_response(&mut self, account: &str, id: &str) -> bool {
        self.stored_response(account, id).is_some() && self.stored.remove(id).is_some()
    }

    /// Next request id: uuid-shaped, deterministic from a counter that never rewinds.
    pub fn next_request_id(&mut self) -> String {
        self.next_id += 1;
        let n = self.next_id;
        // splitmix64 spreads the counter so ids look like the upstream's.
        let mut h = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            h >> 32,
            (h >> 16) & 0xffff,
            h & 0xfff,
            0x8000 | ((h >> 48) & 0x3fff),
            n & 0xffff_ffff_ffff
        )
    }

    /// Account owning `key`.
    pub fn account_of(&self, key: &str) -> Option<String> {
        self.key_owner.get(key).cloned()
    }

    /// Counts a chat request as it arrives.
    pub fn record_call(&mut self) {
        self.stats.total_calls += 1;
    }

    /// Counts a chat request refused for its key.
    pub fn record_unauthorized(&mut self) {
        self.stats.unauthorized += 1;
    }

    /// Counts a chat request with a valid key.
    pub fn record_key_call(&mut self, key: &str, account: &str) {
        *self.stats.keys.entry(key.to_string()).or_default() += 1;
        self.account_stats(account).calls += 1;
    }

    /// Counts a call of `key`'s account asking for DashScope's session cache.
    pub fn record_session_cache(&mut self, key: &str) {
        if let Some(account) = self.account_of(key) {
            self.account_stats(&account).session_cache += 1;
        }
    }

    /// Counts a request refused for its body or model.
    pub fn record_invalid(&mut self, account: &str) {
        self.account_stats(account).invalid_requests += 1;
    }

    /// Counts a request reaching an account x model.
    pub fn record_model_call(&mut self, account: &str, model: &str) {
        self.model_stats(account, model).calls += 1;
    }

    /// Counts a refusal under one of [`crate::stats::ERROR_KINDS`].
    pub fn record_error(&mut self, account: &str, model: &str, kind: &'static str) {
        *self
            .model_stats(account, model)
            .errors
            .entry(kind)
            .or_default() += 1;
    }

    /// Counts a client that left before its answer was complete (a stream, or a delayed answer).
    pub fn record_disconnect(&mut self) {
        self.stats.client_disconnects += 1;
    }

    /// Billing state of an account.
    pub fn account_state(&self, account: &str) -> AccountState {
        self.config
            .accounts
            .get(account)
            .map_or(AccountState::Ok, |a| a.state)
    }

    /// Runs the limiter for one arrival and records the outcome.
    pub fn admit(&mut self, account: &str, model: &str, prompt: u64, completion: u64) -> Admission {
        let limits = self.limits(account, model);
        let now = self.clock.now_ns();
        let clock = self.clock.clone();
        let stats = self.model_stats(account, model);
        let result = stats
            .window
            .arrive(&limits, now, prompt, prompt + completion);
        let real = |info: Option<RateInfo>| {
            info.map(|i| Rate {
                limit: i.limit,
                remaining: i.remaining,
                reset_ms: clock.real_ms(i.reset_ns),
            })
        };
        let requests = real(stats.window.request_info(&limits, now));
        let tokens = real(stats.window.token_info(&limits, now));
        let (refusal, wait_ms) = match result {
            Ok(()) => {
                stats.ok += 1;
                stats.prompt_tokens += prompt;
                stats.completion_tokens += completion;
                (None, 0)
            }
            Err(refusal) => {
                stats.over_limit += 1;
                *stats
                    .errors
                    .entry(limit_error_name(refusal.kind))
                    .or_default() += 1;
                (Some(refusal), clock.real_ms(refusal.wait_ns).max(1))
            }
        };
        Admission {
            refusal,
            wait_ms,
            requests,
            tokens,
        }
    }

    fn limits(&self, account: &str, model: &str) -> Limits {
        self.config
            .accounts
            .get(account)
            .and_then(|a| a.limits.get(model))
            .cloned()
            .unwrap_or_default()
    }

    fn account_stats(&mut self, account: &str) -> &mut AccountStats {
        self.stats.accounts.entry(account.to_string()).or_default()
    }

    fn model_stats(&mut self, account: &str, model: &str) -> &mut ModelStats {
        self.account_stats(account)
            .models
            .entry(model.to_string())
            .or_default()
    }

    /// Zeroes counters and windows, clears faults, restores account states and limits.
    pub fn reset(&mut self) {
        self.stats = Stats::default();
        self.faults.clear();
        self.caches.clear();
        self.explicit.clear();
        self.hooks.clear();
        self.hook_status = 200;
        self.config.accounts = self.initial.accounts.clone();
    }

    /// Applies `{"state": ...}` and/or `{"limits": {model: limits|null}}` to an account;
    /// limits are replaced per model named, `null` making that model unlimited.
    pub fn update_account(&mut self, id: &str, change: &Value) -> Result<(), String> {
        let Some(object) = change.as_object() else {
            return Err("expected a JSON object".into());
        };
        if let Some(unknown) = object.keys().find(|k| *k != "state" && *k != "limits") {
            return Err(format!("unknown field `{unknown}`"));
        }
        let state: Option<AccountState> = match object.get("state") {
            Some(s) => Some(serde_json::from_value(s.clone()).map_err(|e| format!("state: {e}"))?),
            None => None,
        };
        let limits: BTreeMap<String, Option<Limits>> = match object.get("limits") {
            Some(l) => serde_json::from_value(l.clone()).map_err(|e| format!("limits: {e}"))?,
            None => BTreeMap::new(),
        };
        for (model, l) in &limits {
            if let Some(l) = l {
                l.validate().map_err(|e| format!("limits.{model}: {e}"))?;
            }
        }
        let Some(account) = self.config.accounts.get_mut(id) else {
            return Err(format!("unknown account {id}"));
        };
        if let Some(state) = state {
            account.state = state;
        }
        for (model, l) in limits {
            match l {
                Some(l) => account.limits.insert(model, l),
                None => account.limits.remove(&model),
            };
        }
        Ok(())
    }

    /// Whether an account exists.
    pub fn has_account(&self, id: &str) -> bool {
        self.config.accounts.contains_key(id)
    }

    /// Changes the time scale, keeping simulated time continuous.
    pub fn set_time_scale(&mut self, scale: f64) -> Result<(), String> {
        check_time_scale(scale)?;
        self.clock.set_scale(scale);
        self.config.time_scale = scale;
        Ok(())
    }

    /// The statistics document of `GET /_sim/stats`.
    pub fn stats_json(&self) -> Value {
        self.stats.to_json(&self.config, self.clock.scale())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_ids_are_uuid_shaped_and_distinct() {
        let mut s = SimState::new(SimConfig::demo());
        let a = s.next_request_id();
        let b = s.next_request_id();
        assert_ne!(a, b);
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn the_explicit_cache_keeps_a_marked_prefix_per_account_for_five_minutes() {
        use crate::completion::ChatRequest;
        let marked = |text: String| {
            json!({"role": "system", "content": [{"type": "text", "text": text,
                "cache_control": {"type": "ephemeral"}}]})
        };
        let chat = |messages: serde_json::Value| {
            let body = json!({"model": "qwen3-max", "messages": messages}).to_string();
            ChatRequest::parse(body.as_bytes()).unwrap()
        };
        let system = marked("x".repeat(4_400));
        let turn1 = chat(json!([system, {"role": "user", "content": "Fix it."}]));
        let turn2 = chat(json!([system, {"role": "user", "content": "Fix it."},
            {"role": "assistant", "content": "Done."}, {"role": "user", "content": "More."}]));
        let prefix = turn1.marked.unwrap();
        assert_eq!(turn2.marked, Some(prefix), "the same marked prefix");
        assert!(prefix.1 >= MIN_EXPLICIT_TOKENS);
        let plain = chat(json!([{"role": "user", "content": "x".repeat(4_400)}]));
        assert_eq!(plain.marked, None, "no marker, no explicit cache");
        let mut s = SimState::new(SimConfig::demo());
        let tokens = prefix.1;
        for (account, model, want, why) in [
            ("acct-a", "qwen3-max", (0, tokens), "written"),
            ("acct-a", "qwen3-max", (tokens, 0), "read"),
            ("acct-b", "qwen3-max", (0, tokens), "per account"),
            ("acct-a", "qwen-plus", (0, tokens), "per model"),
        ] {
            assert_eq!(s.explicit_cache(account, model, prefix), want, "{why}");
        }
        let small = chat(json!([marked("x".repeat(400)), {"role": "user", "content": "Hi."}]));
        let small = small.marked.unwrap();
        assert_eq!(
            s.explicit_cache("acct-a", "qwen3-max", small),
            (0, 0),
            "too small to keep"
        );
        // Five minutes unused (1 ms at a million times real speed is 1,000 s): gone.
        s.clock.set_scale(1_000_000.0);
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert_eq!(
            s.explicit_cache("acct-a", "qwen3-max", prefix),
            (0, prefix.1),
            "lapsed"
        );
    }

    #[test]
    fn the_implicit_cache_holds_what_an_account_saw_of_a_model() {
        use crate::completion::ChatRequest;
        let system = json!({"role": "system", "content": "x".repeat(1_200)});
        let chat = |messages: serde_json::Value| {
            let body = json!({"model": "qwen3-max", "messages": messages}).to_string();
            ChatRequest::parse(body.as_bytes()).unwrap()
        };
        let turn1 = chat(json!([system, {"role": "user", "content": "Fix it."}]));
        let turn2 = chat(json!([system, {"role": "user", "content": "Fix it."},
            {"role": "assistant", "content": "Done."}, {"role": "user", "content": "More."}]));
        let mut s = SimState::new(SimConfig::demo());
        assert_eq!(s.cached_tokens("acct-a", "qwen3-max", &turn1.prefixes), 0);
        s.warm_cache("acct-a", "qwen3-max", &turn1.prefixes);
        // The whole first turn: two messages, 4 + 300 and 4 + 2 tokens.
        assert_eq!(s.cached_tokens("acct-a", "qwen3-max", &turn2.prefixes), 310);
        assert_eq!(s.cached_tokens("acct-b", "qwen3-max", &turn2.prefixes), 0);
        assert_eq!(s.cached_tokens("acct-a", "qwen-plus", &turn2.prefixes), 0);
        // Shorter than the cache keeps: no hit.
        let short = chat(json!([{"role": "user", "content": "Hi."}]));
        s.warm_cache("acct-a", "qwen3-max", &short.prefixes);
        assert_eq!(s.cached_tokens("acct-a", "qwen3-max", &short.prefixes), 0);
        s.reset();
        assert_eq!(s.cached_tokens("acct-a", "qwen3-max", &turn2.prefixes), 0);
    }

    #[test]
    fn account_updates_and_reset() {
        let mut s = SimState::new(SimConfig::demo());
        s.update_account(
            "acct-a",
            &json!({"state":"arrears","limits":{"qwen3-max":null}}),
        )
        .unwrap();
        assert_eq!(s.account_state("acct-a"), AccountState::Arrears);
        assert_eq!(s.limits("acct-a", "qwen3-max"), Limits::default());
        assert!(s.update_account("acct-z", &json!({"state":"ok"})).is_err());
        assert!(s
            .update_account("acct-a", &json!({"colour":"red"}))
            .is_err());
        s.admit("acct-b", "qwen3-max", 10, 12);
        s.reset();
        assert_eq!(s.account_state("acct-a"), AccountState::Ok);
        let stats = s.stats_json();
        assert_eq!(stats["accounts"]["acct-b"]["models"]["qwen3-max"]["ok"], 0);
        assert_eq!(
            stats["accounts"]["acct-a"]["models"]["qwen3-max"]["limits"]["rpm"],
            6
        );
    }
}
