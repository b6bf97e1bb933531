//! `POST /v1/chat/completions`, `/v1/responses`, `/v1/completions` and `/v1/embeddings`: the
//! planner loop over bucket admissions and upstream sends.
//!
//! I/O only: every decision is made by the pure modules (planner, classify, bucket, pricing);
//! this loop asks buckets, sleeps, sends, and reports back.

use crate::access::{meter, Identity};
use crate::affinity::{self, Owner};
use crate::asks;
use crate::bucket::{self, credit, AcquireRequest, Admission, SettleOutcome, LEASE_GRACE_MS};
use crate::cache_key;
use crate::classify::{self, Outcome, ParkScope};
use crate::config::{Candidate, Config, ModelRoute, Price, Profile};
use crate::glue::bucket::Bucket;
use crate::glue::credits::{self, Of};
use crate::glue::hold::{self, Background, Client, Held};
use crate::glue::log::{Ending, Trail};
use crate::glue::meter::{MeterRef, Metering};
use crate::glue::serve::{gateway_headers, serve, Answer, Bill};
use crate::glue::stream::{self, StreamRules};
use crate::glue::upstream::{self, Attempt, Sent};
use crate::glue::{body, cache, log, now_ms, respond, stored, turns};
use crate::openai::{ApiError, ApiRequest, Endpoint};
use crate::pace::{self, stall};
use crate::planner::{Action, Choice, PlanSettings, Planner, Step};
use crate::protocol::{Op, Reply};
use crate::sse;
use crate::tokens;
use futures_util::future::{select, Either};
use serde_json::json;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;
use worker::wasm_bindgen::JsValue;
use worker::web_sys::AbortController;
use worker::{web_sys, Context, Delay, Env, Headers, Response};

/// How late a send reached the upstream relative to its slot, as its round trip tells: the
/// estimate the bucket's spread is measured from, and the most it can have been.
struct Lateness {
    lag_ms: i64,
    bound_ms: Option<u64>,
}

/// A candidate as the planner sees it: the config's candidate plus what this isolate last
/// heard of its bucket.
#[derive(Clone, Copy)]
struct Cand<'a> {
    c: Candidate<'a>,
    known_free_at_ms: Option<u64>,
    headroom: Option<f64>,
    unsupported: bool,
}

impl Choice for Cand<'_> {
    fn account(&self) -> &str {
        self.c.account
    }
    fn upstream(&self) -> &str {
        self.c.upstream_id
    }
    fn priority(&self) -> u32 {
        self.c.upstream.priority
    }
    fn weight(&self) -> f64 {
        self.c.weight()
    }
    fn headroom(&self) -> Option<f64> {
        self.headroom
    }
    fn token_cap(&self) -> Option<u64> {
        self.c.limits.token_cap()
    }
    fn keys(&self) -> usize {
        self.c.settings.keys.len()
    }
    fn known_free_at_ms(&self) -> Option<u64> {
        self.known_free_at_ms
    }
    fn known_unsupported(&self) -> bool {
        self.unsupported
    }
}

/// Serves one chat completion, Responses API call or text completion, streamed or not, or
/// one embeddings request (never downgraded:
/// another model's vectors do not compare), and logs it as one `request` line (a served
/// answer's line is written when its usage is known: a stream's at its end). `ctxs`: the
/// invocation's context, as the worker crate's and as the runtime's own object (which the
/// client watchdog hands its promise).
pub async fn complete(
    req: web_sys::Request,
    endpoint: Endpoint,
    env: &Env,
    ctxs: (&Context, &JsValue),
    config: &Config,
    identity: &Identity<'_>,
    request_id: &str,
) -> Result<Response, (ApiError, Headers)> {
    let trail = Rc::new(RefCell::new(Trail::new(
        identity.client,
        identity.user.as_deref(),
        now_ms(),
    )));
    let answer = plan_and_send(
        req, endpoint, env, ctxs, config, identity, request_id, &trail,
    )
    .await;
    if let Err((e, _)) = &answer {
        let ending = Ending {
            status: e.status,
            served: None,
            usage: None,
            cost_usd: None,
            now_ms: now_ms(),
        };
        trail.borrow().end(request_id, ending);
    }
    answer
}

