//! The meter Durable Object (one per client, one per user of a client) and the calls to it:
//! a request is admitted by its meters (from a credit the isolate holds, or asked in parallel
//! with its bucket), and settled with what it really used and cost.

use crate::access::meter::{
    self, Ask, BudgetNews, Meter, MeterCall, MeterLimits, MeterOp, MeterReply, Spent, Verdict,
};
use crate::access::ratelimit::{self, Seen};
use crate::access::{self, Identity};
use crate::bucket::credit;
use crate::config::Config;
use crate::glue::alert;
use crate::glue::credits::{self, Of};
use crate::glue::history::Tables;
use crate::glue::log;
use crate::glue::objects::{self, Object, Row};
use crate::glue::settles;
use crate::openai::ApiError;
use crate::window::{MinuteUse, WindowSpec};
use futures_channel::oneshot;
use futures_util::future::join;
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use worker::{
    durable_object, wasm_bindgen, Context, DurableObject, Env, Request, Response, Result, State,
};

/// One meter: a client's or a user's, with the limits it judges by.
#[derive(Debug, Clone)]
pub struct MeterRef {
    /// `client:<id>` or `user:<client>:<sub>`.
    pub name: String,
    /// The client it belongs to.
    pub client: String,
    /// Who it meters, for messages: "client `web`".
    pub whose: String,
    limits: MeterLimits,
    spec: WindowSpec,
    timeout_ms: u64,
    /// Most admissions of a credit it may hand this isolate (0: each is asked for).
    credit_max: u64,
    /// The client, when this is its own meter and it has a budget (whose end is alerted).
    budget_of: Option<String>,
}

impl MeterRef {
    /// The meter of `client` (or of its `user`) judging by `limits`.
    fn new(config: &Config, client: &str, user: Option<&str>, limits: MeterLimits) -> MeterRef {
        let (name, whose) = match user {
            Some(u) => (
                format!("user:{client}:{u}"),
                format!("user `{u}` of client `{client}`"),
            ),
            None => (format!("client:{client}"), format!("client `{client}`")),
        };
        MeterRef {
            name,
            client: client.to_string(),
            whose,
            limits,
            spec: config.window_spec(),
            timeout_ms: config.bucket_timeout_ms,
            credit_max: config.admission_credits,
            budget_of: (user.is_none() && limits.has_budget()).then(|| client.to_string()),
        }
    }

    /// The meters of an identity: its client's and its user's, where they limit anything.
    pub fn of(identity: &Identity, config: &Config) -> Vec<MeterRef> {
        let client = (!identity.client_limits.is_unlimited())
            .then(|| MeterRef::new(config, identity.client, None, identity.client_limits));
        let user = match (&identity.user, identity.user_limits) {
            (Some(user), Some(limits)) if !limits.is_unlimited() => {
                Some(MeterRef::new(config, identity.client, Some(user), limits))
            }
            _ => None,
        };
        client.into_iter().chain(user).collect()
    }

    /// A client's meter (or a user's, with `user`) for the admin API, judging by the client's
    /// limits.
    pub fn named(config: &Config, client: &str, user: Option<&str>) -> Option<MeterRef> {
        let limits = access::client_limits(config.clients.get(client)?);
        Some(MeterRef::new(config, client, user, limits))
    }

    /// Its minute as seen from here, with its limits.
    fn seen(&self, minute: MinuteUse) -> Seen {
        Seen {
            limits: self.limits,
            minute,
        }
    }

    /// True when it limits nothing.
    pub fn is_unlimited(&self) -> bool {
        self.limits.is_unlimited()
    }

    /// Sends one call in the background, logging a failure (nothing waits for the answer).
    pub async fn tell(&self, env: &Env, op: MeterOp, request_id: &str) {
        if let Err(error) = self.call(env, op).await {
            log::warn(
                "meter_call_failed",
                request_id,
                json!({"meter": self.name, "op": "settle", "error": error}),
            );
        }
    }

    /// Gives a credit's unspent admissions back (as requests never sent), if any.
    async fn give_back(&self, env: &Env, leases: Vec<u64>, request_id: &str) {
        if let Some(op) = give_back(leases) {
            settles::send_meter(env, self, op, request_id).await;
        }
    }

    /// At the end of a credit it handed out (`until_ms`), gives back what its ended credits
    /// left unspent.
    async fn return_at_end(&self, env: &Env, until_ms: u64, request_id: &str) {
        let leases = credits::ended_after(Of::Meter, &self.name, until_ms).await;
        self.give_back(env, leases, request_id).await;
    }

