//! Command-line configuration of the root node.

use std::time::Duration;

use clap::Parser;
use searchtree_node::ops::OpsArgs;
use searchtree_node::serving::ConnectionArgs;
use searchtree_parent::config::InnerArgs;

use crate::admission::{self, AdmissionConfig};
use crate::canary::{self, CanaryConfig};
use crate::load_pace::{self, LoadPaceConfig};

/// The root of a search tree: the node clients call.
#[derive(Debug, Parser)]
#[command(name = "searchtree-root", version)]
pub struct RootConfig {
    /// Address to listen on; port 0 picks a free port, printed as
    /// `LISTENING HOST:PORT` on stdout.
    #[arg(long, default_value = "127.0.0.1:0", value_parser = searchtree_node::serving::listen_address)]
    pub listen: String,
    /// How many connections it holds, and when it closes an idle one.
    #[command(flatten)]
    pub connections: ConnectionArgs,
    /// Metrics, TLS, admin calls, tracing and drain.
    #[command(flatten)]
    pub ops: OpsArgs,
    /// The children and the timing.
    #[command(flatten)]
    pub inner: InnerArgs,
    /// Canary requests: send a query not seen recently to one leaf first,
    /// and fan it out only once that leaf answered; a query under which the
    /// leaf died is refused (INVALID_ARGUMENT) for --canary-refuse-secs.
    #[arg(long)]
    pub canary: bool,
    /// How long a query that passed its canary goes without one, in seconds.
    #[arg(long, default_value_t = canary::DEFAULT_REMEMBER.as_secs())]
    pub canary_remember_secs: u64,
    /// How long a query whose canary crashed a node is refused, in seconds.
    #[arg(long, default_value_t = canary::DEFAULT_REFUSE_FOR.as_secs())]
    pub canary_refuse_secs: u64,
    /// How often, in seconds, the root asks the leaves whether a version
    /// was published through another root of the tree (with --etcd it
    /// also hears of one at once, from that root's announcement).
    #[arg(long, default_value_t = crate::corpus::PIN_FOLLOW.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub follow_publishes_secs: u64,
    /// Search in one phase: leaves fill titles and snippets for their own
    /// top-k, instead of the default two phases (ids and scores from the
    /// tree, then titles and snippets fetched for the global top-k only).
    /// For comparison.
    #[arg(long)]
    pub one_phase: bool,
    /// Turn admission control off: every query is fanned out, however many
    /// are in flight (for comparison; not for production).
    #[arg(long)]
    pub no_admission: bool,
    /// The ceiling of the admission limit's floor, in queries in flight. The
    /// floor itself follows the tree's measured rate: what the tree answers
    /// in a quarter of the typical budget (a tree answering 300/s in 100 ms
    /// budgets gets 7), never above this, and this until a rate is measured.
    #[arg(long, default_value_t = admission::DEFAULT_MIN_LIMIT)]
    pub admission_min_limit: usize,
    /// The most queries the admission limit allows in flight.
    #[arg(long, default_value_t = admission::DEFAULT_MAX_LIMIT)]
    pub admission_max_limit: usize,
    /// The admission limit at start (at least the floor's ceiling).
    #[arg(long, default_value_t = admission::DEFAULT_INITIAL_LIMIT)]
    pub admission_initial_limit: usize,
    /// What a shed client is told to wait before retrying, in milliseconds.
    #[arg(long, default_value_t = admission::DEFAULT_PUSHBACK.as_millis() as u64)]
    pub admission_pushback_ms: u64,
    /// Batch queries are shed once this share (0–1) of the admission limit
    /// is in flight.
    #[arg(long, default_value_t = admission::DEFAULT_BATCH_MAX_SHARE)]
    pub batch_max_share: f64,
    /// The share (0–1) of the admission limit batch queries keep whatever
    /// the load.
    #[arg(long, default_value_t = admission::DEFAULT_BATCH_GUARANTEED_SHARE)]
    pub batch_guaranteed_share: f64,
    /// Let loads go as fast as the tree takes them, however much that slows
    /// the queries answered meanwhile (for comparison). By default the root
    /// paces a load so that at most --load-slow-share of the queries it
    /// answers meanwhile take longer than --load-tolerance times their idle
    /// p99.
    #[arg(long)]
    pub no_load_pace: bool,
    /// A query answered during a load or publish is slowed past this many
    /// times the idle p99 (at least 1).
    #[arg(long, default_value_t = load_pace::DEFAULT_TOLERANCE)]
    pub load_tolerance: f64,
    /// The share (above 0, below 1) of the queries answered during a load
    /// or publish that it may slow.
    #[arg(long, default_value_t = load_pace::DEFAULT_SLOW_SHARE)]
    pub load_slow_share: f64,
    /// The rate a paced load is never held below, operations a second.
    #[arg(long, default_value_t = load_pace::DEFAULT_MIN_RATE)]
    pub load_min_rate: f64,
}

impl RootConfig {
    /// The admission settings, unless admission control is off.
    pub fn admission(&self) -> anyhow::Result<Option<AdmissionConfig>> {
        if self.no_admission {
            return Ok(None);
        }
        if self.admission_min_limit == 0 || self.admission_min_limit > self.admission_max_limit {
            anyhow::bail!(
                "--admission-min-limit {} must be at least 1 and at most --admission-max-limit {}",
                self.admission_min_limit,
                self.admission_max_limit
            );
        }
        if !(0.0..=1.0).contains(&self.batch_guaranteed_share)
            || !(self.batch_guaranteed_share..=1.0).contains(&self.batch_max_share)
        {
            anyhow::bail!(
                "--batch-guaranteed-share {} and --batch-max-share {} must be shares, the guaranteed one the smaller",
                self.batch_guaranteed_share,
                self.batch_max_share
            );
        }
        Ok(Some(AdmissionConfig {
            min_limit: self.admission_min_limit,
            max_limit: self.admission_max_limit,
            initial_limit: self.admission_initial_limit,
            pushback: Duration::from_millis(self.admission_pushback_ms),
            batch_max_share: self.batch_max_share,
            batch_guaranteed_share: self.batch_guaranteed_share,
            default_budget: Duration::from_millis(self.inner.default_budget_ms),
            ..AdmissionConfig::default()
        }))
    }

    /// The pace of loads, unless loads are not paced.
    pub fn load_pace(&self) -> anyhow::Result<Option<LoadPaceConfig>> {
        if self.no_load_pace {
            return Ok(None);
        }
        if !(self.load_tolerance >= 1.0 && self.load_tolerance.is_finite()) {
            anyhow::bail!(
                "--load-tolerance {} must be at least 1 (times the idle p99)",
                self.load_tolerance
            );
        }
        if !(self.load_slow_share > 0.0 && self.load_slow_share < 1.0) {
            anyhow::bail!(
                "--load-slow-share {} must be above 0 and below 1",
                self.load_slow_share
            );
        }
        if !(self.load_min_rate > 0.0 && self.load_min_rate.is_finite()) {
            anyhow::bail!(
                "--load-min-rate {} must be above 0 (operations a second)",
                self.load_min_rate
            );
        }
        Ok(Some(LoadPaceConfig {
            tolerance: self.load_tolerance,
            slow_share: self.load_slow_share,
            min_rate: self.load_min_rate,
        }))
    }

    /// The canary settings, if canaries are on.
    pub fn canary(&self) -> Option<CanaryConfig> {
        self.canary.then(|| CanaryConfig {
            remember: Duration::from_secs(self.canary_remember_secs),
            refuse_for: Duration::from_secs(self.canary_refuse_secs),
            ..CanaryConfig::default()
        })
    }
}