#[allow(clippy::too_many_arguments)]
async fn plan_and_send(
    req: web_sys::Request,
    endpoint: Endpoint,
    env: &Env,
    (ctx, js_ctx): (&Context, &JsValue),
    config: &Config,
    identity: &Identity<'_>,
    request_id: &str,
    trail: &Rc<RefCell<Trail>>,
) -> Result<Response, (ApiError, Headers)> {
    let plain = |e: ApiError| (e, Headers::new());
    let bytes = body::read(&req, ctx, config.max_body_bytes)
        .await
        .map_err(plain)?;
    let mut chat = ApiRequest::parse(&bytes, endpoint, config.max_messages).map_err(plain)?;
    drop(bytes);
    // Chat and text completion streams always ask the upstream for usage, to count tokens;
    // the client sees the usage chunk only if it asked for it. (A Responses stream always
    // ends with its usage.)
    let asks_usage = matches!(endpoint, Endpoint::Chat | Endpoint::Completions);
    let client_wants_usage = chat.stream && asks_usage && sse::request_usage(&mut chat.body);
    let route = config
        .models
        .get(&chat.model)
        .ok_or_else(|| plain(ApiError::model_not_found(&chat.model)))?;
    trail.borrow_mut().requested(endpoint, &chat.model);
    super::callable(config, identity, &chat.model, route).map_err(|e| {
        if !config.can_serve(route) {
            tell_no_key(env, ctx, config, route, request_id);
        }
        plain(e)
    })?;
    let asks = asks::read(
        respond::header(&req, asks::FALLBACK_HEADER).as_deref(),
        respond::header(&req, asks::MAX_WAIT_HEADER).as_deref(),
    )
    .map_err(plain)?;
    let allow_fallback = endpoint.may_downgrade() && !asks.no_fallback;
    let dashscope_headers: Vec<(&'static str, String)> = asks::DASHSCOPE_HEADERS
        .iter()
        .filter_map(|name| Some((*name, respond::header(&req, name)?)))
        .collect();

    let started = now_ms();
    let deadline_ms = route.deadline_ms.unwrap_or(config.default_deadline_ms);
    let deadline_at = started.saturating_add(deadline_ms);
    let first_token_ms = route
        .first_token_timeout_ms
        .unwrap_or(config.default_first_token_timeout_ms);
    let (prompt_tokens, est_tokens) = tokens::estimate(&chat, config.default_output_tokens);
    // A follow-up of a stored response goes to the account that stored it, if it can serve
    // the model (otherwise anywhere: the upstream then says it does not know the response),
    // and only if the response is the caller's (a user token's are its user's alone).
    let (owner, previous) = match endpoint {
        Endpoint::Responses => (
            stored::owner(env, identity).map_err(plain)?,
            chat.previous_response_id(),
        ),
        _ => (None, None),
    };
    let stored_at = affinity::follow_up(previous, owner.as_ref()).map_err(plain)?;
    let stored_by = stored_at.and_then(|at| {
        let accounts = route.fallback.iter().flat_map(|s| config.candidates(s));
        affinity::stored_by(at, accounts.map(|c| c.account))
    });
    let steps: Vec<Step<_>> = route
        .fallback
        .iter()
        .map(|s| Step {
            model: s.model().to_string(),
            candidates: config
                .candidates(s)
                .filter(|c| stored_by.is_none_or(|a| c.account == a))
                .map(|c| Cand {
                    known_free_at_ms: cache::free_at(&c.bucket(), started),
                    headroom: cache::headroom(&c.bucket(), started),
                    unsupported: endpoint.may_lack_model()
                        && cache::unsupported(endpoint, c.upstream_id, c.model, started),
                    c,
                })
                .collect(),
        })
        .collect();
    let (cache_key, _turn) = turns::begin(cache_key::of(&chat));
    // The client's own wait, if it asked for one; never past the deadline. A request over its
    // client's own limits waits for room as long, as it does for each model's slot.
    let max_wait_ms = asks
        .max_wait_ms
        .or(route.max_wait_ms)
        .unwrap_or(config.default_max_wait_ms)
        .min(deadline_ms);
    let mut planner = Planner::new(
        &chat.model,
        steps,
        PlanSettings {
            max_wait_ms,
            deadline_ms: deadline_at,
            allow_fallback,
            seed: random_u64(),
            // A conversation's turns go where its prompt cache is.
            cache_key,
            est_tokens,
            prompt_tokens,
            input_param: endpoint.input_param(),
        },
    );
    let ask = AcquireRequest {
        est_tokens,
        max_wait_ms: 0,
        lease_ttl_ms: deadline_ms.saturating_add(config.scale_ms(LEASE_GRACE_MS)),
        credit: false,
        missed_lag_ms: None,
    };
    // The client's (and user's) limits are asked while the request finds a bucket.
    let mut metering = Metering::start(
        ctx,
        env,
        MeterRef::of(identity, config),
        meter::Ask {
            est_tokens,
            ttl_ms: ask.lease_ttl_ms,
            credit_max: 0,
            max_wait_ms,
        },
        request_id,
    );
    // Keys (secret names) refused so far, per account: what the buckets said, and what we saw.
    let mut refused: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let client = Client::of(&req);
    let held = Held::default();
    let _watchdog = hold::watch(js_ctx, env, &client, held.clone(), request_id);
    let background = Background {
        env,
        ctx,
        request_id,
    };
    let job = Job {
        env,
        chat: &chat,
        owner: owner.as_ref(),
        client_wants_usage,
        deadline_at,
        first_token_ms,
        idle_ms: config.stream_idle_timeout_ms,
        dashscope_headers: &dashscope_headers,
    };

    // The bucket and lateness of the last slot given back for leaving late, for the next ask.
    let mut missed: Option<(String, i64)> = None;
    loop {
        if client.is_gone() {
            return Err(plain(background.client_left(&held)));
        }
        match planner.next(now_ms()) {
            Action::Acquire {
                slot,
                candidate,
                max_wait_ms,
            } => {
                let bucket = Bucket::of(&candidate.c, config);
                let left = deadline_at.saturating_sub(now_ms());
                let now = now_ms();
                let spend = credits::spend(Of::Bucket, &bucket.name, now, est_tokens);
                background.give_back(&bucket, spend.unspent);
                let life_ms = credit::life_ms(bucket.spec);
                if spend.spent.is_some()
                    && credits::claim_next(Of::Bucket, &bucket.name, now, life_ms)
                {
                    background.ask_ahead(&bucket, ask);
                }
                let credit = bucket.credit_max > 0
                    && spend.spent.is_none()
                    && credits::claim(Of::Bucket, &bucket.name);
                let op = Op::Acquire(AcquireRequest {
                    max_wait_ms,
                    credit,
                    missed_lag_ms: missed
                        .take()
                        .filter(|(b, _)| *b == bucket.name)
                        .map(|m| m.1),
                    ..ask
                });
                let reply = match spend.spent {
                    Some((lease, late_ms)) => Ok(Reply::Admission {
                        admission: Admission::Go {
                            lease,
                            at_ms: now,
                            probe: false,
                            late_ms,
                            credit: None,
                        },
                        bucket_free_at_ms: None,
                        refused_keys: spend.refused_keys,
                        headroom: None,
                    }),
                    None => {
                        let reply = bucket.call(env, op, left).await;
                        if credit {
                            credits::answered(Of::Bucket, &bucket.name);
                        }
                        reply
                    }
                };
                match reply {
                    Ok(Reply::Admission {
                        admission,
                        bucket_free_at_ms,
                        refused_keys,
                        headroom,
                    }) => {
                        if let Some(headroom) = headroom {
                            cache::heard_headroom(&bucket.name, headroom, now_ms());
                        }
                        let known = refused.entry(candidate.c.account).or_default();
                        known.extend(refused_keys.iter().cloned());
                        match &admission {
                            Admission::Go {
                                lease,
                                late_ms,
                                credit,
                                ..
                            } => {
                                cache::free(&bucket.name);
                                if let Some(credit) = credit {
                                    let replaced = credits::keep(
                                        Of::Bucket,
                                        &bucket.name,
                                        credit.clone(),
                                        refused_keys.clone(),
                                    );
                                    background.give_back(&bucket, replaced);
                                    background.return_at_end(&bucket, credit.until_ms);
                                }
                                let late = late_ms.saturating_add(config.window_margin_ms);
                                let from_credit = spend.spent.is_some();
                                if let Some(stale) = held.hold(bucket, *lease, late, from_credit) {
                                    background.settle(stale, SettleOutcome::Released, &[]);
                                }
                            }
                            Admission::Denied { reason, .. } => {
                                trail.borrow_mut().attempt(&bucket.name, reason.label());
                                cache::busy(&bucket.name, bucket_free_at_ms, now_ms())
                            }
                        }
                        planner.on_admission(slot, &admission);
                    }
                    answer => {
                        let error = match answer {
                            Err(e) => e,
                            Ok(_) => "unexpected reply".to_string(),
                        };
                        log::warn(
                            "bucket_unreachable",
                            request_id,
                            json!({"bucket": bucket.name, "op": "acquire", "error": error}),
                        );
                        planner.on_bucket_unreachable(slot);
                    }
                }
            }
            Action::Send {
                slot,
                candidate,
                lease,
                at_ms,
            } => {
                let c = candidate.c;
                let not_before = match metering.admitted().await {
                    Ok(not_before) => not_before,
                    Err(e) => {
                        if let Some(hold) = held.take() {
                            background.settle(hold, SettleOutcome::Released, &[]);
                        }
                        let headers = Headers::new();
                        respond::set_headers(&headers, &metering.ratelimit_headers());
                        return Err((e, headers));
                    }
                };
                if not_before > at_ms && not_before > now_ms() {
                    // The client's own limits have room only later than the bucket's slot: the
                    // slot goes back unused, and the bucket is asked again once the client's
                    // slot comes.
                    if let Some(hold) = held.take() {
                        background.settle(hold, SettleOutcome::Released, &[]);
                    }
                    let wait = not_before.saturating_sub(now_ms());
                    trail.borrow_mut().waited(wait);
                    if left_during(&client, wait).await {
                        return Err(plain(background.client_left(&held)));
                    }
                    planner.on_client_waited(slot);
                    continue;
                }
                // A send that a stalled send of this isolate may crowd waits until the stall's
                // reach has passed (`pace::stall`); a stall too long to wait out is missed.
                // (The allowance has the window margin in it: the second is the bare one.)
                let allowed = held.late_ms();
                let second_ms = config.scale_ms(1_000);
                let name = c.bucket();
                let mut leave_at = Some(at_ms);
                while let Some(at) = leave_at {
                    let wait = at.saturating_sub(now_ms());
                    trail.borrow_mut().waited(wait);
                    if wait > 0 && left_during(&client, wait).await {
                        return Err(plain(background.client_left(&held)));
                    }
                    let hold = allowed.and_then(|allowed| {
                        cache::hold_until(&name, at_ms, allowed, second_ms, now_ms())
                    });
                    match hold {
                        Some(until) => {
                            leave_at = (until.saturating_sub(at_ms) <= second_ms).then_some(until)
                        }
                        None => break,
                    }
                }
                // A send that would leave later than its slot allows could crowd an upstream
                // window: it gives the slot back (its lateness is measured) and asks again.
                // (None: held past a second, it would crowd the next one.)
                let late = leave_at.map(|at| now_ms().saturating_sub(at));
                if late.is_none_or(|late| allowed.is_some_and(|allowed| late > allowed)) {
                    if let Some(mut hold) = held.take() {
                        hold.lag_ms = late.and_then(|late| i64::try_from(late).ok());
                        missed = hold.lag_ms.map(|lag| (hold.bucket.name.clone(), lag));
                        trail.borrow_mut().attempt(&hold.bucket.name, "slot_missed");
                        log::info(
                            "slot_missed",
                            request_id,
                            json!({"bucket": hold.bucket.name, "late_ms": late}),
                        );
                        background.settle(hold, SettleOutcome::Released, &[]);
                    }
                    planner.on_missed(slot);
                    continue;
                }
                if let Some(held_ms) = leave_at
                    .map(|at| at.saturating_sub(at_ms))
                    .filter(|ms| *ms > 0)
                {
                    log::info(
                        "slot_held",
                        request_id,
                        json!({"bucket": name, "held_ms": held_ms}),
                    );
                }
                let known = refused.entry(c.account).or_default();
                let outcome = match c.settings.pick_key(known, lease) {
                    None => classify::every_key_refused("invalid_api_key"),
                    Some(key) => {
                        let Some(controller) = held.sending() else {
                            return Err(plain(respond::internal_error()));
                        };
                        metering.mark_sent();
                        let (opened, lateness) = job.attempt(&c, key, controller, at_ms).await;
                        if let Some(lateness) = lateness {
                            held.lag(lateness.lag_ms);
                            if let (Some(bound), Some(_)) = (lateness.bound_ms, allowed) {
                                cache::stalled(&name, at_ms, bound, second_ms);
                            }
                        }
                        if client.is_gone() {
                            return Err(plain(background.client_left(&held)));
                        }
                        let outcome = match opened {
                            Ok(answer) => {
                                let Some(hold) = held.take() else {
                                    return Err(plain(background.client_left(&held)));
                                };
                                let waited = trail.borrow().wait_ms();
                                let mut headers =
                                    gateway_headers(&chat.model, &c, &planner, waited);
                                headers.extend(metering.ratelimit_headers());
                                trail.borrow_mut().attempt(&name, "ok");
                                let bill = Bill {
                                    price: config.prices.get(c.model).cloned(),
                                    prompt_estimate: prompt_tokens,
                                    metered: metering.take(),
                                    trail: trail.clone(),
                                    served: c.model.to_string(),
                                    downgraded_from: downgraded_from(config, route, c.model),
                                };
                                return serve(&background, hold, bill, answer, headers)
                                    .map_err(plain);
                            }
                            Err(outcome) => {
                                trail.borrow_mut().attempt(&name, outcome.label());
                                outcome.scaled(|ms| config.scale_ms(ms))
                            }
                        };
                        match outcome {
                            // The lease stays held for the account's next key; with none
                            // left, the account cannot serve.
                            Outcome::KeyRefused { reason } => {
                                known.insert(key.to_string());
                                held.refused(key);
                                credits::refuse(&name, key);
                                match c.settings.pick_key(known, lease) {
                                    Some(_) => Outcome::KeyRefused { reason },
                                    None => classify::every_key_refused(&reason),
                                }
                            }
                            other => other,
                        }
                    }
                };
                if let Some(until) = bucket::busy_until(&outcome, now_ms()) {
                    cache::busy(&name, until, now_ms());
                }
                if outcome == Outcome::Unsupported {
                    cache::heard_unsupported(endpoint, c.upstream_id, c.model, now_ms());
                }
                // Any push back from the upstream ends this isolate's credit there: the bucket
                // decides again, one admission at a time.
                if !matches!(outcome, Outcome::KeyRefused { .. }) {
                    let pushed_back = Bucket::of(&c, config);
                    let unspent = credits::drop(Of::Bucket, &pushed_back.name);
                    background.give_back(&pushed_back, unspent);
                }
                if !matches!(outcome, Outcome::KeyRefused { .. }) {
                    if let Some(hold) = held.take() {
                        let account_buckets = account_park_targets(config, &c, &outcome);
                        background.settle(
                            hold,
                            SettleOutcome::of_failure(&outcome),
                            &account_buckets,
                        );
                    }
                }
                planner.on_outcome(slot, &outcome, now_ms());
            }
            Action::Backoff { ms } => {
                if left_during(&client, ms).await {
                    return Err(plain(background.client_left(&held)));
                }
            }
            Action::GiveUp(error) => {
                // Counted for operators on the first choice: capacity the clients missed.
                let first = route
                    .fallback
                    .first()
                    .and_then(|s| config.candidates(s).next());
                if let (429, Some(first)) = (error.status, first) {
                    let bucket = Bucket::of(&first, config);
                    let request_id = request_id.to_string();
                    let env = env.clone();
                    ctx.wait_until(
                        async move { bucket.tell(&env, Op::PassedOn, &request_id).await },
                    );
                }
                let headers = Headers::new();
                respond::set_header(&headers, "x-gateway-requested-model", &chat.model);
                respond::set_header(
                    &headers,
                    "x-gateway-attempts",
                    &planner.attempts().to_string(),
                );
                if let Some(reason) = planner.fallback_reason() {
                    respond::set_header(&headers, "x-gateway-fallback-reason", &reason);
                }
                return Err((error, headers));
            }
        }
    }
}

/// Tells the route's first choice that a client was answered 500 for want of a key set, for
/// the operator to hear which secrets to set (at most once an hour).
fn tell_no_key(env: &Env, ctx: &Context, config: &Config, route: &ModelRoute, request_id: &str) {
    let Some(first) = config.first_choice(route) else {
        return;
    };
    let unset = crate::glue::unset_keys();
    // Once each, in the config's order (a sort would cost 4 KB of code).
    let mut secrets: Vec<String> = Vec::new();
    for (_, k) in config.unset_for(route, &unset) {
        if !secrets.contains(k) {
            secrets.push(k.clone());
        }
    }
    let bucket = Bucket::of(&first, config);
    let (env, request_id) = (env.clone(), request_id.to_string());
    let op = Op::NoKeySet { secrets };
    ctx.wait_until(async move { bucket.tell(&env, op, &request_id).await });
}

/// When `served` is not the model of the chain's first step: that step's first bucket (the
/// downgrade is counted there) and its price.
fn downgraded_from(
    config: &Config,
    route: &ModelRoute,
    served: &str,
) -> Option<(Bucket, Option<Price>)> {
    let first = route.fallback.first()?;
    if first.model() == served {
        return None;
    }
    let candidate = config.candidates(first).next()?;
    let price = config.prices.get(first.model()).cloned();
    Some((Bucket::of(&candidate, config), price))
}

/// What every upstream attempt of one request shares.
struct Job<'a> {
    env: &'a Env,
    chat: &'a ApiRequest,
    /// Whose the response is, if the upstream stores it (`crate::affinity`).
    owner: Option<&'a Owner>,
    client_wants_usage: bool,
    deadline_at: u64,
    first_token_ms: u64,
    idle_ms: u64,
    /// The client's DashScope headers, for DashScope upstreams only.
    dashscope_headers: &'a [(&'static str, String)],
}

