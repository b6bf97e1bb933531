//! What an operator is told at once, by webhook, when the gateway starts (or stops) working
//! around something only a person can fix: an account parked, a key refused, clients refused
//! for want of capacity or failed for want of a key set, a client's budget running low or
//! spent.
//!
//! The gateway hides these from apps by design (it rotates and downgrades), so without a word
//! an operator would learn of an unpaid bill from the month's report. Each alert is one JSON
//! payload: Slack's `text` (a sentence saying what happened, what it means for requests and
//! what to do), and the same facts as fields for any other receiver. Pure: which changes are
//! alerts and what they say; the Durable Object that saw the change sends it (`glue::alert`).

use crate::access::meter::{BudgetNews, Level};
use crate::calendar::iso_time;
use serde::Serialize;
use serde_json::{Number, Value};

/// One alert: its event's name (for the log) and its JSON body, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// `bucket_parked`, `bucket_unparked`, `bucket_key_refused`, `clients_refused`,
    /// `clients_failed_no_key`,
    /// `budget_low`, `budget_spent`, or `test`.
    pub event: &'static str,
    /// The payload.
    pub body: String,
}

/// The payload: Slack's `text`, and the facts of its event.
#[derive(Serialize)]
struct Body<'a> {
    text: String,
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    used: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<Number>,
    until: Option<String>,
    at: String,
}

impl Body<'_> {
    fn alert(self, event: &'static str) -> Alert {
        // Strings and numbers only: serialising cannot fail.
        let body = serde_json::to_string(&self).unwrap_or_default();
        Alert { event, body }
    }
}

/// The alert for a bucket's state change (an event of `bucket::Marks::changes_since`), if it
/// is one an operator must hear of: a park (a bill, a free quota used up, every key refused,
/// a model the account may not call) and its end, a key the upstream refused (no longer
/// used), clients refused for want of capacity and clients answered 500 for want of a key
/// set (each at most once an hour). Cooldowns and surge holds pass by themselves, and are
/// not.
pub fn of_bucket(bucket: &str, event: &str, details: &Value, now_ms: u64) -> Option<Alert> {
    let (account, model) = bucket.split_once(':')?;
    // A whole account's park is told once, by the bucket that learned it, of the account.
    let of = details.get("of").and_then(Value::as_str);
    if of == Some("account_heard") {
        return None;
    }
    let whole = of == Some("account");
    let clear = match whole {
        true => format!("POST /admin/accounts/{account}/clear"),
        false => format!("POST /admin/buckets/{account}/{model}/clear"),
    };
    // The secrets an event names (a refused key, those to set).
    let names: Vec<&str> = (details.get("keys").and_then(Value::as_array))
        .map_or_else(Vec::new, |k| k.iter().filter_map(Value::as_str).collect());
    let (event, text, reason, until) = match event {
        "bucket_parked" => {
            let reason = details
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            let until = details
                .get("until_ms")
                .and_then(Value::as_u64)
                .map(iso_time);
            let what = match whole {
                true => format!(
                    "{account} is parked ({reason}), every model of it (learned on {model}),"
                ),
                false => format!("{account}/{model} is parked ({reason})"),
            };
            let text = match &until {
                None => format!(
                    "{what} until an operator clears it: its requests go to other accounts or down the model chain. Fix the account, then {clear}."
                ),
                Some(t) => format!(
                    "{what} until {t}, then tried with one request: meanwhile its requests go to other accounts or down the model chain. If the account is fixed sooner: {clear}."
                ),
            };
            ("bucket_parked", text, Some(reason), until)
        }
        "bucket_unparked" => {
            let reason = details
                .get("was")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            let text = match whole {
                true => format!("{account}/{model} is back in rotation (it was parked with its whole account: {reason}); the account's other models come back as each is next tried or cleared."),
                false => format!("{account}/{model} is back in rotation (it was parked: {reason})."),
            };
            ("bucket_unparked", text, Some(reason), None)
        }
        "bucket_key_refused" => {
            let text = format!(
                "{account}/{model}: the upstream refused the key in {} (invalid, revoked, or of another region), so it is no longer used; the account's other keys serve. Put a valid key in that secret (`wrangler secret put`), then {clear}.",
                names.join(", ")
            );
            ("bucket_key_refused", text, None, None)
        }
        "clients_failed_no_key" => {
            let text = format!(
                "clients are answered 500: requests whose first choice is {account}/{model} found no account of their chain with a key set, the secrets {} not being set in this deployment. Set them (`wrangler secret put <NAME>`; each put deploys). (Told at most once an hour.)",
                names.join(", ")
            );
            ("clients_failed_no_key", text, None, None)
        }
        "clients_refused" => {
            let text = format!(
                "clients are being refused (429) for want of capacity: requests whose first choice is {account}/{model} found no account or model of their chain with room within their wait. Add accounts, or raise limits or waits; the numbers: GET /admin/report?account={account}&model={model}. (Told at most once an hour.)"
            );
            ("clients_refused", text, None, None)
        }
        _ => return None,
    };
    Body {
        text: format!("edge-gateway: {text}"),
        event,
        account: Some(account),
        model: Some(model),
        reason,
        keys: details.get("keys").is_some().then_some(names),
        client: None,
        budget: None,
        used: None,
        limit: None,
        until,
        at: iso_time(now_ms),
    }
    .alert(event)
    .into()
}

