//! Replica groups: several children serving the same shards, and how a parent
//! chooses among them, notices dead or slow ones, and routes around them.
//!
//! - **Health.** Every replica is checked with `grpc.health.v1` every
//!   `health_interval` (with `health_timeout`); errors on real traffic count
//!   too. A replica that refuses a check or a request (not serving,
//!   unreachable) is ejected at once, one whose checks time out after `fall`
//!   in a row; a check that timed out while this node's own timer ran late
//!   is not counted (a few times in a row at most). One that comes back
//!   returns after `rise` consecutive good checks, with **slow start**: its
//!   share of traffic ramps from 10 % to 100 % over `slow_start`.
//! - **Load.** A replica that refuses a request for load
//!   (`RESOURCE_EXHAUSTED`) stays in rotation, passed over for a back-off
//!   (50 ms, doubling with each refusal in a row, at most 1 s) while another
//!   in rotation can answer; never hedged to.
//! - **Probation.** A replica whose recent p90 is persistently more than
//!   `probation_factor` times its peers' median is taken out of rotation and
//!   sent a trickle of shadow requests (copies whose answers are ignored); it
//!   returns when its p90 does. The last replica in rotation is never taken out.
//! - **Choice** among replicas in rotation: [`Policy`].
//! - **Retries.** A request that fails with a retryable error (unavailable,
//!   connection refused, overloaded) goes once more to another replica, if
//!   time remains and the group's retry budget allows (`budget`: a fifth
//!   of its requests beyond a burst), so a group shedding load as a whole is
//!   not sent every request twice.
//! - **Hedging.** A request not answered after the group's recent p95 latency
//!   (over its last 256 answers, worked out every 8; at least
//!   `hedge_min_delay`) is sent to a second replica too; the first
//!   answer wins and the other call is dropped (cancelled). A token bucket
//!   caps hedges at `hedge_ratio` of requests.
//!
//! - **Fetches** (two-phase search) go to one replica chosen the same way,
//!   and once more to another on a retryable failure; never hedged.
//! - **Catch-up.** A replica that refuses a request pinned to a snapshot
//!   version it does not hold is *behind*: the request goes to a sibling, and
//!   the replica stays out of rotation (health checks do not bring it back)
//!   until it has copied the version from a sibling that answered at it;
//!   then it returns through probation. Behind replicas are also found with
//!   no query asking: the group asks its replicas which versions they hold
//!   when the node starts, when a replica comes back, and every half minute.
//!
//! The code follows those seams: `config` (the knobs), `health` (rotation:
//! health checks, ejection and return, probation and shadow traffic), `hedge`
//! (the hedge delay and its token bucket), `choice` (which replica gets a
//! request), `search` (one request, with its retries and hedges),
//! `catch_up` (behind replicas copying a version from a sibling),
//! `version_check` (finding behind replicas by asking their versions), over
//! [`state`] (what is known of one replica) and [`policy`] (the selection
//! policies).

pub mod policy;
pub mod state;

mod budget;
mod catch_up;
mod choice;
mod config;
mod fetch;
mod health;
mod hedge;
mod search;
#[cfg(test)]
mod testing;
mod version_check;

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, Weak};

use crate::counters::InnerCounters;

pub use budget::RETRY_RATIO;
use budget::TokenBucket;
pub use catch_up::{CatchUpCall, GrpcCatchUp};
pub use config::ReplicaConfig;
use hedge::RecentLatencies;
pub use policy::Policy;
use state::Replica;

use crate::child::Child;

/// Replicas of one child, behaving as one child.
pub struct ReplicaGroup {
    name: String,
    shards: Vec<u32>,
    /// The replicas now: replaced whole when membership changes, so a
    /// request works on the list it started with.
    members: std::sync::RwLock<Arc<[Arc<Replica>]>>,
    config: ReplicaConfig,
    counters: Arc<InnerCounters>,
    turn: AtomicUsize,
    /// Draws for the policies and slow start; seeded, so runs repeat.
    rng: Mutex<fastrand::Rng>,
    /// Hedges earned, as a share of requests.
    hedge_budget: TokenBucket,
    /// Retries earned, as a share of requests.
    retry_budget: TokenBucket,
    /// The group's recent latencies, for its hedge delay and reviews.
    recent: Mutex<RecentLatencies>,
    /// How a behind replica is told to copy a version from a sibling.
    catch_up: Arc<dyn CatchUpCall>,
    /// Woken when a replica answers at a version it had not answered at
    /// before: a catch-up waiting for a source may have one.
    answered: tokio::sync::Notify,
    /// The version a lone replica last lacked (logged once per version).
    alone_warned: AtomicU64,
    /// Woken when the replicas' versions are worth asking again (a replica
    /// came back or joined): see [`ReplicaGroup::spawn_version_checks`].
    versions_wanted: Arc<tokio::sync::Notify>,
    me: Weak<ReplicaGroup>,
}

impl ReplicaGroup {
    /// Each replica's address and whether it is in rotation (`healthy`,
    /// `shedding` — in rotation, passed over for a back-off after refusing
    /// for load —, `ejected`, `probation`, `behind`), for the status page.
    pub fn replica_rotations(&self) -> Vec<(String, &'static str)> {
        let now = tokio::time::Instant::now();
        self.replicas()
            .iter()
            .map(|r| {
                let s = r.lock();
                let state = match s.rotation {
                    state::Rotation::In if s.busy(now) => "shedding",
                    state::Rotation::In => "healthy",
                    state::Rotation::Ejected => "ejected",
                    state::Rotation::Probation => "probation",
                    state::Rotation::Behind { .. } => "behind",
                };
                (r.child.name().to_string(), state)
            })
            .collect()
    }

