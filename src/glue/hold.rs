//! What a request holds in a bucket while it waits for its slot or for the upstream, so a
//! client who leaves never costs a send: a watchdog settles the hold the moment the client's
//! connection closes (released if never sent; if sent, the upstream call is aborted and the
//! lease settled as cancelled). It also settles any hold left when the request ends.
//! `Background` runs such settles (and any other bucket calls) off the hot path.
//!
//! The watchdog costs a request no Rust future or closure of its own: `helpers.js` `watch`
//! listens on the request's signal and keeps the invocation alive (the runtime cancels a
//! request whose client left, but not its `waitUntil` work) until the request ends, calling
//! one closure of the isolate's (`LEFT`) with the request's watch id if the client leaves first.

use crate::bucket::{credit, AcquireRequest, SettleOutcome};
use crate::glue::bucket::Bucket;
use crate::glue::credits::{self, Of};
use crate::glue::js;
use crate::glue::{log, settles};
use crate::openai::ApiError;
use crate::protocol::{Op, Reply};
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use worker::js_sys::Function;
use worker::wasm_bindgen::closure::Closure;
use worker::wasm_bindgen::JsValue;
use worker::wasm_bindgen_futures::{future_to_promise, JsFuture};
use worker::web_sys::{AbortController, AbortSignal};
use worker::{web_sys, Context, Env};

/// The client's side of the connection (needs the `enable_request_signal` compatibility flag).
pub struct Client {
    signal: AbortSignal,
}

impl Client {
    /// The client of `req`.
    pub fn of(req: &web_sys::Request) -> Client {
        Client {
            signal: req.signal(),
        }
    }

    /// Whether the client has left.
    pub fn is_gone(&self) -> bool {
        self.signal.aborted()
    }

    /// Resolves when the client leaves (never, if it stays).
    pub async fn gone(&self) {
        let _ = JsFuture::from(js::when_aborted(&self.signal)).await;
    }
}

/// A lease the request holds, with what it needs to be settled by someone else.
pub struct Hold {
    /// The bucket.
    pub bucket: Bucket,
    /// The lease.
    pub lease: u64,
    /// Keys (secret names) the upstream refused while this lease was held.
    pub refused_keys: Vec<String>,
    /// How late the send reached the upstream relative to its slot, once measured.
    pub lag_ms: Option<i64>,
    /// How late the send may leave and still fit the bucket's windows.
    pub late_ms: u64,
    /// Spent from the isolate's credit (its settle may ride with a later call).
    pub from_credit: bool,
    /// Set once the request went upstream: aborts that call.
    upstream: Option<AbortController>,
}

impl Hold {
    /// The settle message for `outcome`, with the keys refused under this lease.
    pub fn settle(self, outcome: SettleOutcome) -> (Bucket, Op) {
        let op = Op::Settle {
            lease: self.lease,
            outcome,
            refused_keys: self.refused_keys,
            lag_ms: self.lag_ms,
        };
        (self.bucket, op)
    }
}

/// The request's current hold, shared between the request and its watchdog: whoever takes it
/// settles it, so it is settled exactly once.
#[derive(Clone, Default)]
pub struct Held(Rc<RefCell<Option<Hold>>>);

impl Held {
    /// Holds a new lease (`from_credit`: one of the isolate's credit) whose send may leave up
    /// to `late_ms` after its slot; returns the previous hold if one was (wrongly) left, to
    /// settle it.
    pub fn hold(
        &self,
        bucket: Bucket,
        lease: u64,
        late_ms: u64,
        from_credit: bool,
    ) -> Option<Hold> {
        self.0.borrow_mut().replace(Hold {
            bucket,
            lease,
            refused_keys: Vec::new(),
            lag_ms: None,
            late_ms,
            from_credit,
            upstream: None,
        })
    }

    /// How late the held lease's send may leave.
    pub fn late_ms(&self) -> Option<u64> {
        self.0.borrow().as_ref().map(|h| h.late_ms)
    }

    /// The request goes upstream now: returns the controller that aborts the call (a fresh one
    /// per call), also kept to abort it if the client leaves.
    pub fn sending(&self) -> Option<AbortController> {
        let controller = AbortController::new().ok()?;
        if let Some(hold) = self.0.borrow_mut().as_mut() {
            hold.upstream = Some(controller.clone());
        }
        Some(controller)
    }

