//! Telling a corpus call forwarded down the tree from one a client sent to
//! a node below the root.
//!
//! Only the root may start a Load or a Publish: it alone takes the tree's
//! one-operation-at-a-time lock, checks that the leaves agree on their
//! version, and reaches every replica of every shard. A Load a client sends
//! straight to a parent or a leaf would stage operations on some replicas
//! only, after which every publish fails on replicas that disagree. Every
//! forwarded Load carries [`NUM_SHARDS_METADATA`](crate::sharding::NUM_SHARDS_METADATA) (the root sets it, parents
//! pass it on), so a Load without it below the root came from a client and
//! is refused with [`not_root`].
//!
//! A publish's steps (Prepare, Install, Activate) are the same: the root
//! sends them once it holds the lock, in order, to every replica; one a
//! client sends straight to a node would switch a part of the tree to a
//! version the rest lacks. Inner nodes mark the steps they pass down with
//! [`FORWARDED_METADATA`] ([`forwarded`]); a step without it is refused
//! with [`not_root`], naming `searchtree publish`.
//! (This tells a forwarded call from a mistaken one; keeping clients out on
//! purpose is the admin token's work.)

use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Status};

/// The metadata an inner node sets on a publish step it passes down.
pub const FORWARDED_METADATA: &str = "x-searchtree-forwarded";

/// `message` as a call an inner node passes down: marked with
/// [`FORWARDED_METADATA`].
pub fn forwarded<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        FORWARDED_METADATA,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    request
}

/// Whether a call carrying `metadata` was passed down by an inner node.
pub fn is_forwarded(metadata: &MetadataMap) -> bool {
    metadata.contains_key(FORWARDED_METADATA)
}

/// The refusal of a client's `call` ("load" or "publish", as the CLI's
/// subcommands are named) sent to `node`, a node below the root described
/// as "a leaf (shard 3)" or "a parent (shards 0-1)": it names the command
/// to run against the root instead.
pub fn not_root(node: &str, call: &str) -> Status {
    Status::new(
        Code::FailedPrecondition,
        format!(
            "this is {node}, not the tree's root: {call} through the root, \
             `searchtree {call} --root ROOT_ADDR` (`searchtree up` prints the root's address; \
             its --nodes-file lists it with role \"root\")"
        ),
    )
}

/// Whether `status` is a [`not_root`] refusal: rerunning the same command
/// against the same address cannot succeed.
pub fn is_not_root(status: &Status) -> bool {
    status.code() == Code::FailedPrecondition && status.message().contains(", not the tree's root:")
}

/// `shards` (ascending) as a refusal names them: "shard 3", "shards 0-1",
/// "shards 0, 2".
pub fn describe_shards(shards: &[u32]) -> String {
    match shards {
        [] => "no shards".to_string(),
        [one] => format!("shard {one}"),
        [first, .., last] if shards.windows(2).all(|w| w[1] == w[0] + 1) => {
            format!("shards {first}-{last}")
        }
        _ => {
            let list: Vec<String> = shards.iter().map(u32::to_string).collect();
            format!("shards {}", list.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_node_and_the_command_against_the_root() {
        let status = not_root(&format!("a leaf ({})", describe_shards(&[3])), "load");
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(
            status.message().starts_with(
                "this is a leaf (shard 3), not the tree's root: load through the root, \
                 `searchtree load --root ROOT_ADDR`"
            ),
            "{}",
            status.message()
        );
        assert!(is_not_root(&status));
        assert!(!is_not_root(&Status::failed_precondition(
            "leaves disagree"
        )));
        assert_eq!(describe_shards(&[0, 1, 2]), "shards 0-2");
        assert_eq!(describe_shards(&[0, 2]), "shards 0, 2");
        assert_eq!(describe_shards(&[]), "no shards");
    }

    #[test]
    fn a_forwarded_call_is_marked() {
        assert!(is_forwarded(forwarded(()).metadata()));
        assert!(!is_forwarded(Request::new(()).metadata()));
    }
}
