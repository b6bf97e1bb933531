//! A served answer on its way to the client: the `x-gateway-*` headers, the cost, and the
//! settle of its lease with the real usage off the hot path.

use crate::access::meter::Spent;
use crate::bucket::SettleOutcome;
use crate::config::{Candidate, Price};
use crate::glue::bucket::Bucket;
use crate::glue::hold::{Background, Hold};
use crate::glue::log::{Ending, Trail};
use crate::glue::meter::Metered;
use crate::glue::stream::Started;
use crate::glue::{respond, settles};
use crate::openai::{ApiError, Usage};
use crate::planner::{Choice, Planner};
use crate::pricing;
use crate::protocol::Op;
use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use worker::{Env, Headers, Response};

/// A successful answer, ready to go to the client.
pub enum Answer {
    /// A whole JSON body.
    Whole { status: u16, body: Vec<u8> },
    /// A stream that has passed its first content token.
    Stream(Started),
}

/// How to price the served request, and whose meters to charge.
pub struct Bill {
    /// The served model's prices, if any.
    pub price: Option<Price>,
    /// The input estimate, for an upstream that reports no input tokens.
    pub prompt_estimate: u64,
    /// The client's (and user's) meter leases.
    pub metered: Metered,
    /// The request's log line, ended here with the usage.
    pub trail: Rc<RefCell<Trail>>,
    /// The upstream model that answered.
    pub served: String,
    /// When a lower model answered: the first choice's bucket and price, to count the
    /// downgrade and what it saved there.
    pub downgraded_from: Option<(Bucket, Option<Price>)>,
}

impl Bill {
    fn cost_usd(&self, usage: Usage) -> f64 {
        pricing::served_cost_usd(self.price.as_ref(), usage, self.prompt_estimate)
    }

    /// Logs the request's line, and charges the meters with the usage and its cost: returns
    /// what is left to run in the background (None when there is no meter to charge and no
    /// downgrade to count, as for most requests).
    fn charge(
        self,
        env: &Env,
        usage: Usage,
        cost_usd: f64,
        request_id: &str,
    ) -> Option<impl Future<Output = ()> + 'static> {
        let ending = Ending {
            status: 200,
            served: Some(&self.served),
            usage: Some(usage),
            cost_usd: self.price.is_some().then_some(cost_usd),
            now_ms: crate::glue::now_ms(),
        };
        self.trail.borrow().end(request_id, ending);
        if self.downgraded_from.is_none() && self.metered.is_empty() {
            return None;
        }
        let (env, request_id) = (env.clone(), request_id.to_string());
        Some(async move { self.charge_later(&env, usage, cost_usd, &request_id).await })
    }

    /// Counts the downgrade (what it saved) at the first choice's bucket and settles the meters.
    async fn charge_later(self, env: &Env, usage: Usage, cost_usd: f64, request_id: &str) {
        if let Some((first, first_price)) = &self.downgraded_from {
            let priced = |p: &Price| {
                let usd = pricing::served_cost_usd(Some(p), usage, self.prompt_estimate);
                i64::try_from(pricing::micro_usd(usd)).unwrap_or(i64::MAX)
            };
            let saved = match (first_price, &self.price) {
                (Some(first), Some(served)) => Some(priced(first).saturating_sub(priced(served))),
                _ => None,
            };
            let op = Op::Downgraded {
                saved_micro_usd: saved,
            };
            first.tell(env, op, request_id).await;
        }
        let spent = Spent {
            tokens: usage
                .completion_tokens
                .map(|c| c.saturating_add(usage.prompt_tokens.unwrap_or(self.prompt_estimate))),
            micro_usd: pricing::micro_usd(cost_usd),
            sent: true,
        };
        self.metered.settle(env, spent, request_id).await;
    }
}

/// Returns the answer to the client and settles the lease with the real usage off the hot
/// path; a stream first commits its lease (it lives until the stream ends, however long),
/// then settles when it ends, however it ends.
pub fn serve(
    background: &Background,
    hold: Hold,
    bill: Bill,
    answer: Answer,
    mut headers: Vec<(&str, String)>,
) -> Result<Response, ApiError> {
    let env = background.env.clone();
    let request_id = background.request_id.to_string();
    match answer {
        Answer::Whole { status, body } => {
            headers.push(("content-type", "application/json".into()));
            let usage = Usage::of_body(&body).unwrap_or_default();
            let cost = bill.cost_usd(usage);
            if bill.price.is_some() {
                headers.push(("x-gateway-cost-usd", format!("{cost:.6}")));
            }
            let served = SettleOutcome::served(usage, pricing::micro_usd(cost));
            background.settle(hold, served, &[]);
            if let Some(rest) = bill.charge(&env, usage, cost, &request_id) {
                background.ctx.wait_until(rest);
            }
            respond::bytes(status, body, js_headers(&headers))
        }
        Answer::Stream(Started { body, end }) => {
            headers.push(("content-type", "text/event-stream".into()));
            headers.push(("cache-control", "no-cache".into()));
            let commit = Op::Commit { lease: hold.lease };
            background.ctx.wait_until(async move {
                settles::send(&env, &hold.bucket, commit, &request_id).await;
                let usage = end.await.unwrap_or_default();
                let cost = bill.cost_usd(usage);
                let served = SettleOutcome::served(usage, pricing::micro_usd(cost));
                let (bucket, op) = hold.settle(served);
                settles::send(&env, &bucket, op, &request_id).await;
                if let Some(rest) = bill.charge(&env, usage, cost, &request_id) {
                    rest.await;
                }
            });
            respond::stream(body, js_headers(&headers))
        }
    }
}

/// The runtime's headers of `pairs`, made in one call.
fn js_headers(pairs: &[(&str, String)]) -> Headers {
    let headers = Headers::new();
    respond::set_headers(&headers, pairs);
    headers
}

/// The `x-gateway-*` headers of an answer (names and values); `wait_ms`: how long the request
/// waited for slots (its buckets' and its client's), said when it did.
pub fn gateway_headers<C: Choice>(
    requested: &str,
    served: &Candidate,
    planner: &Planner<C>,
    wait_ms: u64,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("x-gateway-requested-model", requested.to_string()),
        ("x-gateway-served-model", served.model.to_string()),
        ("x-gateway-upstream", served.upstream_id.to_string()),
        ("x-gateway-attempts", (planner.attempts() + 1).to_string()),
    ];
    if let Some(reason) = planner.fallback_reason() {
        headers.push(("x-gateway-fallback-reason", reason));
    }
    if wait_ms > 0 {
        headers.push(("x-gateway-wait-ms", wait_ms.to_string()));
    }
    headers
}