/// The alert for a client's budget running low or spent (`news`, of its own meter; its users'
/// budgets are theirs and alert nobody).
pub fn of_budget(client: &str, news: &BudgetNews, now_ms: u64) -> Option<Alert> {
    let (which, until) = (news.which, iso_time(news.until_ms));
    let (what, used, limit) = match which {
        "daily_tokens" => (
            format!(
                "daily token budget ({} of {} tokens)",
                news.used, news.limit
            ),
            Number::from(news.used),
            Number::from(news.limit),
        ),
        _ => {
            let (used, limit) = (news.used as f64 / 1e6, news.limit as f64 / 1e6);
            let what = format!("monthly budget (${used:.2} of ${limit:.2})");
            (what, Number::from_f64(used)?, Number::from_f64(limit)?)
        }
    };
    let (event, text) = match news.level {
        Level::Spent => (
            "budget_spent",
            format!("has spent its {what}: its requests are refused (429 insufficient_quota) until {until}. To serve it sooner, raise `{which}` or POST /admin/clients/{client}/reset."),
        ),
        Level::Low => {
            let share = (news.used.saturating_mul(100) / news.limit.max(1)).min(100);
            let text = format!("has used {share} % of its {what}: once it is spent, its requests are refused (429 insufficient_quota) until {until}. Raise `{which}` if that is too soon.");
            ("budget_low", text)
        }
        Level::Room => return None,
    };
    Body {
        text: format!("edge-gateway: client {client} {text}"),
        event,
        account: None,
        model: None,
        reason: None,
        keys: None,
        client: Some(client),
        budget: Some(which),
        used: Some(used),
        limit: Some(limit),
        until: Some(until),
        at: iso_time(now_ms),
    }
    .alert(event)
    .into()
}

