//! Checks against the filesystem, made before anything starts: every
//! leaf's index directory holds the shard the topology says it does.

use super::plan::{Plan, PlannedNode};
use super::{TopologyError, invalid};

/// Checks that every leaf's index directory holds the shard the topology
/// says it does, and that all of them come from the same build.
pub fn check_indexes(plan: &Plan) -> Result<(), TopologyError> {
    let mut build: Option<(String, u32, &str)> = None;
    for node in &plan.nodes {
        let PlannedNode::Leaf {
            name, shard, index, ..
        } = node
        else {
            continue;
        };
        if !index.is_dir() {
            return invalid(format!(
                "leaf {name:?}: index directory {} does not exist",
                index.display()
            ));
        }
        let meta = searchtree_leaf::shard::read_meta(index)
            .map_err(|e| TopologyError(format!("leaf {name:?}: {e}")))?;
        if meta.shard != *shard {
            return invalid(format!(
                "leaf {name:?} is said to serve shard {shard} but {} holds shard {}",
                index.display(),
                meta.shard
            ));
        }
        if meta.num_shards != plan.num_shards {
            return invalid(format!(
                "leaf {name:?}: {} is one of {} shards but the topology has {}",
                index.display(),
                meta.num_shards,
                plan.num_shards
            ));
        }
        match &build {
            Some((sum, _, other)) if *sum != meta.input_checksum => {
                return invalid(format!(
                    "leaves {other:?} and {name:?} serve shards of different builds ({sum} vs {})",
                    meta.input_checksum
                ));
            }
            Some(_) => {}
            None => build = Some((meta.input_checksum.clone(), meta.shard, name)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::*;

    #[test]
    fn missing_index_directory_is_named() {
        let t = parse(&format!(
            "[root]\nchildren = [\"leaf-0\"]\n{}",
            "[[leaf]]\nname = \"leaf-0\"\nshard = 0\nindex = \"/nonexistent/shard\"\n"
        ));
        let e = check_indexes(&t.plan().unwrap()).unwrap_err().0;
        assert!(
            e.contains("leaf \"leaf-0\": index directory /nonexistent/shard does not exist"),
            "{e}"
        );
    }
}
