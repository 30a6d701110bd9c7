//! Lookups over a synthetic network with eclipse attackers, without the full simulator: how
//! many disjoint paths ([`DisjointPaths`]) a lookup needs when it does not start from the full
//! membership (a joiner's first lookups, a node whose view is young).
//!
//! `n` peers; a share of them lie, answering every lookup only with the liars closest to the
//! target (an eclipse); honest peers answer with the closest of what they know: their own `k`
//! closest and a spread of others (a Kademlia-like view). A lookup starts from a few random
//! peers. Everything is a function of the seed.

use std::collections::HashSet;
use std::num::NonZeroUsize;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::SimPeer;
use crate::core::Peer;
use crate::core::lookup::{DisjointPaths, KeyHash, closest};

/// One experiment.
#[derive(Debug, Clone, Copy)]
pub struct EclipseLookups {
    /// Peers.
    pub n: usize,
    /// Share of them that lie, 0 to 1.
    pub liars: f64,
    /// Peers a lookup starts from.
    pub seeds: usize,
    /// Disjoint paths.
    pub paths: usize,
    /// Lookups, each for another target.
    pub lookups: usize,
    /// Kademlia's k and alpha.
    pub k: usize,
    /// Requests in flight per path.
    pub alpha: usize,
    /// Others an honest peer knows besides its own `k` closest.
    pub known: usize,
}

/// What the lookups found.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Found {
    /// Honest peers among the true `k` closest of all, summed over lookups.
    pub honest_closest: usize,
    /// Of those, the ones the lookups returned.
    pub found: usize,
    /// Lookups that returned every one of them.
    pub complete: usize,
    /// Requests sent, summed.
    pub requests: u64,
}

impl Found {
    /// The share of the honest closest found.
    pub fn share(&self) -> f64 {
        self.found as f64 / self.honest_closest.max(1) as f64
    }
}

impl EclipseLookups {
    /// Runs the lookups with `seed`.
    pub fn run(&self, seed: u64) -> Found {
        let mut rng = StdRng::seed_from_u64(seed);
        let all: Vec<SimPeer> = (0..self.n as u32).map(SimPeer).collect();
        let mut shuffled = all.clone();
        shuffled.shuffle(&mut rng);
        let liar_count = (self.n as f64 * self.liars).round() as usize;
        let liars: HashSet<SimPeer> = shuffled[..liar_count].iter().copied().collect();
        let liar_list: Vec<SimPeer> = shuffled[..liar_count].to_vec();
        let views: Vec<Vec<SimPeer>> = all
            .iter()
            .map(|p| {
                let mut view = closest(&p.point(), all.iter().copied(), self.k + 1);
                view.extend((0..self.known).map(|_| all[rng.gen_range(0..self.n)]));
                view
            })
            .collect();
        let nz = |v: usize| NonZeroUsize::new(v.max(1)).unwrap_or(NonZeroUsize::MIN);
        let mut found = Found::default();
        for _ in 0..self.lookups {
            let target = KeyHash(rng.r#gen());
            let truth: Vec<SimPeer> = closest(&target, all.iter().copied(), self.k)
                .into_iter()
                .filter(|p| !liars.contains(p))
                .collect();
            let seeds: Vec<SimPeer> = (0..self.seeds)
                .map(|_| all[rng.gen_range(0..self.n)])
                .collect();
            let local = SimPeer(u32::MAX);
            let (k, alpha) = (nz(self.k), nz(self.alpha));
            let mut lookup = DisjointPaths::new(target, local, k, alpha, seeds, nz(self.paths));
            lookup.run_with(|p| {
                Some(if liars.contains(p) {
                    closest(&target, liar_list.iter().copied(), self.k)
                } else {
                    closest(&target, views[p.0 as usize].iter().copied(), self.k)
                })
            });
            let result = lookup.peers();
            let hit = truth.iter().filter(|p| result.contains(p)).count();
            found.honest_closest += truth.len();
            found.found += hit;
            found.complete += usize::from(hit == truth.len());
            found.requests += u64::from(lookup.counts().requests);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_paths_find_the_closest_through_liars_from_a_few_far_seeds() {
        let base = EclipseLookups {
            n: 600,
            liars: 0.3,
            seeds: 3,
            paths: 1,
            lookups: 100,
            k: 20,
            alpha: 3,
            known: 40,
        };
        let one = base.run(7);
        let four = EclipseLookups { paths: 4, ..base }.run(7);
        assert_eq!(one, base.run(7), "a function of the seed");
        assert!(four.found > one.found, "one path {one:?}, four {four:?}");
        assert!(
            four.complete > one.complete,
            "one path {one:?}, four {four:?}"
        );
        assert!(four.requests > one.requests);
        // Without liars one path finds them all.
        let clean = EclipseLookups { liars: 0.0, ..base }.run(7);
        assert_eq!(clean.found, clean.honest_closest);
    }
}
