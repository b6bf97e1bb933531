//! The gateway's configuration: raw JSON (wrangler `[vars]` table or JSON string) to a validated `Config`.

use crate::pace::SlowStart;
pub use crate::window::Limits;
use crate::window::WindowSpec;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The longest any configured time may be: a day (a deadline beyond it is a typo).
pub const MAX_CONFIG_MS: u64 = 24 * 3_600_000;

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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Base URL up to and including the version segment, e.g. `.../compatible-mode/v1`.
    pub base_url: String,
    /// Wire dialect and limit semantics.
    pub profile: Profile,
    /// Lower goes first within a fallback step.
    #[serde(default)]
    pub priority: u32,
    /// Share of traffic among accounts of equal priority (multiplies the account's weight).
    #[serde(default = "one")]
    pub weight: f64,
    /// Durable Object placement hint for this upstream's buckets (e.g. `apac`), near its region.
    #[serde(default)]
    pub location_hint: Option<String>,
    /// How fast a bucket's send rate may grow: `false` for none, `{ floor, growth }` to tune
    /// it; absent: the profile's default (DashScope: on, `SlowStart::DASHSCOPE`).
    #[serde(default)]
    pub slow_start: Option<SlowStartSetting>,
}

/// `slow_start` as configured.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SlowStartSetting {
    /// On (the DashScope defaults) or off.
    Switch(bool),
    /// On, with these numbers.
    Tuned(SlowStart),
}

impl Upstream {
    /// The slow start in force for this upstream's buckets, if any.
    pub fn slow_start(&self) -> Option<SlowStart> {
        match self.slow_start {
            None => (self.profile == Profile::Dashscope).then_some(SlowStart::DASHSCOPE),
            Some(SlowStartSetting::Switch(on)) => on.then_some(SlowStart::DASHSCOPE),
            Some(SlowStartSetting::Tuned(s)) => Some(s),
        }
    }
}

/// One upstream account: its keys share its limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// Id of the upstream this account belongs to.
    pub upstream: String,
    /// Names of the secrets holding this account's API keys (never the keys).
    pub keys: Vec<String>,
    /// Limits per upstream model; the account serves exactly these models.
    #[serde(default)]
    pub limits: BTreeMap<String, Limits>,
    /// Share of traffic among accounts of equal priority.
    #[serde(default = "one")]
    pub weight: f64,
}

/// One step of a fallback chain: a model, optionally restricted to some accounts or upstreams.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum StepSpec {
    /// Just the upstream model name: every account listing it may serve.
    Model(String),
    /// A model with the accounts and/or upstreams allowed to serve it.
    Detailed {
        /// Upstream model name.
        model: String,
        /// Only these accounts (ids).
        #[serde(default)]
        accounts: Option<Vec<String>>,
        /// Only accounts of these upstreams (ids).
        #[serde(default)]
        upstreams: Option<Vec<String>>,
    },
}

impl StepSpec {
    /// The upstream model name of this step.
    pub fn model(&self) -> &str {
        match self {
            StepSpec::Model(m) | StepSpec::Detailed { model: m, .. } => m,
        }
    }

    fn allows(&self, account_id: &str, account: &Account) -> bool {
        match self {
            StepSpec::Model(_) => true,
            StepSpec::Detailed {
                accounts,
                upstreams,
                ..
            } => {
                accounts
                    .as_ref()
                    .is_none_or(|a| a.iter().any(|x| x == account_id))
                    && upstreams
                        .as_ref()
                        .is_none_or(|u| u.contains(&account.upstream))
            }
        }
    }
}

impl Account {
    /// The key (secret name) for the request holding `lease`: refused keys are skipped, the
    /// rest take turns. None when every key was refused.
    pub fn pick_key(&self, refused: &BTreeSet<String>, lease: u64) -> Option<&str> {
        let good: Vec<&str> = self
            .keys
            .iter()
            .map(String::as_str)
            .filter(|k| !refused.contains(*k))
            .collect();
        let turn = usize::try_from(lease % good.len().max(1) as u64).unwrap_or_default();
        good.get(turn).copied()
    }
}

/// A public model name and the upstream models that may answer it, best first.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRoute {
    /// Steps tried in order.
    pub fallback: Vec<StepSpec>,
    /// Longest scheduled wait for a slot before moving down the chain.
    #[serde(default)]
    pub max_wait_ms: Option<u64>,
    /// Whole-request deadline, waits and retries included.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Longest wait for a stream's first content token before trying elsewhere.
    #[serde(default)]
    pub first_token_timeout_ms: Option<u64>,
}

/// One price tier: applies when the request's input tokens are at most `up_to`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTier {
    /// Largest input token count of this tier (inclusive); absent on the last tier.
    #[serde(default)]
    pub up_to: Option<u64>,
    /// USD per 1M input tokens.
    pub input: f64,
    /// USD per 1M output tokens.
    pub output: f64,
}

