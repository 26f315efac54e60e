//! The hop limit: a request going round a loop in the tree's wiring is
//! refused instead of bouncing until its budget runs out.
//!
//! Each inner node sends a request down with `hops` one higher than it
//! came with (`SearchRequest.hops`, `FetchRequest.hops`). A wiring loop —
//! a node taking a node above it, or itself, as a child, through a wrong
//! `--child` address or an etcd record — would otherwise turn one query
//! into a request per hop for as long as its budget lasts, on every node
//! of the loop. Past [`MAX_HOPS`] the inner node refuses, naming the cause;
//! its caller counts the child as failed and tries another replica.

use tonic::Status;

/// The most inner nodes a request may pass through: far more levels than
/// any tree has (a tree of 16 levels with two children at each would have
/// 65,536 leaves).
pub const MAX_HOPS: u32 = 16;

/// Refuses, at the inner node `node`, a request that has passed through
/// `hops` inner nodes already, when that is more than [`MAX_HOPS`].
pub fn check(hops: u32, node: &str) -> Result<(), Status> {
    if hops <= MAX_HOPS {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "{node} refused a request that has passed through {hops} inner nodes (at most \
         {MAX_HOPS}): the tree's wiring has a loop, a node taking a node above it (or itself) \
         as a child; check the topology's children and the nodes' --child addresses"
    )))
}

/// Refuses, at the root, a client's request whose `hops` is past
/// [`MAX_HOPS`]: clients leave it 0, so the value is the client's mistake
/// (`INVALID_ARGUMENT`), not a loop in the tree.
pub fn check_from_client(hops: u32) -> Result<(), Status> {
    if hops <= MAX_HOPS {
        return Ok(());
    }
    Err(Status::invalid_argument(format!(
        "hops {hops} is past the limit of {MAX_HOPS}: inner nodes set it, clients leave it 0"
    )))
}

/// The `hops` to send down from a request that came with `hops`.
pub fn next(hops: u32) -> u32 {
    hops.saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_past_the_limit_is_refused_naming_a_loop() {
        assert!(check(0, "root").is_ok());
        assert!(check(MAX_HOPS, "root").is_ok());
        let refused = check(MAX_HOPS + 1, "parent p").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(refused.message().contains("wiring has a loop"));
        assert!(refused.message().starts_with("parent p refused"));
        assert_eq!(
            check_from_client(MAX_HOPS + 1).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert!(check_from_client(0).is_ok());
        assert_eq!(next(u32::MAX), u32::MAX);
        assert_eq!(next(3), 4);
    }
}
