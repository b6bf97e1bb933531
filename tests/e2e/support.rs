//! Shared context of the end-to-end scenarios: simulator, gateway, HTTP client and helpers.

use crate::gateway::{Gateway, GatewaySpec};
use crate::recorder::Recorder;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use upstream_sim::{SimConfig, Simulator};

/// The client key the test gateway accepts.
pub const CLIENT_KEY: &str = "gw-test-client-key";
/// The admin token of the test gateway.
pub const ADMIN_TOKEN: &str = "gw-test-admin-token";
/// Upstream keys the gateway holds (as secrets); the simulator knows all but the last.
pub const UPSTREAM_KEYS: [(&str, &str); 15] = [
    ("SIM_KEY_A1", "sk-a1"),
    ("SIM_KEY_A2", "sk-a2"),
    ("SIM_KEY_B1", "sk-b1"),
    ("SIM_KEY_C1", "sk-c1"),
    ("SIM_KEY_BURST", "sk-burst"),
    ("SIM_KEY_REVOKED", "sk-revoked-0123456789"),
    ("SIM_KEY_REVOKED2", "sk-revoked-2222222222"),
    ("SIM_KEY_REVOKED3", "sk-revoked-3333333333"),
    ("SIM_KEY_ROOM", "sk-room-4242"),
    ("SIM_KEY_WIDE", "sk-wide-5555"),
    ("SIM_KEY_TPM", "sk-tpm-7777"),
    ("SIM_KEY_EMBED", "sk-embed-8888"),
    ("SIM_KEY_CACHE1", "sk-cache-1111"),
    ("SIM_KEY_CACHE2", "sk-cache-2222"),
    ("SIM_KEY_CACHE3", "sk-cache-3333"),
];
/// Client `app-a`'s key (the config holds its SHA-256), its user tokens' signing secret, and
/// client `app-b`'s key (held as a secret).
pub const APP_A_KEY: &str = "gk-app-a-0123456789abcdef";
/// Signs `app-a`'s user tokens.
pub const APP_A_SIGNING: &str = "app-a-signing-secret-9f8e7d6c5b4a";
/// Client `app-b`'s key.
pub const APP_B_KEY: &str = "gk-app-b-fedcba9876543210";
/// Client `app-c`'s key.
pub const APP_C_KEY: &str = "gk-app-c-5a5a5a5a5a5a5a5a";
/// The secret part of the main gateway's alert webhook URL (as the last part of a Slack
/// incoming webhook's is): it must never reach a client or a log.
pub const HOOK_TOKEN: &str = "hook-T0K3N-5e6f7a8b9c";
/// The browser origin `app-a` allows.
pub const APP_ORIGIN: &str = "http://localhost:5173";
/// Simulated time runs this much faster, in the simulator and the gateway alike: a minute is 3 s.
pub const TIME_SCALE: f64 = 20.0;
/// One compressed minute, in real milliseconds.
pub const MINUTE_MS: u64 = 3_000;
/// The buckets of the test config, cleared (and rid of injected faults) between scenarios.
const BUCKETS: [(&str, &str); 25] = [
    ("acct-a", "qwen3-max"),
    ("acct-a", "qwen-plus"),
    ("acct-a", "qwen-turbo"),
    ("acct-b", "qwen3-max"),
    ("acct-b", "qwen-plus"),
    ("acct-b", "qwen-turbo"),
    ("acct-c", "qwen3-max"),
    ("acct-c", "qwen-plus"),
    ("acct-c", "qwen-turbo"),
    ("acct-burst", "qwen-turbo"),
    ("acct-revoked", "qwen-turbo"),
    ("acct-keys", "qwen-turbo"),
    ("acct-keys4", "qwen-plus"),
    ("acct-slow", "qwen3-max"),
    ("relay-a", "qwen-turbo"),
    ("relay-b", "qwen-turbo"),
    ("relay-a", "qwen/qwen3-max"),
    ("relay-room", "qwen-turbo"),
    ("wide", "qwen-turbo"),
    ("acct-tpm", "qwen-plus"),
    ("acct-tpm", "qwen-turbo"),
    ("acct-embed", "text-embedding-v4"),
    ("acct-unset", "qwen3-max"),
    ("acct-unset", "qwen-turbo"),
    ("acct-half", "qwen-turbo"),
];

