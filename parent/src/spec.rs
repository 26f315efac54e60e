//! How a parent is told about a child: `SHARDS@HOST:PORT[,HOST:PORT...]`,
//! or only `SHARDS` when its replicas are found in etcd (`--etcd`).
//!
//! The shard list (e.g. `0,1` or `0-3`) names the leaves' shards below that
//! child, so that when the child fails the parent can still say exactly which
//! shards are missing from its answer. Several addresses are replicas of the
//! same child (e.g. two leaves serving the same shard): the parent chooses
//! among them.

use std::fmt;
use std::str::FromStr;

/// A child of a parent: its replicas' addresses and the shards below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSpec {
    /// The shards served below this child, ascending, no duplicates.
    pub shards: Vec<u32>,
    /// `HOST:PORT` of each replica of the child, no duplicates; none when
    /// the replicas are found in etcd.
    pub addrs: Vec<String>,
}

impl ChildSpec {
    /// Whether the child's replicas are found in etcd rather than listed.
    pub fn is_discovered(&self) -> bool {
        self.addrs.is_empty()
    }
}

impl FromStr for ChildSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((shards, addrs)) = s.split_once('@') else {
            // Only shards: the replicas are found in etcd.
            let shards = parse_shards(s).map_err(|e| {
                format!(
                    "child {s:?} must look like SHARDS@HOST:PORT (e.g. 0-1@127.0.0.1:7001), or SHARDS alone with --etcd: {e}"
                )
            })?;
            return Ok(ChildSpec {
                shards,
                addrs: Vec::new(),
            });
        };
        let mut list: Vec<String> = Vec::new();
        for addr in addrs.split(',').map(str::trim) {
            if addr
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return Err(format!("child {s:?}: {addr:?} is not HOST:PORT"));
            }
            if list.iter().any(|a| a == addr) {
                return Err(format!("child {s:?}: replica {addr} is listed twice"));
            }
            list.push(addr.to_string());
        }
        Ok(ChildSpec {
            shards: parse_shards(shards).map_err(|e| format!("child {s:?}: {e}"))?,
            addrs: list,
        })
    }
}

impl fmt::Display for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shards: Vec<String> = self.shards.iter().map(u32::to_string).collect();
        if self.addrs.is_empty() {
            return write!(f, "{}", shards.join(","));
        }
        write!(f, "{}@{}", shards.join(","), self.addrs.join(","))
    }
}

/// Writes a shard list the way [`parse_shards`] reads it, runs of
/// consecutive shards as `a-b` (`0-1`, `0,2`, `0-3,7`): a child's label in
/// the metrics.
pub fn format_shards(shards: &[u32]) -> String {
    let mut sorted = shards.to_vec();
    sorted.sort_unstable();
    let mut runs: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        runs.push(if i == j {
            sorted[i].to_string()
        } else {
            format!("{}-{}", sorted[i], sorted[j])
        });
        i = j + 1;
    }
    runs.join(",")
}

/// Parses a shard list such as `3`, `0,2` or `0-3,7`.
pub fn parse_shards(s: &str) -> Result<Vec<u32>, String> {
    let mut shards = Vec::new();
    for part in s.split(',') {
        let num = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("{t:?} is not a shard number"))
        };
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (num(lo)?, num(hi)?);
                if lo > hi {
                    return Err(format!("shard range {part:?} is backwards"));
                }
                shards.extend(lo..=hi);
            }
            None => shards.push(num(part)?),
        }
    }
    shards.sort_unstable();
    if let Some(w) = shards.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("shard {} is listed twice", w[0]));
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_shard_lists_as_they_are_parsed() {
        for (shards, text) in [
            (vec![0, 1], "0-1"),
            (vec![2, 0], "0,2"),
            (vec![0, 1, 2, 3, 7], "0-3,7"),
            (vec![5], "5"),
        ] {
            assert_eq!(format_shards(&shards), text);
            let mut sorted = shards.clone();
            sorted.sort_unstable();
            assert_eq!(parse_shards(text).unwrap(), sorted);
        }
    }

    #[test]
    fn parses_lists_and_ranges() {
        let spec: ChildSpec = "0-2,5@127.0.0.1:7001".parse().unwrap();
        assert_eq!(spec.shards, [0, 1, 2, 5]);
        assert_eq!(spec.addrs, ["127.0.0.1:7001"]);
        assert_eq!(spec.to_string(), "0,1,2,5@127.0.0.1:7001");
        assert_eq!(spec.to_string().parse::<ChildSpec>().unwrap(), spec);
        let replicas: ChildSpec = "3@127.0.0.1:7001,127.0.0.1:7002".parse().unwrap();
        assert_eq!(replicas.addrs, ["127.0.0.1:7001", "127.0.0.1:7002"]);
        assert_eq!(replicas.to_string().parse::<ChildSpec>().unwrap(), replicas);
        let discovered: ChildSpec = "0-1".parse().unwrap();
        assert!(discovered.is_discovered());
        assert_eq!(discovered.shards, [0, 1]);
        assert_eq!(
            discovered.to_string().parse::<ChildSpec>().unwrap(),
            discovered
        );
    }

    #[test]
    fn refuses_bad_specs_with_a_reason() {
        for (bad, why) in [
            ("127.0.0.1:7001", "SHARDS@HOST:PORT"),
            ("0-1@", "is not HOST:PORT"),
            ("0@localhost", "not HOST:PORT"),
            ("x@127.0.0.1:1", "not a shard number"),
            ("3-1@127.0.0.1:1", "backwards"),
            ("1,1@127.0.0.1:1", "listed twice"),
            (
                "1@127.0.0.1:1,127.0.0.1:1",
                "replica 127.0.0.1:1 is listed twice",
            ),
            ("1@127.0.0.1:1,", "is not HOST:PORT"),
        ] {
            let err = bad.parse::<ChildSpec>().unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
