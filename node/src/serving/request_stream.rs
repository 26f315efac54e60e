//! A client-streaming request, message by message: a message that does not
//! decode, or is larger than the method takes, is the caller's error, named
//! by its number in the stream.
//!
//! tonic hands a streaming handler the decoder's failure as it does for a
//! unary call — `INTERNAL` with prost's words, `OUT_OF_RANGE` for a message
//! past the size limit — but midway through the stream, after the response
//! has begun: the layer that rewrites a unary refusal
//! ([`crate::ops::layer::undecodable_is_invalid_argument`]) never sees it.
//! A handler that reads its request through [`numbered`] gets
//! `INVALID_ARGUMENT` instead, saying which message was refused and why,
//! and nothing after it: the messages before it were handled as usual, and
//! none after it is, so what was answered stands and nothing is applied
//! past a gap.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tonic::Status;

use crate::ops::layer::{BAD_FLAG, TOO_LARGE, TRUNCATED, UNDECODABLE};
use crate::serving::MAX_CORPUS_MESSAGE_BYTES;

/// The messages of `stream`, a `call`'s request of messages named
/// `message` (e.g. `Load`, `LoadBatch`), counted; a message that does not
/// decode or is too large ends it with `INVALID_ARGUMENT` (see
/// [`undecodable_message`]), and so does any other failure of the stream,
/// as it is.
pub fn numbered<S>(stream: S, call: &'static str, message: &'static str) -> Numbered<S> {
    Numbered {
        stream,
        call,
        message,
        received: 0,
        ended: false,
    }
}

/// The stream [`numbered`] returns.
#[derive(Debug)]
pub struct Numbered<S> {
    stream: S,
    call: &'static str,
    message: &'static str,
    /// Messages decoded so far.
    received: u64,
    /// A failure ended it: nothing more is read.
    ended: bool,
}

impl<S> Numbered<S> {
    /// Messages decoded so far.
    pub fn received(&self) -> u64 {
        self.received
    }
}

impl<S, T> Stream for Numbered<S>
where
    S: Stream<Item = Result<T, Status>> + Unpin,
{
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.stream).poll_next(cx) {
            Poll::Ready(Some(Ok(item))) => {
                self.received += 1;
                Poll::Ready(Some(Ok(item)))
            }
            Poll::Ready(Some(Err(status))) => {
                self.ended = true;
                let status = undecodable_message(status, self.call, self.message, self.received);
                Poll::Ready(Some(Err(status)))
            }
            other => other,
        }
    }
}

/// Rewrites tonic's refusal of the message that followed the `received`
/// ones of a `call`'s request stream — `INTERNAL` when it does not decode,
/// `OUT_OF_RANGE` when it is past the size limit — into `INVALID_ARGUMENT`
/// naming it by its number (1-based), with tonic's words and what to do;
/// any other status is returned as it is.
pub fn undecodable_message(status: Status, call: &str, message: &str, received: u64) -> Status {
    let article = if message.starts_with(['A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
    };
    let number = received + 1;
    let (what, fix) = match status.code() {
        tonic::Code::Internal if status.message().starts_with(UNDECODABLE) => (
            format!("is not {article} {message} (is the client's .proto searchtree's?)"),
            "fixed",
        ),
        tonic::Code::Internal
            if status.message() == TRUNCATED || status.message().starts_with(BAD_FLAG) =>
        {
            (
                "is cut short or badly framed".to_string(),
                "each whole and with a compression flag of 0 or 1",
            )
        }
        tonic::Code::OutOfRange if status.message().starts_with(TOO_LARGE) => (
            format!(
                "is larger than {article} {message} may be ({} MiB)",
                MAX_CORPUS_MESSAGE_BYTES >> 20
            ),
            "split into smaller ones",
        ),
        _ => return status,
    };
    let before = match received {
        0 => "no message came before it".to_string(),
        1 => "the message before it was handled as usual".to_string(),
        n => format!("the {n} messages before it were handled as usual"),
    };
    Status::invalid_argument(format!(
        "message {number} of the {call} stream {what}: {}. The stream ends there: {before}, and \
         nothing after it was read; send message {number} and those after it again, {fix}",
        status.message()
    ))
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn decode_error() -> Status {
        Status::internal(format!(
            "{UNDECODABLE}: LoadBatch.ops: DocOp.id: invalid string value: data is not UTF-8 encoded"
        ))
    }

    #[tokio::test]
    async fn the_message_that_does_not_decode_is_named_and_ends_the_stream() {
        let items = vec![Ok(1), Ok(2), Err(decode_error()), Ok(4)];
        let mut stream = numbered(futures::stream::iter(items), "Load", "LoadBatch");
        assert_eq!(stream.next().await.unwrap().unwrap(), 1);
        assert_eq!(stream.next().await.unwrap().unwrap(), 2);
        let status = stream.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status
                .message()
                .starts_with("message 3 of the Load stream is not a LoadBatch")
                && status.message().contains("not UTF-8")
                && status.message().contains("the 2 messages before it")
                && status.message().contains("send message 3"),
            "{}",
            status.message()
        );
        assert!(stream.next().await.is_none(), "nothing after it is read");
        assert_eq!(stream.received(), 2);
    }

    #[test]
    fn a_message_past_the_size_limit_is_named_and_the_fix_given() {
        let too_large = Status::out_of_range(format!(
            "{TOO_LARGE}: found 70000000 bytes, the limit is: 67108864 bytes"
        ));
        let status = undecodable_message(too_large, "Load", "LoadBatch", 3);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().starts_with(
                "message 4 of the Load stream is larger than a LoadBatch may be (64 MiB)"
            ) && status.message().contains("found 70000000 bytes")
                && status.message().contains("the 3 messages before it")
                && status.message().ends_with("split into smaller ones"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_message_cut_short_is_named() {
        let status = undecodable_message(Status::internal(TRUNCATED), "Load", "LoadBatch", 1);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status
                .message()
                .starts_with("message 2 of the Load stream is cut short or badly framed")
                && status.message().contains(TRUNCATED),
            "{}",
            status.message()
        );
    }

    #[test]
    fn other_failures_of_a_stream_are_left_as_they_are() {
        for other in [
            Status::internal("h2 protocol error"),
            Status::cancelled(UNDECODABLE),
            Status::out_of_range("past the end"),
        ] {
            let kept = undecodable_message(other.clone(), "Load", "LoadBatch", 4);
            assert_eq!(
                (kept.code(), kept.message()),
                (other.code(), other.message())
            );
        }
        let first = undecodable_message(decode_error(), "Load", "LoadBatch", 0);
        assert!(
            first.message().starts_with("message 1 of")
                && first.message().contains("no message came before it"),
            "{}",
            first.message()
        );
    }
}
