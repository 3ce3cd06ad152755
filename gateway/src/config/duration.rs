//! Durations in config files (`"250ms"`, `"2s"`): the one type every section uses.

pub use plugins::Dur;
