//! The admin views of the whole gateway: every bucket's and every metered client's live
//! state at once, `/admin/metrics` rendered from them, and one bucket's `/admin/report`.

use crate::access::meter::{MeterOp, MeterReply, MeterView};
use crate::bucket::Snapshot;
use crate::config::{Candidate, Config};
use crate::glue::bucket::Bucket;
use crate::glue::meter::MeterRef;
use crate::glue::respond;
use crate::history;
use crate::metrics::{self, BucketRow, ClientRow};
use crate::openai::ApiError;
use crate::protocol::{Op, Reply};
use crate::report;
use crate::routes;
use futures_util::future::join_all;
use worker::{web_sys, Env, Headers, Response};

/// Every configured bucket with its live view (None: its object did not answer in time),
/// asked all at once.
pub async fn buckets<'a>(env: &Env, config: &'a Config) -> Vec<(Candidate<'a>, Option<Snapshot>)> {
    let candidates: Vec<Candidate> = config
        .accounts
        .iter()
        .flat_map(|(id, a)| a.limits.keys().filter_map(|m| config.candidate(id, m)))
        .collect();
    let asks = candidates.iter().map(|c| async {
        let bucket = Bucket::of(c, config);
        match bucket.call(env, Op::Snapshot, bucket.timeout_ms).await {
            Ok(Reply::State { state, .. }) => Some(state),
            _ => None,
        }
    });
    let views = join_all(asks).await;
    candidates.into_iter().zip(views).collect()
}

/// Every client with limits and its meter's view, asked all at once.
pub async fn clients(env: &Env, config: &Config) -> Vec<(String, Option<MeterView>)> {
    let metered: Vec<MeterRef> = config
        .clients
        .keys()
        .filter_map(|id| MeterRef::named(config, id, None))
        .filter(|m| !m.is_unlimited())
        .collect();
    let asks = metered.iter().map(|m| async {
        match m.call(env, MeterOp::View).await {
            Ok(MeterReply::View(view)) => Some(view),
            _ => None,
        }
    });
    let views = join_all(asks).await;
    metered
        .iter()
        .map(|m| m.client.clone())
        .zip(views)
        .collect()
}

/// `GET /admin/metrics`: the Prometheus text exposition.
pub async fn metrics(env: &Env, config: &Config) -> Result<Response, ApiError> {
    let (buckets, clients) =
        futures_util::future::join(buckets(env, config), clients(env, config)).await;
    let bucket_rows: Vec<BucketRow> = buckets
        .iter()
        .map(|(c, s)| BucketRow {
            account: c.account,
            model: c.model,
            limits: c.limits,
            snapshot: s.as_ref(),
        })
        .collect();
    let client_rows: Vec<ClientRow> = clients
        .iter()
        .map(|(id, v)| ClientRow {
            client: id,
            view: v.as_ref(),
        })
        .collect();
    let text = metrics::render(&bucket_rows, &client_rows);
    let headers = Headers::new();
    crate::glue::respond::set_header(
        &headers,
        "content-type",
        "text/plain; version=0.0.4; charset=utf-8",
    );
    crate::glue::respond::bytes(200, text.into_bytes(), headers)
}