/// What a suite runs against: the simulator's config, the gateway's, the buckets to clear
/// between scenarios and how long to let windows drain then.
pub struct Setup {
    /// The simulator's config.
    pub sim: fn() -> SimConfig,
    /// The gateway's config and secrets, given the simulator's URL.
    pub gateway: fn(&str) -> GatewaySpec,
    /// Buckets cleared (and rid of injected faults) before each scenario.
    pub buckets: &'static [(&'static str, &'static str)],
    /// Pause after the reset, so no window carries over.
    pub settle_ms: u64,
    /// Start a fresh gateway for each scenario: after a burst of long requests, wrangler dev's
    /// proxy reuses connections its worker has closed meanwhile, and answers one request of
    /// the next burst with its own 503 ("Your worker restarted mid-request").
    pub fresh_gateway: bool,
}

/// The main suite's setup: time compressed 20x, three accounts, many test models.
pub const COMPRESSED: Setup = Setup {
    sim: sim_config,
    gateway: gateway_spec,
    buckets: &BUCKETS,
    // A minute and a second: measured lateness widens the compressed windows a little.
    settle_ms: MINUTE_MS + 1_000,
    fresh_gateway: false,
};

/// What every scenario gets.
pub struct Ctx {
    setup: &'static Setup,
    /// The upstream simulator, in process.
    pub sim: Simulator,
    gateway: Mutex<Option<Gateway>>,
    /// Every client call goes through it, so nothing the gateway sends goes unseen.
    recorder: Recorder,
    /// A plain HTTP client.
    pub http: reqwest::Client,
    root: PathBuf,
    dir: PathBuf,
}

/// Per-model limits shared by the simulator's accounts and the gateway's view of them.
///
/// No RPS here: compressed 20x, a one-second window is 50 ms, less than the scheduling jitter
/// of a loaded local runtime (requests admitted apart reach the simulator together). RPS and
/// TPS windows are proven by the host tests of `window` and `bucket`; the minute windows
/// (3 s here, widened by `window_margin_ms`) are proven end to end.
fn small_limits() -> Value {
    json!({
        "qwen3-max": {"rpm": 6, "tpm": 20000},
        "qwen-plus": {"rpm": 12, "tpm": 40000},
        "qwen-turbo": {"rpm": 30, "tpm": 100000}
    })
}

pub fn sim_config() -> SimConfig {
    serde_json::from_value(json!({
        "time_scale": TIME_SCALE,
        "accounts": {
            "acct-a": {"keys": ["sk-a1", "sk-a2"], "state": "ok", "limits": small_limits()},
            "acct-b": {"keys": ["sk-b1"], "state": "ok", "limits": small_limits()},
            "acct-c": {"keys": ["sk-c1"], "state": "ok", "limits": small_limits()},
            "acct-room": {"keys": ["sk-room-4242"], "state": "ok", "limits": {"qwen-turbo": {"rpm": 120}}},
            "acct-wide": {"keys": ["sk-wide-5555"], "state": "ok", "limits": {"qwen-turbo": {}}},
            "acct-tpm": {"keys": ["sk-tpm-7777"], "state": "ok", "limits": {"qwen-plus": {"tpm": 300}, "qwen-turbo": {"tpm": 300}}},
            "acct-embed": {"keys": ["sk-embed-8888"], "state": "ok", "limits": {"text-embedding-v4": {"rpm": 6}}},
            "acct-cache1": {"keys": ["sk-cache-1111"], "state": "ok", "limits": {"qwen-flash": {}}},
            "acct-cache2": {"keys": ["sk-cache-2222"], "state": "ok", "limits": {"qwen-flash": {}}},
            "acct-cache3": {"keys": ["sk-cache-3333"], "state": "ok", "limits": {"qwen-flash": {}}},
            "acct-burst": {"keys": ["sk-burst"], "state": "ok",
                           "limits": {"qwen-turbo": {"rpm": 600, "burst": {"requests": 3, "window_ms": 500}}}}
        },
        "models": ["qwen3-max", "qwen-plus", "qwen-turbo", "qwen-flash", "text-embedding-v4"],
        "chat_only": ["qwen-plus"],
        "completion_models": ["qwen3-max", "qwen-turbo"],
        "completion_tokens": 8,
        "stream_chunk_delay_ms": 0
    }))
    .expect("simulator config")
}

