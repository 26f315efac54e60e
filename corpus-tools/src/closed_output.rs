//! A closed pipe ends the CLI quietly, as it ends other Unix tools:
//! `searchtree stats … | head -1` stops once `head` has its line. Rust
//! ignores SIGPIPE, so the print macros panic when their reader is gone; a
//! panic hook turns that panic, and no other, into a silent exit with the
//! status a shell reports for a process ended by SIGPIPE. (Restoring
//! SIGPIPE's default action instead would also kill the CLI whenever one
//! of its gRPC connections broke: vectored writes to a socket raise it.)

use std::io;

/// The status a shell reports for a process ended by SIGPIPE (128 + 13).
pub const CLOSED_PIPE_STATUS: i32 = 141;

/// Installs the panic hook, for the whole process: a print macro's panic on
/// a closed pipe exits with [`CLOSED_PIPE_STATUS`] and says nothing; every
/// other panic is reported as before.
pub fn exit_quietly_when_closed() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        if message.is_some_and(is_closed_pipe) {
            std::process::exit(CLOSED_PIPE_STATUS);
        }
        report(info);
    }));
}

/// Whether `message` is the panic of a print macro (`print!`, `eprintln!`
/// and the like) whose pipe was closed: std panics with `failed printing
/// to stdout: ERROR` (or stderr), ERROR being the OS's EPIPE.
pub fn is_closed_pipe(message: &str) -> bool {
    let broken = io::Error::from_raw_os_error(libc::EPIPE).to_string();
    message
        .strip_prefix("failed printing to ")
        .and_then(|rest| {
            rest.strip_prefix("stdout: ")
                .or_else(|| rest.strip_prefix("stderr: "))
        })
        .is_some_and(|error| error == broken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_print_to_a_closed_pipe_is_quiet() {
        let broken = io::Error::from_raw_os_error(libc::EPIPE);
        assert!(is_closed_pipe(&format!(
            "failed printing to stdout: {broken}"
        )));
        assert!(is_closed_pipe(&format!(
            "failed printing to stderr: {broken}"
        )));
        // A full disk is an error worth seeing, as is any other panic.
        let full = io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(!is_closed_pipe(&format!(
            "failed printing to stdout: {full}"
        )));
        assert!(!is_closed_pipe(&format!("writing the report: {broken}")));
        assert!(!is_closed_pipe("index out of bounds"));
    }

    #[test]
    fn a_write_to_a_closed_pipe_fails_with_the_error_looked_for() {
        let (reader, mut writer) = io::pipe().unwrap();
        drop(reader);
        let err = io::Write::write_all(&mut writer, b"a line\n").unwrap_err();
        assert!(is_closed_pipe(&format!("failed printing to stdout: {err}")));
    }
}
