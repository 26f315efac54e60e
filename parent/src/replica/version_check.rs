//! Finding behind replicas with no query asking. A replica that missed a
//! version's Activate is found behind by the query it refuses, or by the
//! Activate this node sent (see `catch_up`). A node that started after that
//! Activate knows neither: in an idle tree the replica would stay behind,
//! and the next load would be refused because the leaves disagree. So the
//! group asks its replicas which versions they hold (`Corpus.Versions`)
//! when the node starts, when a replica comes back into rotation or joins,
//! and every [`RECHECK_EVERY`], and marks behind the replicas that lack
//! the newest version one of them has made its current one.
//!
//! **What "behind" means here.** A version becomes a leaf's *current* one
//! only by Activate, and the root sends Activate only after it has pinned
//! that version, i.e. after every leaf in the version installed it. So a
//! version current on one replica is (or was) the tree's: a sibling that
//! does not hold it at all lacks what queries are, or will be, pinned to.
//! A version merely *installed* on a replica (a publish between its Install
//! and its Activate, or one that failed before the pin) is not the tree's
//! yet, and makes no one behind: only `current` sets the bar. A replica
//! that holds the newest current version installed but not current (it
//! missed only the Activate) is not behind either: it answers queries
//! pinned to it, and the root activates it before the next load or
//! publish. Versions only grow (a publish makes one above every version
//! any leaf holds), so the newest current one is never a step back.

use std::sync::Arc;
use std::time::Duration;

use searchtree_proto::pb::LeafVersions;

use super::ReplicaGroup;
use super::state::Replica;

/// How long a replica may take to say which versions it holds; one that
/// takes longer (busy copying a version, say) is left out of this check.
pub const VERSIONS_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the versions are asked when nothing prompts it: a check that
/// could not hear from a replica holding the newest version is made again
/// within this time, whatever happens meanwhile.
pub const RECHECK_EVERY: Duration = Duration::from_secs(30);

/// What one replica said it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holds {
    current: u64,
    installed: Vec<u64>,
}

/// Where a replica stands against the newest current version of its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// It serves it: a sibling can copy it from this one.
    Current,
    /// It holds it, not yet as its current one (it missed only the
    /// Activate, or the Activate is on its way): not behind.
    Installed,
    /// It lacks it: it must copy it from a sibling.
    Behind,
}

/// A replica's answer to Versions, if it is one leaf's of the group's
/// `shards`: an inner node answers for every leaf below it, which its own
/// groups keep current, and a leaf of another shard (a wrong address or
/// registration) is no sibling to copy from or to compare with.
fn holds(leaves: &[LeafVersions], shards: &[u32]) -> Option<Holds> {
    match leaves {
        [leaf] if leaf.reachable && shards == [leaf.shard] => Some(Holds {
            current: leaf.current,
            installed: leaf.installed.clone(),
        }),
        _ => None,
    }
}

/// Where `holds` stands against `newest`, the newest current version of
/// its group (see the module's notes for why `current`, not `installed`).
fn standing(holds: &Holds, newest: u64) -> Standing {
    if holds.current >= newest {
        Standing::Current
    } else if holds.installed.contains(&newest) {
        Standing::Installed
    } else {
        Standing::Behind
    }
}

impl ReplicaGroup {
    /// Checks the replicas' versions now, and again whenever a replica
    /// comes back or joins (or every [`RECHECK_EVERY`]), until the group is
    /// dropped. For the groups of a serving node; a group whose replicas
    /// are not real leaves (the simulator's) does without.
    pub fn spawn_version_checks(self: &Arc<Self>) {
        let group = Arc::downgrade(self);
        let wanted = Arc::clone(&self.versions_wanted);
        tokio::spawn(async move {
            loop {
                let Some(g) = group.upgrade() else { return };
                g.check_versions().await;
                drop(g);
                let _ = tokio::time::timeout(RECHECK_EVERY, wanted.notified()).await;
            }
        });
    }

