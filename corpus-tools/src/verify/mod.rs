//! `searchtree verify`: checking that a build on disk, or a running tree,
//! is what it claims to be. Each check yields a [`Report`]: what is wrong,
//! in words naming the file, shard or replica, and what was found right.

pub mod build;
pub mod tree;

/// The outcome of a verification.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// What was checked and found right, one line each.
    pub ok: Vec<String>,
    /// What is wrong, one line each; empty when everything checked out.
    pub problems: Vec<String>,
}

impl Report {
    /// Records a problem.
    pub fn problem(&mut self, what: impl Into<String>) {
        self.problems.push(what.into());
    }

    /// Records a check that passed.
    pub fn ok(&mut self, what: impl Into<String>) {
        self.ok.push(what.into());
    }

    /// Whether nothing is wrong.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// The report as printed: the problems when there are any (each line
    /// starting `problem: `), else the checks passed (each `ok: `).
    pub fn render(&self) -> String {
        let (prefix, lines) = if self.passed() {
            ("ok", &self.ok)
        } else {
            ("problem", &self.problems)
        };
        lines.iter().map(|l| format!("{prefix}: {l}\n")).collect()
    }
}
