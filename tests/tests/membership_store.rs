//! What other writers leave in a tree's etcd prefix, on a real etcd on
//! loopback, without a tree: a live node's record overwritten with junk or
//! emptied by hand is put back by the node, and records larger in total
//! than a gRPC message's default limit (4 MiB) still read as a view.

use std::time::{Duration, Instant};

use searchtree_membership::member::{Member, member_key, tree_prefix};
use searchtree_membership::{Etcd, Registration};
use searchtree_tests::etcd::EtcdCluster;

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// Waits until `key` holds `value` under some lease again; returns how
/// long that took, or panics after `wait`.
async fn until_restored(etcd: &Etcd, key: &str, value: &[u8], wait: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(Some((v, lease))) = etcd.get(key).await
            && v == value
            && lease != 0
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < wait,
            "{key} not put back within {wait:?}: {:?}",
            etcd.get(key).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_live_nodes_record_overwritten_or_deleted_by_hand_is_put_back() {
    let cluster = EtcdCluster::start(std::path::Path::new(TMP), 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let etcd = cluster.client();
        let member = Member {
            addr: "127.0.0.1:43999".into(),
            role: "leaf".into(),
            shards: vec![0],
            http: None,
            pid: std::process::id(),
            instance: 0,
        };
        let key = member_key("store-test", &member.addr);
        let ttl = Duration::from_secs(3);
        let registration = Registration::start(etcd.clone(), key.clone(), member.clone(), ttl);
        assert!(registration.registered(Duration::from_secs(10)).await);
        let value = member.to_json();

        // Junk over the record (not attached to any lease: it would stay
        // for ever), then the record emptied: each is undone within about
        // one renewal (a third of the TTL).
        etcd.put(&key, b"{\"junk\": true}".to_vec(), 0)
            .await
            .unwrap();
        let took = until_restored(&etcd, &key, &value, ttl * 2).await;
        println!("overwritten record put back after {took:?}");
        etcd.put(&key, Vec::new(), 0).await.unwrap();
        let (kvs, _) = etcd.get_prefix(&tree_prefix("store-test")).await.unwrap();
        assert_eq!(kvs.len(), 1);
        until_restored(&etcd, &key, &value, ttl * 2).await;

        // A node that drains still takes its record out.
        registration.withdraw(Duration::from_secs(5)).await;
        assert_eq!(etcd.get(&key).await.unwrap(), None);
    });
}
#[test]
fn a_prefix_larger_than_a_default_grpc_message_still_reads() {
    let cluster = EtcdCluster::start(std::path::Path::new(TMP), 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let etcd = cluster.client();
        let prefix = tree_prefix("big-test");
        // Four records of 1.2 MB each (etcd takes requests up to 1.5 MiB):
        // about 4.8 MB in one range answer.
        for c in ['a', 'b', 'c', 'd'] {
            let key = format!("{prefix}{}", c.to_string().repeat(1_200_000));
            etcd.put(&key, b"junk".to_vec(), 0).await.unwrap();
        }
        let (kvs, revision) = etcd.get_prefix(&prefix).await.expect("the prefix reads");
        assert_eq!(kvs.len(), 4);
        assert!(revision > 0);
    });
}

/// Roots announcing publishes at the same moment leave the newest version
/// in the key, whatever the order their writes land in; an older one
/// announced later leaves it; a value written by hand is replaced; and the
/// announcements a root follows only ever grow.
#[test]
fn announcements_written_at_once_leave_the_newest_and_are_followed() {
    use searchtree_membership::published::{Announcements, announce, published_key};
    let cluster = EtcdCluster::start(std::path::Path::new(TMP), 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let etcd = cluster.client();
        let tree = "announce-store-test";
        let key = published_key(tree);
        let read =
            || async { String::from_utf8(etcd.get(&key).await.unwrap().unwrap().0).unwrap() };
        let followed = Announcements::start(etcd.clone(), tree);
        let mut newest = followed.subscribe();

        etcd.put(&key, b"written by hand".to_vec(), 0)
            .await
            .unwrap();
        announce(&etcd, tree, 3).await.unwrap();
        assert_eq!(read().await, "{\"version\":3}");
        announce(&etcd, tree, 2).await.unwrap();
        assert_eq!(read().await, "{\"version\":3}", "an older one leaves it");

        for round in 0..5u64 {
            let base = 10 + round * 100;
            let writers: Vec<_> = (0..24u64)
                .map(|i| {
                    let etcd = etcd.clone();
                    tokio::spawn(async move { announce(&etcd, tree, base + i).await })
                })
                .collect();
            for w in writers {
                w.await.unwrap().unwrap();
            }
            let want = base + 23;
            assert_eq!(
                read().await,
                format!("{{\"version\":{want}}}"),
                "round {round}"
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while *newest.borrow_and_update() != want {
                assert!(Instant::now() < deadline, "the follower never saw {want}");
                let _ = tokio::time::timeout(Duration::from_millis(100), newest.changed()).await;
            }
        }
    });
}
