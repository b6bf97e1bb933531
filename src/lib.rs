//! Edge LLM gateway: an OpenAI-compatible endpoint on Cloudflare Workers that keeps apps under upstream limits.
//!
//! Pure modules (no `worker` imports) carry the logic and are tested on the host;
//! `glue` is the only part that touches the Workers runtime.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod access;
pub mod affinity;
pub mod alert;
pub mod asks;
pub mod bucket;
pub mod cache_key;
pub mod calendar;
pub mod classify;
pub mod config;
pub mod hints;
pub mod history;
pub mod json;
pub mod metrics;
pub mod openai;
pub mod pace;
pub mod planner;
pub mod pricing;
pub mod protocol;
pub mod redact;
pub mod report;
pub mod routes;
pub mod sse;
pub mod tokens;
pub mod window;

#[cfg(test)]
mod lcg;

#[cfg(target_arch = "wasm32")]
mod glue;