/// A test alert, asked for by an operator (`POST /admin/alerts/test`) to see the webhook work.
pub fn test(now_ms: u64) -> Alert {
    Body {
        text: "edge-gateway: a test alert, asked for with POST /admin/alerts/test: this webhook receives the gateway's alerts.".into(),
        event: "test",
        account: None,
        model: None,
        reason: None,
        keys: None,
        client: None,
        budget: None,
        used: None,
        limit: None,
        until: None,
        at: iso_time(now_ms),
    }
    .alert("test")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_795_996_800_000; // 2026-11-30T00:00:00Z

    fn of_bucket(bucket: &str, event: &str, details: &Value, now_ms: u64) -> Option<Value> {
        let alert = super::of_bucket(bucket, event, details, now_ms)?;
        let body: Value = serde_json::from_str(&alert.body).unwrap();
        assert_eq!(body["event"], alert.event);
        Some(body)
    }

    fn of_budget(client: &str, news: BudgetNews) -> Option<Value> {
        let alert = super::of_budget(client, &news, NOW)?;
        let body: Value = serde_json::from_str(&alert.body).unwrap();
        assert_eq!(body["event"], alert.event);
        Some(body)
    }

    #[test]
    fn a_park_until_cleared_says_how_to_clear_it() {
        let details = json!({"reason": "Arrearage", "until_ms": null});
        let alert = of_bucket("acct-a:qwen3-max", "bucket_parked", &details, NOW).unwrap();
        let text = alert["text"].as_str().unwrap();
        assert!(
            text.starts_with(
                "edge-gateway: acct-a/qwen3-max is parked (Arrearage) until an operator clears it"
            ),
            "{text}"
        );
        assert!(
            text.contains("POST /admin/buckets/acct-a/qwen3-max/clear"),
            "{text}"
        );
        assert_eq!(
            (&alert["event"], &alert["account"], &alert["model"]),
            (
                &json!("bucket_parked"),
                &json!("acct-a"),
                &json!("qwen3-max")
            )
        );
        assert_eq!(alert["until"], Value::Null);
        assert_eq!(alert["at"], "2026-11-30T00:00:00Z");
    }

    #[test]
    fn a_timed_park_says_when_it_is_tried_again() {
        let details = json!({"reason": "insufficient_quota", "until_ms": NOW + 3_600_000});
        let alert = of_bucket("relay:openai/gpt-4o", "bucket_parked", &details, NOW).unwrap();
        assert_eq!(alert["until"], "2026-11-30T01:00:00Z");
        assert_eq!(
            alert["model"], "openai/gpt-4o",
            "a model's own `:`-free name kept whole"
        );
        let text = alert["text"].as_str().unwrap();
        assert!(
            text.contains("until 2026-11-30T01:00:00Z, then tried with one request"),
            "{text}"
        );
    }

    #[test]
    fn an_unpark_is_told_and_passing_states_are_not() {
        let back = of_bucket(
            "acct-a:qwen3-max",
            "bucket_unparked",
            &json!({"was": "Arrearage"}),
            NOW,
        );
        let text = back.unwrap()["text"].as_str().unwrap().to_string();
        assert_eq!(
            text,
            "edge-gateway: acct-a/qwen3-max is back in rotation (it was parked: Arrearage)."
        );
        for event in ["bucket_cooling", "bucket_cooled", "bucket_ramp"] {
            assert_eq!(
                of_bucket("acct-a:qwen3-max", event, &json!({}), NOW),
                None,
                "{event}"
            );
        }
        assert_eq!(
            of_bucket("no-colon", "bucket_parked", &json!({}), NOW),
            None
        );
        let test: Value = serde_json::from_str(&test(NOW).body).unwrap();
        assert_eq!(test["event"], "test");
        assert_eq!(test["at"], "2026-11-30T00:00:00Z");
    }

    #[test]
    fn an_accounts_park_is_told_once_of_the_account() {
        let details = json!({"reason": "Arrearage", "until_ms": NOW + 60_000, "of": "account"});
        let alert = of_bucket("acct-a:qwen3-max", "bucket_parked", &details, NOW).unwrap();
        let text = alert["text"].as_str().unwrap();
        let says = "acct-a is parked (Arrearage), every model of it (learned on qwen3-max), until";
        assert!(text.contains(says), "{text}");
        assert!(text.contains("POST /admin/accounts/acct-a/clear"), "{text}");
        let back = json!({"was": "Arrearage", "of": "account"});
        let alert = of_bucket("acct-a:qwen3-max", "bucket_unparked", &back, NOW).unwrap();
        let text = alert["text"].as_str().unwrap();
        assert!(text.contains("parked with its whole account"), "{text}");
        // Its other buckets, parked on that bucket's word, tell nothing, coming or going.
        for (event, details) in [
            (
                "bucket_parked",
                json!({"reason": "Arrearage", "of": "account_heard"}),
            ),
            (
                "bucket_unparked",
                json!({"was": "Arrearage", "of": "account_heard"}),
            ),
        ] {
            assert_eq!(
                of_bucket("acct-a:qwen-plus", event, &details, NOW),
                None,
                "{event}"
            );
        }
    }

    #[test]
    fn clients_refused_point_at_the_report() {
        let alert = of_bucket("acct-a:qwen3-max", "clients_refused", &json!({}), NOW).unwrap();
        let text = alert["text"].as_str().unwrap();
        assert!(
            text.starts_with("edge-gateway: clients are being refused (429)"),
            "{text}"
        );
        assert!(
            text.contains("GET /admin/report?account=acct-a&model=qwen3-max"),
            "{text}"
        );
        assert_eq!(
            (&alert["account"], &alert["model"]),
            (&json!("acct-a"), &json!("qwen3-max"))
        );
    }

    #[test]
    fn clients_failed_for_want_of_a_key_name_the_secrets_to_set() {
        let details = json!({"keys": ["DASHSCOPE_KEY_A", "DASHSCOPE_KEY_B"]});
        let alert = of_bucket("acct-a:qwen3-max", "clients_failed_no_key", &details, NOW);
        let alert = alert.unwrap();
        let text = alert["text"].as_str().unwrap();
        assert!(
            text.starts_with("edge-gateway: clients are answered 500")
                && text.contains("the secrets DASHSCOPE_KEY_A, DASHSCOPE_KEY_B not being set")
                && text.contains("wrangler secret put"),
            "{text}"
        );
        assert_eq!(alert["keys"], json!(["DASHSCOPE_KEY_A", "DASHSCOPE_KEY_B"]));
    }

    #[test]
    fn a_refused_key_is_named_by_its_secret() {
        let details = json!({"keys": ["DASHSCOPE_KEY_A2"]});
        let alert = of_bucket("acct-a:qwen3-max", "bucket_key_refused", &details, NOW).unwrap();
        assert_eq!(alert["keys"], json!(["DASHSCOPE_KEY_A2"]));
        assert_eq!(alert.get("reason"), None);
        let text = alert["text"].as_str().unwrap();
        assert!(
            text.contains("refused the key in DASHSCOPE_KEY_A2"),
            "{text}"
        );
        assert!(
            text.contains("POST /admin/buckets/acct-a/qwen3-max/clear"),
            "{text}"
        );
    }

    #[test]
    fn a_budget_low_or_spent_names_its_client_its_use_and_its_end() {
        let news = |which, level, used, limit| BudgetNews {
            which,
            level,
            used,
            limit,
            until_ms: NOW + 86_400_000,
        };
        let alert = of_budget("web-app", news("daily_tokens", Level::Spent, 990, 1_000)).unwrap();
        assert_eq!(alert["event"], "budget_spent");
        assert_eq!(
            (&alert["used"], &alert["limit"]),
            (&json!(990), &json!(1_000))
        );
        assert_eq!(alert["until"], "2026-12-01T00:00:00Z");
        let text = alert["text"].as_str().unwrap();
        let says = "client web-app has spent its daily token budget (990 of 1000 tokens)";
        assert!(text.contains(says), "{text}");
        assert!(text.contains("POST /admin/clients/web-app/reset"), "{text}");
        let monthly = news("monthly_usd", Level::Low, 170_000_000, 200_000_000);
        let alert = of_budget("web-app", monthly).unwrap();
        assert_eq!(alert["event"], "budget_low");
        assert_eq!(
            (&alert["budget"], &alert["limit"]),
            (&json!("monthly_usd"), &json!(200.0))
        );
        let text = alert["text"].as_str().unwrap();
        let says = "client web-app has used 85 % of its monthly budget ($170.00 of $200.00)";
        assert!(text.contains(says), "{text}");
        assert_eq!(
            of_budget("web-app", news("daily_tokens", Level::Room, 1, 10)),
            None
        );
    }
}
