//! The admission credits this isolate holds, one per bucket, spent with no round trip.

use crate::bucket::credit::Credit;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

/// A credit, with the keys (secret names) its bucket had seen refused, and since.
struct Held {
    credit: Credit,
    refused_keys: Vec<String>,
}

thread_local! {
    static HELD: RefCell<HashMap<String, Held>> = RefCell::new(HashMap::new());
    /// Buckets a request of this isolate is asking for a credit right now.
    static ASKING: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

/// Claims the one ask for a credit of the bucket: true when this isolate holds none and no
/// other request is asking, so an isolate holds at most one credit per bucket. `answered`
/// ends the claim.
pub fn claim(bucket: &str) -> bool {
    let held = HELD.with(|held| held.borrow().contains_key(bucket));
    !held && ASKING.with(|asking| asking.borrow_mut().insert(bucket.to_string()))
}

/// The ask claimed by `claim` is answered (or failed).
pub fn answered(bucket: &str) {
    ASKING.with(|asking| asking.borrow_mut().remove(bucket));
}

/// What spending asked: the lease and how late its send may leave, if the credit had one;
/// the keys known refused; and the leases of a credit that ended unspent, to give back.
#[derive(Default)]
pub struct Spend {
    /// (lease, late_ms) of the admission spent.
    pub spent: Option<(u64, u64)>,
    /// Keys (secret names) the bucket's account refused.
    pub refused_keys: Vec<String>,
    /// Leases to give back to the bucket.
    pub unspent: Vec<u64>,
}

/// Spends one admission of the bucket's credit for a request of `tokens`, if one is held.
pub fn spend(bucket: &str, now_ms: u64, tokens: u64) -> Spend {
    HELD.with(|held| {
        let mut held = held.borrow_mut();
        let Some(Held {
            credit,
            refused_keys,
        }) = held.get_mut(bucket)
        else {
            return Spend::default();
        };
        let spent = credit.spend(now_ms, tokens);
        let refused_keys = refused_keys.clone();
        let unspent = if credit.done(now_ms) {
            let unspent = credit.unspent();
            held.remove(bucket);
            unspent
        } else {
            Vec::new()
        };
        Spend {
            spent,
            refused_keys,
            unspent,
        }
    })
}

/// Keeps a new credit for the bucket; returns the leases of the one it replaces, unspent.
pub fn keep(bucket: &str, credit: Credit, refused_keys: Vec<String>) -> Vec<u64> {
    let new = Held {
        credit,
        refused_keys,
    };
    HELD.with(|held| {
        held.borrow_mut()
            .insert(bucket.to_string(), new)
            .map(|old| old.credit.unspent())
            .unwrap_or_default()
    })
}

/// Notes a key the bucket's account refused, for the rest of the credit.
pub fn refuse(bucket: &str, key: &str) {
    HELD.with(|held| {
        if let Some(h) = held.borrow_mut().get_mut(bucket) {
            h.refused_keys.push(key.to_string());
        }
    })
}

/// Drops the bucket's credit (the upstream pushed back); returns its unspent leases.
pub fn drop(bucket: &str) -> Vec<u64> {
    HELD.with(|held| {
        held.borrow_mut()
            .remove(bucket)
            .map(|old| old.credit.unspent())
            .unwrap_or_default()
    })
}
