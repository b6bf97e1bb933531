//! The bucket Durable Object: one per (account, model) quota budget, holding the pure
//! `BucketState` in memory and persisting it to SQLite after every change.

use crate::bucket::{AcquireRequest, Admission, BucketState, Policy, SettleOutcome, Snapshot};
use crate::config::{Config, Limits};
use crate::glue::respond;
use crate::openai::ApiError;
use crate::window::WindowSpec;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use worker::{
    durable_object, wasm_bindgen, Date, DurableObject, Env, Method, Request, RequestInit, Response,
    Result, SqlStorage, State,
};

/// Where a bucket lives and what limits it enforces; sent with every call so the DO
/// always applies the config version of the worker that asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketRef {
    /// Account id.
    pub account: String,
    /// Upstream model name.
    pub model: String,
    /// The account's limits for the model.
    pub limits: Limits,
    /// Window lengths (compressed in tests).
    pub spec: WindowSpec,
    /// Placement hint for the DO (the upstream's region).
    #[serde(skip)]
    pub location_hint: Option<String>,
}

impl BucketRef {
    /// The bucket of `account` for upstream `model`, if the config has one.
    pub fn of(config: &Config, account: &str, model: &str) -> Option<BucketRef> {
        let acct = config.accounts.get(account)?;
        Some(BucketRef {
            account: account.to_string(),
            model: model.to_string(),
            limits: acct.limits.get(model)?.clone(),
            spec: config.window_spec(),
            location_hint: config
                .upstreams
                .get(&acct.upstream)
                .and_then(|u| u.location_hint.clone()),
        })
    }

    /// Its name, for the Durable Object (`bucket:<name>`) and the isolate cache.
    pub fn name(&self) -> String {
        format!("{}:{}", self.account, self.model)
    }
}

#[derive(Serialize, Deserialize)]
struct Call {
    limits: Limits,
    spec: WindowSpec,
    #[serde(default)]
    est_tokens: u64,
    #[serde(default)]
    max_wait_ms: u64,
    #[serde(default)]
    lease_ttl_ms: u64,
    #[serde(default)]
    lease: u64,
    #[serde(default)]
    outcome: Option<SettleOutcome>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    for_ms: Option<u64>,
    /// A key (secret name) the upstream refused, to skip from now on.
    #[serde(default)]
    bad_key: Option<String>,
}

/// What the bucket DO answers: the admission (for `/acquire`) or the state, and the keys of
/// the account this bucket has seen refused.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    /// The admission, for `/acquire`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<Admission>,
    /// The bucket's state, for every other call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Snapshot>,
    /// Secret names of keys refused by the upstream (never the keys).
    #[serde(default)]
    pub bad_keys: Vec<String>,
}

/// One quota budget (account x model).
#[durable_object]
pub struct BucketDo {
    sql: SqlStorage,
    state: RefCell<Option<BucketState>>,
    bad_keys: RefCell<Option<Vec<String>>>,
}

impl DurableObject for BucketDo {
    fn new(state: State, _env: Env) -> Self {
        let sql = state.storage().sql();
        // A failure here surfaces on the first query, as an error rather than a panic.
        let _ = sql.exec(
            "CREATE TABLE IF NOT EXISTS bucket(id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL)",
            None,
        );
        let _ = sql.exec(
            "CREATE TABLE IF NOT EXISTS bad_keys(name TEXT PRIMARY KEY)",
            None,
        );
        Self {
            sql,
            state: RefCell::new(None),
            bad_keys: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let call: Call = req.json().await?;
        let policy = Policy {
            limits: &call.limits,
            spec: call.spec,
        };
        let now = Date::now().as_millis();
        // No await from here to the store below, so no other request interleaves.
        let cached = self.state.borrow_mut().take();
        let mut state = match cached {
            Some(state) => state,
            None => self.load()?,
        };
        let cached_keys = self.bad_keys.borrow_mut().take();
        let mut bad_keys = match cached_keys {
            Some(keys) => keys,
            None => self.load_bad_keys()?,
        };
        let mut reply = Reply {
            admission: None,
            state: None,
            bad_keys: Vec::new(),
        };
        match req.path().as_str() {
            "/acquire" => {
                let ask = AcquireRequest {
                    est_tokens: call.est_tokens,
                    max_wait_ms: call.max_wait_ms,
                    lease_ttl_ms: call.lease_ttl_ms,
                };
                reply.admission = Some(state.acquire(now, &policy, &ask));
            }
            "/settle" => {
                if let Some(key) = call.bad_key.filter(|k| !bad_keys.contains(k)) {
                    self.sql.exec(
                        "INSERT OR IGNORE INTO bad_keys(name) VALUES (?)",
                        vec![key.as_str().into()],
                    )?;
                    bad_keys.push(key);
                }
                if let Some(outcome) = &call.outcome {
                    state.settle(now, &policy, call.lease, outcome);
                }
            }
            "/park" => state.park(now, call.reason.as_deref().unwrap_or("parked"), call.for_ms),
            "/clear" => {
                state.clear(now);
                self.sql.exec("DELETE FROM bad_keys", None)?;
                bad_keys.clear();
            }
            "/snapshot" => {}
            _ => return Response::error("unknown bucket operation", 404),
        }
        if reply.admission.is_none() {
            reply.state = Some(state.snapshot(now, &policy));
        }
        reply.bad_keys = bad_keys.clone();
        self.save(&state)?;
        *self.state.borrow_mut() = Some(state);
        *self.bad_keys.borrow_mut() = Some(bad_keys);
        Response::from_json(&reply)
    }
}

impl BucketDo {
    fn load(&self) -> Result<BucketState> {
        #[derive(Deserialize)]
        struct Row {
            state: String,
        }
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT state FROM bucket WHERE id = 1", None)?
            .to_array()?;
        Ok(rows
            .first()
            .and_then(|r| serde_json::from_str(&r.state).ok())
            .unwrap_or_default())
    }

