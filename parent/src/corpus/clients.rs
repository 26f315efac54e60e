//! The children of an inner node as the `Corpus` service sees them: every
//! replica of every child, each with its own lazily connected client.
//!
//! Searches go to one replica of a child ([`crate::replica`]); corpus calls
//! go to all of them, since every replica must hold every version.

use searchtree_node::background;
use searchtree_node::ops::client::{NodeChannel, channel};
use searchtree_node::serving::MAX_CORPUS_MESSAGE_BYTES;
use searchtree_proto::pb::corpus_client::CorpusClient;

use crate::child::endpoint;
use crate::spec::ChildSpec;

/// One replica of a child: its address and a client for it.
#[derive(Debug, Clone)]
pub struct CorpusReplica {
    /// `HOST:PORT`, as named in the child's spec and in messages.
    pub addr: String,
    client: CorpusClient<NodeChannel>,
}

impl CorpusReplica {
    /// A client for the replica at `addr`; no connection is made yet.
    pub fn new(addr: &str) -> Result<Self, tonic::transport::Error> {
        // The channel's tasks (connection, request encoding) run on the
        // bulk-work runtime, away from the queries.
        let _bulk = background::handle().enter();
        let channel = channel(endpoint(addr)?.connect_lazy());
        Ok(CorpusReplica {
            addr: addr.to_string(),
            client: CorpusClient::new(channel)
                .max_decoding_message_size(MAX_CORPUS_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_CORPUS_MESSAGE_BYTES),
        })
    }

    /// A handle for one call (clients are cheap to clone and share the
    /// channel).
    pub fn client(&self) -> CorpusClient<NodeChannel> {
        self.client.clone()
    }
}

/// One child: the shards below it and its replicas.
#[derive(Debug, Clone)]
pub struct CorpusChild {
    /// The shards below the child, ascending.
    pub shards: Vec<u32>,
    /// Every replica of the child, but those set aside as misplaced.
    pub replicas: Vec<CorpusReplica>,
    /// Replicas named for the child that answer for other shards (see
    /// [`CorpusChildren::set_aside`]), by address: not called, only named.
    pub misplaced: Vec<String>,
}

impl CorpusChild {
    /// Why a step for this child's shards found no replica to send it to,
    /// when none is left: the misplaced ones named, if any.
    pub fn none_known(&self) -> String {
        let shards = crate::spec::format_shards(&self.shards);
        if self.misplaced.is_empty() {
            format!("no replica of shard(s) {shards} is known below this node")
        } else {
            format!(
                "no replica of shard(s) {shards} is known below this node: {} {} named for \
                 them but {} for other shards (a wrong address, or an etcd record naming \
                 shards the node does not serve; `searchtree members` lists the records)",
                self.misplaced.join(", "),
                if self.misplaced.len() == 1 {
                    "is"
                } else {
                    "are"
                },
                if self.misplaced.len() == 1 {
                    "answers"
                } else {
                    "answer"
                },
            )
        }
    }
}

/// Every child of a node, for corpus calls.
#[derive(Debug, Clone)]
pub struct CorpusChildren {
    children: Vec<CorpusChild>,
}

impl CorpusChildren {
    /// Clients for the children `specs` name (connected lazily).
    pub fn from_specs(specs: &[ChildSpec]) -> Result<Self, tonic::transport::Error> {
        let children = specs
            .iter()
            .map(|spec| {
                Ok(CorpusChild {
                    shards: spec.shards.clone(),
                    replicas: spec
                        .addrs
                        .iter()
                        .map(|a| CorpusReplica::new(a))
                        .collect::<Result<_, _>>()?,
                    misplaced: Vec::new(),
                })
            })
            .collect::<Result<_, tonic::transport::Error>>()?;
        Ok(CorpusChildren { children })
    }

    /// Sets the replicas of the child over exactly `shards` to `addrs`,
    /// keeping the clients of those that stay. Addresses that are not valid
    /// URIs are left out (and logged).
    pub fn set_replicas(&mut self, shards: &[u32], addrs: &[String]) {
        let Some(child) = self.children.iter_mut().find(|c| c.shards == shards) else {
            return;
        };
        let mut next = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if let Some(existing) = child.replicas.iter().find(|r| &r.addr == addr) {
                next.push(existing.clone());
                continue;
            }
            match CorpusReplica::new(addr) {
                Ok(replica) => next.push(replica),
                Err(err) => tracing::warn!(addr, %err, "cannot make a corpus client"),
            }
        }
        child.replicas = next;
    }

    /// Moves the replicas for which `misplaced(child's shards, address)`
    /// holds out of the replicas called, into the child's `misplaced`.
    pub fn set_aside(&mut self, mut misplaced: impl FnMut(&[u32], &str) -> bool) {
        for child in &mut self.children {
            let (out, keep): (Vec<CorpusReplica>, Vec<CorpusReplica>) = child
                .replicas
                .drain(..)
                .partition(|r| misplaced(&child.shards, &r.addr));
            child.replicas = keep;
            child.misplaced = out.into_iter().map(|r| r.addr).collect();
        }
    }

    /// The children, in the order given.
    pub fn children(&self) -> &[CorpusChild] {
        &self.children
    }

    /// The index of the child holding `shard`, if any does.
    pub fn child_of(&self, shard: u32) -> Option<usize> {
        self.children
            .iter()
            .position(|c| c.shards.binary_search(&shard).is_ok())
    }

    /// Every shard below the node, ascending.
    pub fn shards(&self) -> Vec<u32> {
        let mut shards: Vec<u32> = self
            .children
            .iter()
            .flat_map(|c| c.shards.iter().copied())
            .collect();
        shards.sort_unstable();
        shards
    }

    /// The total shard count of the corpus if the shards below are exactly
    /// `0..n` (a whole tree), which is then `n`.
    pub fn whole_tree_shards(&self) -> Option<u32> {
        let shards = self.shards();
        // No shard known (yet): no count to place documents by.
        let n = u32::try_from(shards.len()).ok().filter(|&n| n > 0)?;
        shards
            .iter()
            .enumerate()
            .all(|(i, s)| *s as usize == i)
            .then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shards_route_to_their_child_and_a_whole_tree_knows_its_count() {
        let specs: Vec<ChildSpec> = ["0,2@127.0.0.1:1", "1@127.0.0.1:2,127.0.0.1:3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let children = CorpusChildren::from_specs(&specs).unwrap();
        assert_eq!(children.child_of(2), Some(0));
        assert_eq!(children.child_of(1), Some(1));
        assert_eq!(children.child_of(3), None);
        assert_eq!(children.whole_tree_shards(), Some(3));
        assert_eq!(children.children()[1].replicas[1].addr, "127.0.0.1:3");
        let part = CorpusChildren::from_specs(&["1-2@127.0.0.1:1".parse().unwrap()]).unwrap();
        assert_eq!(part.whole_tree_shards(), None);
        let none = CorpusChildren::from_specs(&[]).unwrap();
        assert_eq!(none.whole_tree_shards(), None);
    }
}
