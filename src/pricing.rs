//! Cost of a served request from the configured tiered price table.

use crate::config::Price;
use crate::openai::Usage;

/// The cost of a served request in USD: its reported usage priced at the served model's
/// tiers; input the upstream did not report is taken from the gateway's estimate, output it
/// did not report counts as none. Input read from the upstream's prompt cache costs the
/// price's cache share of the input price (the explicit cache's share when it was explicit),
/// input written to an explicit cache its write share; the tier is chosen by all the input.
/// Zero for a model without a price.
pub fn served_cost_usd(price: Option<&Price>, usage: Usage, prompt_estimate: u64) -> f64 {
    let Some(price) = price else {
        return 0.0;
    };
    let prompt = usage.prompt_tokens.unwrap_or(prompt_estimate);
    let tier = price
        .tiers
        .iter()
        .find(|t| t.up_to.is_none_or(|up| prompt <= up))
        .or(price.tiers.last());
    let Some(tier) = tier else {
        return 0.0;
    };
    let cache = &price.cache;
    let hit = match usage.explicit_cache {
        true => cache.explicit_hit.unwrap_or(cache.hit),
        false => cache.hit,
    };
    // Usage keeps the cached and written counts within the input.
    let plain = prompt.saturating_sub(usage.cached_tokens + usage.cache_write_tokens);
    let input = plain as f64
        + usage.cached_tokens as f64 * hit
        + usage.cache_write_tokens as f64 * cache.write;
    let output = usage.completion_tokens.unwrap_or(0) as f64;
    (input * tier.input + output * tier.output) / 1_000_000.0
}