/// Prices of one upstream model, tiered by the request's input tokens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Tiers in ascending `up_to` order; the whole request is billed at its tier.
    pub tiers: Vec<PriceTier>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Upstream endpoints by id.
    pub upstreams: BTreeMap<String, Upstream>,
    /// Accounts by id.
    pub accounts: BTreeMap<String, Account>,
    /// Public model names clients may send.
    pub models: BTreeMap<String, ModelRoute>,
    /// Prices per upstream model, for cost accounting.
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// Scheduled wait allowed per step when a model does not set its own.
    #[serde(default = "default_max_wait_ms")]
    pub default_max_wait_ms: u64,
    /// Request deadline when a model does not set its own.
    #[serde(default = "default_deadline_ms")]
    pub default_deadline_ms: u64,
    /// First-token timeout of streams when a model does not set its own.
    #[serde(default = "default_first_token_timeout_ms")]
    pub default_first_token_timeout_ms: u64,
    /// Longest silence inside a started stream before it is ended with an error event.
    #[serde(default = "default_stream_idle_timeout_ms")]
    pub stream_idle_timeout_ms: u64,
    /// Output tokens reserved when a request sets no `max_tokens`.
    #[serde(default = "default_output_tokens")]
    pub default_output_tokens: u64,
    /// Windows run this many times faster (tests and demos only; 1 in production).
    #[serde(default = "one")]
    pub time_scale: f64,
    /// Real milliseconds added to every window for jitter nobody measures (the buckets widen
    /// their windows by the measured spread of send lateness on top of this).
    #[serde(default = "default_window_margin_ms")]
    pub window_margin_ms: u64,
    /// Largest request body accepted; larger ones get 413 before being read.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Most messages one chat request may carry.
    #[serde(default = "default_max_messages")]
    pub max_messages: usize,
    /// Longest wait for a bucket Durable Object's answer before rotating away from it.
    #[serde(default = "default_bucket_timeout_ms")]
    pub bucket_timeout_ms: u64,
}

fn one() -> f64 {
    1.0
}
fn default_max_wait_ms() -> u64 {
    2_000
}
fn default_deadline_ms() -> u64 {
    60_000
}
fn default_first_token_timeout_ms() -> u64 {
    20_000
}
fn default_stream_idle_timeout_ms() -> u64 {
    30_000
}
fn default_output_tokens() -> u64 {
    256
}
fn default_window_margin_ms() -> u64 {
    5
}
fn default_max_body_bytes() -> u64 {
    4 << 20
}
fn default_max_messages() -> usize {
    2_048
}
fn default_bucket_timeout_ms() -> u64 {
    3_000
}

/// One place the request can go: an account serving an upstream model.
#[derive(Debug, Clone, Copy, PartialEq)]
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
    /// The account's limits for this model.
    pub limits: &'a Limits,
}

