//! Which replica gets a request: among those in rotation the group's
//! [`Policy`](super::Policy) chooses, and slow start then holds a returning
//! replica to its share of traffic, whatever the policy chose.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use std::sync::Arc;

use super::ReplicaGroup;
use super::policy::Candidate;
use super::state::Replica;

impl ReplicaGroup {
    /// A uniform draw in [0, 1).
    fn coin(&self) -> f64 {
        self.rng.lock().expect("rng lock").f64()
    }

    /// Chooses one of `replicas` (the group's, as a request saw them) not
    /// in `exclude`: among those in rotation by the policy; if none is, any
    /// remaining one (an answer from a replica that looks down beats no
    /// answer).
    pub(super) fn pick(&self, replicas: &[Arc<Replica>], exclude: &[usize]) -> Option<usize> {
        let now = Instant::now();
        let candidates: Vec<Candidate> = replicas
            .iter()
            .enumerate()
            .filter(|(i, _)| !exclude.contains(i))
            .filter_map(|(i, r)| {
                let s = r.lock();
                let weight = s.weight(now, self.config.slow_start);
                (weight > 0.0).then(|| Candidate {
                    index: i,
                    weight,
                    in_flight: r.in_flight(),
                    ewma_us: s.ewma_us,
                })
            })
            .collect();
        if candidates.is_empty() {
            return (0..replicas.len()).find(|i| !exclude.contains(i));
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let chosen = self
            .config
            .policy
            .pick(&candidates, turn, &mut || self.coin());
        // Slow start, whatever the policy: a replica ramping up keeps the
        // request with probability equal to its weight, else the policy
        // chooses among the others. (A policy drawn to a fresh, idle replica
        // would otherwise send it everything at once.)
        let weight = candidates
            .iter()
            .find(|c| c.index == chosen)
            .map_or(1.0, |c| c.weight);
        if weight < 1.0 && self.coin() >= weight {
            let others: Vec<Candidate> = candidates
                .into_iter()
                .filter(|c| c.index != chosen)
                .collect();
            if !others.is_empty() {
                return Some(self.config.policy.pick(&others, turn, &mut || self.coin()));
            }
        }
        Some(chosen)
    }
}
