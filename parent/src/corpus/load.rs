//! Load at an inner node: one incoming stream of batches becomes one
//! outgoing stream per replica of each child (opened when a batch first
//! touches it). Each batch is split by shard and forwarded in order; a child
//! gets only its ops. At most [`MAX_BATCHES_IN_FLIGHT`] batches are in flight
//! per incoming stream: the next is read only when one is acknowledged, so a
//! slow leaf slows the sender through gRPC flow control.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use searchtree_proto::pb::{DocOp, FailureReason, LoadAck, LoadBatch, RefusedOp};
use searchtree_proto::sharding::{NUM_SHARDS_METADATA, id_refusal, shard_of};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Status;
use tonic::metadata::MetadataValue;

use super::acks::{BatchAcks, ReplicaAnswer};
use super::clients::CorpusChildren;
use super::receiver_stream;

/// Batches of one incoming stream forwarded and not yet acknowledged.
pub const MAX_BATCHES_IN_FLIGHT: usize = 4;

/// How long a replica may take to acknowledge a batch before it counts as
/// failed for it (and for the rest of the stream).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(120);

/// Why `op` cannot be loaded, if it cannot.
pub fn refusal(op: &DocOp) -> Option<String> {
    id_refusal(&op.id)
}

/// What a replica's stream reports to the forwarder.
enum Event {
    Ack(usize, usize, LoadAck),
    /// The stream failed or ended: batches it still owes are lost.
    Gone(usize, usize, ReplicaAnswer),
}

/// One replica's outgoing stream.
enum Outgoing {
    Open(mpsc::Sender<LoadBatch>),
    /// Failed earlier in this stream: later batches are not sent to it.
    Dead(ReplicaAnswer),
}

