//! Deterministic pseudo-random numbers for the host's brute-force and property tests (compiled only under #[cfg(test)]).

/// A linear congruential generator: the same seed gives the same cases on every run.
pub struct Lcg(pub u64);

impl Lcg {
    /// A number in 0..n (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}