    /// Sends one call; `Err` says what failed.
    pub async fn call(&self, env: &Env, op: MeterOp) -> std::result::Result<MeterReply, String> {
        let call = MeterCall {
            client: self.budget_of.clone(),
            limits: self.limits,
            spec: self.spec,
            op,
        };
        let to = Object {
            binding: "METER",
            name: &self.name,
            location_hint: None,
        };
        objects::call(env, to, &call, self.timeout_ms).await
    }
}

/// The call giving back a credit's unspent admissions (as requests never sent), if any.
fn give_back(leases: Vec<u64>) -> Option<MeterOp> {
    (!leases.is_empty()).then(|| MeterOp::Batch(leases.into_iter().map(unsent).collect()))
}

/// The settle of an admission never sent.
fn unsent(lease: u64) -> MeterOp {
    MeterOp::Settle {
        lease,
        spent: Spent {
            tokens: None,
            micro_usd: 0,
            sent: false,
        },
    }
}

/// The leases a request holds on its meters, settled once.
#[derive(Debug, Default)]
pub struct Metered(RefCell<Vec<(MeterRef, u64)>>);

impl Metered {
    /// Whether no lease is held (nothing to settle).
    pub fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }

    /// Settles every lease still held with what the request used.
    pub async fn settle(&self, env: &Env, spent: Spent, request_id: &str) {
        let leases = std::mem::take(&mut *self.0.borrow_mut());
        // At most two: the client's and the user's.
        let settle = |held| settle_one(env, held, spent, request_id);
        join(settle(leases.first()), settle(leases.get(1))).await;
    }
}

/// Settles one lease: with the isolate's next call to the meter when it may wait
/// (`meter::settle_may_wait`), else at once.
async fn settle_one(env: &Env, held: Option<&(MeterRef, u64)>, spent: Spent, request_id: &str) {
    let Some((meter, lease)) = held else { return };
    let op = MeterOp::Settle {
        lease: *lease,
        spent,
    };
    if meter::settle_may_wait(&meter.limits, &spent) {
        let within_ms = meter::settle_wait_ms(meter.spec);
        if let Some(rest) = settles::send_meter_later(env, meter, op, request_id, within_ms) {
            rest.await;
        }
    } else {
        settles::send_meter(env, meter, op, request_id).await;
    }
}

/// Asks one meter to admit a request, and for a credit beside it when this isolate holds
/// none and no other request is asking.
async fn ask_one(
    env: &Env,
    meter: Option<&MeterRef>,
    ask: Ask,
) -> Option<std::result::Result<MeterReply, String>> {
    let meter = meter?;
    let claimed = meter.credit_max > 0 && credits::claim(Of::Meter, &meter.name);
    let credit_max = if claimed { meter.credit_max } else { 0 };
    // The settles waiting for this meter ride ahead of the admission.
    let admit = MeterOp::Admit(Ask { credit_max, ..ask });
    let op = settles::meter_with_riders(&meter.name, admit);
    let reply = meter.call(env, op).await;
    if claimed {
        credits::answered(Of::Meter, &meter.name);
    }
    Some(reply)
}

/// Spends an admission of a credit held for the meter, if one is (no round trip), giving
/// back what ended unspent and asking for the next credit ahead when this one runs low: its
/// lease, and the meter's minute as seen from here.
fn spend_credit(
    ctx: &Context,
    env: &Env,
    meter: &MeterRef,
    ask: Ask,
    request_id: &str,
) -> Option<(u64, Option<MinuteUse>)> {
    if meter.credit_max == 0 {
        return None;
    }
    let now = crate::glue::now_ms();
    let mut spend = credits::spend(Of::Meter, &meter.name, now, ask.est_tokens);
    if spend.spent.is_none() {
        // Too large for the credit held: one of its admissions makes room for it.
        spend.unspent.extend(credits::surrender(&meter.name, now));
    }
    let life_ms = credit::life_ms(meter.spec);
    let ask_ahead =
        spend.spent.is_some() && credits::claim_next(Of::Meter, &meter.name, now, life_ms);
    if let Some(op) = give_back(spend.unspent) {
        // Rides in front of this isolate's next call to the meter (an ask made beside this
        // request included: tasks start in the order they are made), so the room it holds
        // is free before that call is judged.
        let within_ms = meter::settle_wait_ms(meter.spec);
        if let Some(rest) = settles::send_meter_later(env, meter, op, request_id, within_ms) {
            ctx.wait_until(rest);
        }
    }
    if ask_ahead {
        let (env, meter, request_id) = (env.clone(), meter.clone(), request_id.to_string());
        ctx.wait_until(async move {
            let grant = MeterOp::Grant(Ask {
                credit_max: meter.credit_max,
                ..ask
            });
            let op = settles::meter_with_riders(&meter.name, grant);
            let reply = meter.call(&env, op).await;
            credits::answered(Of::Meter, &meter.name);
            if let Ok(MeterReply::Granted(Some(credit))) = reply {
                let until_ms = credit.until_ms;
                let displaced = credits::keep(Of::Meter, &meter.name, credit, Vec::new());
                meter.give_back(&env, displaced, &request_id).await;
                meter.return_at_end(&env, until_ms, &request_id).await;
            }
        });
    }
    spend.spent.map(|(lease, _)| (lease, spend.seen))
}

