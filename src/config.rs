//! The gateway's configuration: raw JSON (wrangler `[vars]` table or JSON string) to a validated `Config`.

use crate::pace::SlowStart;
use crate::redact;
pub use crate::window::Limits;
use crate::window::WindowSpec;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub mod path;
mod validate;

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

/// `slow_start` as configured: `true`/`false`, or `{ floor, growth }`.
#[derive(Debug, Clone, Copy, PartialEq)]
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

    /// Most admissions one credit of its buckets may carry: none for DashScope, whose surge
    /// protection punishes the bursts a credit allows (its buckets pace every send).
    pub fn credit_max(&self, configured: u64) -> u64 {
        match self.profile {
            Profile::Dashscope => 0,
            _ => configured,
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

/// Account keys whose secret is not set: (account id, secret name).
pub type UnsetKeys = Vec<(String, String)>;

/// One step of a fallback chain: a model, optionally restricted to some accounts or upstreams.
#[derive(Debug, Clone, PartialEq)]
pub enum StepSpec {
    /// Just the upstream model name: every account listing it may serve.
    Model(String),
    /// A model with the accounts and/or upstreams allowed to serve it.
    Detailed {
        /// Upstream model name.
        model: String,
        /// Only these accounts (ids).
        accounts: Option<Vec<String>>,
        /// Only accounts of these upstreams (ids).
        upstreams: Option<Vec<String>>,
    },
}

/// `StepSpec::Detailed` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetailedStep {
    model: String,
    #[serde(default)]
    accounts: Option<Vec<String>>,
    #[serde(default)]
    upstreams: Option<Vec<String>>,
}

// Read by kind (a string or an object; a switch or numbers), not as untagged enums: an error
// inside the object is then the object's own (`unknown field ...` at its place), not "data
// did not match any variant", and the parser can say where it is (`config::path`).
impl<'de> Deserialize<'de> for StepSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Step;
        impl<'de> Visitor<'de> for Step {
            type Value = StepSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a model name or {\"model\", \"accounts\", \"upstreams\"}")
            }
            fn visit_str<E: de::Error>(self, model: &str) -> Result<StepSpec, E> {
                Ok(StepSpec::Model(model.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<StepSpec, A::Error> {
                let d = DetailedStep::deserialize(MapAccessDeserializer::new(map))?;
                Ok(StepSpec::Detailed {
                    model: d.model,
                    accounts: d.accounts,
                    upstreams: d.upstreams,
                })
            }
        }
        d.deserialize_any(Step)
    }
}

impl<'de> Deserialize<'de> for SlowStartSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Setting;
        impl<'de> Visitor<'de> for Setting {
            type Value = SlowStartSetting;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false or {\"floor\", \"growth\"}")
            }
            fn visit_bool<E: de::Error>(self, on: bool) -> Result<SlowStartSetting, E> {
                Ok(SlowStartSetting::Switch(on))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SlowStartSetting, A::Error> {
                SlowStart::deserialize(MapAccessDeserializer::new(map)).map(SlowStartSetting::Tuned)
            }
        }
        d.deserialize_any(Setting)
    }
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
    /// What input read from or written to the upstream's prompt cache costs.
    #[serde(default)]
    pub cache: CacheShares,
}

/// Shares of a tier's input price that cached input costs, as the upstream reports it in its
/// `usage` (`prompt_tokens_details`). Unset: cached input costs as any input.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheShares {
    /// Input read from the cache (DashScope's implicit cache: 0.2).
    pub hit: f64,
    /// Input read from an explicit cache (`cache_type: "ephemeral"`; DashScope: 0.1);
    /// unset: `hit`.
    pub explicit_hit: Option<f64>,
    /// Input written to an explicit cache (DashScope: 1.25).
    pub write: f64,
}

impl Default for CacheShares {
    fn default() -> CacheShares {
        CacheShares {
            hit: 1.0,
            explicit_hit: None,
            write: 1.0,
        }
    }
}

/// One string or a list of them (`"A"` or `["A", "B"]`): a client's keys or secret names, two
/// listed while one replaces the other.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OneOrMore(pub Vec<String>);

impl OneOrMore {
    /// Each, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl<'de> Deserialize<'de> for OneOrMore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Strings;
        impl<'de> Visitor<'de> for Strings {
            type Value = OneOrMore;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, one: &str) -> Result<OneOrMore, E> {
                Ok(OneOrMore(vec![one.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<OneOrMore, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(OneOrMore)
            }
        }
        d.deserialize_any(Strings)
    }
}

/// One client of the gateway (an app): how it proves itself and what it may use.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    /// Hex SHA-256 of the client's key (`printf %s "$KEY" | sha256sum`), or of each of its
    /// keys (a new one beside the old while the app moves to it).
    #[serde(default)]
    pub key_sha256: Option<OneOrMore>,
    /// Or the name of a secret holding the key (or of each).
    #[serde(default)]
    pub key_secret: Option<OneOrMore>,
    /// Public model names it may call; absent: all.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Requests per minute, all its users together.
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Tokens per minute.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Tokens per UTC day.
    #[serde(default)]
    pub daily_tokens: Option<u64>,
    /// Spend per UTC month in USD, priced with `prices` at the model that answered.
    #[serde(default)]
    pub monthly_usd: Option<f64>,
    /// Browser origins allowed to call with its key or tokens (`https://app.example.com`;
    /// `*`: any).
    #[serde(default)]
    pub origins: Vec<String>,
    /// Signed user tokens its backend may mint.
    #[serde(default)]
    pub user_tokens: Option<UserTokens>,
}

