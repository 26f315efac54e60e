//! Following who is registered: a prefix read for the current members and
//! the store's revision, then a watch from the next revision; after a watch
//! fails or is compacted, read again and watch again.
//!
//! While etcd cannot be reached the last view stands: a store that is away
//! says nothing about the nodes, which keep serving, so no replica group is
//! ever emptied because etcd is. The view changes only on what etcd says.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::etcd::{Etcd, Event, WatchMessage};
use crate::member::{Member, tree_prefix};

/// The registered members of a tree, by key.
pub type Members = BTreeMap<String, Member>;

/// The shortest and longest waits between attempts while etcd is away.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// A live view of a tree's members, kept current by a background task.
pub struct Discovery {
    view: watch::Receiver<Arc<Members>>,
    synced: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Discovery {
    /// Starts following the members of `tree`.
    pub fn start(etcd: Etcd, tree: &str) -> Discovery {
        let (tx, view) = watch::channel(Arc::new(Members::new()));
        let (synced_tx, synced) = watch::channel(false);
        let task = tokio::spawn(follow(etcd, tree_prefix(tree), tx, synced_tx));
        Discovery { view, synced, task }
    }

    /// The view, and its changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Members>> {
        self.view.clone()
    }

    /// Waits, at most `wait`, until the view has been read from etcd once;
    /// false if it has not.
    pub async fn synced(&self, wait: Duration) -> bool {
        let mut synced = self.synced.clone();
        matches!(
            tokio::time::timeout(wait, synced.wait_for(|s| *s)).await,
            Ok(Ok(_))
        )
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Applies a watch's events to a view.
pub fn apply(members: &mut Members, events: &[Event]) {
    for event in events {
        match event {
            Event::Put { key, value } => match Member::from_json(value) {
                Some(member) => {
                    members.insert(key.clone(), member);
                }
                None => {
                    tracing::warn!(key, "not a member record: ignored");
                    members.remove(key);
                }
            },
            Event::Delete { key } => {
                members.remove(key);
            }
        }
    }
}

async fn follow(
    etcd: Etcd,
    prefix: String,
    tx: watch::Sender<Arc<Members>>,
    synced: watch::Sender<bool>,
) {
    let mut members = Members::new();
    follow_prefix(&etcd, &prefix, "membership", |seen| {
        match seen {
            Seen::Listed(kvs) => {
                members = kvs
                    .into_iter()
                    .filter_map(|(key, value)| Some((key, Member::from_json(&value)?)))
                    .collect();
                let _ = synced.send(true);
            }
            Seen::Changed(events) => apply(&mut members, events),
        }
        publish(&tx, members.clone());
    })
    .await
}

/// What [`follow_prefix`] saw under its prefix.
pub enum Seen<'a> {
    /// Every key and its value, as read (first, and after a lost watch).
    Listed(Vec<(String, Vec<u8>)>),
    /// Changes since, in order.
    Changed(&'a [Event]),
}

/// Follows the keys under `prefix` for as long as the task runs: lists them
/// (`seen` gets [`Seen::Listed`]), then watches from the revision read
/// (`seen` gets each batch of changes); after a watch fails or is lost,
/// lists again. While etcd is away it retries, backing off from
/// [`RETRY_MIN`] to [`RETRY_MAX`], and `seen` hears nothing: what was last
/// seen stands. `what` names the keys in the log.
pub async fn follow_prefix(etcd: &Etcd, prefix: &str, what: &str, mut seen: impl FnMut(Seen<'_>)) {
    let mut retry = RETRY_MIN;
    let mut away = false;
    loop {
        let (kvs, revision) = match etcd.get_prefix(prefix).await {
            Ok(read) => read,
            Err(err) => {
                if !away {
                    tracing::warn!(%err, what, "etcd unreachable: keeping what was last seen");
                    away = true;
                }
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        };
        if away {
            tracing::info!(revision, what, keys = kvs.len(), "etcd back: read again");
            away = false;
        }
        seen(Seen::Listed(kvs));

        let mut watch = match etcd.watch_prefix(prefix, revision + 1).await {
            Ok(watch) => watch,
            Err(err) => {
                tracing::warn!(%err, what, "cannot watch etcd: reading again");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        };
        retry = RETRY_MIN;
        tracing::debug!(endpoint = watch.endpoint(), revision, what, "watching");
        loop {
            match watch.next().await {
                Ok(WatchMessage::Events { events, .. }) => {
                    if !events.is_empty() {
                        seen(Seen::Changed(&events));
                    }
                }
                Ok(WatchMessage::Lost(reason)) => {
                    tracing::info!(reason, what, "watch lost: reading again");
                    break;
                }
                Err(err) => {
                    tracing::warn!(%err, what, endpoint = watch.endpoint(), "watch failed: reading again");
                    tokio::time::sleep(RETRY_MIN).await;
                    break;
                }
            }
        }
    }
}

/// Publishes a view if it differs from the current one.
fn publish(tx: &watch::Sender<Arc<Members>>, members: Members) {
    tx.send_if_modified(|current| {
        if **current == members {
            return false;
        }
        *current = Arc::new(members);
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, member: &Member) -> Event {
        Event::Put {
            key: key.into(),
            value: member.to_json(),
        }
    }

    #[test]
    fn events_add_replace_and_remove_members() {
        let leaf = |addr: &str, shard| Member {
            addr: addr.into(),
            role: "leaf".into(),
            shards: vec![shard],
            http: None,
            pid: 1,
            instance: 0,
        };
        let mut members = Members::new();
        apply(
            &mut members,
            &[put("k1", &leaf("a:1", 0)), put("k2", &leaf("b:1", 1))],
        );
        assert_eq!(members.len(), 2);
        apply(
            &mut members,
            &[
                put("k1", &leaf("a:1", 2)),
                Event::Delete { key: "k2".into() },
                Event::Put {
                    key: "k3".into(),
                    value: b"junk".to_vec(),
                },
            ],
        );
        assert_eq!(members.len(), 1);
        assert_eq!(members["k1"].shards, [2]);
    }
}
