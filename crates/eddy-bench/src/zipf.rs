//! A seeded Zipf sampler over `1..=n` (inverse CDF by binary search) and a small PRNG, so the
//! harness needs no extra dependencies and every run draws the same ids.

/// xorshift64*: fast, seeded, good enough for load generation.
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf(s) over ranks `1..=n`.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// Precomputes the CDF (n floats).
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for v in cdf.iter_mut() {
            *v /= total;
        }
        Zipf { cdf }
    }

    /// A rank in `1..=n`.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.next_f64();
        self.cdf.partition_point(|c| *c < u) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skewed_and_in_range() {
        let z = Zipf::new(1000, 1.0);
        let mut rng = Rng::new(7);
        let mut ones = 0;
        for _ in 0..10_000 {
            let r = z.sample(&mut rng);
            assert!((1..=1000).contains(&r));
            if r == 1 {
                ones += 1;
            }
        }
        // P(1) = 1/H(1000) ≈ 0.134.
        assert!((1000..1700).contains(&ones), "{ones}");
    }
}
