//! Draws from the seeded RNG: weighted and skewed picks, prices, watch times. Every
//! function consumes the RNG in a fixed order, which is what makes a seed reproducible.

use super::event::Amount;
use rand::Rng;
use rand::rngs::StdRng;

/// Picks an item with probability proportional to its weight.
pub(super) fn weighted<T: Copy>(rng: &mut StdRng, items: &[(T, u32)]) -> T {
    items[weighted_index(rng, items.iter().map(|&(_, w)| w))].0
}

/// The index of a weight, picked with probability proportional to it.
pub(super) fn weighted_index(
    rng: &mut StdRng,
    weights: impl Iterator<Item = u32> + Clone,
) -> usize {
    let total: u32 = weights.clone().sum();
    let mut ticket = rng.random_range(0..total.max(1));
    let mut last = 0;
    for (i, weight) in weights.enumerate() {
        if ticket < weight {
            return i;
        }
        ticket -= weight;
        last = i;
    }
    last
}

/// Picks an item, each equally likely.
pub(super) fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// An index in `0..n` skewed towards 0: `n * u²` gives the first 1% of users about 10% of
/// the events, a heavy head with a long tail, like real audiences.
pub(super) fn skewed(rng: &mut StdRng, n: u32) -> u32 {
    let u: f64 = rng.random();
    ((f64::from(n) * u * u) as u32).min(n - 1)
}

/// A price between 2 and 500, log-uniform (many cheap, few expensive), often ending in .99.
pub(super) fn price(rng: &mut StdRng) -> Amount {
    let dollars = (rng.random_range(2f64.ln()..500f64.ln())).exp().floor() as u64;
    let cents = if rng.random_bool(0.4) {
        99
    } else {
        rng.random_range(0..100)
    };
    Amount(dollars * 100 + cents)
}

/// Seconds and percentage of a TikTok video watched, one decimal each.
pub(super) fn watch(rng: &mut StdRng) -> (f64, f64) {
    let length: f64 = rng.random_range(5.0..180.0);
    // Most viewers drop off early; a third watch to the end.
    let share: f64 = if rng.random_bool(0.33) {
        1.0
    } else {
        rng.random::<f64>().powf(1.5)
    };
    let round = |x: f64| (x * 10.0).round() / 10.0;
    (round(length * share), round(share * 100.0).min(100.0))
}

#[cfg(test)]
mod tests {
    use super::skewed;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn users_are_skewed_so_a_few_are_heavy() {
        let mut rng = StdRng::seed_from_u64(1);
        let n = 10_000;
        let head = (0..n).filter(|_| skewed(&mut rng, 1_000) < 10).count();
        // The first 1% of users get about 10% of the events.
        assert!((700..1_300).contains(&head), "{head}");
    }
}
