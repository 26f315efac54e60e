//! When a node that died is started again, and when the root is given up
//! on: the policy, and one node's restart history judged by it. No clock is
//! read here, so the policy is tested without waiting.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// When a node that died is started again, and when to give up on the root.
///
/// A node is restarted after a backoff that starts at `initial_backoff` and
/// doubles per attempt up to `max_backoff`; once a node has stayed up for
/// `stable_after`, its next death starts the backoff over. Nodes below the
/// root are retried for as long as it takes (a dead leaf is partial
/// coverage, not an outage). The root is what clients call, so it is given
/// up on when it fails to start `max_root_start_failures` times in a row or
/// would be restarted more than `max_root_restarts` times within
/// `root_window`: better to fail loudly than to serve nothing at an address
/// that was announced as ready.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartPolicy {
    /// Restart dead nodes at all. Off, a dead node stays down and a dead
    /// root ends supervision.
    pub restart: bool,
    /// Delay before the first restart after a death.
    pub initial_backoff: Duration,
    /// The most the delay grows to.
    pub max_backoff: Duration,
    /// How long a node must have stayed up for its backoff to start over.
    pub stable_after: Duration,
    /// Failed starts of the root in a row after which it is given up on.
    pub max_root_start_failures: u32,
    /// Restarts of the root allowed within `root_window`.
    pub max_root_restarts: u32,
    /// The window `max_root_restarts` is counted over.
    pub root_window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            restart: true,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            stable_after: Duration::from_secs(30),
            max_root_start_failures: 5,
            max_root_restarts: 10,
            root_window: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// The delay before restart `attempt` (1 for the first since the node
    /// was last stable): `initial_backoff` doubled per attempt, capped at
    /// `max_backoff`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

/// What to do about a node that died or failed to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restart {
    /// Start it again after `delay`; this is restart `attempt` since the
    /// node was last stable.
    After {
        /// 1 for the first restart since the node was last stable.
        attempt: u32,
        /// How long to wait before starting it.
        delay: Duration,
    },
    /// Leave it down (restarts are off); the rest of the tree serves
    /// without it.
    LeaveDown,
    /// The root cannot be kept alive; the reason, for the operator.
    GiveUp(String),
}

/// One node's restart history judged by a [`RestartPolicy`]. It reads no
/// clock (time comes in as arguments), so the policy is tested without
/// waiting.
#[derive(Debug, Clone)]
pub struct RestartState {
    policy: RestartPolicy,
    is_root: bool,
    /// Restarts since the node was last stable.
    attempt: u32,
    /// Failed starts in a row.
    failed_starts: u32,
    /// When it last became ready, if it is up.
    up_since: Option<Instant>,
    /// When the root's recent restarts were decided, oldest first.
    recent: VecDeque<Instant>,
}

impl RestartState {
    /// The history of a node that has not started yet; `is_root` selects
    /// the root's crash-loop limits.
    pub fn new(policy: RestartPolicy, is_root: bool) -> Self {
        RestartState {
            policy,
            is_root,
            attempt: 0,
            failed_starts: 0,
            up_since: None,
            recent: VecDeque::new(),
        }
    }

    /// The node became ready at `now`.
    pub fn started(&mut self, now: Instant) {
        self.up_since = Some(now);
        self.failed_starts = 0;
    }

    /// The node exited on its own at `now`.
    pub fn exited(&mut self, now: Instant) -> Restart {
        if let Some(since) = self.up_since.take()
            && now.saturating_duration_since(since) >= self.policy.stable_after
        {
            self.attempt = 0;
        }
        self.next(now)
    }

    /// A restart of the node failed at `now`: it exited or hung before it
    /// was serving (e.g. its address was taken).
    pub fn start_failed(&mut self, now: Instant) -> Restart {
        self.up_since = None;
        self.failed_starts += 1;
        if self.is_root && self.failed_starts >= self.policy.max_root_start_failures {
            return Restart::GiveUp(format!(
                "it failed to start {} times in a row",
                self.failed_starts
            ));
        }
        self.next(now)
    }

