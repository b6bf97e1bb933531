//! Calls that nothing waits for (settles, commits, returned credits; meters' settles), sent to
//! each object in batches: while one batch is in flight, the next calls queue behind it. A
//! call that may wait (`send_later`, `send_meter_later`) rides with the isolate's next call to
//! its object, or goes on its own when its time is up; it is queued at once, and leaves work
//! for the background only when it must set that time or send.

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
    enqueue(&BUCKETS, &bucket.name, op, Op::Batch, tell).await;
}

/// Queues `op` for the bucket to ride with the isolate's next call to it (`send`, or
/// `with_riders` by a call), sending it on its own `within_ms` from now at the latest, or at
/// once when a batch is full. Returns what is left to run inside `ctx.wait_until` (a timer to
/// set, or a batch to send); None when a timer already set or a batch in flight takes it, as
/// for most calls (then nothing more is spent on it).
pub fn send_later(
    env: &Env,
    bucket: &Bucket,
    op: Op,
    request_id: &str,
    within_ms: u64,
) -> Option<impl Future<Output = ()> + 'static> {
    let then = push(&BUCKETS, &bucket.name, op, Some(within_ms))?;
    let (env, bucket, request_id) = (env.clone(), bucket.clone(), request_id.to_string());
    Some(async move {
        let tell = |batch| bucket.tell(&env, batch, &request_id);
        finish(&BUCKETS, &bucket.name, Op::Batch, tell, then).await;
    })
}

/// Queues `op` for the meter (run it inside `ctx.wait_until`).
pub async fn send_meter(env: &Env, meter: &MeterRef, op: MeterOp, request_id: &str) {
    let tell = |batch| meter.tell(env, batch, request_id);
    enqueue(&METERS, &meter.name, op, MeterOp::Batch, tell).await;
}

/// `send_later` for a meter: rides with its next admission (`meter_with_riders`) or a settle.
pub fn send_meter_later(
    env: &Env,
    meter: &MeterRef,
    op: MeterOp,
    request_id: &str,
    within_ms: u64,
) -> Option<impl Future<Output = ()> + 'static> {
    let then = push(&METERS, &meter.name, op, Some(within_ms))?;
    let (env, meter, request_id) = (env.clone(), meter.clone(), request_id.to_string());
    Some(async move {
        let tell = |batch| meter.tell(&env, batch, &request_id);
        finish(&METERS, &meter.name, MeterOp::Batch, tell, then).await;
    })
}

/// `op` for a call to the bucket, with the calls waiting to ride with it in front (taken; none
/// while a batch is being sent: they go with it).
pub fn with_riders(bucket: &str, op: Op) -> Op {
    riding(&BUCKETS, bucket, op, Op::Batch)
}

/// `with_riders` for a call to a meter.
pub fn meter_with_riders(meter: &str, op: MeterOp) -> MeterOp {
    riding(&METERS, meter, op, MeterOp::Batch)
}

fn riding<O>(queues: &'static LocalKey<Queues<O>>, key: &str, op: O, batch: fn(Vec<O>) -> O) -> O {
    let mut calls = queues.with(|queues| match queues.borrow_mut().get_mut(key) {
        Some(queue) if !queue.draining => std::mem::take(&mut queue.calls),
        _ => Vec::new(),
    });
    if calls.is_empty() {
        return op;
    }
    calls.push(op);
    batch(calls)
}

/// What a queued call leaves to its caller (`push` says None when a drain in flight or a
/// timer already set will take it).
enum Then {
    /// Drain now: nothing is in flight and the call may not wait, or the batch is full.
    Drain,
    /// Wait this long, then drain what is still waiting (unless a call took it).
    Wait(u64),
}

/// Queues `op` for the object `key` (a call that may not wait: `enqueue`).
async fn enqueue<O, F, Fut>(
    queues: &'static LocalKey<Queues<O>>,
    key: &str,
    op: O,
    batch: fn(Vec<O>) -> O,
    tell: F,
) where
    F: Fn(O) -> Fut,
    Fut: Future<Output = ()>,
{
    if let Some(then) = push(queues, key, op, None) {
        finish(queues, key, batch, tell, then).await;
    }
}

/// Queues `op` for the object `key`. A call that may wait (`wait_ms`) waits for a call that
/// drains, for its timer, or for a full batch; otherwise the first caller with nothing in
/// flight drains the queue, one batch at a time (`finish`), and the others have nothing left
/// to do (None).
fn push<O>(
    queues: &'static LocalKey<Queues<O>>,
    key: &str,
    op: O,
    wait_ms: Option<u64>,
) -> Option<Then> {
    queues.with(|queues| {
        let mut queues = queues.borrow_mut();
        let queue = queues.entry(key.to_string()).or_default();
        queue.calls.push(op);
        match wait_ms {
            _ if queue.draining => None,
            Some(_) if queue.calls.len() < MAX_BATCH && queue.timed => None,
            Some(ms) if queue.calls.len() < MAX_BATCH => {
                queue.timed = true;
                Some(Then::Wait(ms))
            }
            _ => {
                queue.draining = true;
                Some(Then::Drain)
            }
        }
    })
}

/// What `push` left: waits out the timer (then drains what is still waiting, unless a call
/// took it), or drains now, one batch at a time (`tell`).
async fn finish<O, F, Fut>(
    queues: &'static LocalKey<Queues<O>>,
    key: &str,
    batch: fn(Vec<O>) -> O,
    tell: F,
    then: Then,
) where
    F: Fn(O) -> Fut,
    Fut: Future<Output = ()>,
{
    match then {
        Then::Drain => {}
        Then::Wait(ms) => {
            Delay::from(Duration::from_millis(ms)).await;
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