/// The secrets every test gateway holds: upstream keys, client keys, the admin token.
pub fn test_secrets() -> Vec<(String, String)> {
    let mut secrets: Vec<(String, String)> = UPSTREAM_KEYS
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    secrets.push(("GATEWAY_KEYS".into(), format!("other-key,{CLIENT_KEY}")));
    secrets.push(("ADMIN_TOKEN".into(), ADMIN_TOKEN.into()));
    secrets.push(("APP_A_SIGNING".into(), APP_A_SIGNING.into()));
    secrets.push(("APP_B_KEY".into(), APP_B_KEY.into()));
    secrets
}

/// Every secret value the test gateways hold: none may ever reach a client or a log.
pub fn secret_values() -> Vec<String> {
    let values = test_secrets().into_iter().map(|(_, v)| v);
    values.chain([HOOK_TOKEN.to_string()]).collect()
}

/// Hex SHA-256 of a key, as a client's `key_sha256`.
pub fn sha256_hex(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The clients of the test gateway: `app-a` (key by digest, RPM and TPM limits, a browser
/// origin, user tokens), `app-b` (key in a secret, a daily token budget) and `app-c` (a
/// TPM that binds).
pub fn test_clients() -> Value {
    json!({
        "app-a": {
            "key_sha256": sha256_hex(APP_A_KEY),
            "models": ["client-test", "qwen-turbo-direct"],
            "rpm": 20, "tpm": 100000,
            "origins": [APP_ORIGIN],
            "user_tokens": {"secret": "APP_A_SIGNING", "max_lifetime_s": 600}
        },
        "app-b": {"key_secret": "APP_B_KEY", "models": ["client-test"], "daily_tokens": 600},
        "app-c": {"key_sha256": sha256_hex(APP_C_KEY), "tpm": 400}
    })
}

/// The main suite's gateway config and secrets, given the simulator's URL.
pub fn gateway_spec(sim_url: &str) -> GatewaySpec {
    let abc = json!(["acct-a", "acct-b", "acct-c"]);
    let config = json!({
        "time_scale": TIME_SCALE,
        "window_margin_ms": 300,
        "bucket_timeout_ms": 1000,
        "upstreams": {
            // These scenarios prove windows, parks and failures at compressed time; slow start
            // (on by default for DashScope) is proven on its own, at real time (pacing.rs).
            "sim": {"base_url": format!("{sim_url}/compatible-mode/v1"), "profile": "dashscope", "slow_start": false},
            "relay": {"base_url": format!("{sim_url}/v1"), "profile": "openai-compatible"}
        },
        "accounts": {
            // acct-a's weight makes it the first choice, so scenarios know where traffic starts.
            "acct-a": {"upstream": "sim", "keys": ["SIM_KEY_A1", "SIM_KEY_A2"], "limits": small_limits(), "weight": 1000},
            "acct-b": {"upstream": "sim", "keys": ["SIM_KEY_B1"], "limits": small_limits()},
            "acct-c": {"upstream": "sim", "keys": ["SIM_KEY_C1"], "limits": small_limits()},
            "acct-burst": {"upstream": "sim", "keys": ["SIM_KEY_BURST"], "limits": {"qwen-turbo": {"rpm": 600}}},
            "acct-revoked": {"upstream": "sim", "keys": ["SIM_KEY_REVOKED"], "limits": {"qwen-turbo": {}}},
            // One revoked key and one good one (acct-c's, upstream).
            "acct-keys": {"upstream": "sim", "keys": ["SIM_KEY_REVOKED", "SIM_KEY_C1"], "limits": {"qwen-turbo": {}}},
            // Three revoked keys, then a good one.
            "acct-keys4": {"upstream": "sim",
                           "keys": ["SIM_KEY_REVOKED", "SIM_KEY_REVOKED2", "SIM_KEY_REVOKED3", "SIM_KEY_C1"],
                           "limits": {"qwen-plus": {}}},
            // acct-c upstream, believed to allow 3 requests a minute.
            "acct-slow": {"upstream": "sim", "keys": ["SIM_KEY_C1"], "limits": {"qwen3-max": {"rpm": 3}}},
            // Two accounts of an OpenAI-compatible relay (the simulator's OpenAI dialect).
            "relay-a": {"upstream": "relay", "keys": ["SIM_KEY_B1"], "weight": 1000,
                        "limits": {"qwen-turbo": {}, "qwen/qwen3-max": {"rpm": 5}}},
            "relay-b": {"upstream": "relay", "keys": ["SIM_KEY_C1"], "limits": {"qwen-turbo": {}}},
            // Room for admission credits at low load, a limit crossed under a burst (credits
            // serve relays; DashScope's buckets pace every send).
            "relay-room": {"upstream": "relay", "keys": ["SIM_KEY_ROOM"], "limits": {"qwen-turbo": {"rpm": 120}}},
            // No limits anywhere: the clients' own limits are what binds.
            "wide": {"upstream": "relay", "keys": ["SIM_KEY_WIDE"], "limits": {"qwen-turbo": {}}},
            // A token limit that binds on a few requests of several choices each.
            "acct-tpm": {"upstream": "sim", "keys": ["SIM_KEY_TPM"], "limits": {"qwen-plus": {"tpm": 300}, "qwen-turbo": {"tpm": 300}}},
            "acct-embed": {"upstream": "sim", "keys": ["SIM_KEY_EMBED"], "limits": {"text-embedding-v4": {"rpm": 6}}},
            // A key whose secret this gateway does not set (a forgotten `wrangler secret put`);
            // acct-half has it beside a good key (acct-c's, upstream).
            "acct-unset": {"upstream": "sim", "keys": ["SIM_KEY_UNSET"], "limits": {"qwen3-max": {}, "qwen-turbo": {}}},
            "acct-half": {"upstream": "sim", "keys": ["SIM_KEY_UNSET", "SIM_KEY_C1"], "limits": {"qwen-turbo": {}}},
            // Three accounts of equal weight and no limits: where conversations go is the
            // cache key's choice alone.
            "cache-1": {"upstream": "sim", "keys": ["SIM_KEY_CACHE1"], "limits": {"qwen-flash": {}}},
            "cache-2": {"upstream": "sim", "keys": ["SIM_KEY_CACHE2"], "limits": {"qwen-flash": {}}},
            "cache-3": {"upstream": "sim", "keys": ["SIM_KEY_CACHE3"], "limits": {"qwen-flash": {}}}
        },
        "clients": test_clients(),
        "prices": {
            "qwen3-max": {"tiers": [
                {"up_to": 32000, "input": 1.2, "output": 6.0},
                {"input": 2.4, "output": 12.0}
            ]},
            // Round figures; DashScope's implicit cache share.
            "qwen-flash": {"tiers": [{"input": 1.0, "output": 2.0}],
                           "cache": {"hit": 0.2, "explicit_hit": 0.1, "write": 1.25}}
        },
        "models": {
            "qwen3-max": {
                "fallback": [
                    {"model": "qwen3-max", "accounts": abc},
                    {"model": "qwen-plus", "accounts": abc},
                    {"model": "qwen-turbo", "accounts": abc}
                ],
                "max_wait_ms": 100,
                "deadline_ms": 20000
            },
            "rotate-test": {"fallback": [{"model": "qwen3-max", "accounts": ["acct-a", "acct-b"]}], "max_wait_ms": 50},
            "burst-test": {"fallback": [{"model": "qwen-turbo", "accounts": ["acct-burst"]}], "max_wait_ms": 5000},
            "room-test": {"fallback": [{"model": "qwen-turbo", "accounts": ["relay-room"]}], "max_wait_ms": 0},
            "revoked": {"fallback": [{"model": "qwen-turbo", "accounts": ["acct-revoked"]}]},
            "keys-test": {"fallback": [{"model": "qwen-turbo", "accounts": ["acct-keys"]}]},
            "unset-test": {"fallback": [{"model": "qwen-turbo", "accounts": ["acct-unset", "acct-half"]}]},
            "unset-only": {"fallback": [{"model": "qwen-turbo", "accounts": ["acct-unset"]}]},
            "unset-first": {"fallback": [{"model": "qwen3-max", "accounts": ["acct-unset"]},
                                         {"model": "qwen-turbo", "accounts": ["wide"]}]},
            "chat-first": {
                "fallback": [
                    {"model": "qwen-plus", "accounts": ["acct-c"]},
                    {"model": "qwen-turbo", "accounts": ["acct-c"]}
                ],
                "max_wait_ms": 50
            },
            "chat-only": {"fallback": [{"model": "qwen-plus", "accounts": ["acct-c"]}], "max_wait_ms": 50},
            // Two accounts of equal weight: requests spread over both.
            "follow-test": {"fallback": [{"model": "qwen-turbo", "accounts": ["acct-b", "acct-c"]}], "max_wait_ms": 50},
            "stream-test": {
                "fallback": [{"model": "qwen-turbo", "accounts": ["acct-a", "acct-b"]}],
                "max_wait_ms": 50,
                "first_token_timeout_ms": 500
            },
            "keys4-test": {"fallback": [{"model": "qwen-plus", "accounts": ["acct-keys4"]}]},
            "abandon-test": {"fallback": [{"model": "qwen3-max", "accounts": ["acct-slow"]}], "max_wait_ms": 10000},
            "relay-test": {"fallback": [{"model": "qwen-turbo", "accounts": ["relay-a", "relay-b"]}], "max_wait_ms": 50},
            "long-stream": {"fallback": [{"model": "qwen-turbo", "accounts": ["acct-b"]}], "deadline_ms": 3000},
            "write-test": {"fallback": [{"model": "qwen-plus", "accounts": ["acct-c"]}], "max_wait_ms": 50},
            // No wait: these prove refusals at a client's limits; waiting for room in them is
            // asked with x-gateway-max-wait-ms.
            "client-test": {"fallback": [{"model": "qwen-turbo", "accounts": ["wide"]}], "max_wait_ms": 0},
            "qwen-turbo-direct": {"fallback": [{"model": "qwen-turbo", "accounts": ["wide"]}], "max_wait_ms": 0},
            "cache-test": {"fallback": [{"model": "qwen-flash", "accounts": ["cache-1", "cache-2", "cache-3"]}]},
            "choices-test": {"fallback": [{"model": "qwen-plus", "accounts": ["acct-tpm"]}], "max_wait_ms": 8000},
            "prompts-test": {"fallback": [{"model": "qwen-turbo", "accounts": ["acct-tpm"]}], "max_wait_ms": 8000},
            // A step after the embeddings model that must never serve them.
            "text-embedding-v4": {"fallback": [{"model": "text-embedding-v4", "accounts": ["acct-embed"]},
                                               {"model": "qwen-turbo", "accounts": ["wide"]}],
                                  "max_wait_ms": 0}
        }
    });
    let mut secrets = test_secrets();
    let hook = format!("{sim_url}/_sim/hooks/{HOOK_TOKEN}");
    secrets.push(("ALERT_WEBHOOK_URL".into(), hook));
    GatewaySpec { config, secrets }
}

impl Ctx {
    /// Starts the simulator and the gateway of `setup`, each on an ephemeral loopback port.
    pub async fn start(setup: &'static Setup) -> Result<Ctx, String> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = root.join(format!("target/e2e/run-{}-{stamp}", std::process::id()));
        let sim = Simulator::start((setup.sim)(), 0)
            .await
            .map_err(|e| format!("simulator: {e}"))?;
        let gateway = Gateway::start(&root, &dir, &(setup.gateway)(&sim.url())).await?;
        let recorder = Recorder::start(&gateway.url).await?;
        println!(
            "simulator at {}, gateway at {} through {} (state in {})",
            sim.url(),
            gateway.url,
            recorder.url,
            dir.display()
        );
        Ok(Ctx {
            setup,
            recorder,
            sim,
            gateway: Mutex::new(Some(gateway)),
            // Idle connections go before the settle between scenarios: wrangler dev's proxy
            // closes idle ones meanwhile, and a burst reusing them would meet resets.
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_millis(500))
                .build()
                .map_err(|e| format!("http client: {e}"))?,
            root,
            dir,
        })
    }

    /// The gateway's base URL, through the recorder.
    pub fn url(&self) -> String {
        self.recorder.url.clone()
    }

    /// The alerts of `event` the main gateway's webhook received since the simulator's reset.
    pub fn alerts(&self, event: &str) -> Vec<Value> {
        let hooks = self.sim.hooks().into_iter();
        let ours = hooks.filter(|h| h["name"] == HOOK_TOKEN && h["body"]["event"] == event);
        ours.map(|h| h["body"].clone()).collect()
    }

    /// Of those, the ones about `who` (each field equal to its value).
    pub fn alerts_about(&self, event: &str, who: &[(&str, &str)]) -> Vec<Value> {
        let alerts = self.alerts(event).into_iter();
        alerts
            .filter(|a| who.iter().all(|(f, v)| a[*f] == *v))
            .collect()
    }

    /// The one alert of `event` about `who`: waits up to 5 s for it; fails unless one came,
    /// and only one.
    pub async fn alert_once(&self, event: &str, who: &[(&str, &str)]) -> Value {
        let came = eventually(5, || async { !self.alerts_about(event, who).is_empty() }).await;
        let alerts = self.alerts_about(event, who);
        let hooks = self.sim.hooks();
        assert!(
            came && alerts.len() == 1,
            "one {event} about {who:?}: {hooks:?}"
        );
        alerts[0].clone()
    }

    /// Everything the gateway has sent to clients so far.
    pub fn recorded(&self) -> String {
        self.recorder.seen()
    }

    /// Clears the simulator and every bucket's park, then lets the windows drain so none
    /// carries over between scenarios (on a fresh gateway, when the setup asks for one).
    pub async fn reset(&self, first: bool) {
        if self.setup.fresh_gateway && !first {
            self.restart_gateway().await;
        }
        self.sim.reset();
        for &(account, model) in self.setup.buckets {
            self.bucket_fault(
                account,
                model,
                json!({"delay_ms": 0, "error": false, "fail_writes": false}),
            )
            .await;
            let model = model.replace('/', "%2F");
            let url = format!("{}/admin/buckets/{account}/{model}/clear", self.url());
            let status = self
                .post_idempotent(|| self.http.post(&url).bearer_auth(ADMIN_TOKEN))
                .await;
            assert_eq!(status, Some(200), "clear {account}/{model}");
        }
        tokio::time::sleep(Duration::from_millis(self.setup.settle_ms)).await;
    }

    /// Makes a bucket's Durable Object slow (`delay_ms`), failing (`error`) or unable to write
    /// to its SQLite (`fail_writes`), through the test entry module (`faults.mjs`).
    pub async fn bucket_fault(&self, account: &str, model: &str, fault: Value) {
        let name = format!("{account}:{model}").replace('/', "%2F");
        let url = format!("{}/__test/bucket-fault/{name}", self.url());
        let status = self
            .post_idempotent(|| self.http.post(&url).json(&fault))
            .await;
        assert_eq!(status, Some(200), "fault on {account}/{model}");
    }

    /// Sends an idempotent set-up request, again when wrangler dev's proxy answers its own 503
    /// ("Your worker restarted mid-request"): after an idle spell it can hand the request to a
    /// pooled connection its worker has closed meanwhile. Scenarios themselves never retry.
    async fn post_idempotent(&self, request: impl Fn() -> reqwest::RequestBuilder) -> Option<u16> {
        let mut status = None;
        for _ in 0..3 {
            status = request().send().await.ok().map(|r| r.status().as_u16());
            if !matches!(status, None | Some(503)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        status
    }

    /// Stops the gateway and starts it again on the same Durable Object state.
    pub async fn restart_gateway(&self) {
        let old = self.gateway.lock().ok().and_then(|mut g| g.take());
        if let Some(mut gw) = old {
            gw.stop();
        }
        let spec = (self.setup.gateway)(&self.sim.url());
        let gateway = Gateway::start(&self.root, &self.dir, &spec)
            .await
            .expect("gateway restarts");
        self.recorder.retarget(&gateway.url);
        if let Ok(mut g) = self.gateway.lock() {
            *g = Some(gateway);
        }
    }

    /// The repository root.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// What `script` prints, run by the project's Python (the official SDK) with the gateway's
    /// URL and the client key as its arguments; a script that fails fails the test with its
    /// error.
    pub fn sdk(&self, script: &str) -> String {
        let out = std::process::Command::new(self.root.join(".venv/bin/python"))
            .args(["-c", script, &self.url(), CLIENT_KEY])
            .output()
            .expect("the .venv's python (make bootstrap)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the SDK script failed: {stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Drops every queued simulator fault.
    pub async fn clear_faults(&self) {
        let url = format!("{}/_sim/faults", self.sim.url());
        let cleared = self.http.delete(url).send().await;
        assert!(
            cleared.is_ok_and(|r| r.status().is_success()),
            "clear faults"
        );
    }

    /// Simulator stats of one account and model.
    pub fn sim_model(&self, account: &str, model: &str) -> Value {
        self.sim.stats()["accounts"][account]["models"][model].clone()
    }

    /// GETs a bucket's admin view.
    pub async fn bucket(&self, account: &str, model: &str) -> Value {
        let url = format!("{}/admin/buckets/{account}/{model}", self.url());
        self.send(self.http.get(url).bearer_auth(ADMIN_TOKEN))
            .await
            .json()
    }

    /// Stops everything; removes the run directory when all passed.
    pub async fn stop(self, remove_dir: bool) {
        if let Ok(mut guard) = self.gateway.lock() {
            if let Some(mut gw) = guard.take() {
                gw.stop();
            }
        }
        self.sim.shutdown().await;
        if remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            println!("kept {} for inspection (wrangler.log)", self.dir.display());
        }
    }

    /// The gateway's log so far (wrangler and workerd output).
    pub fn gateway_log(&self) -> String {
        self.gateway
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(Gateway::log))
            .unwrap_or_default()
    }

    /// The gateway's log line of request `id` (`"event":"request"`), waited for up to 5 s: it
    /// is written as the request ends, which may be after its answer.
    pub async fn request_line(&self, id: &str) -> Option<Value> {
        let line = || {
            let log = self.gateway_log();
            let lines = log
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok());
            lines
                .into_iter()
                .find(|v| v["event"] == "request" && v["request_id"] == id)
        };
        eventually(5, || {
            let found = line().is_some();
            async move { found }
        })
        .await;
        line()
    }

    /// POSTs a chat request with the client key.
    pub async fn chat(&self, body: &Value) -> Reply {
        self.post("chat/completions", body).await
    }

    /// Posts `body` to `/v1/<path>` with the client key.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        let url = format!("{}/v1/{path}", self.url());
        self.send(self.http.post(url).bearer_auth(CLIENT_KEY).json(body))
            .await
    }

    /// Sends any request and collects the reply.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.expect("gateway answered");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("gateway body");
        Reply {
            status,
            headers,
            text,
        }
    }
}