/// Forwards the batches of `incoming` to the replicas of `children`, placing
/// ops among `num_shards` shards, and sends an acknowledgement per batch to
/// `acks`. Replicas left out of a committed batch are added to `missed`.
/// Returns once every batch read was acknowledged (or the caller left). A
/// failure of `incoming` (a batch that does not decode, see
/// [`searchtree_node::serving::request_stream`]) reads no further batch:
/// the ones before it are forwarded and acknowledged as usual, then the
/// failure ends `acks`, so that the caller knows the stream was cut short.
pub async fn forward_load<S>(
    children: CorpusChildren,
    num_shards: u32,
    mut incoming: S,
    acks: mpsc::Sender<Result<LoadAck, Status>>,
    missed: Arc<Mutex<BTreeSet<String>>>,
) where
    S: Stream<Item = Result<LoadBatch, Status>> + Unpin + Send,
{
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut forwarder = Forwarder {
        children,
        num_shards,
        events_tx,
        outgoing: HashMap::new(),
        pending: BTreeMap::new(),
        next_seq: 0,
    };
    let mut incoming_done = false;
    let mut broke_off = None;
    loop {
        if incoming_done && forwarder.pending.is_empty() {
            if let Some(status) = broke_off {
                let _ = acks.send(Err(status)).await;
            }
            return;
        }
        let next_deadline = forwarder.pending.values().map(|p| p.1).min();
        tokio::select! {
            biased;
            Some(event) = events.recv() => forwarder.on_event(event),
            () = sleep_until(next_deadline) => forwarder.time_out(),
            next = incoming.next(), if !incoming_done && forwarder.pending.len() < MAX_BATCHES_IN_FLIGHT => {
                match next {
                    Some(Ok(batch)) => forwarder.start(batch).await,
                    Some(Err(status)) => {
                        tracing::info!(%status, "load stream broke off");
                        incoming_done = true;
                        broke_off = Some(status);
                        forwarder.close();
                    }
                    None => {
                        incoming_done = true;
                        forwarder.close();
                    }
                }
            }
        }
        for ack in forwarder.take_done() {
            missed
                .lock()
                .expect("missed lock")
                .extend(ack.replicas_missed.iter().cloned());
            if acks.send(Ok(ack)).await.is_err() {
                // The caller left: dropping the senders ends the streams below.
                return;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct Forwarder {
    children: CorpusChildren,
    num_shards: u32,
    events_tx: mpsc::UnboundedSender<Event>,
    outgoing: HashMap<(usize, usize), Outgoing>,
    /// Batches in flight by the number this node gave them, with when they
    /// must be acknowledged by.
    pending: BTreeMap<u64, (BatchAcks, Instant)>,
    next_seq: u64,
}

impl Forwarder {
    /// Splits `batch` by child and sends each part to every replica of it.
    async fn start(&mut self, batch: LoadBatch) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut refused = Vec::new();
        let mut parts: BTreeMap<usize, (BTreeSet<u32>, Vec<DocOp>)> = BTreeMap::new();
        for op in batch.ops {
            if let Some(reason) = refusal(&op) {
                refused.push(refused_op(&op, reason));
                continue;
            }
            let shard = shard_of(&op.id, self.num_shards);
            match self.children.child_of(shard) {
                Some(child) => {
                    let part = parts.entry(child).or_default();
                    part.0.insert(shard);
                    part.1.push(op);
                }
                None => refused.push(refused_op(
                    &op,
                    format!(
                        "shard {shard} (of {}) is not below this node",
                        self.num_shards
                    ),
                )),
            }
        }
        let mut acks = BatchAcks::new(batch.seq, refused);
        let mut sends = Vec::new();
        for (child, (shards, ops)) in parts {
            let known = &self.children.children()[child];
            let replicas: Vec<String> = known.replicas.iter().map(|r| r.addr.clone()).collect();
            if replicas.is_empty() {
                acks.none_known(shards.into_iter().collect(), known.none_known());
                continue;
            }
            acks.expect(child, shards.into_iter().collect(), &replicas);
            for replica in 0..replicas.len() {
                sends.push((child, replica, ops.clone()));
            }
        }
        for (child, replica, ops) in sends {
            let part = LoadBatch { seq, ops };
            if let Err(answer) = self.send(child, replica, part).await {
                acks.record(child, replica, answer);
            }
        }
        self.pending
            .insert(seq, (acks, Instant::now() + ACK_TIMEOUT));
    }

    /// Sends `batch` on replica `(child, replica)`'s stream, opening it
    /// first if needed; a dead stream answers for it.
    async fn send(
        &mut self,
        child: usize,
        replica: usize,
        batch: LoadBatch,
    ) -> Result<(), ReplicaAnswer> {
        if !self.outgoing.contains_key(&(child, replica)) {
            let opened = self.open(child, replica);
            self.outgoing.insert((child, replica), opened);
        }
        let outgoing = self.outgoing.get_mut(&(child, replica)).expect("opened");
        match outgoing {
            Outgoing::Dead(answer) => Err(answer.clone()),
            Outgoing::Open(tx) => {
                if tx.send(batch).await.is_ok() {
                    return Ok(());
                }
                let answer = ReplicaAnswer::Failed {
                    reason: FailureReason::Unavailable,
                    message: "its load stream closed".into(),
                };
                *outgoing = Outgoing::Dead(answer.clone());
                Err(answer)
            }
        }
    }

    /// Opens the Load stream to replica `(child, replica)`; a task reads its
    /// acknowledgements into the forwarder's events.
    fn open(&self, child: usize, replica: usize) -> Outgoing {
        let target = &self.children.children()[child].replicas[replica];
        let mut client = target.client();
        let (tx, rx) = mpsc::channel(MAX_BATCHES_IN_FLIGHT);
        let mut request = tonic::Request::new(receiver_stream(rx));
        request
            .metadata_mut()
            .insert(NUM_SHARDS_METADATA, MetadataValue::from(self.num_shards));
        let events = self.events_tx.clone();
        let addr = target.addr.clone();
        tokio::spawn(async move {
            let gone = match client.load(request).await {
                Err(status) => ReplicaAnswer::from_status(&status),
                Ok(response) => {
                    let mut acks = response.into_inner();
                    loop {
                        match acks.message().await {
                            Ok(Some(ack)) => {
                                if events.send(Event::Ack(child, replica, ack)).is_err() {
                                    return;
                                }
                            }
                            Ok(None) => {
                                break ReplicaAnswer::Failed {
                                    reason: FailureReason::Error,
                                    message: "its load stream ended before acknowledging".into(),
                                };
                            }
                            Err(status) => break ReplicaAnswer::from_status(&status),
                        }
                    }
                }
            };
            tracing::debug!(replica = %addr, ?gone, "load stream to replica ended");
            let _ = events.send(Event::Gone(child, replica, gone));
        });
        Outgoing::Open(tx)
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Ack(child, replica, ack) => {
                let Some((batch, _)) = self.pending.get_mut(&ack.seq) else {
                    tracing::debug!(seq = ack.seq, "acknowledgement of no batch in flight");
                    return;
                };
                batch.record(child, replica, ReplicaAnswer::Acked(ack));
            }
            Event::Gone(child, replica, answer) => self.fail(child, replica, answer),
        }
    }

    /// Replica `(child, replica)` failed: every batch it owes fails for it,
    /// and it gets no more.
    fn fail(&mut self, child: usize, replica: usize, answer: ReplicaAnswer) {
        for (batch, _) in self.pending.values_mut() {
            batch.record(child, replica, answer.clone());
        }
        self.outgoing
            .insert((child, replica), Outgoing::Dead(answer));
    }

    /// Replicas that owe a batch past its deadline fail.
    fn time_out(&mut self) {
        let now = Instant::now();
        let late: BTreeSet<(usize, usize)> = self
            .pending
            .values()
            .filter(|(_, due)| *due <= now)
            .flat_map(|(batch, _)| batch.awaited())
            .collect();
        for (child, replica) in late {
            let answer = ReplicaAnswer::Failed {
                reason: FailureReason::Timeout,
                message: format!("no acknowledgement in {} s", ACK_TIMEOUT.as_secs()),
            };
            self.fail(child, replica, answer);
        }
    }

    /// No more batches: the outgoing streams end once their acks are in.
    fn close(&mut self) {
        for outgoing in self.outgoing.values_mut() {
            if let Outgoing::Open(_) = outgoing {
                *outgoing = Outgoing::Dead(ReplicaAnswer::Failed {
                    reason: FailureReason::Error,
                    message: "the load stream is closed".into(),
                });
            }
        }
    }

    /// The acknowledgements of batches every replica has answered.
    fn take_done(&mut self) -> Vec<LoadAck> {
        let done: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (b, _))| b.is_done())
            .map(|(seq, _)| *seq)
            .collect();
        done.into_iter()
            .filter_map(|seq| self.pending.remove(&seq))
            .map(|(batch, _)| batch.ack())
            .collect()
    }
}

