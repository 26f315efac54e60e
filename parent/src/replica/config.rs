//! How a replica group treats its replicas: the knobs of health checking,
//! slow start, retries, hedging and probation, and their defaults.

use std::time::Duration;

use super::Policy;

/// How a group treats its replicas.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// How a replica is chosen.
    pub policy: Policy,
    /// Time between health checks of each replica.
    pub health_interval: Duration,
    /// How long a health check may take.
    pub health_timeout: Duration,
    /// Consecutive good checks before an ejected replica returns.
    pub rise: u32,
    /// Consecutive failed checks before a replica in rotation is ejected
    /// (a failed request ejects it at once): one check lost to a burst, on
    /// either side, is not an outage.
    pub fall: u32,
    /// Over how long a returning replica's share of traffic ramps up.
    pub slow_start: Duration,
    /// Retries after a retryable error, each to another replica.
    pub retries: u32,
    /// Retries allowed per request, on average, beyond a burst of ten and
    /// one a second: a group whose replicas all shed load is then not sent
    /// every request again (1 lets every request retry once).
    pub retry_ratio: f64,
    /// Hedges allowed per request, on average (0 turns hedging off).
    pub hedge_ratio: f64,
    /// The least time to wait before hedging.
    pub hedge_min_delay: Duration,
    /// A replica slower than this many times its peers goes on probation.
    pub probation_factor: f64,
    /// One request in this many is shadowed to each replica on probation.
    pub shadow_every: usize,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            policy: Policy::default(),
            health_interval: Duration::from_millis(250),
            health_timeout: Duration::from_millis(100),
            rise: 2,
            fall: 2,
            slow_start: Duration::from_secs(3),
            retries: 1,
            retry_ratio: super::budget::RETRY_RATIO,
            hedge_ratio: 0.05,
            hedge_min_delay: Duration::from_millis(2),
            probation_factor: 3.0,
            shadow_every: 20,
        }
    }
}