    /// Notes how late the lease's first send reached the upstream (a resend with another key
    /// leaves later than its slot by the first call's time, which says nothing of jitter).
    pub fn lag(&self, lag_ms: i64) {
        if let Some(hold) = self.0.borrow_mut().as_mut() {
            hold.lag_ms.get_or_insert(lag_ms);
        }
    }

    /// Notes a key the upstream refused under the current lease.
    pub fn refused(&self, key: &str) {
        if let Some(hold) = self.0.borrow_mut().as_mut() {
            hold.refused_keys.push(key.to_string());
        }
    }

    /// Takes the hold to settle it; None when someone else already did.
    pub fn take(&self) -> Option<Hold> {
        self.0.borrow_mut().take()
    }
}

/// What a running request's watchdog needs to settle its hold.
struct Watched {
    held: Held,
    env: Env,
    request_id: String,
}

thread_local! {
    /// The running requests of this isolate that hold or may hold a lease, by watch id.
    static WATCHED: RefCell<HashMap<u32, Watched>> = RefCell::new(HashMap::new());
    static NEXT_WATCH: Cell<u32> = const { Cell::new(0) };
    /// Called by `helpers.js` `watch` with the watch id of a request whose client left: one
    /// closure for the isolate, kept for its life.
    static LEFT: JsValue = Closure::<dyn FnMut(u32) -> JsValue>::new(left).into_js_value();
}

/// The watchdog of one running request (`watch`); dropping it (the request ended) settles
/// whatever is still held.
pub struct Watch {
    id: u32,
    end: Function,
}

/// Starts the watchdog of one request: `ctx` is the runtime's context object of its invocation.
pub fn watch(ctx: &JsValue, env: &Env, client: &Client, held: Held, request_id: &str) -> Watch {
    let id = NEXT_WATCH.with(|next| {
        let id = next.get();
        next.set(id.wrapping_add(1));
        id
    });
    let watched = Watched {
        held,
        env: env.clone(),
        request_id: request_id.to_string(),
    };
    WATCHED.with(|w| w.borrow_mut().insert(id, watched));
    let end = LEFT.with(|left| js::watch(ctx, &client.signal, left, id));
    Watch { id, end }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let left_over = unwatch(self.id, "hold_left_at_end");
        let _ = self.end.call1(&JsValue::UNDEFINED, &left_over);
    }
}

/// The client of watch `id` left: the promise of the settle of what it still holds (the
/// invocation lives until it settles), or undefined.
fn left(id: u32) -> JsValue {
    unwatch(id, "client_left")
}

/// Stops watching `id`: a promise settling what it still held (`why`, for the log), or
/// undefined when nothing was (or it was already stopped).
fn unwatch(id: u32, why: &'static str) -> JsValue {
    let Some(watched) = WATCHED.with(|w| w.borrow_mut().remove(&id)) else {
        return JsValue::UNDEFINED;
    };
    let Some(hold) = watched.held.take() else {
        return JsValue::UNDEFINED;
    };
    let Watched {
        env, request_id, ..
    } = watched;
    future_to_promise(async move {
        abandon(hold, &env, &request_id, why).await;
        Ok(JsValue::UNDEFINED)
    })
    .into()
}

/// Settles a hold nobody will use: released if it never went upstream; otherwise the call is
/// aborted and the lease settled as cancelled (it counted upstream).
pub async fn abandon(hold: Hold, env: &Env, request_id: &str, why: &str) {
    let sent = hold.upstream.is_some();
    if let Some(c) = &hold.upstream {
        c.abort();
    }
    let outcome = if sent {
        SettleOutcome::Cancelled
    } else {
        SettleOutcome::Released
    };
    log::info(
        why,
        request_id,
        json!({"bucket": hold.bucket.name, "lease": hold.lease, "sent": sent}),
    );
    let (bucket, op) = hold.settle(outcome);
    settles::send(env, &bucket, op, request_id).await;
}

/// Work that runs after (or beside) the answer, with what it needs to log.
pub struct Background<'a> {
    /// The runtime environment.
    pub env: &'a Env,
    /// Where background work is registered.
    pub ctx: &'a Context,
    /// The request, for logs.
    pub request_id: &'a str,
}

