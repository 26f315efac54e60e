//! One module per `searchtree` subcommand.

pub mod bench;
pub mod build;
pub mod certs;
pub mod demo;
pub mod discard;
pub mod load;
pub mod members;
pub mod publish;
pub mod query;
pub mod restart;
pub mod simulate;
pub mod stats;
pub mod up;
pub mod verify;
pub mod versions;

/// Shared by the subcommands' tests.
#[cfg(test)]
pub(crate) mod test_support {
    /// Asserts that parsing `args` failed (`parsed`) with clap's message
    /// naming the flag, the value and `range`.
    pub(crate) fn assert_refused<T>(
        parsed: Result<T, String>,
        args: &[&str],
        flag: &str,
        value: &str,
        range: &str,
    ) {
        let Err(err) = parsed else {
            panic!("{args:?} accepted");
        };
        assert!(
            err.contains(&format!("'{flag} <"))
                && err.contains(&format!("'{value}'"))
                && err.contains(range),
            "{args:?}: {err}"
        );
    }
}
