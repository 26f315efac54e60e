//! A node's own registration: its [`Member`] record under a lease that is
//! kept alive while the node serves.
//!
//! The lease is renewed every third of its TTL. If renewing fails (the
//! member it talks to went away), the keep-alive moves to another member; if
//! the lease is gone (it expired while etcd was unreachable), a new one is
//! granted and the record put again, as M3's heartbeat store does. When the
//! node drains, the lease is revoked at once, so its parents drop it without
//! waiting for the TTL; a node that dies is dropped when the TTL runs out.
//!
//! The record is the node's own: with each renewal the node reads it back,
//! and puts it back under its lease if something else overwrote it (junk
//! written by hand, another node registered at the same address) or deleted
//! it, so a live node is never left out of its parents' view. The way to
//! take a live node out is to drain it (SIGTERM).

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::etcd::{Etcd, KeepAlive};
use crate::member::Member;

/// The shortest wait between attempts while etcd is unreachable.
const RETRY_MIN: Duration = Duration::from_millis(250);

/// A node's registration in etcd, kept up by a background task.
pub struct Registration {
    serving: watch::Sender<bool>,
    registered: watch::Receiver<bool>,
    withdrawn: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Registration {
    /// Puts `member` at `key` under a lease of `ttl` and keeps it there
    /// until [`Registration::withdraw`] or the process ends.
    pub fn start(etcd: Etcd, key: String, member: Member, ttl: Duration) -> Registration {
        let (serving, serving_rx) = watch::channel(true);
        let (withdrawn_tx, withdrawn) = watch::channel(false);
        let (registered_tx, registered) = watch::channel(false);
        let task = tokio::spawn(keep_registered(
            etcd,
            key,
            member,
            ttl,
            serving_rx,
            registered_tx,
            withdrawn_tx,
        ));
        Registration {
            serving,
            registered,
            withdrawn,
            task,
        }
    }

    /// Waits, at most `wait`, until the record is in etcd; false if it is
    /// not yet (etcd unreachable: the task keeps trying).
    pub async fn registered(&self, wait: Duration) -> bool {
        let mut registered = self.registered.clone();
        matches!(
            tokio::time::timeout(wait, registered.wait_for(|r| *r)).await,
            Ok(Ok(_))
        )
    }

    /// Takes the record out (the node is draining): revokes the lease and
    /// waits, at most `wait`, until etcd has confirmed it.
    pub async fn withdraw(&self, wait: Duration) {
        let _ = self.serving.send(false);
        let mut withdrawn = self.withdrawn.clone();
        let _ = tokio::time::timeout(wait, withdrawn.wait_for(|w| *w)).await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep_registered(
    etcd: Etcd,
    key: String,
    member: Member,
    ttl: Duration,
    mut serving: watch::Receiver<bool>,
    registered: watch::Sender<bool>,
    withdrawn: watch::Sender<bool>,
) {
    let value = member.to_json();
    let mut retry = RETRY_MIN;
    let mut warned = false;
    loop {
        if !*serving.borrow() {
            let _ = withdrawn.send(true);
            return;
        }
        let attempt = async {
            let (lease, granted) = etcd.grant(ttl).await?;
            if let Err(err) = etcd.put(&key, value.clone(), lease).await {
                let _ = etcd.revoke(lease).await;
                return Err(err);
            }
            let Some(keep) = etcd.keep_alive(lease).await? else {
                return Err(crate::etcd::EtcdError::Stream(format!(
                    "lease {lease} gone as soon as granted"
                )));
            };
            Ok::<_, crate::etcd::EtcdError>((lease, granted, keep))
        };
        let (lease, granted, keep) = match attempt.await {
            Ok(r) => r,
            Err(err) => {
                if !warned {
                    tracing::warn!(%err, key, "cannot register in etcd: retrying (the node serves meanwhile)");
                    warned = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = serving.changed() => {}
                }
                retry = (retry * 2).min(ttl / 3).max(RETRY_MIN);
                continue;
            }
        };
        warned = false;
        retry = RETRY_MIN;
        tracing::info!(key, lease, ttl_s = granted.as_secs(), "registered in etcd");
        let _ = registered.send(true);
        if hold(&etcd, lease, granted, keep, (&key, &value), &mut serving).await {
            // Draining: take the record out now rather than at the TTL.
            match etcd.revoke(lease).await {
                Ok(()) => tracing::info!(key, "deregistered from etcd"),
                Err(err) => {
                    tracing::warn!(%err, key, "could not revoke the lease: the record goes when it expires")
                }
            }
            let _ = withdrawn.send(true);
            return;
        }
        tracing::warn!(key, "lease lost: registering again");
    }
}

/// Keeps `lease` alive until the node stops serving (true) or the lease is
/// lost (false); after each renewal, puts `record` (key and value) back
/// under the lease if it is no longer there as put.
async fn hold(
    etcd: &Etcd,
    lease: i64,
    ttl: Duration,
    mut keep: KeepAlive,
    record: (&str, &[u8]),
    serving: &mut watch::Receiver<bool>,
) -> bool {
    let every = (ttl / 3).max(Duration::from_millis(100));
    let mut failing_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            changed = serving.changed() => {
                if changed.is_err() || !*serving.borrow() {
                    return true;
                }
                continue;
            }
        }
        match keep.renew().await {
            Ok(left) if left.is_zero() => return false,
            Ok(_) => {
                failing_since = None;
                restore(etcd, lease, record).await;
            }
            Err(err) => {
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                tracing::debug!(%err, lease, "keep-alive failed: trying another member");
                match etcd.keep_alive(lease).await {
                    Ok(Some(k)) => keep = k,
                    Ok(None) => return false,
                    // Keep trying on the next tick; the lease may still live
                    // (etcd extends leases when a new leader takes over).
                    Err(err) if since.elapsed() > ttl * 4 => {
                        tracing::warn!(%err, lease, "etcd unreachable for a while: registering anew when it returns");
                        return false;
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

/// Reads the record back and puts it again under `lease` if it was
/// overwritten or deleted. A read that fails changes nothing: etcd trouble
/// is the keep-alive's to handle.
async fn restore(etcd: &Etcd, lease: i64, (key, value): (&str, &[u8])) {
    let found = match etcd.get(key).await {
        Ok(found) => found,
        Err(err) => {
            tracing::debug!(%err, key, "cannot read the record back");
            return;
        }
    };
    if let Some((v, l)) = &found
        && v.as_slice() == value
        && *l == lease
    {
        return;
    }
    tracing::warn!(
        key,
        found = found.as_ref().map(|(v, _)| String::from_utf8_lossy(v)
            .chars()
            .take(200)
            .collect::<String>()),
        "the record was overwritten or deleted (by hand, or by another node registered at this address?): putting it back"
    );
    if let Err(err) = etcd.put(key, value.to_vec(), lease).await {
        tracing::warn!(%err, key, "could not put the record back: trying at the next renewal");
    }
}
