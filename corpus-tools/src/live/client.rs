//! Talking to a root's `Corpus` service: connecting (with the tree's
//! message limits, as a batch of long documents is large), and one `Load`
//! stream as a [`Link`].

use std::time::Duration;

use searchtree_node::ops::client::NodeChannel;
use searchtree_node::serving::MAX_CORPUS_MESSAGE_BYTES;
use searchtree_proto::pb::corpus_client::CorpusClient;
use searchtree_proto::pb::{LoadAck, LoadBatch};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::{Status, Streaming};

use crate::live::window::Link;

/// A client of the `Corpus` service of the node at `addr` (HOST:PORT).
pub async fn connect(addr: &str) -> anyhow::Result<CorpusClient<NodeChannel>> {
    let channel = crate::node_call::connect(addr, "the root").await?;
    Ok(CorpusClient::new(channel)
        .max_decoding_message_size(MAX_CORPUS_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CORPUS_MESSAGE_BYTES))
}

type Acks = Result<tonic::Response<Streaming<LoadAck>>, Status>;

/// One `Corpus.Load` stream. The call starts at once, before the first
/// batch is cut: the root takes its one-load-or-publish slot and checks the
/// leaves then, so that a refusal comes before anything is sent, and a slow
/// input's first batch goes out as soon as it is cut.
pub(crate) struct LoadStream {
    requests: Option<mpsc::Sender<LoadBatch>>,
    call: Option<JoinHandle<Acks>>,
    acks: Option<Streaming<LoadAck>>,
}

impl LoadStream {
    /// A stream to `client`'s node with room for `in_flight` batches queued.
    pub(crate) fn open(client: &CorpusClient<NodeChannel>, in_flight: usize) -> Self {
        let (tx, rx) = mpsc::channel(in_flight.max(1));
        let batches = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|batch| (batch, rx))
        });
        let mut client = client.clone();
        LoadStream {
            requests: Some(tx),
            call: Some(tokio::spawn(async move { client.load(batches).await })),
            acks: None,
        }
    }

    /// Waits for the root to take the call (its answer's headers), once.
    /// Cancel-safe: the call is let go of only once it answered.
    async fn answered(&mut self) -> Result<(), Status> {
        if let Some(call) = self.call.as_mut() {
            let answer = call.await;
            self.call = None;
            let response = answer
                .map_err(|e| Status::internal(format!("the load call's task failed: {e}")))??;
            self.acks = Some(response.into_inner());
        }
        Ok(())
    }
}

/// How long the root may take to end a load stream once every batch is
/// acknowledged and the request side closed.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

impl LoadStream {
    /// Closes the request side and waits (bounded) for the root to end the
    /// stream: the root holds its one-corpus-operation-at-a-time lock until
    /// then, so a publish sent earlier would be refused as concurrent.
    pub(crate) async fn finish(&mut self) {
        self.close();
        if self.answered().await.is_err() {
            return;
        }
        let Some(acks) = self.acks.as_mut() else {
            return;
        };
        let drain = async {
            while let Ok(Some(ack)) = acks.message().await {
                tracing::warn!(seq = ack.seq, "an ack after the last batch");
            }
        };
        if tokio::time::timeout(FINISH_TIMEOUT, drain).await.is_err() {
            tracing::warn!("the root did not end the load stream within {FINISH_TIMEOUT:?}");
        }
        self.acks = None;
    }
}

impl Link for LoadStream {
    async fn send(&mut self, batch: LoadBatch) -> Result<(), Status> {
        let closed = || Status::unavailable("the load stream is closed");
        let requests = self.requests.as_ref().ok_or_else(closed)?;
        requests.send(batch).await.map_err(|_| closed())
    }

    async fn started(&mut self) -> Result<(), Status> {
        self.answered().await
    }

    async fn next_ack(&mut self) -> Option<Result<LoadAck, Status>> {
        if let Err(status) = self.answered().await {
            return Some(Err(status));
        }
        self.acks.as_mut()?.message().await.transpose()
    }

    fn close(&mut self) {
        self.requests = None;
    }
}
