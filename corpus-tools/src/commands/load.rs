//! `searchtree load`: stream a file of document operations into a running
//! tree, then publish them as its next version.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::ProgressBar;

use crate::commands::build::FieldNameArgs;
use crate::commands::publish::{publish, render_published};
use crate::live::batches::{Batcher, OpSource};
use crate::live::client::{LoadStream, connect};
use crate::live::pace::Pace;
use crate::live::read_ahead::LoadInput;
use crate::live::tally::Tally;
use crate::live::window::run_window;

/// Add, replace and delete documents of a running tree: stream a JSON Lines
/// file (plain or `.gz`; one document per line as `build` reads them, or
/// `{"id": .., "op": "delete"}`) to the root in batches, then publish the
/// result as the tree's next version. Every operation is idempotent by id:
/// after any failure, rerun the same command.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The root's address, HOST:PORT (as printed by `searchtree up`).
    #[arg(long)]
    pub root: String,
    /// The operations: JSON Lines, plain or `.gz`.
    #[arg(long)]
    pub input: PathBuf,
    /// Operations per batch (a batch also closes at 16 MiB of text): 8000,
    /// or with `--max-rate`, a tenth of that rate (at most 8000). Each batch
    /// is fsync'd at every leaf it reaches before it is acknowledged: larger
    /// batches load faster (BENCHMARKS, "Loading into a running tree").
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: Option<u32>,
    /// Batches sent and not yet acknowledged, at most: the next is read
    /// only when an ack frees a slot.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub in_flight: u32,
    /// At most this many operations a second: batches are spaced so that
    /// the leaves' indexing takes less of the cores the tree's queries
    /// share (default: as fast as the tree acknowledges). Above 0 and at
    /// most 10000000.
    #[arg(long, value_parser = parse_max_rate)]
    pub max_rate: Option<f64>,
    /// Skip invalid lines, and accept operations the tree refuses, instead
    /// of stopping at the first invalid line (and failing on refusals).
    #[arg(long)]
    pub skip_invalid: bool,
    /// Leave the operations staged: publish later with `searchtree publish`.
    #[arg(long)]
    pub no_publish: bool,
    /// Which JSON keys hold the document's parts (as `build`'s).
    #[command(flatten)]
    pub fields: FieldNameArgs,
}

/// Operations per batch unless `--batch-size` or `--max-rate` says
/// otherwise.
pub const DEFAULT_BATCH_SIZE: u32 = 8000;

/// The highest `--max-rate`, operations a second.
pub const MAX_LOAD_RATE: f64 = 10_000_000.0;

/// `--max-rate`: above 0 and at most [`MAX_LOAD_RATE`].
fn parse_max_rate(s: &str) -> Result<f64, String> {
    searchtree_bench::limits::positive(s, MAX_LOAD_RATE, "operations per second")
}

/// Runs the load and prints its summary on stdout (and the publish's).
/// An error once anything was not loaded or published, or was refused.
pub async fn run(args: &LoadArgs) -> anyhow::Result<()> {
    let (reader, total_bytes) = LoadInput::open(&args.input, args.fields.names())?;
    let client = connect(&args.root).await?;
    let mut pace = Pace::new(args.max_rate);
    let batch_size = args
        .batch_size
        .unwrap_or(pace.batch_size(DEFAULT_BATCH_SIZE));
    let mut batcher = Batcher::new(reader, batch_size as usize, args.skip_invalid);
    let mut stream = LoadStream::open(&client, args.in_flight as usize);
    let bar = progress_bar(total_bytes);
    let mut tally = Tally::default();
    let started = Instant::now();
    run_window(
        &mut batcher,
        &mut stream,
        args.in_flight as usize,
        &mut pace,
        &mut tally,
        |source, tally| {
            bar.set_position(source.bytes_read());
            bar.set_message(format!(
                "{} operations sent, {} batches acknowledged",
                tally.ops_sent, tally.batches_ok
            ));
        },
    )
    .await;
    let elapsed = started.elapsed();
    let finishing = Instant::now();
    stream.finish().await;
    tracing::debug!(took = ?finishing.elapsed(), "the root ended the load stream");
    bar.finish_and_clear();
    let input = args.input.display().to_string();
    print!("{}", tally.render(&input, elapsed));
    if let Some(rate) = args.max_rate {
        println!("paced: at most {rate} operations/s (--max-rate), batches of {batch_size}");
    }

    if !tally.complete() {
        println!("{}", tally.advice());
        bail!("the load is incomplete: {}", incomplete_reason(&tally));
    }
    if tally.batches_sent == 0 {
        println!("nothing to load; not published");
        return refusals(&tally, args.skip_invalid);
    }
    if args.no_publish {
        println!(
            "not published (--no-publish): the operations are staged; make them searchable with \
             `searchtree publish --root {}`",
            args.root
        );
        return refusals(&tally, args.skip_invalid);
    }
    let response = publish(&client, String::new())
        .await
        .context("the load is staged but publishing it failed; rerun the same command, or `searchtree publish`")?;
    print!("{}", render_published(&response, false));
    refusals(&tally, args.skip_invalid)
}

