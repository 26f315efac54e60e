//! Deliberate misbehaviour, for tests and operators' game days: a leaf can be
//! told to delay a fraction of its requests, or to fail them as unavailable.
//! Off unless configured (`--inject-delay-ms`, `--inject-delay-prob`,
//! `--inject-error-prob`, or the same keys on a leaf in the topology).

use std::sync::Mutex;
use std::time::Duration;

/// What to inject, with what probability per request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultConfig {
    /// How long an injected delay lasts.
    pub delay: Duration,
    /// Probability (0–1) that a request is delayed.
    pub delay_prob: f64,
    /// Probability (0–1) that a request fails with `UNAVAILABLE`.
    pub error_prob: f64,
}

impl FaultConfig {
    /// Checks the probabilities are probabilities.
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("inject-delay-prob", self.delay_prob),
            ("inject-error-prob", self.error_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("--{name} {p} is not a probability between 0 and 1"));
            }
        }
        Ok(())
    }

    /// Whether anything is injected at all.
    pub fn is_active(&self) -> bool {
        (self.delay_prob > 0.0 && !self.delay.is_zero()) || self.error_prob > 0.0
    }
}

/// What to do to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: serve it normally.
    None,
    /// Wait this long first.
    Delay(Duration),
    /// Fail it as unavailable.
    Error,
}

/// Draws a fault per request from a seeded generator.
#[derive(Debug)]
pub struct Faults {
    config: FaultConfig,
    rng: Mutex<fastrand::Rng>,
}

impl Faults {
    /// Faults per `config`, drawn from a generator seeded with `seed`.
    pub fn new(config: FaultConfig, seed: u64) -> Self {
        Faults {
            config,
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &FaultConfig {
        &self.config
    }

    /// Decides the fate of the next request.
    pub fn draw(&self) -> Fault {
        if !self.config.is_active() {
            return Fault::None;
        }
        let (a, b) = {
            let mut rng = self.rng.lock().expect("rng lock");
            (rng.f64(), rng.f64())
        };
        if a < self.config.error_prob {
            Fault::Error
        } else if b < self.config.delay_prob && !self.config.delay.is_zero() {
            Fault::Delay(self.config.delay)
        } else {
            Fault::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inactive_by_default() {
        let f = Faults::new(FaultConfig::default(), 1);
        assert!((0..1000).all(|_| f.draw() == Fault::None));
    }

    #[test]
    fn probabilities_are_respected() {
        let f = Faults::new(
            FaultConfig {
                delay: Duration::from_millis(5),
                delay_prob: 0.1,
                error_prob: 0.05,
            },
            42,
        );
        let draws: Vec<Fault> = (0..20_000).map(|_| f.draw()).collect();
        let errors = draws.iter().filter(|d| **d == Fault::Error).count();
        let delays = draws
            .iter()
            .filter(|d| matches!(d, Fault::Delay(_)))
            .count();
        assert!((800..1200).contains(&errors), "{errors}");
        // Delays are drawn among the requests that did not fail: 0.95 * 0.1.
        assert!((1650..2150).contains(&delays), "{delays}");
    }

    #[test]
    fn always_and_never() {
        let always = Faults::new(
            FaultConfig {
                delay: Duration::from_secs(2),
                delay_prob: 1.0,
                error_prob: 0.0,
            },
            7,
        );
        assert!((0..100).all(|_| always.draw() == Fault::Delay(Duration::from_secs(2))));
        let bad = FaultConfig {
            error_prob: 1.5,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("inject-error-prob"));
    }
}
