//! Calls that nothing waits for (settles, commits, returned credits; meters' settles), sent to
//! each object in batches: while one batch is in flight, the next calls queue behind it. A
//! call that may wait (`send_later`, `send_meter_later`) rides with the isolate's next call to
//! its object, or goes on its own when its time is up.

use crate::access::meter::MeterOp;
use crate::glue::bucket::Bucket;
use crate::glue::meter::MeterRef;
use crate::protocol::Op;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::thread::LocalKey;
use std::time::Duration;
use worker::{Delay, Env};

/// Most calls in one batch.
const MAX_BATCH: usize = 64;

/// Per object: the calls waiting, whether a sender is draining them, and whether a timer
/// will (calls that may wait wait only while nothing drains).
struct Queue<O> {
    calls: Vec<O>,
    draining: bool,
    timed: bool,
}

impl<O> Default for Queue<O> {
    fn default() -> Self {
        Queue {
            calls: Vec::new(),
            draining: false,
            timed: false,
        }
    }
}

type Queues<O> = RefCell<HashMap<String, Queue<O>>>;

thread_local! {
    static BUCKETS: Queues<Op> = RefCell::new(HashMap::new());
    static METERS: Queues<MeterOp> = RefCell::new(HashMap::new());
}

/// Queues `op` for the bucket (run it inside `ctx.wait_until`).
pub async fn send(env: &Env, bucket: &Bucket, op: Op, request_id: &str) {
    let tell = |batch| bucket.tell(env, batch, request_id);
    queue(&BUCKETS, &bucket.name, op, Op::Batch, tell).await;
}

/// Queues `op` for the bucket to ride with the isolate's next call to it (`send`, or `riders`
/// taken by a call), sending it on its own `within_ms` from now at the latest, or at once when
/// a batch is full (run it inside `ctx.wait_until`).
pub async fn send_later(env: &Env, bucket: &Bucket, op: Op, request_id: &str, within_ms: u64) {
    let tell = |batch| bucket.tell(env, batch, request_id);
    later(&BUCKETS, &bucket.name, op, Op::Batch, tell, within_ms).await;
}

/// `send_later` for a meter: rides with its next admission (`meter_riders`) or a settle.
pub async fn send_meter_later(
    env: &Env,
    meter: &MeterRef,
    op: MeterOp,
    request_id: &str,
    within_ms: u64,
) {
    let tell = |batch| meter.tell(env, batch, request_id);
    later(&METERS, &meter.name, op, MeterOp::Batch, tell, within_ms).await;
}

/// The calls waiting to ride with a call to the bucket, taken (none while a batch is being
/// sent: they go with it).
pub fn riders(bucket: &str) -> Vec<Op> {
    take_riders(&BUCKETS, bucket)
}

/// `riders` of a meter.
pub fn meter_riders(meter: &str) -> Vec<MeterOp> {
    take_riders(&METERS, meter)
}

fn take_riders<O>(queues: &'static LocalKey<Queues<O>>, key: &str) -> Vec<O> {
    queues.with(|queues| {
        let mut queues = queues.borrow_mut();
        match queues.get_mut(key) {
            Some(queue) if !queue.draining => std::mem::take(&mut queue.calls),
            _ => Vec::new(),
        }
    })
}

/// What a call queued by `later` leaves to its caller.
enum Later {
    /// A drain in flight or a timer already set will take it.
    Taken,
    /// The batch is full: drain now.
    Drain,
    /// Set the timer, then drain what is still waiting.
    Time,
}

async fn later<O, F, Fut>(
    queues: &'static LocalKey<Queues<O>>,
    key: &str,
    op: O,
    batch: fn(Vec<O>) -> O,
    tell: F,
    within_ms: u64,
) where
    F: Fn(O) -> Fut,
    Fut: Future<Output = ()>,
{
    let then = queues.with(|queues| {
        let mut queues = queues.borrow_mut();
        let queue = queues.entry(key.to_string()).or_default();
        queue.calls.push(op);
        if queue.draining {
            Later::Taken
        } else if queue.calls.len() >= MAX_BATCH {
            queue.draining = true;
            Later::Drain
        } else if std::mem::replace(&mut queue.timed, true) {
            Later::Taken
        } else {
            Later::Time
        }
    });
    match then {
        Later::Taken => return,
        Later::Drain => {}
        Later::Time => {
            Delay::from(Duration::from_millis(within_ms)).await;
            let drain = queues.with(|queues| {
                let mut queues = queues.borrow_mut();
                let Some(queue) = queues.get_mut(key) else {
                    return false;
                };
                queue.timed = false;
                let drain = !queue.draining && !queue.calls.is_empty();
                queue.draining |= drain;
                drain
            });
            if !drain {
                return;
            }
        }
    }
    while let Some(next) = next_batch(queues, key, batch) {
        tell(next).await;
    }
}

/// Queues `op` for the meter (run it inside `ctx.wait_until`).
pub async fn send_meter(env: &Env, meter: &MeterRef, op: MeterOp, request_id: &str) {
    let tell = |batch| meter.tell(env, batch, request_id);
    queue(&METERS, &meter.name, op, MeterOp::Batch, tell).await;
}

/// Queues `op` for the object `key`; the first caller with nothing in flight drains the queue,
/// one batch at a time (`tell`), the others return at once.
async fn queue<O, F, Fut>(
    queues: &'static LocalKey<Queues<O>>,
    key: &str,
    op: O,
    batch: fn(Vec<O>) -> O,
    tell: F,
) where
    F: Fn(O) -> Fut,
    Fut: Future<Output = ()>,
{
    let drain = queues.with(|queues| {
        let mut queues = queues.borrow_mut();
        let queue = queues.entry(key.to_string()).or_default();
        queue.calls.push(op);
        !std::mem::replace(&mut queue.draining, true)
    });
    if !drain {
        return;
    }
    while let Some(next) = next_batch(queues, key, batch) {
        tell(next).await;
    }
}

/// The next batch to send, or None (and the queue stops draining) when it is empty.
fn next_batch<O>(
    queues: &'static LocalKey<Queues<O>>,
    key: &str,
    batch: fn(Vec<O>) -> O,
) -> Option<O> {
    queues.with(|queues| {
        let mut queues = queues.borrow_mut();
        let queue = queues.get_mut(key)?;
        if queue.calls.is_empty() {
            queues.remove(key);
            return None;
        }
        let n = queue.calls.len().min(MAX_BATCH);
        let mut calls: Vec<O> = queue.calls.drain(..n).collect();
        Some(match calls.len() {
            1 => calls.remove(0),
            _ => batch(calls),
        })
    })
}