/// How a client's user tokens are signed and checked.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserTokens {
    /// Name of the secret holding the HS256 signing key (never the key), or of each: a token
    /// signed with any is accepted, and the first seals its users' stored responses.
    pub secret: OneOrMore,
    /// Longest lifetime accepted, seconds.
    #[serde(default = "default_max_lifetime_s")]
    pub max_lifetime_s: u64,
    /// Clock difference tolerated, seconds.
    #[serde(default = "default_skew_s")]
    pub skew_s: u64,
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
    /// Most admissions a bucket or a client's meter hands an isolate ahead while it has ample
    /// room, spent with no round trip (0: every admission asks).
    #[serde(default = "default_admission_credits")]
    pub admission_credits: u64,
    /// Client apps by id, each with its own key or tokens, limits and origins (besides the
    /// unlimited keys of the `GATEWAY_KEYS` secret).
    #[serde(default)]
    pub clients: BTreeMap<String, Client>,
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

fn default_max_lifetime_s() -> u64 {
    3_600
}
fn default_skew_s() -> u64 {
    60
}

fn default_admission_credits() -> u64 {
    // At 1,000 requests a second an isolate then asks its bucket about 30 times a second.
    32
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
        match value {
            Value::String(text) => Config::from_text(text),
            other => Config::from_text(&other.to_string()),
        }
    }

    /// Parses a config from JSON text; an error names the path of the value it is about.
    pub fn from_text(text: &str) -> Result<Config, String> {
        // The message goes to every caller: a key pasted in the wrong place is not echoed.
        let parsed: Config =
            serde_json::from_str(text).map_err(|e| match path::at(text, e.line(), e.column()) {
                path if path.is_empty() => redact::keys(&format!("invalid GATEWAY config: {e}")),
                path => redact::keys(&format!("invalid GATEWAY config: {path}: {e}")),
            })?;
        parsed.validate().map_err(|e| redact::keys(&e))?;
        Ok(parsed)
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

    /// Leaves out of each account the keys whose secret is not set (`is_set`), so that no
    /// request is sent with one: a deployment whose `wrangler secret put` was forgotten serves
    /// from the account's other keys, and an account left with none serves nothing (its
    /// requests go to other accounts or down the chain). Says what it left out.
    pub fn leave_out_unset_keys(&mut self, is_set: impl Fn(&str) -> bool) -> UnsetKeys {
        let mut unset = Vec::new();
        for (id, account) in &mut self.accounts {
            account.keys.retain(|k| {
                let set = is_set(k);
                if !set {
                    unset.push((id.clone(), k.clone()));
                }
                set
            });
        }
        unset
    }

    /// Why no account of `route` can serve: the secrets of their keys that are not set.
    pub fn no_key_set(&self, route: &ModelRoute, unset: &UnsetKeys) -> String {
        let named: Vec<String> = (self.unset_for(route, unset))
            .map(|(id, k)| format!("{k} (accounts.{id}.keys)"))
            .collect();
        format!(
            "No account that can serve this model has a key: set {} (`wrangler secret put <NAME>`).",
            named.join(", ")
        )
    }

    /// The unset keys of the accounts allowed to serve a step of `route`: (account, secret).
    pub fn unset_for<'a>(
        &'a self,
        route: &'a ModelRoute,
        unset: &'a UnsetKeys,
    ) -> impl Iterator<Item = &'a (String, String)> + 'a {
        let serves = |id: &String| {
            let account = self.accounts.get(id);
            (route.fallback.iter()).any(|s| {
                account.is_some_and(|a| a.limits.contains_key(s.model()) && s.allows(id, a))
            })
        };
        unset.iter().filter(move |(id, _)| serves(id))
    }

    /// The first choice of `route` whether or not it has a key set: its first step's first
    /// allowed account, where what its clients miss is counted.
    pub fn first_choice(&self, route: &ModelRoute) -> Option<Candidate<'_>> {
        let step = route.fallback.first()?;
        let model = step.model();
        let mut allowed = self.accounts.iter();
        let (id, _) = allowed.find(|(id, a)| a.limits.contains_key(model) && step.allows(id, a))?;
        self.candidate(id, model)
    }

    /// Whether some account with a key set can serve a step of `route` (else it answers
    /// [`Config::no_key_set`], and the model list leaves it out).
    pub fn can_serve(&self, route: &ModelRoute) -> bool {
        (route.fallback.iter()).any(|s| self.candidates(s).next().is_some())
    }

    /// Accounts allowed to serve `step`, in id order; an account with no key set is none.
    pub fn candidates<'a>(
        &'a self,
        step: &'a StepSpec,
    ) -> impl Iterator<Item = Candidate<'a>> + 'a {
        let model = step.model();
        self.accounts.iter().filter_map(move |(id, acct)| {
            let upstream = self.upstreams.get(&acct.upstream)?;
            let limits = acct.limits.get(model)?;
            let serves = step.allows(id, acct) && !acct.keys.is_empty();
            serves.then_some(Candidate {
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

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
