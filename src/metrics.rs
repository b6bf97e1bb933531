//! The gateway's state in the Prometheus text format (version 0.0.4): counters and gauges per
//! bucket (`account`, `model`) and per client (`client`), rendered from the admin views.

use crate::access::meter::MeterView;
use crate::bucket::Snapshot;
use crate::window::Limits;
use std::fmt::Write;

/// One configured bucket and its live view (None: its Durable Object did not answer).
pub struct BucketRow<'a> {
    /// Account id.
    pub account: &'a str,
    /// Upstream model.
    pub model: &'a str,
    /// The configured limits.
    pub limits: &'a Limits,
    /// The live view.
    pub snapshot: Option<&'a Snapshot>,
}

/// One client with limits and its meter's view (None: it did not answer).
pub struct ClientRow<'a> {
    /// Client id.
    pub client: &'a str,
    /// The live view.
    pub view: Option<&'a MeterView>,
}

/// A metric family being written: its samples follow its HELP and TYPE lines.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        let _ = write!(self.out, "{}", self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn family<'a>(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out, name }
}

/// A label value as the format wants it: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition of every bucket and client.
pub fn render(buckets: &[BucketRow], clients: &[ClientRow]) -> String {
    let mut out = String::new();
    fn at<'a>(b: &BucketRow<'a>) -> [(&'static str, &'a str); 2] {
        [("account", b.account), ("model", b.model)]
    }
    let mut f = family(
        &mut out,
        "gateway_bucket_up",
        "gauge",
        "1 when the bucket's Durable Object answered.",
    );
    for b in buckets {
        f.sample(&at(b), f64::from(u8::from(b.snapshot.is_some())));
    }
    let live: Vec<(&BucketRow, &Snapshot)> = buckets
        .iter()
        .filter_map(|b| b.snapshot.map(|s| (b, s)))
        .collect();
    let mut f = family(
        &mut out,
        "gateway_bucket_requests_total",
        "counter",
        "Requests a bucket saw, by outcome: admitted (of which scheduled and credited), denied, \
         ok, failed (5xx, network), released, cancelled, rate_limited (upstream window 429s; \
         rate_limited_tokens: of which for a token limit), \
         burst (upstream surge 429s), parked (times parked).",
    );
    for (b, s) in &live {
        let c = &s.counters;
        for (outcome, n) in [
            ("admitted", c.admitted),
            ("scheduled", c.scheduled),
            ("credited", c.credited),
            ("denied", c.denied),
            ("ok", c.ok),
            ("failed", c.failed),
            ("released", c.released),
            ("cancelled", c.cancelled),
            ("rate_limited", c.rate_limited),
            ("rate_limited_tokens", c.rate_limited_tokens),
            ("burst", c.burst),
            ("parked", c.parked),
        ] {
            let [a, m] = at(b);
            f.sample(&[a, m, ("outcome", outcome)], n as f64);
        }
    }
    let mut f = family(
        &mut out,
        "gateway_bucket_tokens_total",
        "counter",
        "Tokens the upstream reported, by kind.",
    );
    for (b, s) in &live {
        let [a, m] = at(b);
        f.sample(&[a, m, ("kind", "prompt")], s.counters.prompt_tokens as f64);
        f.sample(
            &[a, m, ("kind", "completion")],
            s.counters.completion_tokens as f64,
        );
    }
    let mut f = family(
        &mut out,
        "gateway_bucket_cached_tokens_total",
        "counter",
        "Of the prompt tokens, those the upstream read from its prompt cache.",
    );
    for (b, s) in &live {
        f.sample(&at(b), s.counters.cached_tokens as f64);
    }
    let mut f = family(
        &mut out,
        "gateway_bucket_cost_usd_total",
        "counter",
        "Cost of the requests a bucket served, USD.",
    );
    for (b, s) in &live {
        f.sample(&at(b), s.counters.cost_micro_usd as f64 / 1e6);
    }
    let mut f = family(
        &mut out,
        "gateway_bucket_used",
        "gauge",
        "Requests and tokens in the current window, by window.",
    );
    for (b, s) in &live {
        let [a, m] = at(b);
        f.sample(&[a, m, ("window", "rpm")], s.used_minute.requests as f64);
        f.sample(&[a, m, ("window", "tpm")], s.used_minute.tokens as f64);
        f.sample(&[a, m, ("window", "rps")], s.used_second.requests as f64);
        f.sample(&[a, m, ("window", "tps")], s.used_second.tokens as f64);
    }
    let mut f = family(
        &mut out,
        "gateway_bucket_limit",
        "gauge",
        "The configured limits, by window.",
    );
    for b in buckets {
        let [a, m] = at(b);
        let l = b.limits;
        for (window, limit) in [
            ("rpm", l.rpm),
            ("rps", l.rps),
            ("tpm", l.tpm),
            ("tps", l.tps),
        ] {
            if let Some(limit) = limit {
                f.sample(&[a, m, ("window", window)], limit as f64);
            }
        }
    }
    let mut f = family(
        &mut out,
        "gateway_bucket_parked",
        "gauge",
        "1 while the bucket is parked (see its admin view for why).",
    );
    for (b, s) in &live {
        f.sample(&at(b), f64::from(u8::from(s.parked.is_some())));
    }
    let mut f = family(
        &mut out,
        "gateway_bucket_cooling",
        "gauge",
        "1 while the bucket cools down after a 429.",
    );
    for (b, s) in &live {
        f.sample(&at(b), f64::from(u8::from(s.cooling_until_ms.is_some())));
    }
    let mut f = family(
        &mut out,
        "gateway_bucket_in_flight",
        "gauge",
        "Requests admitted and not yet settled.",
    );
    for (b, s) in &live {
        f.sample(&at(b), s.in_flight as f64);
    }
    let mut f = family(
        &mut out,
        "gateway_bucket_rate_factor",
        "gauge",
        "Share of the full send rate allowed now (slow start, surge hold).",
    );
    for (b, s) in &live {
        f.sample(&at(b), s.rate_factor);
    }
    let mut f = family(
        &mut out,
        "gateway_client_up",
        "gauge",
        "1 when the client's meter answered.",
    );
    for c in clients {
        f.sample(
            &[("client", c.client)],
            f64::from(u8::from(c.view.is_some())),
        );
    }
    let live: Vec<(&str, &MeterView)> = clients
        .iter()
        .filter_map(|c| c.view.map(|v| (c.client, v)))
        .collect();
    let mut f = family(
        &mut out,
        "gateway_client_requests_total",
        "counter",
        "A client's requests, by outcome: admitted, rate_limited (its own RPM/TPM), over_budget.",
    );
    for (client, v) in &live {
        for (outcome, n) in [
            ("admitted", v.totals.admitted),
            ("rate_limited", v.totals.rate_limited),
            ("over_budget", v.totals.over_budget),
        ] {
            f.sample(&[("client", client), ("outcome", outcome)], n as f64);
        }
    }
    let mut f = family(
        &mut out,
        "gateway_client_scheduled_total",
        "counter",
        "Of a client's admitted requests, those that waited for room in its own RPM/TPM.",
    );
    for (client, v) in &live {
        f.sample(&[("client", client)], v.totals.scheduled as f64);
    }
    let mut f = family(
        &mut out,
        "gateway_client_tokens_total",
        "counter",
        "Tokens a client's requests used.",
    );
    for (client, v) in &live {
        f.sample(&[("client", client)], v.totals.tokens as f64);
    }
    let mut f = family(
        &mut out,
        "gateway_client_cost_usd_total",
        "counter",
        "What a client's requests cost, USD.",
    );
    for (client, v) in &live {
        f.sample(&[("client", client)], v.totals.micro_usd as f64 / 1e6);
    }
    let mut f = family(&mut out, "gateway_client_used", "gauge", "A client's use of its limits, by period: minute requests and tokens, day tokens, month USD.");
    for (client, v) in &live {
        for (period, n) in [
            ("minute_requests", v.minute_requests as f64),
            ("minute_tokens", v.minute_tokens as f64),
            ("day_tokens", v.day_tokens as f64),
            ("month_usd", v.month_usd),
        ] {
            f.sample(&[("client", client), ("period", period)], n);
        }
    }
    out
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
