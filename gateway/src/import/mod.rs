//! `gateway import`: convert another gateway's configuration into ours (outside
//! the request path; the result is a config file for `gateway check` and `run`).

pub mod scg;