fn refused_op(op: &DocOp, reason: String) -> RefusedOp {
    RefusedOp {
        line: op.line,
        id: searchtree_proto::query::truncate_bytes(&op.id, 128),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use searchtree_proto::MAX_DOC_ID_BYTES;

    fn forwarder() -> Forwarder {
        let spec = "0@127.0.0.1:1,127.0.0.1:2".parse().unwrap();
        let (events_tx, _) = mpsc::unbounded_channel();
        Forwarder {
            children: CorpusChildren::from_specs(&[spec]).unwrap(),
            num_shards: 1,
            events_tx,
            outgoing: HashMap::new(),
            pending: BTreeMap::new(),
            next_seq: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_silent_past_the_timeout_is_missed_and_asked_no_more() {
        let mut f = forwarder();
        let mut batch = BatchAcks::new(5, Vec::new());
        batch.expect(0, vec![0], &["127.0.0.1:1".into(), "127.0.0.1:2".into()]);
        batch.record(
            0,
            0,
            ReplicaAnswer::Acked(LoadAck {
                seq: 0,
                ok: true,
                added: 1,
                ..LoadAck::default()
            }),
        );
        f.pending.insert(0, (batch, Instant::now() + ACK_TIMEOUT));
        tokio::time::advance(ACK_TIMEOUT - Duration::from_millis(1)).await;
        f.time_out();
        assert!(f.take_done().is_empty(), "not late yet");
        tokio::time::advance(Duration::from_millis(1)).await;
        f.time_out();
        let acks = f.take_done();
        assert_eq!(acks.len(), 1);
        assert!(acks[0].ok, "its sibling committed it");
        assert_eq!(acks[0].seq, 5);
        assert_eq!(acks[0].replicas_missed, ["127.0.0.1:2"]);
        // Later batches are not sent to it: they fail for it at once.
        let answer = f
            .send(0, 1, LoadBatch::default())
            .await
            .expect_err("dead replica");
        assert!(
            matches!(answer, ReplicaAnswer::Failed { reason: FailureReason::Timeout, ref message } if message.contains("120 s"))
        );
    }

    #[test]
    fn ids_must_be_present_and_short() {
        let op = |id: &str| DocOp {
            id: id.into(),
            ..DocOp::default()
        };
        assert_eq!(refusal(&op("")).as_deref(), Some("empty id"));
        assert_eq!(refusal(&op(&"x".repeat(MAX_DOC_ID_BYTES))), None);
        assert!(
            refusal(&op(&"x".repeat(MAX_DOC_ID_BYTES + 1)))
                .unwrap()
                .contains("1025 bytes")
        );
    }
}
