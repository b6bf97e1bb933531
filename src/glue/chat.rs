//! `POST /v1/chat/completions`: the planner loop over bucket admissions and upstream sends.

use crate::bucket::{AcquireRequest, Admission, SettleOutcome};
use crate::classify::{Outcome, ParkScope};
use crate::config::{Candidate, Config, Price};
use crate::glue::bucket::{self, BucketRef};
use crate::glue::stream::{self, Started, StreamRules};
use crate::glue::upstream::{self, Success};
use crate::glue::{cache, respond};
use crate::openai::{ApiError, ChatRequest};
use crate::planner::{Action, PlanCandidate, PlanSettings, PlanStep, Planner, Target};
use crate::pricing;
use crate::sse;
use crate::tokens;
use std::collections::BTreeMap;
use std::time::Duration;
use worker::{Context, Date, Delay, Env, Headers, Request, Response};

/// Header a client sends to refuse a lower model (`x-gateway-fallback: none`).
const NO_FALLBACK_HEADER: &str = "x-gateway-fallback";
/// How long an unsettled lease stays in flight after its deadline, before the bucket drops it.
const LEASE_GRACE_MS: u64 = 60_000;

fn now_ms() -> u64 {
    Date::now().as_millis()
}

/// Serves one chat completion, streamed or not.
pub async fn complete(
    mut req: Request,
    env: &Env,
    ctx: &Context,
    config: &Config,
) -> Result<Response, (ApiError, Headers)> {
    let plain = |e: ApiError| (e, Headers::new());
    let bytes = req.bytes().await.map_err(|_| {
        plain(ApiError::invalid_request(
            "The request body could not be read.",
            None,
        ))
    })?;
    let mut chat = ChatRequest::parse(&bytes).map_err(plain)?;
    // Streams always ask the upstream for usage, to count tokens; the client sees the usage
    // chunk only if it asked for it.
    let client_wants_usage = chat.stream && sse::request_usage(&mut chat.body);
    let route = config
        .models
        .get(&chat.model)
        .ok_or_else(|| plain(ApiError::model_not_found(&chat.model)))?;
    let allow_fallback = !matches!(
        req.headers()
            .get(NO_FALLBACK_HEADER)
            .ok()
            .flatten()
            .as_deref(),
        Some("none" | "off" | "false" | "0")
    );

    let scale = config.time_scale;
    let started = now_ms();
    let deadline_ms = route.deadline_ms.unwrap_or(config.default_deadline_ms);
    let first_token_ms = route
        .first_token_timeout_ms
        .unwrap_or(config.default_first_token_timeout_ms);
    // Each candidate with its bucket, built once for the whole request.
    let steps: Vec<(&str, Vec<(Candidate, BucketRef)>)> = route
        .fallback
        .iter()
        .map(|s| {
            let cands = config.candidates(s).filter_map(|c| {
                BucketRef::of(config, c.account, c.model).map(|bucket| (c, bucket))
            });
            (s.model(), cands.collect())
        })
        .collect();
    let plan = steps
        .iter()
        .map(|(model, cands)| PlanStep {
            model: model.to_string(),
            candidates: cands
                .iter()
                .map(|(c, bucket)| PlanCandidate {
                    account: c.account.to_string(),
                    upstream: c.upstream_id.to_string(),
                    priority: c.upstream.priority,
                    weight: c.settings.weight * c.upstream.weight,
                    known_free_at_ms: cache::free_at(&bucket.name(), started),
                })
                .collect(),
        })
        .collect();
    let mut planner = Planner::new(
        &chat.model,
        plan,
        PlanSettings {
            max_wait_ms: route.max_wait_ms.unwrap_or(config.default_max_wait_ms),
            deadline_ms: started + deadline_ms,
            allow_fallback,
            seed: random_u64(),
        },
    );
    // Keys (secret names) each account's buckets have seen refused, from their last answer.
    let mut refused: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let estimate = AcquireRequest {
        est_tokens: tokens::estimate(&chat.body, config.default_output_tokens),
        max_wait_ms: 0,
        lease_ttl_ms: deadline_ms + LEASE_GRACE_MS,
    };

    loop {
        match planner.next(now_ms()) {
            Action::Acquire {
                target,
                max_wait_ms,
            } => {
                let Some((candidate, bucket)) = pick(&steps, target) else {
                    return Err(plain(ApiError::config("planner named an unknown bucket")));
                };
                let ask = AcquireRequest {
                    max_wait_ms,
                    ..estimate
                };
                let (admission, bad_keys) =
                    bucket::acquire(env, bucket, &ask).await.map_err(plain)?;
                refused.insert(candidate.account, bad_keys);
                match &admission {
                    Admission::Go { .. } => cache::free(&bucket.name()),
                    Admission::Denied { until_ms, .. } => {
                        cache::busy(&bucket.name(), *until_ms, now_ms())
                    }
                }
                planner.on_admission(target, &admission, now_ms());
            }
            Action::Send {
                target,
                lease,
                at_ms,
            } => {
                let Some((candidate, bucket)) = pick(&steps, target) else {
                    return Err(plain(ApiError::config("planner named an unknown bucket")));
                };
                let wait = at_ms.saturating_sub(now_ms());
                if wait > 0 {
                    Delay::from(Duration::from_millis(wait)).await;
                }
                let timeout = (started + deadline_ms).saturating_sub(now_ms()).max(1);
                let bad_keys = refused.get(candidate.account).cloned().unwrap_or_default();
                let Some(key_name) = candidate.settings.pick_key(&bad_keys, lease) else {
                    // Every key of the account was refused: the bucket is parked until cleared.
                    let outcome = Outcome::Park {
                        scope: ParkScope::Bucket,
                        reason: "invalid_api_key (every key refused)".into(),
                        for_ms: None,
                    };
                    settle_in_background(env, ctx, config, bucket, lease, &outcome, None);
                    planner.on_outcome(target, &outcome, now_ms());
                    continue;
                };
                let body = chat.upstream_body(candidate.model);
                let sent =
                    upstream::send(env, candidate, key_name, body, chat.stream, timeout, now_ms)
                        .await;
                let opened = match sent {
                    Ok(Success::Whole { status, body }) => Ok(Answer::Whole { status, body }),
                    Ok(Success::Stream(response, controller)) => {
                        let rules = StreamRules {
                            profile: candidate.upstream.profile,
                            client_wants_usage,
                            first_token_ms: first_token_ms.min(timeout),
                            idle_ms: config.stream_idle_timeout_ms,
                        };
                        stream::open(response, controller, rules, now_ms)
                            .await
                            .map(Answer::Stream)
                    }
                    Err(outcome) => Err(outcome),
                };
                match opened {
                    Ok(answer) => {
                        let headers =
                            gateway_headers(&chat.model, candidate, &planner).map_err(plain)?;
                        let billing = Billing {
                            price: config.prices.get(candidate.model).cloned(),
                            prompt_estimate: tokens::prompt_tokens(&chat.body),
                        };
                        return serve(env, ctx, (bucket.clone(), lease), billing, answer, headers)
                            .map_err(plain);
                    }
                    Err(outcome) => {
                        let mut outcome = scaled(outcome, scale);
                        let mut bad_key = None;
                        if let Outcome::Park {
                            scope: ParkScope::Key,
                            ..
                        } = outcome
                        {
                            // A refused key: skip it from now on; while the account has other
                            // keys, try it again at once with the next one.
                            let mut now_bad = bad_keys;
                            now_bad.push(key_name.to_string());
                            if candidate.settings.pick_key(&now_bad, 0).is_some() {
                                outcome = Outcome::Retry { after_ms: Some(0) };
                            }
                            refused.insert(candidate.account, now_bad);
                            bad_key = Some(key_name.to_string());
                        }
                        settle_in_background(env, ctx, config, bucket, lease, &outcome, bad_key);
                        if let Some(until) = busy_until(&outcome, now_ms()) {
                            cache::busy(&bucket.name(), until, now_ms());
                        }
                        planner.on_outcome(target, &outcome, now_ms());
                    }
                }
            }
            Action::Backoff { ms } => Delay::from(Duration::from_millis(ms)).await,
            Action::GiveUp(error) => {
                let headers = Headers::new();
                let _ = headers.set("x-gateway-requested-model", &chat.model);
                let _ = headers.set("x-gateway-attempts", &planner.attempts().to_string());
                if let Some(reason) = planner.fallback_reason() {
                    let _ = headers.set("x-gateway-fallback-reason", &reason);
                }
                return Err((error, headers));
            }
        }
    }
}

