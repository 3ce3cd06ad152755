//! Benchmarks for the gateway (see the README in this folder).
