//! The `Corpus` service of inner nodes: each call is passed down to every
//! replica of the children holding the shards concerned, and their answers
//! are folded into one (see corpus.proto). The root builds on the same
//! [`CorpusNode`] and adds what only it decides: the version to publish and
//! the one queries are pinned to.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};

use futures::Stream;
use tokio::sync::mpsc;

use crate::replica::ReplicaGroup;

pub mod acks;
pub mod clients;
pub mod discard;
pub mod load;
pub mod publish_steps;
pub mod service;
#[cfg(test)]
mod tests;

pub use clients::{CorpusChildren, CorpusReplica};
pub use load::forward_load;
pub use publish_steps::Prepared;
pub use service::ParentCorpus;

/// A version prepared below a node, and the replicas `(child, replica)`
/// that prepared it.
type PreparedSet = (u64, BTreeSet<(usize, usize)>, CorpusChildren);

/// What an inner node keeps between corpus calls: its children, the
/// replicas that missed part of a load since the last Activate, and which
/// replicas prepared the version being published.
#[derive(Debug)]
pub struct CorpusNode {
    /// Replaced whole when membership changes; each call works on the
    /// children as it found them.
    children: std::sync::RwLock<CorpusChildren>,
    /// Replicas (addresses, here or below) that failed to commit a batch a
    /// sibling committed: left out of the next version, until Activate.
    missed: Arc<Mutex<BTreeSet<String>>>,
    /// The version last prepared here and the replicas `(child, replica)`
    /// that prepared it: the ones its Install goes to.
    prepared: Mutex<Option<PreparedSet>>,
    /// The replica groups serving this node's searches, told of every
    /// Activate so that a replica that lacks the version catches up at once.
    groups: Mutex<Vec<Weak<ReplicaGroup>>>,
    /// The version last activated on a replica below through this node (0:
    /// none since it started): what its searches are pinned to from then
    /// on, and what its status reports before a search has shown it.
    last_activated: std::sync::atomic::AtomicU64,
    /// Whether a load went through this node since the last publish's
    /// Activate (or a Discard that reached every replica): a replica that
    /// joins a child meanwhile lacks what its siblings staged, so it counts
    /// as having missed the load.
    loaded: std::sync::atomic::AtomicBool,
    /// Replicas `(child's shards, address)` that answered Versions for
    /// other shards than the child's (see [`CorpusNode::versions`]): left
    /// out of every corpus call but Versions, which keeps asking them.
    misplaced: Mutex<BTreeSet<(Vec<u32>, String)>>,
}

impl CorpusNode {
    /// A node over `children`.
    pub fn new(children: CorpusChildren) -> Self {
        CorpusNode {
            children: std::sync::RwLock::new(children),
            missed: Arc::new(Mutex::new(BTreeSet::new())),
            prepared: Mutex::new(None),
            groups: Mutex::new(Vec::new()),
            last_activated: std::sync::atomic::AtomicU64::new(0),
            loaded: std::sync::atomic::AtomicBool::new(false),
            misplaced: Mutex::new(BTreeSet::new()),
        }
    }

    /// Tells `group` (one of the replica groups this node searches) of
    /// every version activated below from now on (see
    /// [`ReplicaGroup::on_activated`]).
    pub fn follow_activations(&self, group: &Arc<ReplicaGroup>) {
        self.groups
            .lock()
            .expect("groups lock")
            .push(Arc::downgrade(group));
    }

    /// `version` was activated on the direct replicas `activated` (their
    /// addresses): the groups learn which of their replicas hold it.
    fn activated(&self, version: u64, activated: &BTreeSet<String>) {
        if !activated.is_empty() {
            self.last_activated
                .store(version, std::sync::atomic::Ordering::Relaxed);
        }
        let groups: Vec<Arc<ReplicaGroup>> = {
            let mut groups = self.groups.lock().expect("groups lock");
            groups.retain(|g| g.strong_count() > 0);
            groups.iter().filter_map(Weak::upgrade).collect()
        };
        for group in groups {
            group.on_activated(version, activated);
        }
    }