impl Background<'_> {
    /// Settles a hold, then sends the other calls (parks of the account's other buckets). A
    /// credit's served admission settles with the isolate's next call to the bucket, or
    /// within a credit's life (`credit::settle_may_wait`).
    pub fn settle(&self, hold: Hold, outcome: SettleOutcome, then: &[(Bucket, Op)]) {
        let wait = hold.from_credit && credit::settle_may_wait(&outcome);
        let (bucket, op) = hold.settle(outcome);
        let op = if wait {
            // Most served requests: queued now, usually with nothing more to do for it.
            let within_ms = credit::life_ms(bucket.spec);
            let rest = settles::send_later(self.env, &bucket, op, self.request_id, within_ms);
            if let Some(rest) = rest {
                self.ctx.wait_until(rest);
            }
            None
        } else {
            Some(op)
        };
        if op.is_none() && then.is_empty() {
            return;
        }
        let then = then.to_vec();
        let env = self.env.clone();
        let request_id = self.request_id.to_string();
        self.ctx.wait_until(async move {
            if let Some(op) = op {
                settles::send(&env, &bucket, op, &request_id).await;
            }
            for (other, op) in then {
                other.tell(&env, op, &request_id).await;
            }
        });
    }

    /// Sends one call to a bucket in the background.
    pub fn tell(&self, bucket: Bucket, op: Op) {
        let env = self.env.clone();
        let request_id = self.request_id.to_string();
        self.ctx.wait_until(async move {
            settles::send(&env, &bucket, op, &request_id).await;
        });
    }

    /// Asks the bucket for the isolate's next credit in the background, ahead of need
    /// (`credits::claim_next`), on the terms of `ask`; the settles waiting for the bucket ride
    /// with it.
    pub fn ask_ahead(&self, bucket: &Bucket, ask: AcquireRequest) {
        let env = self.env.clone();
        let request_id = self.request_id.to_string();
        let bucket = bucket.clone();
        let op = Op::Grant(AcquireRequest {
            max_wait_ms: 0,
            credit: true,
            missed_lag_ms: None,
            ..ask
        });
        self.ctx.wait_until(async move {
            let op = settles::with_riders(&bucket.name, op);
            let reply = bucket.call(&env, op, bucket.timeout_ms).await;
            credits::answered(Of::Bucket, &bucket.name);
            let (displaced, until_ms) = match reply {
                Ok(Reply::Granted {
                    credit: Some(credit),
                    refused_keys,
                }) => {
                    let until_ms = credit.until_ms;
                    let kept = credits::keep(Of::Bucket, &bucket.name, credit, refused_keys);
                    (kept, until_ms)
                }
                Ok(_) => return,
                Err(error) => {
                    let fields = json!({"bucket": bucket.name, "op": "grant", "error": error});
                    log::warn("bucket_call_failed", &request_id, fields);
                    return;
                }
            };
            if !displaced.is_empty() {
                let op = Op::Return { leases: displaced };
                settles::send(&env, &bucket, op, &request_id).await;
            }
            return_at_end(&env, &bucket, until_ms, &request_id).await;
        });
    }

    /// Gives back, at the end of the credit just kept (`until_ms`), what it left unspent.
    pub fn return_at_end(&self, bucket: &Bucket, until_ms: u64) {
        let env = self.env.clone();
        let request_id = self.request_id.to_string();
        let bucket = bucket.clone();
        self.ctx.wait_until(async move {
            return_at_end(&env, &bucket, until_ms, &request_id).await;
        });
    }

    /// Gives a credit's unspent admissions back to their bucket, if any.
    pub fn give_back(&self, bucket: &Bucket, leases: Vec<u64>) {
        if !leases.is_empty() {
            self.tell(bucket.clone(), Op::Return { leases });
        }
    }

    /// The client left: settle what is held (if the watchdog has not) and stop.
    pub fn client_left(&self, held: &Held) -> ApiError {
        if let Some(hold) = held.take() {
            let env = self.env.clone();
            let request_id = self.request_id.to_string();
            self.ctx.wait_until(async move {
                abandon(hold, &env, &request_id, "client_left").await;
            });
        }
        ApiError::new(
            499,
            "invalid_request_error",
            Some("client_closed_request"),
            "The client closed the connection before the answer.".to_string(),
        )
    }
}

/// At the end of a credit of `bucket` (`until_ms`), gives back what its ended credits left
/// unspent.
async fn return_at_end(env: &Env, bucket: &Bucket, until_ms: u64, request_id: &str) {
    let leases = credits::ended_after(Of::Bucket, &bucket.name, until_ms).await;
    if !leases.is_empty() {
        settles::send(env, bucket, Op::Return { leases }, request_id).await;
    }
}
