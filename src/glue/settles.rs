//! Calls that nothing waits for (settles, commits, returned credits), sent to each bucket in batches: while one batch is in flight, the next calls queue behind it.

use crate::glue::bucket::Bucket;
use crate::protocol::Op;
use std::cell::RefCell;
use std::collections::HashMap;
use worker::Env;

/// Most calls in one batch.
const MAX_BATCH: usize = 64;

/// Per bucket: the calls waiting, and whether a sender is draining them.
#[derive(Default)]
struct Queue {
    calls: Vec<Op>,
    draining: bool,
}

thread_local! {
    static QUEUES: RefCell<HashMap<String, Queue>> = RefCell::new(HashMap::new());
}

/// Queues `op` for the bucket; the first caller with nothing in flight drains the queue, one
/// batch at a time, the others return at once (run it inside `ctx.wait_until`).
pub async fn send(env: &Env, bucket: &Bucket, op: Op, request_id: &str) {
    let drain = QUEUES.with(|queues| {
        let mut queues = queues.borrow_mut();
        let queue = queues.entry(bucket.name.clone()).or_default();
        queue.calls.push(op);
        !std::mem::replace(&mut queue.draining, true)
    });
    if !drain {
        return;
    }
    while let Some(batch) = next_batch(&bucket.name) {
        bucket.tell(env, batch, request_id).await;
    }
}

/// The next batch to send, or None (and the queue stops draining) when it is empty.
fn next_batch(bucket: &str) -> Option<Op> {
    QUEUES.with(|queues| {
        let mut queues = queues.borrow_mut();
        let queue = queues.get_mut(bucket)?;
        if queue.calls.is_empty() {
            queues.remove(bucket);
            return None;
        }
        let n = queue.calls.len().min(MAX_BATCH);
        let mut calls: Vec<Op> = queue.calls.drain(..n).collect();
        Some(match calls.len() {
            1 => calls.remove(0),
            _ => Op::Batch(calls),
        })
    })
}