/// A successful answer, ready to go to the client.
enum Answer {
    /// A whole JSON body.
    Whole { status: u16, body: Vec<u8> },
    /// A stream that has passed its first content token.
    Stream(Started),
}

/// How to price a served request.
struct Billing {
    /// The served model's price table, if configured.
    price: Option<Price>,
    /// The input estimate, used when the upstream reports no usage.
    prompt_estimate: u64,
}

impl Billing {
    /// The settle outcome of a served request, with its cost.
    fn served(&self, prompt_tokens: Option<u64>, completion_tokens: Option<u64>) -> SettleOutcome {
        SettleOutcome::Ok {
            prompt_tokens,
            completion_tokens,
            cost_micro_usd: (self.cost_usd(prompt_tokens, completion_tokens) * 1e6).round() as u64,
        }
    }

    fn cost_usd(&self, prompt_tokens: Option<u64>, completion_tokens: Option<u64>) -> f64 {
        self.price.as_ref().map_or(0.0, |p| {
            let prompt = prompt_tokens.unwrap_or(self.prompt_estimate);
            pricing::cost_usd(p, prompt, completion_tokens.unwrap_or(0))
        })
    }
}

/// Returns the answer to the client and settles the bucket with the real usage off the hot
/// path (for a stream: when it ends, however it ends).
fn serve(
    env: &Env,
    ctx: &Context,
    (bucket, lease): (BucketRef, u64),
    billing: Billing,
    answer: Answer,
    headers: Headers,
) -> Result<Response, ApiError> {
    let env = env.clone();
    match answer {
        Answer::Whole { status, body } => {
            headers
                .set("content-type", "application/json")
                .map_err(respond::internal)?;
            let (prompt, completion) = usage_of(&body);
            if billing.price.is_some() {
                let cost = format!("{:.6}", billing.cost_usd(prompt, completion));
                headers
                    .set("x-gateway-cost-usd", &cost)
                    .map_err(respond::internal)?;
            }
            let outcome = billing.served(prompt, completion);
            ctx.wait_until(async move {
                let _ = bucket::settle(&env, &bucket, lease, outcome, None).await;
            });
            Ok(Response::from_bytes(body)
                .map_err(respond::internal)?
                .with_status(status)
                .with_headers(headers))
        }
        Answer::Stream(Started { body, end }) => {
            for (name, value) in [
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
            ] {
                headers.set(name, value).map_err(respond::internal)?;
            }
            ctx.wait_until(async move {
                let outcome = match end.await {
                    Ok(end) => billing.served(end.prompt_tokens, end.completion_tokens),
                    Err(_) => billing.served(None, None),
                };
                let _ = bucket::settle(&env, &bucket, lease, outcome, None).await;
            });
            Ok(Response::from_stream(body)
                .map_err(respond::internal)?
                .with_headers(headers))
        }
    }
}

