//! A search's profile as a waterfall on a terminal: one line per node and
//! per child call, indented like the tree, each with a bar placed and sized
//! on the root's time line.

use std::fmt::Write as _;

use searchtree_proto::pb::{ChildProfile, NodeProfile};

/// Width of the bars, in characters.
const WIDTH: usize = 40;

/// The waterfall of `profile` (the root's).
pub fn render(profile: &NodeProfile) -> String {
    let total = profile.total_us.max(1);
    let mut out = String::new();
    node(&mut out, profile, total, 0, 0, "");
    out
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn bar(total: u64, start: u64, len: u64) -> String {
    let cell = |us: u64| ((us.min(total) as f64 / total as f64) * WIDTH as f64).round() as usize;
    let from = cell(start).min(WIDTH);
    let to = cell(start.saturating_add(len)).clamp(from + 1, WIDTH.max(from + 1));
    let mut s = " ".repeat(from);
    s.push_str(&"█".repeat(to - from));
    s.push_str(&" ".repeat(WIDTH.saturating_sub(to)));
    s
}

fn node(out: &mut String, p: &NodeProfile, total: u64, offset: u64, depth: usize, name: &str) {
    let indent = "  ".repeat(depth);
    let mut parts = Vec::new();
    if p.queue_us > 0 {
        parts.push(format!("queue {}", ms(p.queue_us)));
    }
    if p.search_us > 0 {
        parts.push(format!("search {}", ms(p.search_us)));
    }
    if p.merge_us > 0 {
        parts.push(format!("merge {}", ms(p.merge_us)));
    }
    if p.fetch_us > 0 {
        parts.push(format!("fetch {}", ms(p.fetch_us)));
    }
    let label = format!("{indent}{} {}{name}", p.role, shards(&p.shards));
    let _ = writeln!(
        out,
        "{label:<44} |{}| {:>8} ms  {}",
        bar(total, offset, p.total_us),
        ms(p.total_us),
        parts.join(", ")
    );
    for c in &p.children {
        child(out, c, total, offset, depth + 1);
    }
}

fn child(out: &mut String, c: &ChildProfile, total: u64, offset: u64, depth: usize) {
    let start = offset + c.start_us;
    // How a replica group got this answer, if not from its first choice.
    let how = match (c.hedged, c.retried) {
        (true, _) => " (hedged)",
        (_, true) => " (retried)",
        _ => "",
    };
    match &c.profile {
        Some(p) => {
            // The child's own time sits inside the round trip, after half
            // the hop (the way there).
            let name = format!(" @{}", c.replica);
            let _ = writeln!(
                out,
                "{:<44} |{}| {:>8} ms  round trip, hop {}{how}",
                format!("{}→ call {}", "  ".repeat(depth), shards(&c.shards)),
                bar(total, start, c.round_trip_us),
                ms(c.round_trip_us),
                ms(c.hop_us)
            );
            node(out, p, total, start + c.hop_us / 2, depth + 1, &name);
        }
        None => {
            let _ = writeln!(
                out,
                "{:<44} |{}| {:>8} ms  {}{how}",
                format!(
                    "{}→ call {} @{}",
                    "  ".repeat(depth),
                    shards(&c.shards),
                    c.replica
                ),
                bar(total, start, c.round_trip_us),
                ms(c.round_trip_us),
                c.outcome
            );
        }
    }
}

fn shards(s: &[u32]) -> String {
    match s {
        [] => String::new(),
        [one] => format!("[shard {one}]"),
        _ => format!(
            "[shards {}]",
            s.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_level_on_the_roots_time_line() {
        let leaf = NodeProfile {
            role: "leaf".into(),
            shards: vec![0],
            total_us: 2_000,
            queue_us: 100,
            search_us: 1_800,
            ..Default::default()
        };
        let root = NodeProfile {
            role: "root".into(),
            shards: vec![0, 1],
            total_us: 10_000,
            merge_us: 50,
            fetch_us: 3_000,
            children: vec![
                ChildProfile {
                    shards: vec![0],
                    replica: "127.0.0.1:7001".into(),
                    start_us: 500,
                    round_trip_us: 4_000,
                    hop_us: 2_000,
                    outcome: "ok".into(),
                    hedged: true,
                    profile: Some(leaf),
                    ..Default::default()
                },
                ChildProfile {
                    shards: vec![1],
                    replica: "127.0.0.1:7002".into(),
                    start_us: 500,
                    round_trip_us: 6_000,
                    outcome: "timed_out".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let text = render(&root);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].starts_with("root [shards 0,1]") && lines[0].contains("fetch 3.00"),
            "{text}"
        );
        assert!(
            lines[1].contains("→ call [shard 0]")
                && lines[1].contains("hop 2.00")
                && lines[1].ends_with("(hedged)"),
            "{text}"
        );
        assert!(
            lines[2].contains("leaf [shard 0] @127.0.0.1:7001") && lines[2].contains("search 1.80"),
            "{text}"
        );
        assert!(
            lines[3].contains("@127.0.0.1:7002") && lines[3].ends_with("timed_out"),
            "{text}"
        );
        // The root's bar spans the whole line; the leaf's starts later.
        assert!(
            lines[0].contains(&format!("|{}|", "█".repeat(WIDTH))),
            "{text}"
        );
        let leaf_bar = lines[2].split('|').nth(1).unwrap();
        assert!(leaf_bar.starts_with(' '), "{text}");
    }
}
