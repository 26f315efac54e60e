//! What to do about a call that failed on TLS: rustls and h2 name the
//! failure in their own terms ("h2 protocol error", "BadSignature"), which
//! do not tell an operator which flag is wrong. This reads the error chain
//! and says it in the CLI's flags.

/// The advice for an error chain (as printed with `{:#}`), given whether
/// this process calls nodes over TLS (`--tls-ca`); `None` when the failure
/// does not look like a TLS problem.
pub fn hint(chain: &str, client_uses_tls: bool) -> Option<&'static str> {
    if chain.contains("keep-alive timed out") {
        return Some(
            "the node stopped answering during the call (stopped, overloaded, or its \
             machine unreachable): check it, then run the command again",
        );
    }
    // The root's own account of a step that failed below it: it names the
    // node, and the call to the root was fine. A step refused for what was
    // asked (a build of another shard count, a version no leaf holds) is no
    // node's failure: its message says what to change, and waiting for a
    // node would not help.
    let refused = [
        "FailedPrecondition: publish of",
        "InvalidArgument: publish of",
        // A leaf the tree's wiring reaches twice: its message says where.
        "one publish reached it twice",
    ]
    .iter()
    .any(|m| chain.contains(m));
    if !refused
        && (chain.contains(" failed at Prepare")
            || chain.contains(" failed at Install")
            || chain.contains(" failed at Activate"))
    {
        return Some(
            "a node below the root failed during the publish (named above); the tree still \
             serves the version before: once that node is back, run the command again",
        );
    }
    // A connection that worked and then broke: the node went away.
    if [
        "broken pipe",
        "Broken pipe",
        "connection reset",
        "Connection reset",
        "stream closed",
    ]
    .iter()
    .any(|m| chain.contains(m))
    {
        return Some(
            "the node went away during the call (stopped, crashed or restarted): check it, \
             then run the command again",
        );
    }
    if client_uses_tls {
        if chain.contains("InvalidContentType") || chain.contains("corrupt message") {
            return Some(
                "the node does not speak TLS: call it without --tls-ca (and without \
                 --client-cert/--client-key)",
            );
        }
        if chain.contains("UnknownIssuer") || chain.contains("BadSignature") {
            return Some(
                "the node's certificate is not signed by the CA in --tls-ca: pass the CA \
                 that signed the nodes' certificates (ca.pem beside node.pem)",
            );
        }
        if chain.contains("NotValidForName") {
            return Some(
                "the node's certificate does not name the host in --root/--addr: dial a \
                 name it holds, or make the certificate again with `searchtree certs \
                 --hosts NAME,...`",
            );
        }
        if chain.contains("Expired") {
            return Some(
                "the node's certificate has expired (or this machine's clock is wrong): \
                 make new certificates with `searchtree certs` and restart the nodes",
            );
        }
        if chain.contains("CertificateRequired") || chain.contains("certificate required") {
            return Some(
                "the node requires a client certificate (mutual TLS): pass --client-cert \
                 and --client-key",
            );
        }
        return None;
    }
    // A refused port or an unknown host is said plainly already.
    let unreachable = chain.contains("Connection refused")
        || chain.contains("failed to lookup")
        || chain.contains("dns error");
    if !unreachable
        && (chain.contains("h2 protocol error")
            || chain.contains("http2 error")
            || chain.contains("transport error")
            || chain.contains("operation was canceled"))
    {
        return Some(
            "if the node serves TLS, call it with --tls-ca CA.pem (and --token-file for \
             admin calls); a plaintext call to a TLS node fails this way, and so does a call \
             to a node's HTTP port (status page, metrics) instead of its gRPC port",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::hint;

    #[test]
    fn a_node_that_went_away_mid_call_is_not_taken_for_tls() {
        for chain in [
            "the load is incomplete: Unknown: transport error: stream closed because of a broken pipe",
            "publish failed: Unknown: h2 protocol error: connection reset",
        ] {
            let h = hint(chain, false).unwrap();
            assert!(
                h.contains("went away") && !h.contains("--tls-ca"),
                "{chain}: {h}"
            );
        }
        let step = "publish failed: Unavailable: publish of v3 failed at Prepare: \
                    127.0.0.1:45261: Unknown: transport error";
        let h = hint(step, false).unwrap();
        assert!(
            h.contains("run the command again") && !h.contains("--tls-ca"),
            "{h}"
        );
        let refused = "publish failed: FailedPrecondition: publish of v3 failed at Prepare: \
                       127.0.0.1:45261: build is shard 0 of 2, this leaf serves shard 0 of 4";
        assert_eq!(hint(refused, false), None);
        let twice = "publish failed: Unavailable: publish of v3 failed at Install: install failed \
                     on 127.0.0.1:1: Aborted: 127.0.0.1:1 is already installing a version: one \
                     publish reached it twice (is it listed under two parents?)";
        assert_eq!(hint(twice, false), None);
    }

    #[test]
    fn plaintext_client_against_tls_node_names_tls_ca() {
        let h = hint(
            "search failed: Internal: h2 protocol error: http2 error",
            false,
        )
        .unwrap();
        assert!(h.contains("--tls-ca") && h.contains("--token-file"), "{h}");
        let h = hint("search failed: Cancelled: operation was canceled", false).unwrap();
        assert!(h.contains("--tls-ca"), "{h}");
        let h = hint("Versions failed: Unknown: transport error", false).unwrap();
        assert!(h.contains("--tls-ca"), "{h}");
    }

    #[test]
    fn tls_client_against_plaintext_node_says_it_does_not_speak_tls() {
        let chain = "cannot connect to root 127.0.0.1:1: transport error: received corrupt \
                     message of type InvalidContentType";
        assert!(hint(chain, true).unwrap().contains("does not speak TLS"));
    }

    #[test]
    fn certificate_failures_are_told_apart() {
        let ca = hint(
            "transport error: invalid peer certificate: BadSignature",
            true,
        )
        .unwrap();
        assert!(ca.contains("not signed by the CA"), "{ca}");
        let unknown = hint("invalid peer certificate: UnknownIssuer", true).unwrap();
        assert_eq!(unknown, ca);
        let name = hint("invalid peer certificate: NotValidForName", true).unwrap();
        assert!(name.contains("does not name the host"), "{name}");
        let expired = hint("invalid peer certificate: Expired", true).unwrap();
        assert!(expired.contains("expired"), "{expired}");
    }

    #[test]
    fn other_failures_get_no_tls_advice() {
        assert_eq!(
            hint("transport error: Connection refused (os error 111)", true),
            None
        );
        assert_eq!(
            hint("transport error: Connection refused (os error 111)", false),
            None
        );
        assert_eq!(hint("no such index", false), None);
    }
}
