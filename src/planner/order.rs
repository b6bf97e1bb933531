//! The order in which a step's accounts are tried: by priority, then a weighted shuffle, so
//! load spreads by weight (and by the room each has left) across requests and isolates. A
//! request with a cache key (`crate::cache_key`) draws from the key instead of at random
//! (weighted rendezvous hashing), so a conversation's turns go to the same account while it
//! has room, and conversations still spread by weight and room.

/// However full a bucket said it was, it keeps this share of its weight: the answer may be
/// stale, and a bucket with no room denies at once.
const MIN_HEADROOM: f64 = 0.05;

/// An account's weight scaled by the room its bucket last said it had left, so among equal
/// priorities load goes where there is room before any account fills (unknown: full room).
pub fn by_headroom(weight: f64, headroom: Option<f64>) -> f64 {
    let share = headroom.filter(|h| h.is_finite()).unwrap_or(1.0);
    weight * share.clamp(MIN_HEADROOM, 1.0)
}

/// Indices of `choices` ((priority, weight) each) in the order to try them: lower priority
/// first; within a priority, a weighted random order (Efraimidis-Spirakis: the smallest
/// `-ln(u) / weight` goes first, so a weight-3 account comes first three times as often).
/// `draw(i)` is choice i's uniform number in (0, 1]: random, or `keyed` for a cache key.
pub fn weighted(choices: &[(u32, f64)], mut draw: impl FnMut(usize) -> f64) -> Vec<usize> {
    let mut keyed: Vec<(u32, f64, usize)> = choices
        .iter()
        .enumerate()
        .map(|(i, &(priority, weight))| {
            let u = draw(i);
            (priority, -u.ln() / weight.max(f64::MIN_POSITIVE), i)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    keyed.into_iter().map(|(_, _, i)| i).collect()
}

/// The uniform number in (0, 1] that `key` draws for `account`: the same in every isolate,
/// independent between accounts (so a weight change moves only the keys it must: weighted
/// rendezvous hashing).
pub fn keyed(key: u64, account: &str) -> f64 {
    // splitmix64's finaliser over the key mixed with the account's own hash.
    let mut x = key ^ crate::cache_key::fnv(account.as_bytes()).0;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64
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
            .filter(|_| weighted(&[(0, 1.0), (0, 3.0)], |_| rng.unit())[0] == 1)
            .count();
        assert!((2_800..3_200).contains(&firsts_b), "{firsts_b}");
        for _ in 0..100 {
            assert_eq!(weighted(&[(1, 100.0), (0, 0.01)], |_| rng.unit()), [1, 0]);
        }
    }

    #[test]
    fn the_emptier_account_comes_first_in_proportion() {
        let mut rng = Rng::new(9);
        let choices = [
            (0, by_headroom(1.0, Some(0.25))),
            (0, by_headroom(1.0, Some(1.0))),
        ];
        let firsts_full_room = (0..4_000)
            .filter(|_| weighted(&choices, |_| rng.unit())[0] == 1)
            .count();
        assert!(
            (3_050..3_350).contains(&firsts_full_room),
            "{firsts_full_room}"
        );
        assert_eq!(by_headroom(2.0, None), 2.0, "not heard: full room");
        assert_eq!(by_headroom(2.0, Some(0.0)), 0.1, "never to nothing");
        assert_eq!(by_headroom(2.0, Some(f64::NAN)), 2.0);
    }

    #[test]
    fn units_stay_in_range() {
        let mut rng = Rng::new(0);
        for _ in 0..10_000 {
            let u = rng.unit();
            assert!(u > 0.0 && u <= 1.0);
        }
    }

    const ACCOUNTS: [&str; 3] = ["acct-a", "acct-b", "acct-c"];

    fn first_of(key: u64, weights: [f64; 3]) -> usize {
        let choices: Vec<(u32, f64)> = weights.iter().map(|w| (0, *w)).collect();
        weighted(&choices, |i| keyed(key, ACCOUNTS[i]))[0]
    }

    #[test]
    fn a_key_always_draws_the_same_order() {
        for key in 0..200u64 {
            let key = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let choices = [(0, 1.0), (0, 1.0), (0, 1.0)];
            let order = weighted(&choices, |i| keyed(key, ACCOUNTS[i]));
            assert_eq!(order, weighted(&choices, |i| keyed(key, ACCOUNTS[i])));
            let u = keyed(key, "acct-a");
            assert!(u > 0.0 && u <= 1.0);
        }
    }

    #[test]
    fn keys_spread_by_weight() {
        let mut firsts = [0usize; 3];
        for key in 0..6_000u64 {
            firsts[first_of(key, [1.0, 1.0, 2.0])] += 1;
        }
        // Expected 1,500 / 1,500 / 3,000.
        assert!((1_350..1_650).contains(&firsts[0]), "{firsts:?}");
        assert!((1_350..1_650).contains(&firsts[1]), "{firsts:?}");
        assert!((2_800..3_200).contains(&firsts[2]), "{firsts:?}");
    }

    #[test]
    fn less_room_moves_only_keys_away_from_that_account_and_few_of_them() {
        let (mut moved, mut on_a) = (0, 0);
        for key in 0..6_000u64 {
            let before = first_of(key, [1.0, 1.0, 1.0]);
            let after = first_of(key, [by_headroom(1.0, Some(0.9)), 1.0, 1.0]);
            if before == 0 {
                on_a += 1;
            }
            if before != after {
                assert_eq!(
                    (before, after == 0),
                    (0, false),
                    "key {key} moved {before}->{after}"
                );
                moved += 1;
            }
        }
        // A tenth less weight on acct-a moves about a fifteenth of its keys (1/3 - 0.9/2.9).
        assert!(moved * 100 < on_a * 10, "{moved} of {on_a}");
        assert!(moved > 0);
    }
}