/// A collected gateway answer.
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body text.
    pub text: String,
}

impl Reply {
    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// A header as text, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts the OpenAI error shape and status; returns the `error` object.
    pub fn assert_error(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "status; body: {}", self.text);
        assert!(
            self.header("content-type").starts_with("application/json"),
            "content-type"
        );
        let body = self.json();
        let error = body["error"].clone();
        for field in ["message", "type", "param", "code"] {
            assert!(
                error.get(field).is_some(),
                "error.{field} missing in {}",
                self.text
            );
        }
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "message"
        );
        error
    }
}

/// A number inside a JSON value (0 when absent).
pub fn stat(v: &Value, path: &[&str]) -> u64 {
    path.iter().fold(v, |v, k| &v[*k]).as_u64().unwrap_or(0)
}

/// A bucket's counters from its admin view.
pub async fn counters(ctx: &Ctx, account: &str, model: &str) -> Value {
    ctx.bucket(account, model).await["state"]["counters"].clone()
}

/// A bucket's counters and the simulator's for the same account and model, taken before a
/// request, to check that the bucket then settles it with the usage the upstream counted.
pub struct Before {
    account: &'static str,
    model: &'static str,
    gateway: Value,
    upstream: Value,
}

impl Before {
    pub async fn take(ctx: &Ctx, account: &'static str, model: &'static str) -> Before {
        Before {
            account,
            model,
            gateway: counters(ctx, account, model).await,
            upstream: ctx.sim_model(account, model),
        }
    }