    fn next(&mut self, now: Instant) -> Restart {
        if !self.policy.restart {
            return if self.is_root {
                Restart::GiveUp("restarts are off".into())
            } else {
                Restart::LeaveDown
            };
        }
        if self.is_root {
            while let Some(&at) = self.recent.front()
                && now.saturating_duration_since(at) >= self.policy.root_window
            {
                self.recent.pop_front();
            }
            if self.recent.len() >= self.policy.max_root_restarts as usize {
                return Restart::GiveUp(format!(
                    "it was already restarted {} times within {:?}",
                    self.recent.len(),
                    self.policy.root_window
                ));
            }
            self.recent.push_back(now);
        }
        self.attempt += 1;
        Restart::After {
            attempt: self.attempt,
            delay: self.policy.backoff(self.attempt),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn delay(decision: Restart) -> Duration {
        match decision {
            Restart::After { delay, .. } => delay,
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_from_100ms_up_to_5s() {
        let policy = RestartPolicy::default();
        let delays: Vec<u64> = (1..=9)
            .map(|a| policy.backoff(a).as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(policy.backoff(u32::MAX), ms(5000));
    }

    #[test]
    fn a_crashing_leaf_is_retried_forever_at_the_cap() {
        let t0 = Instant::now();
        let mut leaf = RestartState::new(RestartPolicy::default(), false);
        leaf.started(t0);
        let mut now = t0 + ms(10);
        let mut last = Duration::ZERO;
        for attempt in 1..=100 {
            let decision = leaf.exited(now);
            assert_eq!(
                decision,
                Restart::After {
                    attempt,
                    delay: RestartPolicy::default().backoff(attempt)
                }
            );
            last = delay(decision);
            now += last;
            // Up again, but only briefly.
            leaf.started(now);
            now += ms(10);
        }
        assert_eq!(last, ms(5000));
        // Failing to start is retried forever too.
        for _ in 0..100 {
            assert_eq!(delay(leaf.start_failed(now)), ms(5000));
        }
    }

    #[test]
    fn staying_up_long_enough_resets_the_backoff() {
        let t0 = Instant::now();
        let mut leaf = RestartState::new(RestartPolicy::default(), false);
        leaf.started(t0);
        assert_eq!(delay(leaf.exited(t0 + ms(1))), ms(100));
        leaf.started(t0 + ms(200));
        assert_eq!(delay(leaf.exited(t0 + ms(300))), ms(200));
        leaf.started(t0 + ms(600));
        // 29.9 s up is not long enough...
        assert_eq!(delay(leaf.exited(t0 + ms(30_500))), ms(400));
        leaf.started(t0 + ms(31_000));
        // ... 30 s is.
        assert_eq!(
            leaf.exited(t0 + ms(61_000)),
            Restart::After {
                attempt: 1,
                delay: ms(100)
            }
        );
    }

    #[test]
    fn a_root_that_fails_to_start_five_times_in_a_row_is_given_up_on() {
        let t0 = Instant::now();
        let mut root = RestartState::new(RestartPolicy::default(), true);
        root.started(t0);
        let mut now = t0 + ms(1);
        now += delay(root.exited(now));
        for _ in 1..5 {
            now += delay(root.start_failed(now));
        }
        match root.start_failed(now) {
            Restart::GiveUp(why) => assert_eq!(why, "it failed to start 5 times in a row"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_good_start_forgives_earlier_failed_starts() {
        let t0 = Instant::now();
        let mut root = RestartState::new(RestartPolicy::default(), true);
        root.started(t0);
        let mut now = t0 + ms(1);
        now += delay(root.exited(now));
        for _ in 0..3 {
            now += delay(root.start_failed(now));
        }
        root.started(now);
        now += ms(1);
        now += delay(root.exited(now));
        for _ in 0..4 {
            now += delay(root.start_failed(now));
        }
        assert!(matches!(root.start_failed(now), Restart::GiveUp(_)));
    }

    #[test]
    fn a_root_restarted_too_often_within_the_window_is_given_up_on() {
        let policy = RestartPolicy {
            max_root_restarts: 3,
            root_window: Duration::from_secs(60),
            ..RestartPolicy::default()
        };
        let t0 = Instant::now();
        let mut root = RestartState::new(policy, true);
        // Each time it stays up 20 s: long enough not to grow the backoff
        // past 400 ms, but three restarts fall within a minute.
        let mut now = t0;
        for _ in 0..3 {
            root.started(now);
            now += Duration::from_secs(20);
            now += delay(root.exited(now));
        }
        root.started(now);
        now += Duration::from_secs(5);
        match root.exited(now) {
            Restart::GiveUp(why) => {
                assert_eq!(why, "it was already restarted 3 times within 60s")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn root_restarts_spread_wider_than_the_window_are_fine() {
        let policy = RestartPolicy {
            max_root_restarts: 3,
            ..RestartPolicy::default()
        };
        let t0 = Instant::now();
        let mut root = RestartState::new(policy, true);
        let mut now = t0;
        for _ in 0..20 {
            root.started(now);
            now += Duration::from_secs(25);
            now += delay(root.exited(now));
        }
    }

    #[test]
    fn with_restarts_off_a_leaf_stays_down_and_the_root_gives_up() {
        let policy = RestartPolicy {
            restart: false,
            ..RestartPolicy::default()
        };
        let t0 = Instant::now();
        let mut leaf = RestartState::new(policy, false);
        leaf.started(t0);
        assert_eq!(leaf.exited(t0 + ms(1)), Restart::LeaveDown);
        let mut root = RestartState::new(policy, true);
        root.started(t0);
        assert_eq!(
            root.exited(t0 + ms(1)),
            Restart::GiveUp("restarts are off".into())
        );
    }

    #[test]
    fn no_root_restarts_allowed_means_the_first_death_ends_it() {
        let policy = RestartPolicy {
            max_root_restarts: 0,
            ..RestartPolicy::default()
        };
        let t0 = Instant::now();
        let mut root = RestartState::new(policy, true);
        root.started(t0);
        assert!(matches!(root.exited(t0), Restart::GiveUp(_)));
        // Leaves are not held to the root's limits.
        let mut leaf = RestartState::new(policy, false);
        leaf.started(t0);
        assert_eq!(delay(leaf.exited(t0)), ms(100));
    }
}
