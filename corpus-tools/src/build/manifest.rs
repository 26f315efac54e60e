//! `manifest.json`: what a build produced and from what. The format is
//! defined beside the shard format ([`searchtree_leaf::shard::manifest`]),
//! since a leaf checks a build against it before serving it.

pub use searchtree_leaf::shard::manifest::*;
