//! Every node its own address: two nodes of a topology on one port, or a
//! tree started on ports another tree already serves, are refused before
//! any node starts.
//!
//! `up` starts its nodes with `--reuse-port`, so that `searchtree restart
//! --rolling` can start a node's replacement on its address while the old
//! one drains. The kernel then lets any process of the same user bind a
//! port already bound that way — a second `up` of the same topology, or two
//! entries with the same `listen`, would not fail to start but share the
//! port, the kernel splitting connections between unrelated nodes.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use super::{Plan, PlannedNode, TopologyError, invalid};

/// How long a probe of a planned address waits for a connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// The planned fixed addresses (port not 0) of `plan`'s nodes, with their
/// nodes. Addresses that do not parse are left to the nodes' own checks.
fn fixed(plan: &Plan) -> Vec<(&PlannedNode, SocketAddr)> {
    plan.nodes
        .iter()
        .filter_map(|n| Some((n, n.listen().parse::<SocketAddr>().ok()?)))
        .filter(|(_, addr)| addr.port() != 0)
        .collect()
}

/// Whether two listen addresses take the same port: the same address, or
/// the same port where either is a wildcard (`0.0.0.0`, `[::]`).
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Refuses a plan in which two nodes listen on the same port.
pub fn check_distinct(plan: &Plan) -> Result<(), TopologyError> {
    let fixed = fixed(plan);
    for (i, (a, a_addr)) in fixed.iter().enumerate() {
        if let Some((b, b_addr)) = fixed[..i].iter().find(|(_, b)| overlap(*a_addr, *b)) {
            return invalid(format!(
                "{} {:?} and {} {:?} both listen on port {} ({b_addr} and {a_addr}): give each \
                 node its own address, or port 0 for any free one",
                b.role(),
                b.name(),
                a.role(),
                a.name(),
                a_addr.port()
            ));
        }
    }
    Ok(())
}

/// Refuses to start `plan` when one of its fixed addresses already answers
/// a connection: a node of another tree (another `searchtree up` of the same
/// topology, most likely) or some other server holds it.
pub fn check_free(plan: &Plan) -> anyhow::Result<()> {
    for (node, addr) in fixed(plan) {
        let probe = match addr.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => {
                SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
            }
            ip if ip.is_unspecified() => SocketAddr::from((Ipv6Addr::LOCALHOST, addr.port())),
            _ => addr,
        };
        if TcpStream::connect_timeout(&probe, PROBE_TIMEOUT).is_ok() {
            anyhow::bail!(
                "{} {:?}: {addr} is already served by another process (a tree started from \
                 this topology and still running?): stop it first, or give this tree other ports",
                node.role(),
                node.name()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;
    use crate::tree::topology::tests::parse;

    fn topology(root: &str, leaf0: &str, leaf1: &str) -> String {
        format!(
            "[root]\nlisten = \"{root}\"\nchildren = [\"leaf-0\", \"leaf-1\"]\n\
             [[leaf]]\nname = \"leaf-0\"\nshard = 0\nindex = \"s0\"\nlisten = \"{leaf0}\"\n\
             [[leaf]]\nname = \"leaf-1\"\nshard = 1\nindex = \"s1\"\nlisten = \"{leaf1}\"\n"
        )
    }

    #[test]
    fn two_nodes_on_one_port_are_refused_naming_both() {
        let err = parse(&topology(
            "127.0.0.1:7000",
            "127.0.0.1:7001",
            "127.0.0.1:7001",
        ))
        .plan()
        .unwrap_err();
        assert!(
            err.0
                .contains("leaf \"leaf-0\" and leaf \"leaf-1\" both listen on port 7001"),
            "{err}"
        );
        let err = parse(&topology("0.0.0.0:7001", "127.0.0.1:0", "127.0.0.1:7001"))
            .plan()
            .unwrap_err();
        assert!(err.0.contains("both listen on port 7001"), "{err}");
        // Port 0 is any free port, as many times as wanted; other hosts on
        // one port are other addresses.
        parse(&topology("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"))
            .plan()
            .unwrap();
        parse(&topology("127.0.0.1:7001", "127.0.0.2:7001", "127.0.0.1:0"))
            .plan()
            .unwrap();
    }

    #[test]
    fn an_address_already_served_is_refused() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let plan = parse(&topology(
            "127.0.0.1:0",
            &format!("0.0.0.0:{port}"),
            "127.0.0.1:0",
        ))
        .plan()
        .unwrap();
        let err = check_free(&plan).unwrap_err().to_string();
        assert!(err.starts_with("leaf \"leaf-0\": 0.0.0.0:"), "{err}");
        assert!(err.contains("already served by another process"), "{err}");
        drop(taken);
        check_free(&plan).unwrap();
    }
}