/// Why a load did not complete, in one line for the error.
fn incomplete_reason(tally: &Tally) -> String {
    let mut parts = Vec::new();
    if !tally.failed.is_empty() {
        parts.push(format!("{} batches not acknowledged", tally.failed.len()));
    }
    if let Some(why) = &tally.stopped {
        parts.push(format!("stopped: {why}"));
    }
    parts.join("; ")
}

/// Operations the tree refused fail the command unless `--skip-invalid`
/// said they may be left out.
fn refusals(tally: &Tally, skip_invalid: bool) -> anyhow::Result<()> {
    if !tally.refused.is_empty() && !skip_invalid {
        bail!(
            "{} operations were refused (listed above); fix them and rerun, or pass --skip-invalid",
            tally.refused.len()
        );
    }
    Ok(())
}

fn progress_bar(total_bytes: u64) -> ProgressBar {
    crate::output::byte_progress("loading", total_bytes)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use searchtree_proto::pb::RefusedOp;

    use super::*;
    use crate::live::batches::BatchInfo;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn parse(extra: &[&str]) -> Result<LoadArgs, String> {
        let args = [
            "searchtree",
            "--root",
            "127.0.0.1:1",
            "--input",
            "ops.jsonl",
        ];
        Cli::try_parse_from(args.iter().chain(extra))
            .map(|cli| cli.load)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_bounds_of_the_flags() {
        let args = parse(&[]).unwrap();
        assert_eq!((args.batch_size, args.in_flight), (None, 8));
        assert_eq!(args.max_rate, None);
        assert!(!args.skip_invalid && !args.no_publish);
        assert_eq!(args.fields.id_field, "id");
        assert!(parse(&["--batch-size", "0"]).is_err());
        assert!(parse(&["--in-flight", "0"]).is_err());
        assert!(parse(&["--in-flight", "65"]).is_err());
        let args = parse(&["--in-flight", "1", "--batch-size", "100000"]).unwrap();
        assert_eq!((args.batch_size, args.in_flight), (Some(100_000), 1));
        assert_eq!(
            parse(&["--max-rate", "20000"]).unwrap().max_rate,
            Some(20_000.0)
        );
        for bad in ["0", "-5", "nan", "inf", "1e8", "fast"] {
            let err = parse(&[&format!("--max-rate={bad}")]).unwrap_err();
            assert!(err.contains("--max-rate"), "{err}");
        }
    }

    #[test]
    fn refusals_fail_the_command_unless_invalid_operations_may_be_skipped() {
        let mut tally = Tally::default();
        assert!(refusals(&tally, false).is_ok());
        tally.refused.insert(
            3,
            RefusedOp {
                line: 3,
                id: "x".into(),
                reason: "why".into(),
            },
        );
        assert!(refusals(&tally, true).is_ok());
        let err = refusals(&tally, false).unwrap_err().to_string();
        assert!(err.starts_with("1 operations were refused"), "{err}");

        let info = BatchInfo {
            seq: 2,
            first_line: 1,
            last_line: 4,
            ops: 4,
        };
        tally.lost(&info, "gone");
        tally.stop("the root went away".into(), Some(5));
        assert_eq!(
            incomplete_reason(&tally),
            "1 batches not acknowledged; stopped: the root went away"
        );
    }
}
