//! The gateway library: config, routing, upstreams, the Pingora proxy pipeline,
//! hot reload, metrics and the admin API. The `gateway` binary is a thin CLI on top.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod admin;
pub mod config;
pub mod edge;
pub mod import;
pub mod logging;
pub mod observe;
pub mod otlp;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod upstream;
