//! The query limits as command-line flags, shared by every node so that a
//! leaf, a parent and the root spell them the same way.

use clap::Args;

use searchtree_proto::query::{self, QueryLimits};

/// Flags that set a node's [`QueryLimits`]; the defaults are the documented
/// ones. Give every node of a tree the same values: a node stricter than
/// the root refuses what the root let through (still `INVALID_ARGUMENT`,
/// but after a fan-out).
#[derive(Debug, Clone, Args)]
pub struct QueryLimitArgs {
    /// The longest query, in bytes.
    #[arg(long, default_value_t = query::DEFAULT_MAX_QUERY_BYTES)]
    pub max_query_bytes: usize,
    /// The most '(' and NOT a query may contain (each a level of parser
    /// recursion); at most 100.
    #[arg(long, default_value_t = query::DEFAULT_MAX_NESTING)]
    pub max_query_nesting: usize,
    /// The most terms in a query (words of terms and phrases, set elements,
    /// ranges).
    #[arg(long, default_value_t = query::DEFAULT_MAX_TERMS)]
    pub max_query_terms: usize,
    /// The most prefix phrases ("foo"*) in a query.
    #[arg(long, default_value_t = query::DEFAULT_MAX_PREFIX_TERMS)]
    pub max_query_prefixes: usize,
    /// The most ranges ([a TO b]) in a query.
    #[arg(long, default_value_t = query::DEFAULT_MAX_RANGES)]
    pub max_query_ranges: usize,
    /// The largest boost (term^N) in a query.
    #[arg(long, default_value_t = query::DEFAULT_MAX_BOOST)]
    pub max_query_boost: f64,
}

impl QueryLimitArgs {
    /// The limits, checked.
    pub fn limits(&self) -> Result<QueryLimits, String> {
        let limits = QueryLimits {
            max_bytes: self.max_query_bytes,
            max_nesting: self.max_query_nesting,
            max_terms: self.max_query_terms,
            max_prefix_terms: self.max_query_prefixes,
            max_ranges: self.max_query_ranges,
            max_boost: self.max_query_boost,
        };
        limits.validate()?;
        Ok(limits)
    }
}