/// USD in whole millionths, as the bucket counters add them.
pub fn micro_usd(usd: f64) -> u64 {
    (usd * 1e6).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CacheShares, PriceTier};

    /// A request's cost with no cache: the whole request billed at its input's tier.
    fn cost_usd(price: &Price, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        let usage = Usage {
            prompt_tokens: Some(prompt_tokens),
            completion_tokens: Some(completion_tokens),
            ..Usage::default()
        };
        served_cost_usd(Some(price), usage, prompt_tokens)
    }

    fn qwen3_max() -> Price {
        let tier = |up_to, input, output| PriceTier {
            up_to,
            input,
            output,
        };
        Price {
            tiers: vec![
                tier(Some(32_000), 1.2, 6.0),
                tier(Some(128_000), 2.4, 12.0),
                tier(Some(252_000), 3.0, 15.0),
            ],
            cache: CacheShares::default(),
        }
    }

    #[test]
    fn bills_the_whole_request_at_its_tier() {
        let p = qwen3_max();
        // The seed's example: 10M tokens a month, half in, half out, all in the first tier = $36.
        assert!((cost_usd(&p, 5_000_000 / 1000, 5_000_000 / 1000) * 1000.0 - 36.0).abs() < 1e-9);
        assert!((cost_usd(&p, 32_000, 1_000) - (0.0384 + 0.006)).abs() < 1e-12);
        assert!((cost_usd(&p, 32_001, 1_000) - (32_001.0 * 2.4 + 12_000.0) / 1e6).abs() < 1e-12);
        // Beyond the last bounded tier, the last tier applies rather than nothing.
        assert!(cost_usd(&p, 300_000, 0) > 0.0);
        let no_tiers = Price {
            tiers: vec![],
            cache: CacheShares::default(),
        };
        assert_eq!(cost_usd(&no_tiers, 10, 10), 0.0);
    }

    #[test]
    fn unreported_input_is_estimated_and_unpriced_models_cost_nothing() {
        let p = qwen3_max();
        let usage = |prompt, completion| Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            ..Usage::default()
        };
        let reported = served_cost_usd(Some(&p), usage(Some(1_000), Some(100)), 7);
        assert_eq!(micro_usd(reported), 1_800);
        let estimated = served_cost_usd(Some(&p), usage(None, Some(100)), 1_000);
        assert_eq!(micro_usd(estimated), 1_800);
        assert_eq!(served_cost_usd(None, usage(Some(5), Some(5)), 5), 0.0);
    }

    /// DashScope's rates (Model Studio, "Context cache"): implicit hits 20 % of the input
    /// price, explicit (and session) hits 10 %, explicit cache writes 125 %.
    fn with_dashscope_cache(mut p: Price) -> Price {
        p.cache = CacheShares {
            hit: 0.2,
            explicit_hit: Some(0.1),
            write: 1.25,
        };
        p
    }

    #[test]
    fn cached_input_costs_its_share_and_the_tier_counts_all_input() {
        let p = with_dashscope_cache(qwen3_max());
        // DashScope's own example: 3,019 input tokens of which 2,048 from the implicit cache.
        let body = br#"{"usage":{"prompt_tokens":3019,"completion_tokens":104,"total_tokens":3123,
            "prompt_tokens_details":{"cached_tokens":2048}}}"#;
        let usage = Usage::of_body(body).unwrap();
        let expected = ((3019.0 - 2048.0) * 1.2 + 2048.0 * 1.2 * 0.2 + 104.0 * 6.0) / 1e6;
        assert!((served_cost_usd(Some(&p), usage, 0) - expected).abs() < 1e-12);
        // An explicit cache: 29,713 of 29,719 written (125 %), then hits at 10 %; the tier
        // is the second one (all input counts), as the upstream bills it.
        let write = br#"{"usage":{"prompt_tokens":29719,"completion_tokens":435,
            "prompt_tokens_details":{"text_tokens":29719,"cache_creation":{"ephemeral_5m_input_tokens":29713},
            "cache_creation_input_tokens":29713,"cache_type":"ephemeral","cached_tokens":0}}}"#;
        let usage = Usage::of_body(write).unwrap();
        let expected = (6.0 * 1.2 + 29_713.0 * 1.2 * 1.25 + 435.0 * 6.0) / 1e6;
        assert!((served_cost_usd(Some(&p), usage, 0) - expected).abs() < 1e-12);
        let hit = br#"{"usage":{"prompt_tokens":40000,"completion_tokens":0,
            "prompt_tokens_details":{"cache_type":"ephemeral","cached_tokens":29713}}}"#;
        let usage = Usage::of_body(hit).unwrap();
        let expected = ((40_000.0 - 29_713.0) * 2.4 + 29_713.0 * 2.4 * 0.1) / 1e6;
        assert!((served_cost_usd(Some(&p), usage, 0) - expected).abs() < 1e-12);
        // The Responses API's names.
        let responses =
            br#"{"usage":{"input_tokens":1524,"input_tokens_details":{"cached_tokens":1305},
            "output_tokens":1534,"total_tokens":3058}}"#;
        let usage = Usage::of_body(responses).unwrap();
        assert_eq!((usage.cached_tokens, usage.explicit_cache), (1305, false));
    }

    #[test]
    fn without_cache_shares_cached_input_costs_as_input() {
        let p = qwen3_max();
        let body = br#"{"usage":{"prompt_tokens":3019,"completion_tokens":104,
            "prompt_tokens_details":{"cached_tokens":2048,"cache_creation_input_tokens":500}}}"#;
        let usage = Usage::of_body(body).unwrap();
        assert_eq!(served_cost_usd(Some(&p), usage, 0), cost_usd(&p, 3019, 104));
    }

    #[test]
    fn cache_counts_never_exceed_the_input() {
        let p = with_dashscope_cache(qwen3_max());
        // A relay's odd counts: more cached and written than the input itself.
        let body = br#"{"usage":{"prompt_tokens":100,"completion_tokens":0,
            "prompt_tokens_details":{"cached_tokens":90,"cache_creation_input_tokens":50}}}"#;
        let usage = Usage::of_body(body).unwrap();
        assert_eq!((usage.cached_tokens, usage.cache_write_tokens), (90, 10));
        let huge =
            br#"{"usage":{"prompt_tokens":100,"prompt_tokens_details":{"cached_tokens":1000}}}"#;
        let usage = Usage::of_body(huge).unwrap();
        assert_eq!(usage.cached_tokens, 100);
        let expected = 100.0 * 1.2 * 0.2 / 1e6;
        assert!((served_cost_usd(Some(&p), usage, 0) - expected).abs() < 1e-15);
        // No reported input: nothing is taken as cached.
        let none =
            br#"{"usage":{"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":7}}}"#;
        assert_eq!(Usage::of_body(none).unwrap().cached_tokens, 0);
    }
}
