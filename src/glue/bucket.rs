//! The bucket Durable Object (one per (account, model) quota budget) and the calls to it.
//!
//! The object only loads, applies `protocol::apply` and stores: its state lives in memory and
//! is written to SQLite when it changed (`objects::Row`); the in-memory state stays
//! authoritative, so no admission is ever forgotten.

use crate::bucket::BucketState;
use crate::config::{Candidate, Config, Limits};
use crate::glue::alert;
use crate::glue::history::Tables;
use crate::glue::log;
use crate::glue::objects::{self, Object, Row};
use crate::openai::ApiError;
use crate::pace::SlowStart;
use crate::protocol::{self, Call, Op, Reply};
use crate::window::WindowSpec;
use serde_json::json;
use std::cell::RefCell;
use worker::{durable_object, wasm_bindgen, DurableObject, Env, Request, Response, Result, State};

/// Where a bucket lives and what it enforces: an owned handle, so background work (settling
/// after a stream) can outlive the request's borrow of the config.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// `account:model`.
    pub name: String,
    /// The account's limits for the model.
    pub limits: Limits,
    /// Window lengths (compressed in tests).
    pub spec: WindowSpec,
    /// How fast its send rate may grow (the upstream profile's).
    pub slow_start: Option<SlowStart>,
    /// Most admissions one credit may carry.
    pub credit_max: u64,
    /// Placement hint for the object (near the upstream's region).
    pub location_hint: Option<String>,
    /// How long to wait for an answer.
    pub timeout_ms: u64,
}

impl Bucket {
    /// The bucket of a candidate under `config`.
    pub fn of(candidate: &Candidate, config: &Config) -> Bucket {
        Bucket {
            name: candidate.bucket(),
            limits: candidate.limits.clone(),
            spec: config.window_spec(),
            slow_start: candidate.upstream.slow_start(),
            credit_max: candidate.upstream.credit_max(config.admission_credits),
            location_hint: candidate.upstream.location_hint.clone(),
            timeout_ms: config.bucket_timeout_ms,
        }
    }

    /// Sends one call, waiting at most `timeout_ms` (and the bucket's own timeout) for the
    /// answer. `Err` says what failed, for the log; the caller rotates away.
    pub async fn call(
        &self,
        env: &Env,
        op: Op,
        timeout_ms: u64,
    ) -> std::result::Result<Reply, String> {
        let call = Call {
            bucket: self.name.clone(),
            limits: self.limits.clone(),
            spec: self.spec,
            slow_start: self.slow_start,
            credit_max: self.credit_max,
            op,
        };
        let name = format!("bucket:{}", self.name);
        let to = Object {
            binding: "BUCKET",
            name: &name,
            location_hint: self.location_hint.as_deref(),
        };
        objects::call(env, to, &call, timeout_ms.min(self.timeout_ms)).await
    }

    /// Sends one call in the background, logging a failure (nothing waits for the answer).
    pub async fn tell(&self, env: &Env, op: Op, request_id: &str) {
        let what = op_name(&op);
        if let Err(error) = self.call(env, op, self.timeout_ms).await {
            log::warn(
                "bucket_call_failed",
                request_id,
                json!({"bucket": self.name, "op": what, "error": error}),
            );
        }
    }
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Acquire(_) => "acquire",
        Op::Grant(_) => "grant",
        Op::Commit { .. } => "commit",
        Op::Settle { .. } => "settle",
        Op::Return { .. } => "return",
        Op::Batch(_) => "batch",
        Op::Park { .. } => "park",
        Op::Clear => "clear",
        Op::Snapshot => "snapshot",
        Op::History { .. } => "history",
        Op::PassedOn => "passed_on",
        Op::NoKeySet { .. } => "no_key_set",
        Op::Downgraded { .. } => "downgraded",
    }
}

/// One quota budget (account x model).
#[durable_object]
pub struct BucketDo {
    env: Env,
    row: Row,
    history: Tables,
    state: RefCell<Option<BucketState>>,
}