    fn load_bad_keys(&self) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Row {
            name: String,
        }
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT name FROM bad_keys ORDER BY name", None)?
            .to_array()?;
        Ok(rows.into_iter().map(|r| r.name).collect())
    }

    fn save(&self, state: &BucketState) -> Result<()> {
        let json =
            serde_json::to_string(state).map_err(|e| worker::Error::RustError(e.to_string()))?;
        self.sql.exec(
            "INSERT INTO bucket(id, state) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET state = excluded.state",
            vec![json.into()],
        )?;
        Ok(())
    }
}

async fn call(env: &Env, bucket: &BucketRef, op: &str, call: &Call) -> Result<Response> {
    let namespace = env.durable_object("BUCKET")?;
    let id = namespace.id_from_name(&format!("bucket:{}", bucket.name()))?;
    let stub = match &bucket.location_hint {
        Some(hint) => id.get_stub_with_location_hint(hint)?,
        None => id.get_stub()?,
    };
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(
        serde_json::to_string(call)
            .map_err(|e| worker::Error::RustError(e.to_string()))?
            .into(),
    ));
    let req = Request::new_with_init(&format!("https://bucket{op}"), &init)?;
    stub.fetch_with_request(req).await
}

fn base(bucket: &BucketRef) -> Call {
    Call {
        limits: bucket.limits.clone(),
        spec: bucket.spec,
        est_tokens: 0,
        max_wait_ms: 0,
        lease_ttl_ms: 0,
        lease: 0,
        outcome: None,
        reason: None,
        for_ms: None,
        bad_key: None,
    }
}

async fn ask<T: serde::de::DeserializeOwned>(
    env: &Env,
    bucket: &BucketRef,
    op: &str,
    body: &Call,
) -> std::result::Result<T, ApiError> {
    let mut resp = call(env, bucket, op, body)
        .await
        .map_err(respond::internal)?;
    resp.json().await.map_err(respond::internal)
}

/// Asks for an admission: the one DO round trip on the request path. Also returns the
/// account's keys this bucket has seen refused.
pub async fn acquire(
    env: &Env,
    bucket: &BucketRef,
    request: &AcquireRequest,
) -> std::result::Result<(Admission, Vec<String>), ApiError> {
    let mut body = base(bucket);
    body.est_tokens = request.est_tokens;
    body.max_wait_ms = request.max_wait_ms;
    body.lease_ttl_ms = request.lease_ttl_ms;
    let reply: Reply = ask(env, bucket, "/acquire", &body).await?;
    let admission = reply
        .admission
        .ok_or_else(|| respond::internal(worker::Error::RustError("no admission".into())))?;
    Ok((admission, reply.bad_keys))
}

/// Settles a lease with what happened (called off the hot path); `bad_key` names a key the
/// upstream refused, to skip from now on.
pub async fn settle(
    env: &Env,
    bucket: &BucketRef,
    lease: u64,
    outcome: SettleOutcome,
    bad_key: Option<String>,
) -> std::result::Result<Reply, ApiError> {
    let mut body = base(bucket);
    body.lease = lease;
    body.outcome = Some(outcome);
    body.bad_key = bad_key;
    ask(env, bucket, "/settle", &body).await
}

/// Parks a bucket from outside (its account is parked).
pub async fn park(
    env: &Env,
    bucket: &BucketRef,
    reason: &str,
    for_ms: Option<u64>,
) -> std::result::Result<Reply, ApiError> {
    let mut body = base(bucket);
    body.reason = Some(reason.to_string());
    body.for_ms = for_ms;
    ask(env, bucket, "/park", &body).await
}

/// Operator action: clears a park, a cooldown and the refused keys.
pub async fn clear(env: &Env, bucket: &BucketRef) -> std::result::Result<Reply, ApiError> {
    ask(env, bucket, "/clear", &base(bucket)).await
}

/// The live view of one bucket.
pub async fn snapshot(env: &Env, bucket: &BucketRef) -> std::result::Result<Reply, ApiError> {
    ask(env, bucket, "/snapshot", &base(bucket)).await
}

/// The admin view of one configured bucket; `clear` lifts its park or cooldown first.
pub async fn admin(
    env: &Env,
    config: &Config,
    account: &str,
    model: &str,
    clear_first: bool,
) -> std::result::Result<Response, ApiError> {
    let bucket = BucketRef::of(config, account, model).ok_or_else(|| {
        ApiError::new(
            404,
            "invalid_request_error",
            Some("bucket_not_found"),
            format!("No account '{account}' serving '{model}' is configured."),
        )
    })?;
    let reply = if clear_first {
        // This isolate forgets at once; others within the cache horizon (seconds).
        crate::glue::cache::free(&bucket.name());
        clear(env, &bucket).await?
    } else {
        snapshot(env, &bucket).await?
    };
    let body = serde_json::json!({
        "account": account,
        "model": model,
        "limits": bucket.limits,
        "state": reply.state,
        "refused_keys": reply.bad_keys,
    });
    respond::json(200, body.to_string())
}