/// The reported (input, output) tokens of a non-streamed answer.
fn usage_of(body: &[u8]) -> (Option<u64>, Option<u64>) {
    let usage = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .map(|v| v["usage"].clone())
        .unwrap_or_default();
    (
        usage["prompt_tokens"].as_u64(),
        usage["completion_tokens"].as_u64(),
    )
}

/// Settles a failed attempt, and parks the account's other buckets when the account is at fault.
fn settle_in_background(
    env: &Env,
    ctx: &Context,
    config: &Config,
    bucket: &BucketRef,
    lease: u64,
    outcome: &Outcome,
    bad_key: Option<String>,
) {
    let settle = match outcome {
        Outcome::Success => SettleOutcome::Ok {
            prompt_tokens: None,
            completion_tokens: None,
            cost_micro_usd: 0,
        },
        Outcome::Cooldown { kind, cooldown_ms } => SettleOutcome::Cooldown {
            ms: *cooldown_ms,
            kind: format!("{kind:?}").to_lowercase(),
        },
        Outcome::Unavailable { cooldown_ms } => SettleOutcome::Cooldown {
            ms: *cooldown_ms,
            kind: "unavailable".into(),
        },
        Outcome::Burst { backoff_ms } => SettleOutcome::Burst { ms: *backoff_ms },
        Outcome::Park { reason, for_ms, .. } => SettleOutcome::Park {
            reason: reason.clone(),
            for_ms: *for_ms,
        },
        Outcome::TooLarge => SettleOutcome::Released,
        Outcome::Retry { .. } | Outcome::Client(_) => SettleOutcome::Failed,
    };
    let mut others = Vec::new();
    if let Outcome::Park {
        scope: ParkScope::Account,
        reason,
        for_ms,
    } = outcome
    {
        let models = config
            .accounts
            .get(&bucket.account)
            .map(|a| a.limits.keys());
        for model in models.into_iter().flatten().filter(|m| **m != bucket.model) {
            if let Some(other) = BucketRef::of(config, &bucket.account, model) {
                others.push((other, reason.clone(), *for_ms));
            }
        }
    }
    let bucket = bucket.clone();
    let env = env.clone();
    ctx.wait_until(async move {
        let _ = bucket::settle(&env, &bucket, lease, settle, bad_key).await;
        for (other, reason, for_ms) in others {
            let _ = bucket::park(&env, &other, &reason, for_ms).await;
        }
    });
}

