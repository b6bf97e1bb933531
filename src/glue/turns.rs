//! This isolate's requests in flight by cache key (`crate::cache_key::InFlight`): a request
//! whose key is already in flight is spread at random rather than pinned.

use crate::cache_key::InFlight;
use std::cell::RefCell;

thread_local! {
    static IN_FLIGHT: RefCell<InFlight> = RefCell::new(InFlight::default());
}

/// A request counted in flight until dropped.
pub struct Turn(Option<u64>);

/// Starts a request with cache key `key`: the key to order its accounts by (None when
/// another request with it is in flight here), and its turn.
pub fn begin(key: Option<u64>) -> (Option<u64>, Turn) {
    let order_by = key.and_then(|k| IN_FLIGHT.with(|m| m.borrow_mut().begin(k)));
    (order_by, Turn(key))
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(key) = self.0 {
            IN_FLIGHT.with(|m| m.borrow_mut().end(key));
        }
    }
}
