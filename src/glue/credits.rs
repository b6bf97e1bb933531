//! The admission credits this isolate holds per bucket and per meter (`credit::Holding`: the
//! one being spent and the next, asked for ahead), spent with no round trip.

use crate::bucket::credit::{Credit, Holding};
use crate::window::MinuteUse;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use worker::Delay;

/// Whose credits: a bucket's (by bucket name) or a meter's (by meter name). Kept apart, so a
/// bucket and a meter of the same name never share them.
#[derive(Debug, Clone, Copy)]
pub enum Of {
    /// A bucket.
    Bucket,
    /// A client's or a user's meter.
    Meter,
}

/// The credits of a bucket or meter, with the keys (secret names) a bucket had seen refused.
struct Held {
    holding: Holding,
    refused_keys: Vec<String>,
}

/// Credits held, and the names a request of this isolate is asking a credit of right now.
#[derive(Default)]
struct Table {
    held: HashMap<String, Held>,
    asking: HashSet<String>,
}

thread_local! {
    static TABLES: RefCell<(Table, Table)> = RefCell::default();
}

fn with<R>(of: Of, f: impl FnOnce(&mut Table) -> R) -> R {
    TABLES.with(|tables| {
        let mut tables = tables.borrow_mut();
        f(match of {
            Of::Bucket => &mut tables.0,
            Of::Meter => &mut tables.1,
        })
    })
}

/// Claims the one ask for a credit beside a request: true when this isolate holds none of
/// `name` and no other request is asking. `answered` ends the claim.
pub fn claim(of: Of, name: &str) -> bool {
    with(of, |t| {
        !t.held.contains_key(name) && t.asking.insert(name.to_string())
    })
}

/// Claims the one ask for the next credit, ahead of need: true when the credit held is
/// running low (`Holding::wants_next`) and no other request is asking. `answered` ends it.
pub fn claim_next(of: Of, name: &str, now_ms: u64, life_ms: u64) -> bool {
    with(of, |t| {
        let low = (t.held.get(name)).is_some_and(|h| h.holding.wants_next(now_ms, life_ms));
        low && t.asking.insert(name.to_string())
    })
}

/// The ask claimed by `claim` or `claim_next` is answered (or failed).
pub fn answered(of: Of, name: &str) {
    with(of, |t| t.asking.remove(name));
}

/// What spending asked: the lease and how late its send may leave, if a credit had one;
/// the keys known refused; and the leases of credits that ended unspent, to give back.
#[derive(Default)]
pub struct Spend {
    /// (lease, late_ms) of the admission spent.
    pub spent: Option<(u64, u64)>,
    /// Keys (secret names) the bucket's account refused.
    pub refused_keys: Vec<String>,
    /// Leases to give back.
    pub unspent: Vec<u64>,
    /// A meter's minute as seen from here, after this spend (`Holding::seen`).
    pub seen: Option<MinuteUse>,
}

/// Spends one admission of the credits held for a request of `tokens`, if one is held.
pub fn spend(of: Of, name: &str, now_ms: u64, tokens: u64) -> Spend {
    with(of, |t| {
        let Some(h) = t.held.get_mut(name) else {
            return Spend::default();
        };
        let (spent, unspent) = h.holding.spend(now_ms, tokens);
        let refused_keys = h.refused_keys.clone();
        let seen = h.holding.seen();
        if h.holding.is_empty() {
            t.held.remove(name);
        }
        Spend {
            spent,
            refused_keys,
            unspent,
            seen,
        }
    })
}

/// Keeps a new credit (after the one being spent, if any); returns the leases of one it
/// displaces, unspent.
pub fn keep(of: Of, name: &str, credit: Credit, refused_keys: Vec<String>) -> Vec<u64> {
    with(of, |t| {
        let h = t.held.entry(name.to_string()).or_insert_with(|| Held {
            holding: Holding::default(),
            refused_keys: Vec::new(),
        });
        h.refused_keys = refused_keys;
        h.holding.keep(credit)
    })
}

/// One admission of a meter's credits held given up for a request too large for them
/// (`Holding::surrender`): its lease, to give back ahead of the request's ask.
pub fn surrender(meter: &str, now_ms: u64) -> Option<u64> {
    with(Of::Meter, |t| {
        t.held.get_mut(meter)?.holding.surrender(now_ms)
    })
}

/// A meter's minute (of `minute_ms`) as it answered, as seen from here: less what the credits
/// held for it leave unspent (`Holding::observe`).
pub fn observe(name: &str, minute: MinuteUse, minute_ms: u64) -> MinuteUse {
    with(Of::Meter, |t| match t.held.get_mut(name) {
        Some(h) => h.holding.observe(minute, minute_ms),
        None => minute,
    })
}

/// Notes a key the bucket's account refused, for the rest of its credits.
pub fn refuse(bucket: &str, key: &str) {
    with(Of::Bucket, |t| {
        if let Some(h) = t.held.get_mut(bucket) {
            h.refused_keys.push(key.to_string());
        }
    })
}

/// Drops the credits held (the upstream pushed back); returns their unspent leases.
pub fn drop(of: Of, name: &str) -> Vec<u64> {
    with(of, |t| {
        (t.held.remove(name))
            .map(|mut old| old.holding.drop_all())
            .unwrap_or_default()
    })
}

/// Waits out the life of a credit kept for `name` (`until_ms`), then takes the unspent leases
/// of its credits that have ended, to give back: a credit's unused room returns at its end,
/// not when the isolate next spends (never, if it goes quiet).
pub async fn ended_after(of: Of, name: &str, until_ms: u64) -> Vec<u64> {
    let left_ms = until_ms.saturating_sub(crate::glue::now_ms());
    Delay::from(Duration::from_millis(left_ms.saturating_add(1))).await;
    let now_ms = crate::glue::now_ms();
    with(of, |t| {
        let Some(h) = t.held.get_mut(name) else {
            return Vec::new();
        };
        let unspent = h.holding.drop_ended(now_ms);
        if h.holding.is_empty() {
            t.held.remove(name);
        }
        unspent
    })
}
