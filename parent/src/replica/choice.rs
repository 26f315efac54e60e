//! Which replica gets a request: among those in rotation the group's
//! [`Policy`](super::Policy) chooses, and slow start then holds a returning
//! replica to its share of traffic, whatever the policy chose.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::ReplicaGroup;
use super::policy::Candidate;
use super::state::{Replica, ReplicaState};

impl ReplicaGroup {
    /// A uniform draw in [0, 1).
    fn coin(&self) -> f64 {
        self.rng.lock().expect("rng lock").f64()
    }

    /// Chooses one of `replicas` (the group's, as a request saw them) not
    /// in `exclude`: among those in rotation by the policy, passing over
    /// those shedding load while another can answer; if none is in
    /// rotation, any remaining one (an answer from a replica that looks
    /// down beats no answer).
    pub(super) fn pick(&self, replicas: &[Arc<Replica>], exclude: &[usize]) -> Option<usize> {
        let now = Instant::now();
        let mut candidates = self.candidates(replicas, exclude, now, ReplicaState::weight);
        if candidates.is_empty() {
            candidates = self.candidates(replicas, exclude, now, ReplicaState::rotation_weight);
        }
        if candidates.is_empty() {
            return (0..replicas.len()).find(|i| !exclude.contains(i));
        }
        Some(self.choose(candidates))
    }

    /// Chooses where a hedge goes: only a replica in rotation and not
    /// shedding load (a hedge to one that looks down or has just refused
    /// for load would only add to its trouble).
    pub(super) fn pick_hedge(&self, replicas: &[Arc<Replica>], exclude: &[usize]) -> Option<usize> {
        let candidates = self.candidates(replicas, exclude, Instant::now(), ReplicaState::weight);
        (!candidates.is_empty()).then(|| self.choose(candidates))
    }

    /// The replicas not in `exclude` with a positive `weight`.
    fn candidates(
        &self,
        replicas: &[Arc<Replica>],
        exclude: &[usize],
        now: Instant,
        weight: fn(&ReplicaState, Instant, Duration) -> f64,
    ) -> Vec<Candidate> {
        replicas
            .iter()
            .enumerate()
            .filter(|(i, _)| !exclude.contains(i))
            .filter_map(|(i, r)| {
                let s = r.lock();
                let weight = weight(&s, now, self.config.slow_start);
                (weight > 0.0).then(|| Candidate {
                    index: i,
                    weight,
                    in_flight: r.in_flight(),
                    ewma_us: s.ewma_us,
                })
            })
            .collect()
    }

    /// The policy's choice among `candidates` (not empty), held to slow
    /// start.
    fn choose(&self, candidates: Vec<Candidate>) -> usize {
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
                return self.config.policy.pick(&others, turn, &mut || self.coin());
            }
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::Rotation;
    use super::super::testing::{fakes, group, ms, round_robin};
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_replica_shedding_load_is_passed_over_only_while_one_in_rotation_can_answer() {
        let r = fakes(3, ms(1));
        let g = group(&r, round_robin());
        let replicas = g.replicas();
        let now = Instant::now();
        replicas[0].lock().rotation = Rotation::Ejected;
        replicas[1].lock().overloaded(now);
        assert_eq!(
            g.replica_rotations()
                .into_iter()
                .map(|(_, state)| state)
                .collect::<Vec<_>>(),
            ["ejected", "shedding", "healthy"]
        );
        // r2 can answer: the busy one is passed over, requests and hedges alike.
        for _ in 0..10 {
            assert_eq!(g.pick(&replicas, &[]), Some(2));
        }
        assert_eq!(g.pick_hedge(&replicas, &[2]), None, "no hedge to it");
        // r2 tried already: the busy one in rotation, before the ejected one.
        assert_eq!(g.pick(&replicas, &[2]), Some(1));
        // Every one in rotation busy: the policy still spreads the load.
        replicas[2].lock().overloaded(now);
        let mut chosen: Vec<usize> = (0..10).filter_map(|_| g.pick(&replicas, &[])).collect();
        chosen.sort_unstable();
        chosen.dedup();
        assert_eq!(chosen, [1, 2]);
        // Only the ejected one left: asked anyway (an answer beats none).
        assert_eq!(g.pick(&replicas, &[1, 2]), Some(0));
        assert_eq!(g.pick_hedge(&replicas, &[1, 2]), None);
    }
}
