//! Which images each step trains on: a seeded shuffle of the dataset per epoch (Fisher-Yates on
//! Philox numbers keyed by (seed, epoch), the same on every machine), batches taken in order and
//! running on into the next epoch, and an optional random horizontal flip per (epoch, position).
//! A pure function of (seed, step): a resumed run sees the same batches as an uninterrupted one.

use crate::kernels::data::FLIP;
use crate::kernels::rng::philox4x32_10;

/// The 4th Philox counter word of each use, apart from the device's (0: noise, 1: timesteps).
const SHUFFLE: u32 = 2;
const FLIPS: u32 = 3;
/// (4 is the initial weights'.)
const CLASS_DROPOUT: u32 = 5;

pub struct DataOrder {
    pub seed: u64,
    pub count: usize,
    pub batch: usize,
    pub random_flip: bool,
    /// The last epoch's permutation, kept (batches come in order).
    cached: Option<(u64, Vec<u32>)>,
}

impl DataOrder {
    pub fn new(seed: u64, count: usize, batch: usize, random_flip: bool) -> Self {
        assert!(count > 0 && batch > 0, "an order needs images and a batch");
        Self { seed, count, batch, random_flip, cached: None }
    }

    fn bits(&self, a: u32, b: u64, purpose: u32) -> u32 {
        philox4x32_10([a, b as u32, (b >> 32) as u32, purpose], [self.seed as u32, (self.seed >> 32) as u32])
            [0]
    }

    /// The permutation of epoch `epoch` (0-based).
    pub fn permutation(&self, epoch: u64) -> Vec<u32> {
        let mut p: Vec<u32> = (0..self.count as u32).collect();
        for i in (1..self.count).rev() {
            let j = (self.bits(i as u32, epoch, SHUFFLE) % (i as u32 + 1)) as usize;
            p.swap(i, j);
        }
        p
    }

    /// Step `step`'s batch (0-based step): dataset indices, bit 31 set where mirrored.
    pub fn batch(&mut self, step: u64) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.batch);
        for i in 0..self.batch as u64 {
            let at = step * self.batch as u64 + i;
            let (epoch, pos) = (at / self.count as u64, (at % self.count as u64) as usize);
            if self.cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
                self.cached = Some((epoch, self.permutation(epoch)));
            }
            let index = self.cached.as_ref().expect("cached").1[pos]; // ok: set above
            let flip = self.random_flip && self.bits(pos as u32, epoch, FLIPS) & 1 == 1;
            out.push(index | if flip { FLIP } else { 0 });
        }
        out
    }

    /// The epoch step `step` starts in.
    pub fn epoch_of(&self, step: u64) -> u64 {
        step * self.batch as u64 / self.count as u64
    }
}

/// Classifier-free guidance training: each label of a batch swapped for the null class with
/// probability p, drawn from Philox keyed by (seed, step, element): a pure function of the step,
/// so a resumed run drops the same labels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClassDropout {
    pub seed: u64,
    /// A label drops where the draw's top 24 bits are below this (p 2^24, rounded): exact
    /// integer arithmetic, the same everywhere.
    pub threshold: u32,
    pub null: u32,
}

impl ClassDropout {
    pub fn new(seed: u64, probability: f64, null: u32) -> Self {
        let threshold = (probability.clamp(0.0, 1.0) * (1u64 << 24) as f64).round() as u32;
        Self { seed, threshold, null }
    }

    /// Whether element `i` of step `step`'s batch (0-based) loses its label.
    pub fn drops(&self, step: u64, i: usize) -> bool {
        let key = [self.seed as u32, (self.seed >> 32) as u32];
        let bits = philox4x32_10([i as u32, step as u32, (step >> 32) as u32, CLASS_DROPOUT], key)[0];
        (bits >> 8) < self.threshold
    }

    /// Step `step`'s labels with the dropped ones swapped for the null class.
    pub fn apply(&self, step: u64, labels: &[u32]) -> Vec<u32> {
        labels.iter().enumerate().map(|(i, &l)| if self.drops(step, i) { self.null } else { l }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_dropout_is_a_pure_function_of_seed_step_and_element_at_its_rate() {
        let d = ClassDropout::new(3, 0.1, 10);
        let labels: Vec<u32> = (0..64).map(|i| i % 10).collect();
        let dropped: usize =
            (0..200u64).map(|s| d.apply(s, &labels).iter().filter(|&&l| l == 10).count()).sum();
        // 12,800 draws at 0.1: 1280 +- 5 standard deviations (34 each).
        assert!((1110..1450).contains(&dropped), "{dropped} of 12800 dropped");
        assert_eq!(
            d.apply(7, &labels),
            ClassDropout::new(3, 0.1, 10).apply(7, &labels),
            "the same draws again"
        );
        assert_ne!(d.apply(7, &labels), d.apply(8, &labels), "another step, other draws");
        assert!(ClassDropout::new(3, 0.0, 10).apply(7, &labels) == labels, "p 0 drops none");
        assert!(ClassDropout::new(3, 1.0, 10).apply(7, &labels).iter().all(|&l| l == 10), "p 1 drops all");
    }

    #[test]
    fn every_image_once_an_epoch_and_a_pure_function_of_the_step() {
        let mut order = DataOrder::new(7, 10, 4, false);
        let seen: Vec<u32> = (0..5).flat_map(|s| order.batch(s)).collect();
        // Steps 0-4 take 20 images: epochs 0 and 1, each a permutation of 0..10.
        for epoch in seen.chunks(10) {
            let mut e = epoch.to_vec();
            e.sort();
            assert_eq!(e, (0..10).collect::<Vec<_>>());
        }
        assert_ne!(&seen[..10], &seen[10..], "a new shuffle each epoch");
        // Asked out of order (a resumed run), the same batches.
        let mut fresh = DataOrder::new(7, 10, 4, false);
        assert_eq!(fresh.batch(3), seen[12..16]);
        assert_ne!(DataOrder::new(8, 10, 4, false).batch(0), seen[..4], "another seed, another order");
        // Flips: about half, and only bit 31.
        let mut flipping = DataOrder::new(7, 10, 4, true);
        let flipped: Vec<u32> = (0..50).flat_map(|s| flipping.batch(s)).collect();
        let n = flipped.iter().filter(|&&x| x & FLIP != 0).count();
        assert!((70..130).contains(&n), "{n} of 200 flipped");
        assert!(flipped.iter().zip((0..50).flat_map(|s| order.batch(s))).all(|(a, b)| a & !FLIP == b));
    }
}
