//! The order in which a step's accounts are tried: by priority, then a weighted shuffle, so
//! load spreads by weight across requests and isolates.

/// Indices of `choices` ((priority, weight) each) in the order to try them: lower priority
/// first; within a priority, a weighted random order (Efraimidis-Spirakis: the smallest
/// `-ln(u) / weight` goes first, so a weight-3 account comes first three times as often).
pub fn weighted(choices: &[(u32, f64)], rng: &mut Rng) -> Vec<usize> {
    let mut keyed: Vec<(u32, f64, usize)> = choices
        .iter()
        .enumerate()
        .map(|(i, &(priority, weight))| {
            let u = rng.unit();
            (priority, -u.ln() / weight.max(f64::MIN_POSITIVE), i)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    keyed.into_iter().map(|(_, _, i)| i).collect()
}

/// A small seeded random source (xorshift64*): the planner stays pure and repeatable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A source seeded with `seed` (any value; zero is made odd).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// A uniform number in (0, 1].
    pub fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        (r as f64 + 1.0) / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_spread_first_choices_and_priority_beats_weight() {
        let mut rng = Rng::new(7);
        let firsts_b = (0..4_000)
            .filter(|_| weighted(&[(0, 1.0), (0, 3.0)], &mut rng)[0] == 1)
            .count();
        assert!((2_800..3_200).contains(&firsts_b), "{firsts_b}");
        for _ in 0..100 {
            assert_eq!(weighted(&[(1, 100.0), (0, 0.01)], &mut rng), [1, 0]);
        }
    }

    #[test]
    fn units_stay_in_range() {
        let mut rng = Rng::new(0);
        for _ in 0..10_000 {
            let u = rng.unit();
            assert!(u > 0.0 && u <= 1.0);
        }
    }
}
