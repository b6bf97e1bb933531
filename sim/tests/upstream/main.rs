//! End-to-end tests of the simulator over real loopback HTTP.

mod bodies;
mod common;
mod control;
mod faults;
mod limits;
mod stream;
