//! Cost of a served request from the configured tiered price table.

use crate::config::Price;
use crate::openai::Usage;

/// USD cost of one request: the whole request is billed at the tier its input tokens fall in.
pub fn cost_usd(price: &Price, prompt_tokens: u64, completion_tokens: u64) -> f64 {
    let tier = price
        .tiers
        .iter()
        .find(|t| t.up_to.is_none_or(|up| prompt_tokens <= up))
        .or(price.tiers.last());
    tier.map_or(0.0, |t| {
        (prompt_tokens as f64 * t.input + completion_tokens as f64 * t.output) / 1_000_000.0
    })
}

/// The cost of a served request in USD: its reported usage priced at the served model's
/// tiers; input the upstream did not report is taken from the gateway's estimate, output it
/// did not report counts as none. Zero for a model without a price.
pub fn served_cost_usd(price: Option<&Price>, usage: Usage, prompt_estimate: u64) -> f64 {
    price.map_or(0.0, |p| {
        let prompt = usage.prompt_tokens.unwrap_or(prompt_estimate);
        cost_usd(p, prompt, usage.completion_tokens.unwrap_or(0))
    })
}

/// USD in whole millionths, as the bucket counters add them.
pub fn micro_usd(usd: f64) -> u64 {
    (usd * 1e6).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PriceTier;

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
        assert_eq!(cost_usd(&Price { tiers: vec![] }, 10, 10), 0.0);
    }

    #[test]
    fn unreported_input_is_estimated_and_unpriced_models_cost_nothing() {
        let p = qwen3_max();
        let usage = |prompt, completion| Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
        };
        let reported = served_cost_usd(Some(&p), usage(Some(1_000), Some(100)), 7);
        assert_eq!(micro_usd(reported), 1_800);
        let estimated = served_cost_usd(Some(&p), usage(None, Some(100)), 1_000);
        assert_eq!(micro_usd(estimated), 1_800);
        assert_eq!(served_cost_usd(None, usage(Some(5), Some(5)), 5), 0.0);
    }
}
