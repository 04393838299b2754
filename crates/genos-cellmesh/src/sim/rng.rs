//! The simulator's random source, shared by the network and the baselines.

use crate::mix::mix64;

/// The simulator's deterministic random source (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A source seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(mix64(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// True with probability `probability` (never for 0; a draw only when above 0, so a
    /// switched-off model leaves the sequence alone).
    pub fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= probability
    }

    /// Uniform in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }
}
