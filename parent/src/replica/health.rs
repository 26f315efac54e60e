//! Who is in rotation: active health checks, passive health (a replica that
//! fails a request is ejected at once), the return of a recovered replica
//! after `rise` good checks, and probation for a replica persistently slower
//! than its peers, watched through shadow copies of real requests.

use std::sync::Arc;
use std::time::Duration;

use searchtree_proto::pb::{SearchRequest, SearchResponse};
use tokio::time::Instant;

use super::ReplicaGroup;
use super::state::{InFlight, Replica, Rotation};
use crate::child::ChildError;
use crate::counters::InnerCounter;

/// Samples a replica needs before probation can judge it.
const PROBATION_MIN_SAMPLES: usize = 16;
/// Latencies below this are never "slow", whatever the ratio.
const PROBATION_FLOOR_US: u64 = 2_000;

/// What one health check says about a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// It answered `SERVING` in time.
    Passed,
    /// It answered anything but `SERVING` (draining, shutting down), or
    /// could not be reached: out at once.
    Refused,
    /// It did not answer in time: out after `fall` in a row.
    TimedOut,
    /// It did not answer in time, but this node's own timer fired so late
    /// that the node itself was the slow one (a burst of requests on its
    /// runtime, a stall of its process): the answer may be sitting unread in
    /// its socket. Counted neither way, so that a node under a burst does not
    /// eject every child at once — up to [`MAX_INCONCLUSIVE_IN_A_ROW`].
    Inconclusive,
}

/// Inconclusive checks in a row after which the next one counts as timed
/// out: a node always running late must still eject a replica that never
/// answers.
const MAX_INCONCLUSIVE_IN_A_ROW: u32 = 3;

impl Check {
    /// Judges a check that answered (`Some(serving)`) or timed out
    /// (`None`) after `elapsed`, against its `timeout`: a timeout that fired
    /// more than half the timeout late is the checker's lag, not the
    /// replica's.
    fn judge(answered: Option<bool>, elapsed: Duration, timeout: Duration) -> Check {
        match answered {
            Some(true) => Check::Passed,
            Some(false) => Check::Refused,
            None if elapsed > timeout + timeout / 2 => Check::Inconclusive,
            None => Check::TimedOut,
        }
    }
}

/// The snapshot version an answer came from: the one it names, else the one
/// the request was pinned to (a leaf answers at it or refuses).
pub(super) fn answered_version(response: &SearchResponse, asked: u64) -> u64 {
    if response.version != 0 {
        response.version
    } else {
        asked
    }
}