/// One request's metering: its meters are asked in the background while the request finds
/// a bucket, and the answer is awaited only before the first send. Whatever the request ends
/// without settling (it failed, gave up or its client left) is settled when it is dropped.
pub struct Metering {
    verdict: Option<oneshot::Receiver<std::result::Result<u64, ApiError>>>,
    /// The meters' slot, once they answered: the request leaves no earlier (0: now).
    not_before: u64,
    metered: Rc<Metered>,
    /// Each meter's minute as seen from here, once spent from a credit or answered.
    seen: Rc<RefCell<Vec<Seen>>>,
    sent: Rc<Cell<bool>>,
    _done: Option<oneshot::Sender<()>>,
}

impl Metering {
    /// Starts the identity's metering: each meter's admission spent from a credit held, or
    /// asked (none: nothing to ask, nothing to wait for).
    pub fn start(
        ctx: &Context,
        env: &Env,
        meters: Vec<MeterRef>,
        ask: Ask,
        request_id: &str,
    ) -> Metering {
        let metered = Rc::new(Metered::default());
        let sent = Rc::new(Cell::new(false));
        let seen = Rc::new(RefCell::new(Vec::new()));
        if meters.is_empty() {
            return Metering {
                verdict: None,
                not_before: 0,
                metered,
                seen,
                sent,
                _done: None,
            };
        }
        let mut to_ask = Vec::new();
        for meter in meters {
            match spend_credit(ctx, env, &meter, ask, request_id) {
                Some((lease, minute)) => {
                    seen.borrow_mut()
                        .extend(minute.map(|minute| meter.seen(minute)));
                    metered.0.borrow_mut().push((meter, lease));
                }
                None => to_ask.push(meter),
            }
        }
        let (verdict_tx, verdict) = match to_ask.is_empty() {
            true => (None, None),
            false => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
        };
        let (done, ended) = oneshot::channel::<()>();
        let (env, request_id) = (env.clone(), request_id.to_string());
        let (held, was_sent, saw) = (metered.clone(), sent.clone(), seen.clone());
        ctx.wait_until(async move {
            let mut kept = Vec::new();
            if let Some(verdict_tx) = verdict_tx {
                let asked = admit(&env, to_ask, ask, &held, &saw, &request_id);
                let (answer, then, credits) = asked.await;
                kept = credits;
                let _ = verdict_tx.send(answer);
                for (meter, op) in then {
                    settles::send_meter(&env, &meter, op, &request_id).await;
                }
            }
            let credits_end = async {
                for (meter, until_ms) in &kept {
                    meter.return_at_end(&env, *until_ms, &request_id).await;
                }
            };
            let request_end = async {
                let _ = ended.await;
                // Left over: the request ended without an answer to bill.
                let spent = Spent {
                    tokens: Some(0),
                    micro_usd: 0,
                    sent: was_sent.get(),
                };
                held.settle(&env, spent, &request_id).await;
            };
            join(credits_end, request_end).await;
        });
        Metering {
            verdict,
            not_before: 0,
            metered,
            seen,
            sent,
            _done: Some(done),
        }
    }

    /// Waits for the meters' answer (at once after the first time): the time the request may
    /// leave (a slot for later when its client's limits have room only then; 0: now), or the
    /// answer to give the client.
    pub async fn admitted(&mut self) -> std::result::Result<u64, ApiError> {
        if let Some(verdict) = self.verdict.take() {
            let answer = verdict.await;
            self.not_before =
                answer.unwrap_or_else(|_| Err(crate::glue::respond::internal_error()))?;
        }
        Ok(self.not_before)
    }

    /// OpenAI's `x-ratelimit-*` headers for the caller's own RPM and TPM, from what its meters
    /// said (none before they did, or when they limit neither).
    pub fn ratelimit_headers(&self) -> Vec<(&'static str, String)> {
        let seen = self.seen.borrow();
        match seen.is_empty() {
            true => Vec::new(),
            false => ratelimit::headers(&seen, crate::glue::now_ms()),
        }
    }