    /// The version last activated below through this node, 0 if none
    /// was since it started.
    pub fn last_activated(&self) -> u64 {
        self.last_activated
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The children, for corpus calls (a snapshot), without the replicas
    /// found misplaced: a load or publish step sent to one would reach
    /// another shard's leaf as this child's.
    pub fn children(&self) -> CorpusChildren {
        let mut children = self.all_children();
        let misplaced = self.misplaced.lock().expect("misplaced lock");
        if !misplaced.is_empty() {
            children
                .set_aside(|shards, addr| misplaced.contains(&(shards.to_vec(), addr.to_string())));
        }
        children
    }

    /// Every child and replica as named (a snapshot), misplaced ones
    /// included: what Versions asks.
    fn all_children(&self) -> CorpusChildren {
        self.children.read().expect("children lock").clone()
    }

    /// Records which replicas of `children` answered Versions for other
    /// shards (`found`) among those that answered at all (`answered`):
    /// a replica that did not answer keeps what was known of it.
    fn set_misplaced(
        &self,
        children: &CorpusChildren,
        answered: &BTreeSet<(Vec<u32>, String)>,
        found: BTreeSet<(Vec<u32>, String)>,
    ) {
        let mut misplaced = self.misplaced.lock().expect("misplaced lock");
        misplaced.retain(|(shards, addr)| {
            !answered.contains(&(shards.clone(), addr.clone()))
                && children
                    .children()
                    .iter()
                    .any(|c| &c.shards == shards && c.replicas.iter().any(|r| &r.addr == addr))
        });
        for entry in found {
            if misplaced.insert(entry.clone()) {
                tracing::warn!(
                    replica = %entry.1,
                    shards = ?entry.0,
                    "a replica answers for other shards: left out of loads and publishes"
                );
            }
        }
    }

    /// Sets the replicas of the child over `shards` (membership in etcd
    /// changed): corpus calls from now on go to `addrs`. One that joins
    /// while a load's operations are staged below (or back after it left)
    /// lacks some of them: it is recorded as having missed the load, left
    /// out of the next version and caught up from a sibling afterwards,
    /// rather than failing the publish by disagreeing with its siblings.
    pub fn set_replicas(&self, shards: &[u32], addrs: &[String]) {
        let mut children = self.children.write().expect("children lock");
        // An address that is another child's replica too is misplaced in
        // one of them (a leaf serves one shard), and `missed` goes by
        // address: marking it would leave it out as its own shard's.
        let elsewhere = |addr: &String| {
            children
                .children()
                .iter()
                .any(|c| c.shards != shards && c.replicas.iter().any(|r| &r.addr == addr))
        };
        let joined: Vec<String> = match children.children().iter().find(|c| c.shards == shards) {
            Some(child) => addrs
                .iter()
                .filter(|a| !child.replicas.iter().any(|r| &r.addr == *a) && !elsewhere(a))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        children.set_replicas(shards, addrs);
        drop(children);
        if !joined.is_empty() && self.loaded.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::info!(
                replicas = ?joined,
                "joined while a load is staged below: left out of the next version, to catch up"
            );
            self.add_missed(joined);
        }
    }

    /// A load started through this node, or ended with a publish or a
    /// discard (see `loaded`).
    fn set_loaded(&self, loaded: bool) {
        self.loaded
            .store(loaded, std::sync::atomic::Ordering::Relaxed);
    }

    /// Replicas that missed part of a load since the last Activate.
    pub fn missed(&self) -> BTreeSet<String> {
        self.missed.lock().expect("missed lock").clone()
    }

    /// Records replicas that missed part of a load or publish.
    pub fn add_missed(&self, replicas: impl IntoIterator<Item = String>) {
        self.missed.lock().expect("missed lock").extend(replicas);
    }

    /// Forwards a Load stream below (see [`load`]), placing ops among
    /// `num_shards` shards; acknowledgements arrive on the returned stream.
    pub fn load<S>(
        &self,
        num_shards: u32,
        incoming: S,
    ) -> (
        mpsc::Receiver<Result<searchtree_proto::pb::LoadAck, tonic::Status>>,
        impl Future<Output = ()> + Send + 'static,
    )
    where
        S: Stream<Item = Result<searchtree_proto::pb::LoadBatch, tonic::Status>>
            + Unpin
            + Send
            + 'static,
    {
        self.set_loaded(true);
        let (tx, rx) = mpsc::channel(load::MAX_BATCHES_IN_FLIGHT);
        let work = forward_load(
            self.children(),
            num_shards,
            incoming,
            tx,
            Arc::clone(&self.missed),
        );
        (rx, work)
    }
}

/// The items of `rx` as a stream (what tonic sends as a streaming request
/// or response).
pub fn receiver_stream<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}
