//! The versions a leaf can answer at, by number: its current one and those
//! installed beside it (the next one before it is activated, the one it
//! replaced while queries pinned to it are still in flight).
//!
//! Searches pick a version here by `params.version` and keep its
//! `Arc<ShardSearcher>` for their whole run, so a version released by an
//! activation stays open until the last search using it ends.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use searchtree_proto::pb::{FetchResponse, SearchResponse};
use searchtree_proto::{FetchParams, SearchParams};

use crate::collector::Stop;
use crate::cost::Plan;
use crate::node::ShardSearch;
use crate::searcher::{SearchError, ShardSearcher, VERSION_MISSING};

/// The searchable versions of one shard, shared by the search path and the
/// corpus service (which adds, activates and releases versions).
pub struct HeldVersions {
    shard: u32,
    state: RwLock<Held>,
}

struct Held {
    current: u64,
    versions: BTreeMap<u64, Arc<ShardSearcher>>,
}

impl HeldVersions {
    /// Holds `searcher` as the current (and only) version.
    pub fn new(searcher: ShardSearcher) -> Self {
        let shard = searcher.shard().meta.shard;
        let current = searcher.shard().meta.version;
        HeldVersions {
            shard,
            state: RwLock::new(Held {
                current,
                versions: BTreeMap::from([(current, Arc::new(searcher))]),
            }),
        }
    }

    /// The searcher of `version` (0: the current one), or the refusal a
    /// replica group recognises ([`VERSION_MISSING`]).
    pub fn get(&self, version: u64) -> Result<Arc<ShardSearcher>, SearchError> {
        let held = self.state.read().expect("held versions lock");
        let wanted = if version == 0 { held.current } else { version };
        held.versions.get(&wanted).cloned().ok_or_else(|| {
            SearchError::VersionMissing(format!(
                "{VERSION_MISSING} shard {} holds versions {:?}, not {wanted}",
                self.shard,
                held.versions.keys().collect::<Vec<_>>()
            ))
        })
    }

    /// The current version's number.
    pub fn current(&self) -> u64 {
        self.state.read().expect("held versions lock").current
    }

    /// The versions held, ascending (the current one included).
    pub fn numbers(&self) -> Vec<u64> {
        let held = self.state.read().expect("held versions lock");
        held.versions.keys().copied().collect()
    }

    /// Adds (or replaces) a version, searchable by number; not current.
    pub fn insert(&self, searcher: ShardSearcher) {
        let version = searcher.shard().meta.version;
        let mut held = self.state.write().expect("held versions lock");
        held.versions.insert(version, Arc::new(searcher));
    }

    /// Forgets a version that is not the current one (a candidate being
    /// prepared again). Searches running on it finish.
    pub fn remove(&self, version: u64) {
        let mut held = self.state.write().expect("held versions lock");
        if version != held.current {
            held.versions.remove(&version);
        }
    }

    /// Makes `version` (held) the current one and releases every older
    /// version but the one it replaces, which queries pinned to it (roots
    /// that have not yet switched) still need; returns the released
    /// numbers. `None` if the version is not held. The one replaced is not
    /// always `version - 1`: a publish that failed after installing leaves
    /// a version that was never current, which is released here.
    pub fn activate(&self, version: u64) -> Option<Vec<u64>> {
        let mut held = self.state.write().expect("held versions lock");
        if !held.versions.contains_key(&version) {
            return None;
        }
        let previous = std::mem::replace(&mut held.current, version);
        let released: Vec<u64> = held
            .versions
            .range(..version)
            .map(|(v, _)| *v)
            .filter(|&v| v != previous)
            .collect();
        for v in &released {
            held.versions.remove(v);
        }
        Some(released)
    }
}

impl ShardSearch for HeldVersions {
    fn shard_id(&self) -> u32 {
        self.shard
    }

    fn search(&self, params: &SearchParams, stop: Stop) -> Result<SearchResponse, SearchError> {
        self.get(params.version)?.search(params, stop)
    }

    fn fetch(&self, params: &FetchParams, stop: &Stop) -> Result<FetchResponse, SearchError> {
        self.get(params.version)?.fetch(params, stop)
    }

    /// The plan at the version asked for; none if it is not held (the
    /// search says so, from the pool).
    fn plan(&self, params: &SearchParams) -> Option<Plan> {
        crate::cost::plan(&*self.get(params.version).ok()?, params)
    }

    /// The estimate at the version asked for; none if it is not held.
    fn fetch_cost(&self, params: &FetchParams) -> Option<u64> {
        crate::cost::fetch_cost(&*self.get(params.version).ok()?, params)
    }

    fn search_planned(
        &self,
        params: &SearchParams,
        plan: Plan,
        stop: Stop,
    ) -> Result<SearchResponse, SearchError> {
        self.get(params.version)?
            .search_query(params, plan.query, stop)
    }
}