    /// Notes that the request reached an upstream (a failure then counts as a request).
    pub fn mark_sent(&self) {
        self.sent.set(true);
    }

    /// The leases, for the answer's bill to settle with its real usage and cost.
    pub fn take(&self) -> Metered {
        Metered(RefCell::new(std::mem::take(
            &mut *self.metered.0.borrow_mut(),
        )))
    }
}

/// Asks the meters at once, adding their leases to `admitted` (which may hold leases spent
/// from credits) and keeping the credits they hand out. A refusal while credits are open is
/// served from one if this isolate now holds it (a concurrent request's ask brought it), else
/// counted at the meter. Ok: admitted, not before the time said (the latest slot a meter gave
/// for later; 0: now). Err: the first refusal (or 503 when a meter did not
/// answer); what the others admitted goes back when the request's metering ends. Also the calls to send once answered
/// (credits' unspent admissions to give back, refusals to count) and the credits kept, with
/// their ends.
async fn admit(
    env: &Env,
    meters: Vec<MeterRef>,
    ask: Ask,
    admitted: &Metered,
    seen: &RefCell<Vec<Seen>>,
    request_id: &str,
) -> (
    std::result::Result<u64, ApiError>,
    Vec<(MeterRef, MeterOp)>,
    Vec<(MeterRef, u64)>,
) {
    // At most two, asked at once: the client's and the user's.
    let asking = |meter| ask_one(env, meter, ask);
    let (first, second) = join(asking(meters.first()), asking(meters.get(1))).await;
    let replies = first.into_iter().chain(second);
    let now = crate::glue::now_ms();
    let mut refused = None;
    let mut not_before = 0;
    let mut then = Vec::new();
    let mut kept = Vec::new();
    for (meter, reply) in meters.into_iter().zip(replies) {
        match reply {
            Ok(MeterReply::Verdict(Verdict::Go {
                lease,
                credit,
                at_ms,
                minute_use,
            })) => {
                not_before = not_before.max(at_ms.unwrap_or(0));
                if let Some(credit) = credit {
                    kept.push((meter.clone(), credit.until_ms));
                    let displaced = credits::keep(Of::Meter, &meter.name, credit, Vec::new());
                    then.extend(give_back(displaced).map(|op| (meter.clone(), op)));
                }
                let minute = credits::observe(&meter.name, minute_use, meter.spec.minute_ms);
                seen.borrow_mut().push(meter.seen(minute));
                admitted.0.borrow_mut().push((meter, lease));
            }
            Ok(MeterReply::Verdict(verdict)) => {
                let minute = match &verdict {
                    Verdict::Rate { minute_use, .. } => Some(credits::observe(
                        &meter.name,
                        *minute_use,
                        meter.spec.minute_ms,
                    )),
                    _ => None,
                };
                if let Some(over_budget) = verdict.uncounted() {
                    let spend = credits::spend(Of::Meter, &meter.name, now, ask.est_tokens);
                    then.extend(give_back(spend.unspent).map(|op| (meter.clone(), op)));
                    if let Some((lease, _)) = spend.spent {
                        let minute = spend.seen.or(minute);
                        seen.borrow_mut().extend(minute.map(|m| meter.seen(m)));
                        admitted.0.borrow_mut().push((meter, lease));
                        continue;
                    }
                    then.push((meter.clone(), MeterOp::Refused { over_budget }));
                }
                seen.borrow_mut().extend(minute.map(|m| meter.seen(m)));
                refused = refused.or_else(|| access::refusal(&verdict, now, &meter.whose));
            }
            other => {
                let error = match other {
                    Err(e) => e,
                    Ok(_) => "unexpected reply".into(),
                };
                log::warn(
                    "meter_unreachable",
                    request_id,
                    json!({"meter": meter.name, "op": "admit", "error": error}),
                );
                let e = ApiError::store_unavailable(
                    "The gateway could not check this client's limits in time",
                );
                refused = refused.or(Some(e));
            }
        }
    }
    // A refused request gives back what the others admitted when its metering ends, right
    // after this answer (never sent): the refusal does not wait for it.
    match refused {
        None => (Ok(not_before), then, kept),
        Some(e) => (Err(e), then, kept),
    }
}

