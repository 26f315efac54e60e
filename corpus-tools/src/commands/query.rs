//! `searchtree query`: one search against a running tree.

use clap::Args;
use searchtree_proto::pb::SearchRequest;
use searchtree_proto::pb::search_client::SearchClient;

use crate::node_call::describe_status;
use crate::output;

/// Send one query to a tree's root and print the answer.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The root's address, HOST:PORT (as printed by `searchtree up`).
    #[arg(long)]
    pub root: String,
    /// How many hits to return (0: the server's default, 10).
    #[arg(short = 'k', long = "top-k", default_value_t = 10)]
    pub top_k: u32,
    /// Latency budget in milliseconds (0: the root's default).
    #[arg(long, default_value_t = 0)]
    pub budget_ms: u32,
    /// Strict mode: the least fraction of shards (0–1) that must answer in
    /// full, else the root answers with an error instead of a partial answer.
    #[arg(long, default_value_t = 0.0)]
    pub min_coverage: f64,
    /// Print the response as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Ask every node for its timings and print where the time went, level
    /// by level (a profiled search skips the result caches).
    #[arg(long)]
    pub profile: bool,
    /// The query, in tantivy syntax, e.g. `"solar system" +planet -dwarf`.
    #[arg(required = true, num_args = 1..)]
    pub query: Vec<String>,
}

/// Runs the query and prints the response.
pub async fn run(args: &QueryArgs) -> anyhow::Result<()> {
    let channel = crate::node_call::connect(&args.root, "root").await?;
    let mut client = SearchClient::new(channel);
    let request = SearchRequest {
        query: args.query.join(" "),
        top_k: args.top_k,
        budget_ms: args.budget_ms,
        min_coverage: args.min_coverage,
        profile: args.profile,
        ..Default::default()
    };
    let response = client
        .search(request)
        .await
        .map_err(|s| anyhow::anyhow!("search failed: {}", describe_status(&s)))?
        .into_inner();
    if args.json {
        println!("{}", output::to_json(&response));
    } else {
        print!("{}", output::render(&response, true));
        if let Some(profile) = &response.profile {
            println!("\nwhere the time went (ms):");
            print!("{}", crate::waterfall::render(profile));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_root_that_cannot_be_reached_is_named_with_the_reason() {
        // Nothing listens on port 1.
        let args = QueryArgs {
            root: "127.0.0.1:1".into(),
            top_k: 10,
            budget_ms: 0,
            min_coverage: 0.0,
            json: false,
            profile: false,
            query: vec!["paris".into()],
        };
        let err = format!("{:#}", run(&args).await.unwrap_err());
        assert!(
            err.starts_with("cannot connect to root 127.0.0.1:1: transport error: ")
                && err.contains("Connection refused"),
            "{err}"
        );
    }
}