    /// A group over `replicas` (which must serve the same shards), counting
    /// into `counters`. Call
    /// [`ReplicaGroup::spawn_health_checks`] to start checking them. Behind
    /// replicas catch up over gRPC (`Corpus.CatchUp`, the replica's name
    /// being its address).
    pub fn new(
        replicas: Vec<Arc<dyn Child>>,
        config: ReplicaConfig,
        counters: Arc<InnerCounters>,
    ) -> Arc<Self> {
        Self::with_catch_up(replicas, config, counters, Arc::new(GrpcCatchUp::default()))
    }

    /// As [`ReplicaGroup::new`], with behind replicas told to catch up
    /// through `catch_up`.
    pub fn with_catch_up(
        replicas: Vec<Arc<dyn Child>>,
        config: ReplicaConfig,
        counters: Arc<InnerCounters>,
        catch_up: Arc<dyn CatchUpCall>,
    ) -> Arc<Self> {
        assert!(!replicas.is_empty(), "a replica group needs a replica");
        let shards = replicas[0].shards().to_vec();
        let name = replicas
            .iter()
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join("|");
        let replicas = replicas
            .into_iter()
            .map(|r| Arc::new(Replica::new(r)))
            .collect();
        Self::build(name, shards, replicas, config, counters, catch_up)
    }

    /// A group over `shards` whose replicas are not known yet: they come
    /// and go through [`ReplicaGroup::update_members`] (membership in etcd).
    /// Until one has joined, requests fail at once as unavailable.
    pub fn discovered(
        shards: Vec<u32>,
        config: ReplicaConfig,
        counters: Arc<InnerCounters>,
    ) -> Arc<Self> {
        let name = format!("{}@etcd", crate::spec::format_shards(&shards));
        Self::build(
            name,
            shards,
            Vec::new(),
            config,
            counters,
            Arc::new(GrpcCatchUp::default()),
        )
    }

    fn build(
        name: String,
        shards: Vec<u32>,
        replicas: Vec<Arc<Replica>>,
        config: ReplicaConfig,
        counters: Arc<InnerCounters>,
        catch_up: Arc<dyn CatchUpCall>,
    ) -> Arc<Self> {
        let hedge_ratio = config.hedge_ratio;
        let retry_ratio = config.retry_ratio;
        Arc::new_cyclic(|me| ReplicaGroup {
            name,
            shards,
            members: std::sync::RwLock::new(replicas.into()),
            config,
            counters,
            turn: AtomicUsize::new(0),
            rng: Mutex::new(fastrand::Rng::with_seed(0x5eed)),
            hedge_budget: TokenBucket::new(hedge_ratio),
            retry_budget: TokenBucket::full(retry_ratio, budget::RETRIES_PER_SECOND),
            recent: Mutex::new(RecentLatencies::new()),
            catch_up,
            answered: tokio::sync::Notify::new(),
            alone_warned: AtomicU64::new(0),
            versions_wanted: Arc::new(tokio::sync::Notify::new()),
            me: me.clone(),
        })
    }
}

impl ReplicaGroup {
    /// The replicas now (a snapshot: membership may change meanwhile).
    fn replicas(&self) -> Arc<[Arc<Replica>]> {
        Arc::clone(&self.members.read().expect("members lock"))
    }

    /// Whether `replica` is still one of the group's.
    fn is_member(&self, replica: &Arc<Replica>) -> bool {
        self.replicas().iter().any(|r| Arc::ptr_eq(r, replica))
    }

    /// Makes the group's replicas the children at `addrs`: those already in
    /// it stay as they are (rotation, latencies); those that left go (calls
    /// in flight to them finish); a new one is created by `connect` and, if
    /// `joining`, joins like a replica back from an outage — out of rotation
    /// until it passes `rise` health checks, then ramped up by slow start
    /// (else it is in rotation at once: the members a node finds when it
    /// starts). Returns the addresses added and removed.
    pub fn update_members(
        &self,
        addrs: &[String],
        joining: bool,
        connect: impl Fn(&str) -> Option<Arc<dyn Child>>,
    ) -> (Vec<String>, Vec<String>) {
        let mut members = self.members.write().expect("members lock");
        let mut next: Vec<Arc<Replica>> = Vec::with_capacity(addrs.len());
        let mut added = Vec::new();
        for addr in addrs {
            if let Some(existing) = members.iter().find(|r| r.child.name() == addr) {
                next.push(Arc::clone(existing));
            } else if let Some(child) = connect(addr) {
                next.push(Arc::new(if joining {
                    Replica::joining(child)
                } else {
                    Replica::new(child)
                }));
                added.push(addr.clone());
            }
        }
        let removed = members
            .iter()
            .filter(|r| !addrs.iter().any(|a| a == r.child.name()))
            .map(|r| r.child.name().to_string())
            .collect();
        *members = next.into();
        if !added.is_empty() {
            self.versions_wanted.notify_one();
        }
        (added, removed)
    }
}