/// `GET /admin/report?account=&model=&days=` (default 7, at most 90): one bucket's daily
/// evidence; or `?client=[&user=]&days=`: one client's (or user's) daily usage. JSON, or CSV
/// with `format=csv` or `Accept: text/csv`.
pub async fn report(
    req: &web_sys::Request,
    env: &Env,
    config: &Config,
) -> Result<Response, ApiError> {
    // The raw URL, not a parsed `Url`: parsing pulls in IDNA tables (about 100 KB of gzip wasm).
    let url = req.url();
    let param = |name: &str| routes::query_param(&url, name);
    let days = match param("days").as_deref().map(str::parse::<u64>) {
        None => 7,
        Some(Ok(d)) if (1..=history::DAYS_KEPT).contains(&d) => d,
        Some(_) => {
            return Err(ApiError::invalid_request(
                "days: a whole number from 1 to 90.",
                Some("days"),
            ))
        }
    };
    let now = crate::glue::now_ms();
    let wants_csv = param("format").as_deref() == Some("csv")
        || req
            .headers()
            .get("accept")
            .ok()
            .flatten()
            .is_some_and(|a| a.contains("text/csv"));
    let (name, body, csv) = if let Some(client) = param("client") {
        let user = param("user");
        let meter = MeterRef::named(config, &client, user.as_deref())
            .ok_or_else(|| ApiError::client_not_found(&client))?;
        let Ok(MeterReply::History {
            minutes,
            days: stored,
        }) = meter.call(env, MeterOp::History { minutes_from: 0 }).await
        else {
            return Err(unavailable(&meter.whose));
        };
        let rows = report::client_days(&stored, &minutes, now, days);
        let csv = report::csv(&report::CLIENT_COLUMNS, &rows);
        let body = serde_json::json!({ "client": client, "user": user, "days": rows });
        (format!("{client}-{}", user.unwrap_or_default()), body, csv)
    } else {
        let (Some(account), Some(model)) = (param("account"), param("model")) else {
            return Err(ApiError::invalid_request(
                "The report needs ?account=<account id>&model=<upstream model>, or ?client=<client id>[&user=<sub>] (and optionally days=1..90, format=csv).",
                Some("account"),
            ));
        };
        let candidate = config
            .candidate(&account, &model)
            .ok_or_else(|| ApiError::bucket_not_found(&account, &model))?;
        let bucket = Bucket::of(&candidate, config);
        let Ok(Reply::History {
            minutes,
            days: stored,
        }) = bucket
            .call(env, Op::History { minutes_from: 0 }, bucket.timeout_ms)
            .await
        else {
            return Err(unavailable(&format!("the bucket {account}/{model}")));
        };
        let rows = report::days(&stored, &minutes, candidate.limits, now, days);
        let csv = report::csv(&report::DAY_COLUMNS, &rows);
        let body = serde_json::json!({ "account": account, "model": model, "limits": candidate.limits, "days": rows });
        (format!("{account}-{model}"), body, csv)
    };
    if !wants_csv {
        return respond::json(200, body.to_string());
    }
    let headers = Headers::new();
    respond::set_header(&headers, "content-type", "text/csv; charset=utf-8");
    let file = format!(
        "attachment; filename=\"report-{}.csv\"",
        name.replace(['/', '"', '\\'], "_")
    );
    respond::set_header(&headers, "content-disposition", &file);
    respond::bytes(200, csv.into_bytes(), headers)
}

fn unavailable(whose: &str) -> ApiError {
    ApiError::store_unavailable(&format!("The history of {whose} did not come in time"))
}

/// `GET /admin/`: the dashboard (one page, no external resources; it reads `/admin/state`).
pub fn dashboard() -> Result<Response, ApiError> {
    let headers = Headers::new();
    respond::set_header(&headers, "content-type", "text/html; charset=utf-8");
    respond::set_header(&headers, "cache-control", "no-store");
    respond::set_header(
        &headers,
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
    );
    respond::bytes(200, include_bytes!("dashboard.html").to_vec(), headers)
}

/// Minutes the dashboard's chart shows.
const CHART_MINUTES: u64 = 60;

/// `GET /admin/state`: what the dashboard shows: every bucket and metered client now, the
/// requests served per minute by model over the last hour, and whether alerts are sent.
pub async fn state(env: &Env, config: &Config) -> Result<Response, ApiError> {
    let now = crate::glue::now_ms();
    let this_minute = now / 60_000;
    let first = this_minute + 1 - CHART_MINUTES;
    let (buckets, clients) =
        futures_util::future::join(buckets(env, config), clients(env, config)).await;
    let histories = join_all(buckets.iter().map(|(c, _)| async {
        let bucket = Bucket::of(c, config);
        match bucket
            .call(
                env,
                Op::History {
                    minutes_from: first,
                },
                bucket.timeout_ms,
            )
            .await
        {
            Ok(Reply::History { minutes, .. }) => minutes,
            _ => Vec::new(),
        }
    }))
    .await;
    let mut by_model: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
    for ((c, _), minutes) in buckets.iter().zip(&histories) {
        let counts = by_model
            .entry(c.model)
            .or_insert_with(|| vec![0; CHART_MINUTES as usize]);
        for (m, rollup) in minutes {
            if let Some(slot) = m
                .checked_sub(first)
                .and_then(|i| counts.get_mut(i as usize))
            {
                *slot += rollup.ok;
            }
        }
    }
    let unset = crate::glue::unset_keys();
    let unset_of = |account: &str| {
        let of = unset.iter().filter(|(a, _)| a == account);
        of.map(|(_, key)| key).collect::<Vec<_>>()
    };
    let body = serde_json::json!({
        "now_ms": now,
        "alerts": env.secret(crate::glue::alert::SECRET).is_ok(),
        "buckets": buckets.iter().map(|(c, s)| serde_json::json!({
            "account": c.account, "model": c.model, "limits": c.limits, "state": s,
            "unset_keys": unset_of(c.account), "keys_set": c.settings.keys.len(),
        })).collect::<Vec<_>>(),
        "clients": clients.iter().map(|(id, v)| serde_json::json!({"client": id, "usage": v})).collect::<Vec<_>>(),
        "served_by_model": {
            "minutes": (first..=this_minute).map(|m| m * 60_000).collect::<Vec<_>>(),
            "models": by_model,
        },
    });
    respond::json(200, body.to_string())
}
