//! The snapshot version the root pins every query to, so that all shards
//! answer at the same one: learnt from the leaves at start, moved by each
//! Publish once every leaf has installed the new version.

use std::sync::atomic::{AtomicU64, Ordering};

/// The pinned version; 0 until known, which asks each leaf for its current.
#[derive(Debug, Default)]
pub struct PinnedVersion(AtomicU64);

impl PinnedVersion {
    /// The version queries are pinned to (0: each leaf's current).
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Pins queries to `version` (a Publish, once it is installed everywhere).
    pub fn set(&self, version: u64) {
        self.0.store(version, Ordering::Release);
    }

    /// Pins `version` unless something (a Publish) pinned one already;
    /// returns whether it did.
    pub fn learn(&self, version: u64) -> bool {
        self.0
            .compare_exchange(0, version, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Moves the pin to `version` if it is newer than the one pinned (and
    /// one is): a version published through another root. Returns whether
    /// it moved.
    pub fn advance_to(&self, version: u64) -> bool {
        let mut pinned = self.get();
        while pinned != 0 && version > pinned {
            match self
                .0
                .compare_exchange(pinned, version, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => pinned = now,
            }
        }
        false
    }

    /// The version a request asking for `requested` is sent at: its own if
    /// it names one, else the pinned one. A version newer than the pinned
    /// one has not been published: refused here, with why, rather than sent
    /// down, where every replica would refuse it and each replica group
    /// would take its replicas for behind and out of rotation — one request
    /// could empty the tree's rotation.
    pub fn for_request(&self, requested: u64) -> Result<u64, String> {
        let pinned = self.get();
        match requested {
            0 => Ok(pinned),
            v if pinned != 0 && v > pinned => Err(format!(
                "version {v} is not published: the tree answers at version {pinned} \
                 (and at older versions its leaves still hold); 0 asks for the current one"
            )),
            v => Ok(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_at_start_never_overrides_a_publish() {
        let pin = PinnedVersion::default();
        assert_eq!(pin.for_request(0), Ok(0));
        assert!(pin.learn(3));
        assert_eq!(pin.for_request(0), Ok(3));
        assert_eq!(pin.for_request(2), Ok(2), "a version asked for is kept");
        pin.set(4);
        assert!(!pin.learn(3));
        assert_eq!(pin.get(), 4);
    }

    #[test]
    fn a_version_published_elsewhere_moves_the_pin_forward_only() {
        let pin = PinnedVersion::default();
        assert!(!pin.advance_to(3), "nothing pinned yet: learnt at start");
        pin.set(3);
        assert!(!pin.advance_to(2));
        assert!(!pin.advance_to(3));
        assert!(pin.advance_to(5));
        assert_eq!(pin.for_request(0), Ok(5));
        assert_eq!(pin.for_request(5), Ok(5), "no longer refused");
    }

    #[test]
    fn a_version_not_yet_published_is_refused_with_the_current_one() {
        let pin = PinnedVersion::default();
        // Before the root knows, the leaves judge.
        assert_eq!(pin.for_request(999), Ok(999));
        pin.set(4);
        assert_eq!(pin.for_request(4), Ok(4));
        let refused = pin.for_request(999).unwrap_err();
        assert!(
            refused.contains("version 999 is not published"),
            "{refused}"
        );
        assert!(refused.contains("at version 4"), "{refused}");
    }
}