impl Candidate<'_> {
    /// The bucket's name: unique per (account, model), since account ids hold no ':'.
    pub fn bucket(&self) -> String {
        format!("{}:{}", self.account, self.model)
    }

    /// Its share of traffic among candidates of equal priority: account weight x upstream weight.
    pub fn weight(&self) -> f64 {
        self.settings.weight * self.upstream.weight
    }
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
        if !(self.time_scale.is_finite() && self.time_scale >= 1.0) {
            return Err("time_scale: must be a number >= 1".into());
        }
        for (field, ms) in [
            ("default_max_wait_ms", Some(self.default_max_wait_ms)),
            ("default_deadline_ms", Some(self.default_deadline_ms)),
            (
                "default_first_token_timeout_ms",
                Some(self.default_first_token_timeout_ms),
            ),
            ("stream_idle_timeout_ms", Some(self.stream_idle_timeout_ms)),
            ("window_margin_ms", Some(self.window_margin_ms)),
            ("bucket_timeout_ms", Some(self.bucket_timeout_ms)),
        ] {
            check_ms(field, ms)?;
        }
        if self.max_body_bytes == 0 || self.max_messages == 0 {
            return Err("max_body_bytes, max_messages: must be at least 1".into());
        }
        for id in self.upstreams.keys().chain(self.accounts.keys()) {
            check_id(id)?;
        }
        let models = self.accounts.values().flat_map(|a| a.limits.keys());
        let models = models.chain(self.models.keys()).chain(self.prices.keys());
        let steps = self.models.values().flat_map(|r| r.fallback.iter());
        for model in models.map(String::as_str).chain(steps.map(StepSpec::model)) {
            check_model_name(model)?;
        }
        for (name, route) in &self.models {
            let at = |field: &str| format!("models.{name}.{field}");
            check_ms(&at("max_wait_ms"), route.max_wait_ms)?;
            check_ms(&at("deadline_ms"), route.deadline_ms)?;
            check_ms(&at("first_token_timeout_ms"), route.first_token_timeout_ms)?;
        }
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
            if !(up.weight.is_finite() && up.weight > 0.0) {
                return Err(format!("upstreams.{id}.weight: must be a positive number"));
            }
            if let Some(SlowStartSetting::Tuned(s)) = up.slow_start {
                let floor_ok = s.floor.is_finite() && s.floor > 0.0 && s.floor <= 1.0;
                if !(floor_ok && s.growth.is_finite() && s.growth >= 1.0) {
                    return Err(format!(
                        "upstreams.{id}.slow_start: floor must be in (0, 1] and growth >= 1"
                    ));
                }
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
            if !(acct.weight.is_finite() && acct.weight > 0.0) {
                return Err(format!("accounts.{id}.weight: must be a positive number"));
            }
            for (model, l) in &acct.limits {
                let zero = [l.rpm, l.rps, l.tpm, l.tps].contains(&Some(0));
                if zero {
                    return Err(format!(
                        "accounts.{id}.limits.{model}: a limit of 0 admits nothing; remove the model instead"
                    ));
                }
            }
        }
        for (name, route) in &self.models {
            if route.fallback.is_empty() {
                return Err(format!("models.{name}.fallback: needs at least one model"));
            }
            for (i, step) in route.fallback.iter().enumerate() {
                let at = format!("models.{name}.fallback[{i}]");
                if let StepSpec::Detailed {
                    accounts,
                    upstreams,
                    ..
                } = step
                {
                    if let Some(a) = accounts
                        .iter()
                        .flatten()
                        .find(|a| !self.accounts.contains_key(*a))
                    {
                        return Err(format!("{at}.accounts: no account named '{a}'"));
                    }
                    if let Some(u) = upstreams
                        .iter()
                        .flatten()
                        .find(|u| !self.upstreams.contains_key(*u))
                    {
                        return Err(format!("{at}.upstreams: no upstream named '{u}'"));
                    }
                }
                if self.candidates(step).next().is_none() {
                    return Err(format!(
                        "{at}: no allowed account lists '{}' under its limits",
                        step.model()
                    ));
                }
            }
        }
        for (model, price) in &self.prices {
            let mut last: Option<u64> = None;
            for (i, tier) in price.tiers.iter().enumerate() {
                let at = format!("prices.{model}.tiers[{i}]");
                if !(tier.input >= 0.0 && tier.output >= 0.0) {
                    return Err(format!("{at}: prices must be >= 0"));
                }
                match (last, tier.up_to) {
                    (Some(prev), Some(up)) if up <= prev => {
                        return Err(format!("{at}.up_to: tiers must ascend"))
                    }
                    (_, None) if i + 1 != price.tiers.len() => {
                        return Err(format!("{at}.up_to: only the last tier may omit it"))
                    }
                    _ => {}
                }
                last = tier.up_to;
            }
            if price.tiers.is_empty() {
                return Err(format!("prices.{model}.tiers: needs at least one tier"));
            }
        }
        Ok(())
    }

    /// Window lengths the buckets enforce: scaled by `time_scale`, widened by the margin.
    pub fn window_spec(&self) -> WindowSpec {
        let widened = |ms: u64| self.scale_ms(ms).saturating_add(self.window_margin_ms);
        WindowSpec {
            second_ms: widened(1_000),
            minute_ms: widened(60_000),
        }
    }

    /// A wait on the upstream's clock (a window, a cooldown) in real milliseconds: divided by
    /// `time_scale` (1 in production).
    pub fn scale_ms(&self, ms: u64) -> u64 {
        (ms as f64 / self.time_scale) as u64
    }

    /// The candidate of `account` for upstream `model`, if the account serves it.
    pub fn candidate<'a>(&'a self, account: &str, model: &str) -> Option<Candidate<'a>> {
        let (id, acct) = self.accounts.get_key_value(account)?;
        let (model, limits) = acct.limits.get_key_value(model)?;
        let (upstream_id, upstream) = self.upstreams.get_key_value(&acct.upstream)?;
        Some(Candidate {
            account: id,
            settings: acct,
            upstream,
            upstream_id,
            model,
            limits,
        })
    }

    /// Accounts allowed to serve `step`, in id order.
    pub fn candidates<'a>(
        &'a self,
        step: &'a StepSpec,
    ) -> impl Iterator<Item = Candidate<'a>> + 'a {
        let model = step.model();
        self.accounts.iter().filter_map(move |(id, acct)| {
            let upstream = self.upstreams.get(&acct.upstream)?;
            let limits = acct.limits.get(model)?;
            step.allows(id, acct).then_some(Candidate {
                account: id,
                settings: acct,
                upstream,
                upstream_id: &acct.upstream,
                model,
                limits,
            })
        })
    }
}

fn check_ms(field: &str, ms: Option<u64>) -> Result<(), String> {
    match ms {
        Some(ms) if ms > MAX_CONFIG_MS => Err(format!(
            "{field}: {ms} ms is more than a day ({MAX_CONFIG_MS} ms)"
        )),
        _ => Ok(()),
    }
}

/// Upstream and account ids: letters, digits, `.`, `_`, `-` (they name buckets and URLs).
fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{}': ids of upstreams and accounts take letters, digits, '.', '_' and '-' (at most 64)",
            id.escape_debug()
        ))
    }
}

/// Model names go into response headers: visible ASCII only, no spaces.
fn check_model_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty() && name.len() <= 256 && name.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "model '{}': model names must be 1-256 visible ASCII characters (they are sent as header values)",
            name.escape_debug()
        ))
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
