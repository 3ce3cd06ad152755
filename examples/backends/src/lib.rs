//! Sample services behind the gateway: member (accounts and tokens), product (catalogue
//! and stock) and order (orders and the saga), plus what they share: env config, the
//! gateway identity headers, the registry client, SQLite storage and the event log.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod identity;
pub mod member;
pub mod order;
pub mod product;
pub mod registry;
pub mod serve;
