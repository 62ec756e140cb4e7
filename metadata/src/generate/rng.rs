//! The random source of the catalog generator.
//!
//! Every choice the generator makes draws from [`SplitMix64`], and every seed it uses comes
//! from [`mix`]. Both are written out here rather than taken from a crate, so that a seed gives
//! the same catalog bytes whatever crate versions are in the lock file: tests and benchmarks
//! compare catalogs across builds.

use crate::model::UpdateId;

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fast, well-mixed generator whose output is
/// fixed by its definition, so generated catalogs never change with a dependency upgrade.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A random GUID with the version-4 layout (version nibble 4, RFC 4122 variant).
    pub fn guid(&mut self) -> UpdateId {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_be_bytes());
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        UpdateId::from_bytes(bytes)
    }

    /// `N` random bytes: the digests of generated payload files.
    pub(super) fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        out
    }
}

/// Combines two seeds into one well-mixed seed.
pub(super) fn mix(a: u64, b: u64) -> u64 {
    let mut rng = SplitMix64::new(a ^ b.rotate_left(32));
    rng.next_u64() ^ b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // From the reference implementation, seed 1234567.
        let mut rng = SplitMix64::new(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn guids_have_the_version_4_layout() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..100 {
            let text = rng.guid().to_string();
            assert_eq!(&text[14..15], "4", "{text}");
            assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"), "{text}");
        }
    }
}