    /// Whether one more request was served and settled with the upstream's token counts
    /// (not the gateway's estimate), within 3 s.
    pub async fn settled_one_as_counted_upstream(&self, ctx: &Ctx) -> bool {
        let upstream = ctx.sim_model(self.account, self.model);
        let grew = |now: &Value, was: &Value, k: &str| stat(now, &[k]) - stat(was, &[k]);
        eventually(3, || async {
            let now = counters(ctx, self.account, self.model).await;
            grew(&now, &self.gateway, "ok") == 1
                && ["prompt_tokens", "completion_tokens"]
                    .iter()
                    .all(|k| grew(&now, &self.gateway, k) == grew(&upstream, &self.upstream, k))
        })
        .await
    }
}

/// Posts each body to `/v1/<path>`: each must be a 400 naming its parameter, and none may
/// reach the upstream.
pub async fn refused_before_the_upstream(ctx: &Ctx, path: &str, cases: &[(Value, &str)]) {
    let calls = ctx.sim.stats()["total_calls"].clone();
    for (body, param) in cases {
        let reply = ctx.post(path, body).await;
        assert_eq!(reply.assert_error(400)["param"], *param, "{}", reply.text);
    }
    let now = ctx.sim.stats()["total_calls"].clone();
    assert_eq!(now, calls, "nothing reached the upstream");
}

/// Polls until `check` holds or `secs` pass; returns whether it held.
pub async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check().await
}

/// A simple one-message chat body.
pub fn chat_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}], "stream": stream})
}

/// The text of a panic payload.
pub fn panic_message(err: tokio::task::JoinError) -> String {
    match err.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into()),
        Err(e) => e.to_string(),
    }
}