    /// Asks every replica which versions it holds, and marks behind (and
    /// starts the catch-up of) each one that lacks the newest version any
    /// of them serves as current; those that serve it become the sources.
    /// Replicas that do not answer in time, and inner nodes, are left as
    /// they are. A group of one has no sibling to copy from.
    pub async fn check_versions(&self) {
        let replicas = self.replicas();
        if replicas.len() < 2 {
            return;
        }
        let asks = replicas
            .iter()
            .filter(|r| !r.lock().not_a_leaf)
            .map(|r| async move {
                let answer =
                    tokio::time::timeout(VERSIONS_TIMEOUT, self.catch_up.versions(r.child.name()))
                        .await;
                match answer {
                    Ok(Ok(leaves)) => holds(&leaves, &self.shards).map(|h| (r, h)),
                    Ok(Err(err)) => {
                        tracing::debug!(replica = r.child.name(), %err, "versions not known");
                        None
                    }
                    Err(_) => None,
                }
            });
        let answers: Vec<(&Arc<Replica>, Holds)> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        let Some(newest) = answers.iter().map(|(_, h)| h.current).max() else {
            return;
        };
        if newest == 0 {
            return;
        }
        for (replica, holds) in &answers {
            match standing(holds, newest) {
                Standing::Current => {
                    // Not lowered when it answered a newer pin already.
                    if replica.lock().answered <= newest {
                        self.on_answered(replica, newest);
                    }
                }
                Standing::Installed => tracing::debug!(
                    replica = replica.child.name(),
                    version = newest,
                    current = holds.current,
                    "holds the version, not yet as current: the root activates it"
                ),
                Standing::Behind => {
                    tracing::info!(
                        replica = replica.child.name(),
                        version = newest,
                        current = holds.current,
                        installed = ?holds.installed,
                        "a sibling serves a version it lacks"
                    );
                    self.mark_behind(replica, newest);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::Rotation;
    use super::super::testing::{FakeCatchUp, VersionedChild, copy_of, ms, versioned_group};
    use super::super::{Policy, ReplicaConfig};
    use super::*;
    use crate::counters::InnerCounter;

    fn config() -> ReplicaConfig {
        ReplicaConfig {
            policy: Policy::RoundRobin,
            hedge_ratio: 0.0,
            health_interval: ms(100),
            ..ReplicaConfig::default()
        }
    }

    #[test]
    fn only_a_version_current_somewhere_sets_the_bar() {
        let at = |current, installed: &[u64]| Holds {
            current,
            installed: installed.to_vec(),
        };
        assert_eq!(standing(&at(2, &[1, 2]), 2), Standing::Current);
        assert_eq!(standing(&at(1, &[1, 2]), 2), Standing::Installed);
        assert_eq!(standing(&at(1, &[1]), 2), Standing::Behind);
        let leaf = LeafVersions {
            reachable: true,
            current: 2,
            installed: vec![1, 2],
            ..LeafVersions::default()
        };
        assert_eq!(
            holds(std::slice::from_ref(&leaf), &[0]),
            Some(at(2, &[1, 2]))
        );
        // An inner node's answer (several leaves), or none, says nothing;
        // nor does another shard's leaf reached as this group's replica.
        assert_eq!(holds(&[leaf.clone(), leaf.clone()], &[0]), None);
        assert_eq!(holds(&[], &[0]), None);
        assert_eq!(holds(std::slice::from_ref(&leaf), &[2]), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_behind_is_found_when_the_node_starts_with_no_query() {
        // The node started after version 2 was activated on r1 alone: it
        // never saw the Activate, and no query comes.
        let r = [
            VersionedChild::new("r0", &[1]),
            VersionedChild::new("r1", &[1, 2]),
        ];
        let copies = FakeCatchUp::new(&r, ms(50), 0);
        let g = versioned_group(&r, &copies, config());
        g.spawn_version_checks();
        tokio::time::sleep(ms(100)).await;
        assert_eq!(copies.calls(), [copy_of("r0", 2, "r1")]);
        assert_eq!(g.rotations()[0], Rotation::Probation);
        assert_eq!(g.counters.get(InnerCounter::ReplicasBehind), 1);
        assert_eq!((r[0].inner.calls(), r[1].inner.calls()), (0, 0));
        assert_eq!(r[0].current(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_version_installed_and_not_yet_activated_makes_no_one_behind() {
        // A publish between Install and Activate: r1 holds version 2, as
        // r0 does not (yet, or ever, if the publish fails): neither serves
        // it, so neither is behind.
        let r = [
            VersionedChild::new("r0", &[1]),
            VersionedChild::new("r1", &[1, 2]),
        ];
        r[1].set_current(1);
        let copies = FakeCatchUp::new(&r, ms(10), 0);
        let g = versioned_group(&r, &copies, config());
        g.check_versions().await;
        tokio::time::sleep(ms(5000)).await;
        assert!(copies.calls().is_empty());
        assert_eq!(g.rotations(), [Rotation::In, Rotation::In]);

        // The Activate reached r1 and is on its way to r0, which installed
        // version 2 too: r0 is not behind, the Activate will do.
        r[0].install(2);
        r[1].set_current(2);
        g.check_versions().await;
        tokio::time::sleep(ms(5000)).await;
        assert!(copies.calls().is_empty());
        assert_eq!(g.rotations(), [Rotation::In, Rotation::In]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_that_comes_back_behind_catches_up_with_no_query() {
        // At start r0 is down: nothing is known of it. It comes back
        // holding version 1 only, while r1 serves version 2.
        let r = [
            VersionedChild::new("r0", &[1]),
            VersionedChild::new("r1", &[1, 2]),
        ];
        r[0].inner.set_down(true);
        let copies = FakeCatchUp::new(&r, ms(10), 0);
        let g = versioned_group(&r, &copies, config());
        g.spawn_health_checks();
        g.spawn_version_checks();
        tokio::time::sleep(ms(1000)).await;
        assert!(copies.calls().is_empty());
        assert_eq!(g.rotations()[0], Rotation::Ejected);

        r[0].inner.set_down(false);
        // Two good checks bring it back; its return asks the versions,
        // well before the periodic check would.
        tokio::time::sleep(ms(500)).await;
        assert_eq!(copies.calls(), [copy_of("r0", 2, "r1")]);
        assert_eq!(g.rotations()[0], Rotation::Probation);
    }

    #[tokio::test(start_paused = true)]
    async fn the_versions_are_asked_again_within_the_recheck_period() {
        // r1 does not say its versions at first (busy): nothing is decided;
        // the next periodic check finds r0 behind.
        let r = [
            VersionedChild::new("r0", &[1]),
            VersionedChild::new("r1", &[1, 2]),
        ];
        let copies = FakeCatchUp::new(&r, ms(10), 0);
        copies.set_versions_down("r1", true);
        let g = versioned_group(&r, &copies, config());
        g.spawn_version_checks();
        tokio::time::sleep(ms(1000)).await;
        assert!(copies.calls().is_empty());
        copies.set_versions_down("r1", false);
        tokio::time::sleep(RECHECK_EVERY).await;
        assert_eq!(copies.calls(), [copy_of("r0", 2, "r1")]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_inner_node_taken_for_behind_is_asked_once() {
        // r0 answers Versions as one leaf would but refuses CatchUp as an
        // inner node does: it is handed back to the health checks, and
        // later checks pass it by instead of taking it for behind again.
        let r = [
            VersionedChild::new("r0", &[1]),
            VersionedChild::new("r1", &[1, 2]),
        ];
        let copies = FakeCatchUp::new(&r, ms(10), 0);
        copies.refuse_as_inner("r0");
        let g = versioned_group(&r, &copies, config());
        g.spawn_health_checks();
        g.spawn_version_checks();
        tokio::time::sleep(RECHECK_EVERY * 3).await;
        assert_eq!(copies.calls().len(), 1, "{:?}", copies.calls());
        assert_eq!(g.rotations()[0], Rotation::In);
    }
}
