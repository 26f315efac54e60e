//! The newest version published through any root of a tree, announced in
//! etcd, so that every root of the tree pins it at once.
//!
//! A tree may have several roots behind one address (the Kubernetes
//! manifests run two). A publish through one moves that root's pin; the
//! others find the new version by asking the leaves now and then. With the
//! tree in etcd, the publishing root also writes the version under
//! [`published_key`], and the other roots, watching it, ask the leaves at
//! once. The key is a hint, not the truth: a root pins a version only once
//! the leaves say they all serve it, so a stale or hand-written value moves
//! nothing.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::discovery::{Seen, follow_prefix};
use crate::etcd::{Etcd, EtcdError, Event};

/// How long a root waits for etcd to take an announcement before it gives
/// up on it (the publish itself has succeeded; the other roots then follow
/// by asking the leaves, as without etcd).
pub const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(2);

/// The key holding the newest version published through a root of `tree`.
/// Outside the members' prefix, so no member list reads it.
pub fn published_key(tree: &str) -> String {
    format!("/searchtree/{tree}/published")
}

/// Writes `version` as the newest published in `tree`, unless a newer one
/// is there already. Not attached to a lease: it outlives the root that
/// wrote it. Two roots publishing one after the other may write at the
/// same moment; a write that replaced a newer version puts that one back
/// (and so on, should a newer one still have been replaced), so the key
/// ends at the newest written — a maximum kept with plain puts. Each put
/// back writes a newer version than the last, so the loop ends; a caller
/// bounds it in time ([`ANNOUNCE_TIMEOUT`]) against a writer that keeps
/// writing newer ones.
pub async fn announce(etcd: &Etcd, tree: &str, version: u64) -> Result<(), EtcdError> {
    let key = published_key(tree);
    let there = etcd.get(&key).await?.and_then(|(value, _)| parse(&value));
    if there.is_some_and(|v| v >= version) {
        return Ok(());
    }
    let mut writing = version;
    loop {
        let replaced = etcd.swap(&key, render(writing)).await?;
        match replaced.and_then(|value| parse(&value)) {
            Some(newer) if newer > writing => writing = newer,
            _ => return Ok(()),
        }
    }
}

/// The value an announcement writes.
fn render(version: u64) -> Vec<u8> {
    format!("{{\"version\":{version}}}").into_bytes()
}

/// The version in an announcement; `None` for anything else (a value
/// written by hand, say), which is ignored.
fn parse(value: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Announced {
        version: u64,
    }
    serde_json::from_slice::<Announced>(value)
        .ok()
        .map(|a| a.version)
}

/// The announcements of a tree, followed by a background task: the newest
/// version announced (0 until one is), through a watch channel that
/// changes with each newer one.
pub struct Announcements {
    newest: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl Announcements {
    /// Starts following the announcements of `tree`. While etcd is away
    /// the last one seen stands, and the roots' own polling of the leaves
    /// goes on regardless.
    pub fn start(etcd: Etcd, tree: &str) -> Announcements {
        let (tx, newest) = watch::channel(0);
        let key = published_key(tree);
        let task = tokio::spawn(async move {
            let note = |value: &[u8]| {
                if let Some(version) = parse(value) {
                    tx.send_if_modified(|newest| {
                        let newer = version > *newest;
                        if newer {
                            *newest = version;
                        }
                        newer
                    });
                }
            };
            follow_prefix(&etcd, &key, "published version", |seen| match seen {
                Seen::Listed(kvs) => {
                    for (k, value) in kvs {
                        if k == key {
                            note(&value);
                        }
                    }
                }
                Seen::Changed(events) => {
                    for event in events {
                        if let Event::Put { key: k, value } = event
                            && *k == key
                        {
                            note(value);
                        }
                    }
                }
            })
            .await
        });
        Announcements { newest, task }
    }

    /// The newest version announced, and its changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.newest.clone()
    }
}

impl Drop for Announcements {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_read_back_and_other_values_are_ignored() {
        assert_eq!(parse(&render(42)), Some(42));
        for junk in [&b""[..], b"42", b"{\"version\":-1}", b"{\"v\":3}", b"\xff"] {
            assert_eq!(parse(junk), None, "{junk:?}");
        }
        assert_eq!(published_key("wiki"), "/searchtree/wiki/published");
        assert!(!published_key("wiki").starts_with(&crate::member::tree_prefix("wiki")));
    }
}
