//! Response bodies: whole JSON bodies, and event streams that can end cleanly, abort, or notice
//! that the client left.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use crate::state::{lock, SimState};

/// Error that ends a connection on purpose (reset fault, cut stream).
#[derive(Debug, Clone, Copy)]
pub struct Aborted;

impl fmt::Display for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection aborted by the simulator")
    }
}

impl std::error::Error for Aborted {}

/// One step of a stream.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// Bytes sent as their own chunk.
    Data(Bytes),
    /// Abort the body (the chunked encoding never terminates).
    Abort,
}

/// A response body.
pub enum SimBody {
    /// A complete body, sent with content-length.
    Full(Option<Bytes>),
    /// Events fed by a producer task.
    Stream(StreamBody),
}

impl SimBody {
    /// A complete body.
    pub fn full(text: impl Into<Bytes>) -> SimBody {
        SimBody::Full(Some(text.into()))
    }
}

/// Receiving end of a stream; counts a client disconnect if dropped before the end.
pub struct StreamBody {
    rx: mpsc::Receiver<StreamItem>,
    finished: bool,
    /// Whether bytes (headers at first) were handed to hyper since it last flushed.
    unflushed: bool,
    /// An abort waiting for one flush first.
    abort_next: bool,
    state: Arc<Mutex<SimState>>,
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        // hyper drops the body early only when writing to the client failed.
        if !self.finished {
            lock(&self.state).record_disconnect();
        }
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        match self.get_mut() {
            SimBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            SimBody::Stream(s) if s.abort_next => {
                s.finished = true;
                Poll::Ready(Some(Err(Aborted)))
            }
            SimBody::Stream(s) => match s.rx.poll_recv(cx) {
                Poll::Pending => {
                    // hyper flushes its write buffer whenever the body is pending.
                    s.unflushed = false;
                    Poll::Pending
                }
                Poll::Ready(Some(StreamItem::Data(d))) => {
                    s.unflushed = true;
                    Poll::Ready(Some(Ok(Frame::data(d))))
                }
                Poll::Ready(Some(StreamItem::Abort)) if s.unflushed => {
                    // An error makes hyper drop what it has buffered, so let it flush first.
                    s.unflushed = false;
                    s.abort_next = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Poll::Ready(Some(StreamItem::Abort)) => {
                    s.finished = true;
                    Poll::Ready(Some(Err(Aborted)))
                }
                Poll::Ready(None) => {
                    s.finished = true;
                    Poll::Ready(None)
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, SimBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SimBody::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            SimBody::Full(None) => SizeHint::with_exact(0),
            SimBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// What a producer task sends, and how fast.
#[derive(Debug, Clone, Default)]
pub struct StreamPlan {
    /// Real milliseconds before the first item.
    pub first_delay_ms: u64,
    /// Real milliseconds between items.
    pub chunk_delay_ms: u64,
    /// Items in order; the body ends cleanly after the last unless it is `Abort`.
    pub items: Vec<StreamItem>,
}

impl StreamPlan {
    /// Starts the producer and returns the body it feeds.
    pub fn spawn(self, state: Arc<Mutex<SimState>>) -> SimBody {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            if self.first_delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(self.first_delay_ms)).await;
            }
            for (i, item) in self.items.into_iter().enumerate() {
                if i > 0 && self.chunk_delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(self.chunk_delay_ms)).await;
                }
                if tx.send(item).await.is_err() {
                    // The body is gone; its drop already counted the disconnect.
                    return;
                }
            }
        });
        SimBody::Stream(StreamBody {
            rx,
            finished: false,
            unflushed: true,
            abort_next: false,
            state,
        })
    }
}
