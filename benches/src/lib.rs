//! Benchmarks for the gateway: the load harness (`loadtest` bin) that compares the
//! gateway with the bare Pingora floor, nginx, haproxy and the bare backend, and
//! the pieces it is made of.
//! The criterion micro benches live in `benches/`.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod backend;
pub mod callgrind;
pub mod chart;
pub mod configs;
pub mod idle;
pub mod loadgen;
pub mod procs;
pub mod report;
pub mod run;
pub mod scenario;
pub mod setup;
pub mod sys;
pub mod tls;
pub mod tokens;
