//! The admission credits this isolate holds per bucket (`credit::Holding`: the one being spent
//! and the next, asked for ahead), spent with no round trip.

use crate::bucket::credit::{Credit, Holding};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

/// The credits of a bucket, with the keys (secret names) its bucket had seen refused, and since.
struct Held {
    holding: Holding,
    refused_keys: Vec<String>,
}

thread_local! {
    static HELD: RefCell<HashMap<String, Held>> = RefCell::new(HashMap::new());
    /// Buckets a request of this isolate is asking for a credit right now.
    static ASKING: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

/// Claims the one ask for a credit of the bucket beside a request: true when this isolate
/// holds none and no other request is asking. `answered` ends the claim.
pub fn claim(bucket: &str) -> bool {
    let held = HELD.with(|held| held.borrow().contains_key(bucket));
    !held && ASKING.with(|asking| asking.borrow_mut().insert(bucket.to_string()))
}

/// Claims the one ask for the bucket's next credit, ahead of need: true when the credit held
/// is running low (`Holding::wants_next`) and no other request is asking. `answered` ends it.
pub fn claim_next(bucket: &str, now_ms: u64, life_ms: u64) -> bool {
    let low = HELD.with(|held| {
        held.borrow()
            .get(bucket)
            .is_some_and(|h| h.holding.wants_next(now_ms, life_ms))
    });
    low && ASKING.with(|asking| asking.borrow_mut().insert(bucket.to_string()))
}

/// The ask claimed by `claim` or `claim_next` is answered (or failed).
pub fn answered(bucket: &str) {
    ASKING.with(|asking| asking.borrow_mut().remove(bucket));
}

/// What spending asked: the lease and how late its send may leave, if a credit had one;
/// the keys known refused; and the leases of credits that ended unspent, to give back.
#[derive(Default)]
pub struct Spend {
    /// (lease, late_ms) of the admission spent.
    pub spent: Option<(u64, u64)>,
    /// Keys (secret names) the bucket's account refused.
    pub refused_keys: Vec<String>,
    /// Leases to give back to the bucket.
    pub unspent: Vec<u64>,
}

/// Spends one admission of the bucket's credits for a request of `tokens`, if one is held.
pub fn spend(bucket: &str, now_ms: u64, tokens: u64) -> Spend {
    HELD.with(|held| {
        let mut held = held.borrow_mut();
        let Some(h) = held.get_mut(bucket) else {
            return Spend::default();
        };
        let (spent, unspent) = h.holding.spend(now_ms, tokens);
        let refused_keys = h.refused_keys.clone();
        if h.holding.is_empty() {
            held.remove(bucket);
        }
        Spend {
            spent,
            refused_keys,
            unspent,
        }
    })
}

/// Keeps a new credit for the bucket (after the one being spent, if any); returns the leases
/// of one it displaces, unspent.
pub fn keep(bucket: &str, credit: Credit, refused_keys: Vec<String>) -> Vec<u64> {
    HELD.with(|held| {
        let mut held = held.borrow_mut();
        let h = held.entry(bucket.to_string()).or_insert_with(|| Held {
            holding: Holding::default(),
            refused_keys: Vec::new(),
        });
        h.refused_keys = refused_keys;
        h.holding.keep(credit)
    })
}

/// Notes a key the bucket's account refused, for the rest of its credits.
pub fn refuse(bucket: &str, key: &str) {
    HELD.with(|held| {
        if let Some(h) = held.borrow_mut().get_mut(bucket) {
            h.refused_keys.push(key.to_string());
        }
    })
}

/// Drops the bucket's credits (the upstream pushed back); returns their unspent leases.
pub fn drop(bucket: &str) -> Vec<u64> {
    HELD.with(|held| {
        held.borrow_mut()
            .remove(bucket)
            .map(|mut old| old.holding.drop_all())
            .unwrap_or_default()
    })
}