impl Job<'_> {
    /// Sends the request to `c` with the key in secret `key` and reads the answer: whole, or a
    /// stream up to its first content token (whose timer starts now, at the send). Also says
    /// how late the send reached the upstream relative to its slot at `slot_ms`, once the
    /// answer's headers are in.
    async fn attempt(
        &self,
        c: &Candidate<'_>,
        key: &str,
        controller: AbortController,
        slot_ms: u64,
    ) -> (Result<Answer, Outcome>, Option<Lateness>) {
        let stream = self.chat.stream;
        let sent_at = now_ms();
        let first_token_at = sent_at
            .saturating_add(self.first_token_ms)
            .min(self.deadline_at);
        let until = if stream {
            first_token_at
        } else {
            self.deadline_at
        };
        let attempt = Attempt {
            candidate: c,
            key_name: key,
            endpoint: self.chat.endpoint,
            body: self.chat.upstream_body(c.model),
            stream,
            wait_ms: until.saturating_sub(sent_at),
            headers: match c.upstream.profile {
                Profile::Dashscope => self.dashscope_headers,
                _ => &[],
            },
        };
        let (sent, reached) = upstream::send(self.env, attempt, &controller, now_ms).await;
        let lateness = reached.map(|r| Lateness {
            lag_ms: pace::lag_ms(slot_ms, sent_at, r.headers_at_ms, r.processing_ms),
            bound_ms: stall::lateness_bound(slot_ms, sent_at, r.headers_at_ms, r.processing_ms),
        });
        // A stored response's id says which account has it (`crate::affinity`).
        let stored_by = (self.chat.endpoint == Endpoint::Responses).then_some(c.account);
        let opened = match sent {
            Sent::Whole { status, body } => {
                let tagged = stored_by.and_then(|account| {
                    let id = affinity::response_id(&body)?;
                    affinity::retag(&body, &id, account, self.owner)
                });
                Ok(Answer::Whole {
                    status,
                    body: tagged.unwrap_or(body),
                })
            }
            Sent::Stream(response) => {
                let rules = StreamRules {
                    profile: c.upstream.profile,
                    client_wants_usage: self.client_wants_usage,
                    first_token_at_ms: first_token_at,
                    idle_ms: self.idle_ms,
                    stored_by: stored_by.map(str::to_string),
                    owner: self.owner.cloned(),
                };
                stream::open(response, controller, rules, now_ms)
                    .await
                    .map(Answer::Stream)
            }
            Sent::Failed(outcome) => Err(outcome),
            Sent::TimedOut => Err(classify::timed_out(stream)),
        };
        (opened, lateness)
    }
}

/// Sleeps `ms`, unless the client leaves first: true when it left.
async fn left_during(client: &Client, ms: u64) -> bool {
    let gone = client.gone();
    let timer = Delay::from(Duration::from_millis(ms));
    futures_util::pin_mut!(gone);
    matches!(select(gone, timer).await, Either::Left(_))
}

/// The other buckets of the account to park too, when the outcome parks the whole account.
fn account_park_targets(config: &Config, c: &Candidate, outcome: &Outcome) -> Vec<(Bucket, Op)> {
    let Outcome::Park {
        scope: ParkScope::Account,
        reason,
        for_ms,
    } = outcome
    else {
        return Vec::new();
    };
    let models = c.settings.limits.keys().filter(|m| *m != c.model);
    models
        .filter_map(|m| config.candidate(c.account, m))
        .map(|other| {
            let op = Op::Park {
                reason: reason.clone(),
                for_ms: *for_ms,
            };
            (Bucket::of(&other, config), op)
        })
        .collect()
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}
