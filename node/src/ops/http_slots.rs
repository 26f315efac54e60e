//! The HTTP port's connection slots, and who gives one up when all are held.
//!
//! The port holds [`super::http::MAX_HTTP_CONNECTIONS`] connections at once.
//! Refusing every newcomer once they are all held let 64 clients that each
//! open a connection and send nothing (or a request's head a byte at a
//! time, within the header timeout) blind the port — `/metrics` and the
//! status page — for as long as they kept it up. A connection is either
//! serving a request or waiting for the next request's head; when every
//! slot is held, the connection that has been waiting longest gives its
//! slot to the newcomer (nginx and Apache's event MPM close idle keep-alive
//! connections first in the same way). A slowloris's connections are the
//! ones waiting longest, so a scraper that sends its head at once is served
//! unless 64 more connections arrive between its connecting and its head;
//! only when every slot is in the middle of a request (or sending an
//! answer) is a newcomer refused. All clients share the slots: many
//! clients with real requests (64 looping `/api/search`) fill the port as
//! any load fills a server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

/// The slots of one HTTP port.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    next_id: u64,
    slots: HashMap<u64, Slot>,
}

#[derive(Debug)]
struct Slot {
    /// Since when the connection has waited for a request's head; `None`
    /// while it serves one.
    waiting_since: Option<Instant>,
    evicted: Arc<Notify>,
}

/// One connection's slot, given back when dropped.
#[derive(Debug)]
pub struct SlotHandle {
    slots: Arc<Slots>,
    id: u64,
    evicted: Arc<Notify>,
}

/// What [`Slots::take`] did to make room.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// A slot was free.
    Free,
    /// The connection that had waited longest for a request's head was told
    /// to close, and it waited this long.
    Evicted(std::time::Duration),
}

impl Slots {
    /// `max` slots (at least one).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Slots {
            max: max.max(1),
            held: Mutex::default(),
        })
    }

    /// A slot for a new connection, which starts out waiting for its first
    /// request's head; when every slot is held, the longest waiting
    /// connection's is taken from it. `None` when every connection is in
    /// the middle of a request: the newcomer is the one to refuse.
    pub fn take(self: &Arc<Self>) -> Option<(SlotHandle, Taken)> {
        let now = Instant::now();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mut taken = Taken::Free;
        if held.slots.len() >= self.max {
            let (&oldest, since) = held
                .slots
                .iter()
                .filter_map(|(id, slot)| slot.waiting_since.map(|since| (id, since)))
                .min_by_key(|&(id, since)| (since, *id))?;
            if let Some(slot) = held.slots.remove(&oldest) {
                // notify_one keeps the wake-up if its task is not waiting yet.
                slot.evicted.notify_one();
            }
            taken = Taken::Evicted(now.duration_since(since));
        }
        let id = held.next_id;
        held.next_id += 1;
        let evicted = Arc::new(Notify::new());
        held.slots.insert(
            id,
            Slot {
                waiting_since: Some(now),
                evicted: Arc::clone(&evicted),
            },
        );
        Some((
            SlotHandle {
                slots: Arc::clone(self),
                id,
                evicted,
            },
            taken,
        ))
    }

    /// Slots held now.
    pub fn held(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .slots
            .len()
    }

    fn set_waiting(&self, id: u64, waiting_since: Option<Instant>) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = held.slots.get_mut(&id) {
            slot.waiting_since = waiting_since;
        }
    }
}

impl SlotHandle {
    /// The connection has a request's head and serves it: it cannot be
    /// evicted until [`Self::waiting`].
    pub fn serving(&self) {
        self.slots.set_waiting(self.id, None);
    }

    /// The connection answered and waits for the next request's head.
    pub fn waiting(&self) {
        self.slots.set_waiting(self.id, Some(Instant::now()));
    }

    /// `body`, after which (once sent, or dropped) the connection waits for
    /// the next request's head: until then it is serving.
    pub fn waiting_after<B>(self: &Arc<Self>, body: B) -> WaitingAfter<B> {
        WaitingAfter {
            body,
            slot: Arc::clone(self),
        }
    }

    /// Resolves once a newcomer has taken this slot: the connection must
    /// close.
    pub async fn evicted(&self) {
        self.evicted.notified().await;
    }
}

/// A response body that marks its connection waiting once it is done
/// ([`SlotHandle::waiting_after`]).
pub struct WaitingAfter<B> {
    body: B,
    slot: Arc<SlotHandle>,
}

impl<B: http_body::Body + Unpin> http_body::Body for WaitingAfter<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for WaitingAfter<B> {
    fn drop(&mut self) {
        self.slot.waiting();
    }
}

impl Drop for SlotHandle {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        held.slots.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn when_all_are_held_the_longest_waiting_gives_its_slot_up() {
        let slots = Slots::new(3);
        let (a, taken) = slots.take().unwrap();
        assert_eq!(taken, Taken::Free);
        tokio::time::advance(Duration::from_secs(1)).await;
        let (b, _) = slots.take().unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let (c, _) = slots.take().unwrap();
        // `a` is serving a request: `b` has waited longest.
        a.serving();
        tokio::time::advance(Duration::from_secs(1)).await;
        let (d, taken) = slots.take().unwrap();
        assert_eq!(taken, Taken::Evicted(Duration::from_secs(2)));
        tokio::time::timeout(Duration::from_millis(1), b.evicted())
            .await
            .expect("b was told to close");
        assert_eq!(slots.held(), 3);
        // b's handle dropping after its eviction leaves the others alone.
        drop(b);
        assert_eq!(slots.held(), 3);

        // Everyone serving: the newcomer is refused.
        c.serving();
        d.serving();
        assert!(slots.take().is_none());
        // One answers and waits again: it is the one to go.
        c.waiting();
        let (_e, taken) = slots.take().unwrap();
        assert_eq!(taken, Taken::Evicted(Duration::ZERO));
        tokio::time::timeout(Duration::from_millis(1), c.evicted())
            .await
            .expect("c was told to close");
        assert!(
            tokio::time::timeout(Duration::from_millis(1), a.evicted())
                .await
                .is_err(),
            "a connection serving a request is never evicted"
        );
    }

    #[test]
    fn a_dropped_handle_frees_its_slot() {
        let slots = Slots::new(1);
        let (a, _) = slots.take().unwrap();
        assert_eq!(slots.held(), 1);
        drop(a);
        assert_eq!(slots.held(), 0);
        assert_eq!(slots.take().unwrap().1, Taken::Free);
    }
}
