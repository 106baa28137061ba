//! The Raft driver's input queue: any thread sends, the Raft thread receives, and a sender
//! wakes the Raft thread's `mio` poll only when it sleeps there (see `peer_io`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SendError, Sender};

use mio::{Poll, Token, Waker};

use super::Input;

/// The poll token of the queue's waker.
pub(super) const WAKE: Token = Token(usize::MAX);

pub(super) struct Shared {
    /// Set while the Raft thread is (about to be) blocked in `poll`: senders must wake it.
    pub(super) parked: AtomicBool,
    pub(super) waker: Waker,
}

/// The sending side of the Raft driver's input queue.
pub struct RaftTx {
    tx: Sender<Input>,
    shared: Arc<Shared>,
}

impl Clone for RaftTx {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl RaftTx {
    /// Queues `input` for the driver, waking it if it sleeps.
    pub fn send(&self, input: Input) -> Result<(), SendError<Input>> {
        self.tx.send(input)?;
        if self.shared.parked.swap(false, Ordering::SeqCst) {
            let _ = self.shared.waker.wake();
        }
        Ok(())
    }
}

impl Drop for RaftTx {
    fn drop(&mut self) {
        // The driver stops once every sender is gone; it must wake up to notice.
        let _ = self.shared.waker.wake();
    }
}

/// The receiving side of the driver's input queue, with the poll it sleeps in.
pub struct RaftRx {
    pub(super) rx: Receiver<Input>,
    pub(super) poll: Poll,
    pub(super) shared: Arc<Shared>,
}

/// The driver's input queue.
pub fn channel() -> std::io::Result<(RaftTx, RaftRx)> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKE)?;
    let shared = Arc::new(Shared {
        parked: AtomicBool::new(false),
        waker,
    });
    let (tx, rx) = std::sync::mpsc::channel();
    Ok((
        RaftTx {
            tx,
            shared: shared.clone(),
        },
        RaftRx { rx, poll, shared },
    ))
}