/// Divides the waits an outcome carries by the config's time scale (1 in production).
fn scaled(outcome: Outcome, scale: f64) -> Outcome {
    let s = |ms: u64| ((ms as f64) / scale) as u64;
    match outcome {
        Outcome::Cooldown { kind, cooldown_ms } => Outcome::Cooldown {
            kind,
            cooldown_ms: s(cooldown_ms),
        },
        Outcome::Burst { backoff_ms } => Outcome::Burst {
            backoff_ms: s(backoff_ms),
        },
        Outcome::Unavailable { cooldown_ms } => Outcome::Unavailable {
            cooldown_ms: s(cooldown_ms),
        },
        Outcome::Park {
            scope,
            reason,
            for_ms,
        } => Outcome::Park {
            scope,
            reason,
            for_ms: for_ms.map(s),
        },
        other => other,
    }
}

/// Until when an outcome makes its bucket busy, for the isolate cache.
fn busy_until(outcome: &Outcome, now_ms: u64) -> Option<Option<u64>> {
    match outcome {
        Outcome::Cooldown {
            cooldown_ms: ms, ..
        }
        | Outcome::Unavailable { cooldown_ms: ms }
        | Outcome::Burst { backoff_ms: ms } => Some(Some(now_ms + ms)),
        Outcome::Park { for_ms, .. } => Some(for_ms.map(|ms| now_ms + ms)),
        _ => None,
    }
}

/// The `x-gateway-*` headers of an answer.
fn gateway_headers(
    requested: &str,
    served: &Candidate,
    planner: &Planner,
) -> Result<Headers, ApiError> {
    let headers = Headers::new();
    let attempts = (planner.attempts() + 1).to_string();
    for (name, value) in [
        ("x-gateway-requested-model", requested),
        ("x-gateway-served-model", served.model),
        ("x-gateway-upstream", served.upstream_id),
        ("x-gateway-attempts", attempts.as_str()),
    ] {
        headers.set(name, value).map_err(respond::internal)?;
    }
    if let Some(reason) = planner.fallback_reason() {
        headers
            .set("x-gateway-fallback-reason", &reason)
            .map_err(respond::internal)?;
    }
    Ok(headers)
}

fn pick<'a>(
    steps: &'a [(&'a str, Vec<(Candidate<'a>, BucketRef)>)],
    target: Target,
) -> Option<&'a (Candidate<'a>, BucketRef)> {
    steps.get(target.step)?.1.get(target.candidate)
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}