impl DurableObject for BucketDo {
    fn new(state: State, env: Env) -> Self {
        Self {
            env,
            row: Row::open(&state, "bucket"),
            history: Tables::open(&state),
            state: RefCell::new(None),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        objects::answer_fetch(req, |text| self.handle(text)).await
    }
}

#[worker::wasm_bindgen::prelude::wasm_bindgen(wasm_bindgen = worker::wasm_bindgen)]
impl BucketDo {
    /// One call by RPC (src/index.js): its JSON text in, the reply's out; an error is thrown.
    pub fn call(&self, text: &str) -> std::result::Result<String, worker::wasm_bindgen::JsValue> {
        self.handle(text).map_err(objects::thrown)
    }
}

impl BucketDo {
    /// Applies one call (JSON text) and answers with the reply's: synchronous, so no other call
    /// interleaves.
    fn handle(&self, text: &str) -> Result<String> {
        let Ok(call) = serde_json::from_str::<Call>(text) else {
            return Err("not a bucket call".into());
        };
        let now = crate::glue::now_ms();
        let cached = self.state.borrow_mut().take();
        let mut state = match cached {
            Some(state) => state,
            None => BucketState::from_stored(&self.row.load()?),
        };
        let before = state.marks(now);
        let mut reply = protocol::apply(&mut state, now, &call);
        for (event, details) in state.marks(now).changes_since(&before) {
            if let Some(alert) = crate::alert::of_bucket(&call.bucket, event, &details, now) {
                alert::send(&self.env, alert);
            }
            let mut fields = json!({ "bucket": call.bucket });
            if let (Some(f), serde_json::Value::Object(d)) = (fields.as_object_mut(), details) {
                f.extend(d);
            }
            log::info(event, "", fields);
        }
        let closed = state.take_closed_history();
        self.row.save(&state, &call.bucket);
        *self.state.borrow_mut() = Some(state);
        self.history.store(closed, now, &call.bucket);
        if let (Reply::History { minutes, days }, Op::History { minutes_from }) =
            (&mut reply, &call.op)
        {
            self.history.add_stored(now, *minutes_from, minutes, days);
        }
        Ok(serde_json::to_string(&reply)?)
    }
}

/// The admin view of one configured bucket (`model`), or of every bucket of `account` (None:
/// `POST /admin/accounts/<account>/clear`, after its bill is paid or its keys replaced);
/// `clear` lifts their parks, cooldowns and refused keys first, one bucket after the other.
pub async fn admin(
    env: &Env,
    config: &Config,
    account: &str,
    model: Option<&str>,
    clear: bool,
) -> std::result::Result<Response, ApiError> {
    let Some(model) = model else {
        let settings = config.accounts.get(account);
        let settings = settings.ok_or_else(|| ApiError::account_not_found(account))?;
        let mut views = Vec::new();
        for model in settings.limits.keys() {
            views.push(view(env, config, account, model, clear).await?);
        }
        let body = json!({ "account": account, "buckets": views });
        return crate::glue::respond::json(200, body.to_string());
    };
    let view = view(env, config, account, model, clear).await?;
    crate::glue::respond::json(200, view.to_string())
}

/// One bucket's view, after clearing it if `clear`.
async fn view(
    env: &Env,
    config: &Config,
    account: &str,
    model: &str,
    clear: bool,
) -> std::result::Result<serde_json::Value, ApiError> {
    let candidate = config
        .candidate(account, model)
        .ok_or_else(|| ApiError::bucket_not_found(account, model))?;
    let bucket = Bucket::of(&candidate, config);
    if clear {
        // This isolate forgets at once; others within the cache horizon (seconds).
        crate::glue::cache::free(&bucket.name);
    }
    let op = if clear { Op::Clear } else { Op::Snapshot };
    let reply = bucket.call(env, op, bucket.timeout_ms).await;
    let Ok(Reply::State {
        state,
        refused_keys,
    }) = reply
    else {
        return Err(ApiError::store_unavailable(&format!(
            "The bucket {account}/{model} did not answer in time"
        )));
    };
    Ok(json!({
        "account": account,
        "model": model,
        "limits": bucket.limits,
        "state": state,
        "refused_keys": refused_keys,
    }))
}
