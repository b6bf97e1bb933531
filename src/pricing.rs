//! Cost of a served request from the configured tiered price table.

use crate::config::Price;

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
}