impl ReplicaGroup {
    /// Checks every replica's health every `health_interval` until the group
    /// is dropped.
    pub fn spawn_health_checks(self: &Arc<Self>) {
        let group = Arc::downgrade(self);
        let interval = self.config.health_interval;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(group) = group.upgrade() else { return };
                group.check_all().await;
            }
        });
    }

    /// Checks every replica once, all at once.
    pub async fn check_all(&self) {
        let replicas = self.replicas();
        let timeout = self.config.health_timeout;
        let checks = replicas.iter().map(|r| async move {
            let started = Instant::now();
            let result = tokio::time::timeout(timeout, r.child.check_health()).await;
            let answered = result.ok().map(|r| r.is_ok());
            let check = Check::judge(answered, started.elapsed(), timeout);
            self.on_health(r, check);
        });
        futures::future::join_all(checks).await;
    }

    /// Whether each replica is in rotation, ejected or on probation.
    pub fn rotations(&self) -> Vec<Rotation> {
        self.replicas().iter().map(|r| r.lock().rotation).collect()
    }

    fn on_health(&self, replica: &Replica, check: Check) {
        let mut s = replica.lock();
        let check = match check {
            Check::Inconclusive if s.inconclusive_in_a_row + 1 < MAX_INCONCLUSIVE_IN_A_ROW => {
                s.inconclusive_in_a_row += 1;
                drop(s);
                self.counters.inc(InnerCounter::HealthChecksInconclusive);
                tracing::debug!(
                    replica = replica.child.name(),
                    "health check timed out while this node was running late: not counted"
                );
                return;
            }
            // Late again and again: from now on, each counts as timed out
            // until a check is conclusive.
            Check::Inconclusive => Check::TimedOut,
            other => {
                s.inconclusive_in_a_row = 0;
                other
            }
        };
        match (s.rotation, check) {
            (Rotation::In | Rotation::Probation, Check::Refused | Check::TimedOut) => {
                s.consecutive_failed += 1;
                if check == Check::TimedOut && s.consecutive_failed < self.config.fall.max(1) {
                    return;
                }
                s.rotation = Rotation::Ejected;
                s.reset_checks();
                drop(s);
                self.counters.inc(InnerCounter::Ejections);
                tracing::warn!(
                    replica = replica.child.name(),
                    "ejected: health check failed"
                );
            }
            (Rotation::Ejected, Check::Passed) => {
                s.consecutive_ok += 1;
                if s.consecutive_ok >= self.config.rise {
                    s.rotation = Rotation::In;
                    s.reset_checks();
                    s.back_since = Some(Instant::now());
                    // What it measured before the outage says nothing now.
                    s.recent.clear();
                    s.ewma_us = 0.0;
                    drop(s);
                    self.counters.inc(InnerCounter::Returns);
                    tracing::info!(replica = replica.child.name(), "in rotation (slow start)");
                    // It may have been away while a version was activated
                    // (this node restarted since, and does not know).
                    self.versions_wanted.notify_one();
                }
            }
            (Rotation::Ejected, _) => s.consecutive_ok = 0,
            (Rotation::In | Rotation::Probation, _) => s.consecutive_failed = 0,
            // Healthy or not, a behind replica lacks the version asked for:
            // only a catch-up brings it back (see `catch_up`).
            (Rotation::Behind { .. }, _) => {}
        }
    }

    /// Judges `replica` by a failure of a request pinned to `version`;
    /// true if another replica may answer it (the caller's retry).
    pub(super) fn on_failure(
        &self,
        replica: &Arc<Replica>,
        err: &ChildError,
        elapsed: Duration,
        version: u64,
    ) -> bool {
        if self.refused_version(replica, err, version) {
            return true;
        }
        match err {
            // Passive health: the replica is gone, refusing work, or died
            // under a request.
            ChildError::Unavailable(_) | ChildError::Lost(_) => {
                let mut s = replica.lock();
                // A behind replica stays behind: ejected, a health check
                // would bring it back without the version.
                if matches!(s.rotation, Rotation::In | Rotation::Probation) {
                    s.rotation = Rotation::Ejected;
                    s.reset_checks();
                    drop(s);
                    self.counters.inc(InnerCounter::Ejections);
                    tracing::warn!(replica = replica.child.name(), %err, "ejected: request failed");
                }
            }
            // Too slow: at least this slow, as far as the numbers go.
            ChildError::Timeout(_) => replica.lock().observe(elapsed),
            // Up and shedding load: it stays in rotation (ejected, its
            // siblings would take its load and shed in turn), left alone
            // for a back-off while a sibling can answer, as this request
            // may.
            ChildError::Overloaded(_) => replica.lock().overloaded(Instant::now()),
            ChildError::InvalidArgument(_) | ChildError::Failed(_) => {}
        }
        err.is_retryable()
    }

    /// Records `replica`'s answer, after `latency`, at snapshot `version`
    /// (0: unknown).
    pub(super) fn on_success(&self, replica: &Arc<Replica>, latency: Duration, version: u64) {
        self.on_answered(replica, version);
        {
            let mut s = replica.lock();
            s.observe(latency);
            s.answered_now();
        }
        let review = self
            .recent
            .lock()
            .expect("recent lock")
            .observe(latency.as_micros() as u64);
        if review {
            self.review_probation();
        }
    }

    /// Puts persistently slow replicas on probation, and returns recovered ones.
    fn review_probation(&self) {
        let replicas = self.replicas();
        let p90s: Vec<(Rotation, Option<u64>)> = replicas
            .iter()
            .map(|r| {
                let s = r.lock();
                (s.rotation, s.recent_quantile(0.9, PROBATION_MIN_SAMPLES))
            })
            .collect();
        let in_rotation = p90s.iter().filter(|(r, _)| *r == Rotation::In).count();
        for (i, (rotation, p90)) in p90s.iter().enumerate() {
            let Some(p90) = *p90 else { continue };
            // The median p90 of the *other* replicas in rotation.
            let mut others: Vec<u64> = p90s
                .iter()
                .enumerate()
                .filter(|(j, (r, _))| *j != i && *r == Rotation::In)
                .filter_map(|(_, (_, p))| *p)
                .collect();
            if others.is_empty() {
                continue;
            }
            others.sort_unstable();
            let median = others[others.len() / 2] as f64;
            let slow =
                p90 > PROBATION_FLOOR_US && p90 as f64 > self.config.probation_factor * median;
            let mut s = replicas[i].lock();
            match rotation {
                Rotation::In if slow && in_rotation > 1 => {
                    s.rotation = Rotation::Probation;
                    s.recent.clear();
                    drop(s);
                    self.counters.inc(InnerCounter::Probations);
                    tracing::warn!(
                        replica = replicas[i].child.name(),
                        p90_us = p90,
                        median_us = median,
                        "on probation: slow"
                    );
                    return; // one at a time; never the last in rotation
                }
                Rotation::Probation if !slow => {
                    s.rotation = Rotation::In;
                    s.back_since = Some(Instant::now());
                    drop(s);
                    self.counters.inc(InnerCounter::Returns);
                    tracing::info!(replica = replicas[i].child.name(), "off probation");
                }
                _ => {}
            }
        }
    }

    /// Sends a copy of the request to replicas on probation, now and then;
    /// the answers only feed their latency numbers.
    pub(super) fn shadow(&self, request: &SearchRequest, budget: Duration, turn: usize) {
        if self.config.shadow_every == 0 || !turn.is_multiple_of(self.config.shadow_every) {
            return;
        }
        for r in self.replicas().iter() {
            if r.lock().rotation != Rotation::Probation {
                continue;
            }
            let Some(group) = self.me.upgrade() else {
                return;
            };
            let request = request.clone();
            let replica = Arc::clone(r);
            self.counters.inc(InnerCounter::ShadowRequests);
            tokio::spawn(async move {
                let replica = &replica;
                let _in_flight = InFlight::new(&replica.outstanding);
                let started = Instant::now();
                let version = request.version;
                let result = replica.child.search(request, budget).await;
                let elapsed = started.elapsed();
                match result {
                    Ok(response) => {
                        group.on_answered(replica, answered_version(&response, version));
                        replica.lock().observe(elapsed);
                        group.review_probation();
                    }
                    Err(ChildError::Timeout(_)) => {
                        replica.lock().observe(elapsed);
                        group.review_probation();
                    }
                    Err(err) => {
                        group.on_failure(replica, &err, elapsed, version);
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{fakes, group, ms, round_robin, send};
    use super::*;
    use crate::replica::{Policy, ReplicaConfig};

    #[tokio::test(start_paused = true)]
    async fn a_replica_that_fails_its_health_check_is_ejected_and_returns_slowly() {
        let r = fakes(2, ms(1));
        let g = group(&r, round_robin());
        r[1].set_down(true);
        // A refused check takes it out at once.
        g.check_all().await;
        assert_eq!(g.rotations(), [Rotation::In, Rotation::Ejected]);
        send(&g, 20).await;
        assert_eq!(
            (r[0].calls(), r[1].calls()),
            (20, 0),
            "no traffic to an ejected replica"
        );

        // Back up: one good check is not enough, two are.
        r[1].set_down(false);
        g.check_all().await;
        assert_eq!(g.rotations()[1], Rotation::Ejected);
        g.check_all().await;
        assert_eq!(g.rotations()[1], Rotation::In);

        // Slow start: right after its return it gets ~10% of its turns...
        send(&g, 200).await;
        let early = r[1].calls();
        assert!(
            (5..=25).contains(&early),
            "early share {early} of 200 turns"
        );
        // ...and its full half once the window (3 s) has passed.
        tokio::time::advance(ms(3000)).await;
        let before = r[1].calls();
        send(&g, 200).await;
        assert_eq!(r[1].calls() - before, 100);
        assert_eq!(g.counters.get(InnerCounter::Ejections), 1);
        assert_eq!(g.counters.get(InnerCounter::Returns), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn checks_that_time_out_eject_after_fall_in_a_row() {
        let r = fakes(2, ms(1));
        let g = group(&r, round_robin());
        // One timed-out check is not an outage (fall = 2), and a good one
        // in between starts the count again.
        for _ in 0..5 {
            r[1].set_hung(true);
            g.check_all().await;
            r[1].set_hung(false);
            g.check_all().await;
        }
        assert_eq!(g.rotations(), [Rotation::In, Rotation::In]);
        assert_eq!(g.counters.get(InnerCounter::Ejections), 0);
        // Two in a row are.
        r[1].set_hung(true);
        g.check_all().await;
        g.check_all().await;
        assert_eq!(g.rotations(), [Rotation::In, Rotation::Ejected]);
        assert_eq!(g.counters.get(InnerCounter::Ejections), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_always_late_still_ejects_a_replica_that_never_answers() {
        let r = fakes(2, ms(1));
        let g = group(&r, round_robin());
        let late = Check::Inconclusive;
        for _ in 0..MAX_INCONCLUSIVE_IN_A_ROW - 1 {
            g.on_health(&g.replicas()[1], late);
        }
        assert_eq!(g.rotations()[1], Rotation::In, "a burst's late checks");
        assert_eq!(
            g.counters.get(InnerCounter::HealthChecksInconclusive),
            u64::from(MAX_INCONCLUSIVE_IN_A_ROW - 1)
        );
        // The next late one counts as timed out; fall = 2 takes two.
        g.on_health(&g.replicas()[1], late);
        g.on_health(&g.replicas()[1], late);
        assert_eq!(g.rotations()[1], Rotation::Ejected);
    }

    #[test]
    fn a_check_timed_out_by_a_late_timer_counts_neither_way() {
        let timeout = ms(100);
        assert_eq!(Check::judge(Some(true), ms(400), timeout), Check::Passed);
        // A refusal is a refusal, however late this node saw it.
        assert_eq!(Check::judge(Some(false), ms(400), timeout), Check::Refused);
        // Timed out on time: the replica did not answer.
        assert_eq!(Check::judge(None, ms(100), timeout), Check::TimedOut);
        assert_eq!(Check::judge(None, ms(150), timeout), Check::TimedOut);
        // Timed out, but the timer fired 60 ms late: this node was the slow one.
        assert_eq!(Check::judge(None, ms(160), timeout), Check::Inconclusive);
    }

    #[tokio::test(start_paused = true)]
    async fn discovered_replicas_join_through_health_checks_and_leave() {
        let r = fakes(2, ms(1));
        let g = ReplicaGroup::discovered(
            vec![0],
            round_robin(),
            crate::counters::inner_counters("parent"),
        );
        let by_name = |name: &str| {
            r.iter()
                .find(|f| crate::child::Child::name(&***f) == name)
                .map(|f| Arc::clone(f) as Arc<dyn crate::child::Child>)
        };
        // No replica yet: refused at once, not after the budget.
        let start = Instant::now();
        let err = crate::child::Child::search(&*g, super::super::testing::request(), ms(100))
            .await
            .unwrap_err();
        assert!(matches!(err, ChildError::Unavailable(_)), "{err:?}");
        assert_eq!(start.elapsed(), Duration::ZERO);

        // What a starting node finds is in rotation at once.
        g.update_members(&["r0".into()], false, by_name);
        send(&g, 10).await;
        assert_eq!(r[0].calls(), 10);

        // A replica that registers later joins through health checks...
        let (added, removed) = g.update_members(&["r0".into(), "r1".into()], true, by_name);
        assert_eq!((added, removed), (vec!["r1".to_string()], vec![]));
        assert_eq!(g.rotations(), [Rotation::In, Rotation::Ejected]);
        send(&g, 10).await;
        assert_eq!(r[1].calls(), 0, "no traffic before its health checks pass");
        g.check_all().await;
        g.check_all().await;
        assert_eq!(g.rotations(), [Rotation::In, Rotation::In]);
        // ...and slow start.
        send(&g, 200).await;
        assert!((5..=25).contains(&r[1].calls()), "{}", r[1].calls());

        // One whose registration goes leaves; the other keeps its state.
        let (added, removed) = g.update_members(&["r1".into()], true, by_name);
        assert_eq!((added, removed), (vec![], vec!["r0".to_string()]));
        assert_eq!(g.rotations(), [Rotation::In]);
        let before = r[0].calls();
        send(&g, 10).await;
        assert_eq!(r[0].calls(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_holds_for_every_policy() {
        for policy in [Policy::LatencyAware, Policy::LeastOutstanding] {
            let r = fakes(2, ms(1));
            let g = group(
                &r,
                ReplicaConfig {
                    policy,
                    ..ReplicaConfig::default()
                },
            );
            send(&g, 50).await;
            r[1].set_down(true);
            g.check_all().await;
            r[1].set_down(false);
            g.check_all().await;
            g.check_all().await;
            let before = r[1].calls();
            send(&g, 200).await;
            let early = r[1].calls() - before;
            assert!(
                (2..=30).contains(&early),
                "{policy}: {early} of 200 right after return"
            );
            tokio::time::advance(ms(3000)).await;
            let before = r[1].calls();
            send(&g, 200).await;
            let later = r[1].calls() - before;
            assert!(
                (70..=130).contains(&later),
                "{policy}: {later} of 200 after the ramp"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_persistently_slow_replica_goes_on_probation_and_comes_back() {
        let r = fakes(3, ms(3));
        let g = group(
            &r,
            ReplicaConfig {
                policy: Policy::RoundRobin,
                hedge_ratio: 0.0,
                shadow_every: 2,
                ..ReplicaConfig::default()
            },
        );
        r[2].set_delay(ms(30));
        send(&g, 120).await;
        assert_eq!(
            g.rotations(),
            [Rotation::In, Rotation::In, Rotation::Probation]
        );
        // On probation it only gets shadow copies.
        let primary_before = r[2].calls();
        send(&g, 40).await;
        let shadows = r[2].calls() - primary_before;
        assert!(
            (15..=25).contains(&shadows),
            "{shadows} shadow requests for 40"
        );
        // It recovers; the shadow traffic shows it and it returns.
        r[2].set_delay(ms(3));
        for _ in 0..80 {
            send(&g, 1).await;
            tokio::time::advance(ms(5)).await; // let shadow copies finish
        }
        assert_eq!(g.rotations()[2], Rotation::In);
        assert!(g.counters.get(InnerCounter::Probations) >= 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_replica_in_rotation_is_never_put_on_probation() {
        let r = fakes(2, ms(3));
        let g = group(
            &r,
            ReplicaConfig {
                policy: Policy::RoundRobin,
                hedge_ratio: 0.0,
                ..ReplicaConfig::default()
            },
        );
        r[0].set_down(true);
        g.check_all().await;
        r[1].set_delay(ms(50));
        send(&g, 100).await;
        assert_eq!(g.rotations(), [Rotation::Ejected, Rotation::In]);
    }
}