/// The admin view of a client's (or one user's) meter; `reset` clears its period counters first.
pub async fn admin(
    env: &Env,
    config: &Config,
    client: &str,
    user: Option<&str>,
    reset: bool,
) -> std::result::Result<Response, ApiError> {
    let meter =
        MeterRef::named(config, client, user).ok_or_else(|| ApiError::client_not_found(client))?;
    let op = if reset { MeterOp::Reset } else { MeterOp::View };
    // What waits in this isolate to settle with the meter goes first: the view counts it.
    let op = settles::meter_with_riders(&meter.name, op);
    let Ok(MeterReply::View(view)) = meter.call(env, op).await else {
        let e = ApiError::store_unavailable(&format!(
            "The meter of {} did not answer in time",
            meter.whose
        ));
        return Err(e);
    };
    let body = json!({ "client": client, "user": user, "usage": view });
    crate::glue::respond::json(200, body.to_string())
}

/// `GET /v1/usage`: the caller's own limits and what its meter counts against them now (a
/// user token's meter, or a client key's client's).
pub async fn caller_usage(
    env: &Env,
    config: &Config,
    identity: &Identity<'_>,
) -> std::result::Result<Response, ApiError> {
    let user = identity.user.as_deref();
    let meter = MeterRef::new(config, identity.client, user, identity.own_limits());
    let view = match meter.is_unlimited() {
        true => None,
        false => {
            // This isolate's unspent credit goes back first, so the view counts what was used
            // (credits other isolates hold count until spent or ended); before it, what waits
            // here to settle with the meter.
            let unspent = credits::drop(Of::Meter, &meter.name).into_iter();
            let mut ops: Vec<MeterOp> = unspent.map(unsent).collect();
            ops.push(MeterOp::View);
            let op = settles::meter_with_riders(&meter.name, MeterOp::Batch(ops));
            let Ok(MeterReply::View(view)) = meter.call(env, op).await else {
                let what = format!("The meter of {} did not answer in time", meter.whose);
                return Err(ApiError::store_unavailable(&what));
            };
            Some(view)
        }
    };
    let usage = meter::CallerUsage::new(identity.client, user, view.as_ref());
    // Strings and numbers only: serialising cannot fail.
    crate::glue::respond::json(200, serde_json::to_string(&usage).unwrap_or_default())
}

/// Logs, and alerts the operator, that `client`'s budget runs low or is spent.
fn tell_budget(env: &Env, client: &str, news: &BudgetNews, now: u64) {
    let Some(alert) = crate::alert::of_budget(client, news, now) else {
        return;
    };
    let fields = json!({"client": client, "budget": news.which, "used": news.used});
    log::info(alert.event, "", fields);
    alert::send(env, alert);
}

/// One client's or one user's usage.
#[durable_object]
pub struct MeterDo {
    env: Env,
    row: Row,
    history: Tables,
    state: RefCell<Option<Meter>>,
}

impl DurableObject for MeterDo {
    fn new(state: State, env: Env) -> Self {
        Self {
            env,
            row: Row::open(&state, "meter"),
            history: Tables::open(&state),
            state: RefCell::new(None),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        objects::answer_fetch(req, |text| self.handle(text)).await
    }
}

#[worker::wasm_bindgen::prelude::wasm_bindgen(wasm_bindgen = worker::wasm_bindgen)]
impl MeterDo {
    /// One call by RPC (src/index.js): its JSON text in, the reply's out; an error is thrown.
    pub fn call(&self, text: &str) -> std::result::Result<String, worker::wasm_bindgen::JsValue> {
        self.handle(text).map_err(objects::thrown)
    }
}

impl MeterDo {
    /// Applies one call (JSON text) and answers with the reply's: synchronous, so no other call
    /// interleaves.
    fn handle(&self, text: &str) -> Result<String> {
        let Ok(call) = serde_json::from_str::<MeterCall>(text) else {
            return Err("not a meter call".into());
        };
        let now = crate::glue::now_ms();
        let cached = self.state.borrow_mut().take();
        let mut meter = match cached {
            Some(meter) => meter,
            None => serde_json::from_str(&self.row.load()?).unwrap_or_default(),
        };
        let mut reply = meter.apply(now, &call);
        if let Some(client) = &call.client {
            let verdict = match &reply {
                MeterReply::Verdict(v) => Some(v),
                _ => None,
            };
            for news in meter.budget_news(now, &call.limits, verdict) {
                tell_budget(&self.env, client, &news, now);
            }
        }
        let closed = meter.take_closed_history();
        self.row.save(&meter, "meter");
        *self.state.borrow_mut() = Some(meter);
        self.history.store(closed, now, "meter");
        if let (MeterReply::History { minutes, days }, MeterOp::History { minutes_from }) =
            (&mut reply, &call.op)
        {
            self.history.add_stored(now, *minutes_from, minutes, days);
        }
        Ok(serde_json::to_string(&reply)?)
    }
}
