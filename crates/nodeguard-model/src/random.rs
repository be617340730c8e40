//! The one random source of the project: SplitMix64 (Steele, Lea and Flood, 2014), enough to
//! spread retries and scan starts across a fleet, no crate needed. Not for secrets.

/// A SplitMix64 generator: any seed (zero included) gives a full-period stream.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = self.state;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    /// A uniform value in `[0, 1)`, from the top 53 bits.
    pub fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference implementation's outputs (Vigna, `splitmix64.c`) for seeds 0 and 1234567.
    #[test]
    fn matches_the_reference_stream() {
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
        let mut g = SplitMix64::new(1_234_567);
        let got: Vec<u64> = (0..3).map(|_| g.next_u64()).collect();
        assert_eq!(
            got,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423
            ]
        );
    }

    /// Units stay in [0, 1) and spread evenly: each tenth of the range gets its share.
    #[test]
    fn units_are_uniform_in_the_unit_interval() {
        let mut g = SplitMix64::new(42);
        let mut bins = [0u32; 10];
        for _ in 0..100_000 {
            let u = g.next_unit();
            assert!((0.0..1.0).contains(&u), "{u}");
            bins[(u * 10.0) as usize] += 1;
        }
        for (i, n) in bins.iter().enumerate() {
            assert!((9_500..10_500).contains(n), "bin {i}: {n}");
        }
    }
}
