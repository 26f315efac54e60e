//! The last lines a node wrote to stderr, kept to explain a failed start.
//!
//! A node that fails with `RUST_BACKTRACE` set writes its error first and
//! then a backtrace of dozens of frames; the last 30 lines alone are only
//! frames, and the message that says what went wrong (a corrupt index, a
//! port in use) is lost from the summary. So the frames of a backtrace are
//! counted, not kept: the summary shows the error and one line saying how
//! many frames were left out (they are still in the forwarded log).

use std::collections::VecDeque;

/// A bounded tail of a node's stderr without backtrace frames.
#[derive(Debug)]
pub(super) struct StderrTail {
    lines: VecDeque<String>,
    capacity: usize,
    /// Inside a backtrace: indented lines are frames.
    in_backtrace: bool,
    /// Frames of the current backtrace left out so far.
    frames: usize,
}

impl StderrTail {
    /// An empty tail keeping at most `capacity` lines.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            lines: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            in_backtrace: false,
            frames: 0,
        }
    }

    /// Takes the next line the node wrote.
    pub(super) fn push(&mut self, line: String) {
        if self.in_backtrace && is_frame(&line) {
            self.frames += 1;
            if let Some(last) = self.lines.back_mut() {
                *last = omitted(self.frames);
            }
            return;
        }
        self.in_backtrace = false;
        let starts_backtrace = line.trim().eq_ignore_ascii_case("stack backtrace:");
        self.keep(line);
        if starts_backtrace {
            self.in_backtrace = true;
            self.frames = 0;
            self.keep(omitted(0));
        }
    }

    /// The lines kept, oldest first.
    pub(super) fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }

    fn keep(&mut self, line: String) {
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }
}

/// A backtrace frame: `  12: name` or `        at file:line`, both indented.
fn is_frame(line: &str) -> bool {
    line.starts_with(' ') || line.starts_with('\t')
}

fn omitted(frames: usize) -> String {
    let frames = match frames {
        1 => "1 frame".to_string(),
        n => format!("{n} frames"),
    };
    format!("  ({frames} left out; the whole backtrace is in the node's log above)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_followed_by_a_long_backtrace_keeps_the_error() {
        let mut tail = StderrTail::new(5);
        for line in [
            "Error: shards/shard-001: Data corrupted",
            "",
            "Caused by:",
            "    meta.json cannot be deserialized",
            "",
            "Stack backtrace:",
        ] {
            tail.push(line.to_string());
        }
        for frame in 0..40 {
            tail.push(format!("  {frame}: some::function"));
            tail.push("             at src/main.rs:1:1".to_string());
        }
        let lines = tail.lines();
        assert_eq!(
            lines,
            [
                "Caused by:",
                "    meta.json cannot be deserialized",
                "",
                "Stack backtrace:",
                "  (80 frames left out; the whole backtrace is in the node's log above)",
            ]
        );
    }

    #[test]
    fn lines_after_a_backtrace_are_kept_and_indented_lines_elsewhere_too() {
        let mut tail = StderrTail::new(10);
        for line in [
            "thread 'main' panicked at leaf/src/main.rs:3:5:",
            "stack backtrace:",
            "   0: rust_begin_unwind",
            "note: Some details are omitted",
            "    an indented line that is not a frame",
        ] {
            tail.push(line.to_string());
        }
        assert_eq!(
            tail.lines(),
            [
                "thread 'main' panicked at leaf/src/main.rs:3:5:",
                "stack backtrace:",
                "  (1 frame left out; the whole backtrace is in the node's log above)",
                "note: Some details are omitted",
                "    an indented line that is not a frame",
            ]
        );
    }

    #[test]
    fn without_a_backtrace_the_last_lines_are_kept() {
        let mut tail = StderrTail::new(2);
        for n in 0..5 {
            tail.push(format!("line {n}"));
        }
        assert_eq!(tail.lines(), ["line 3", "line 4"]);
    }
}
