//! Log output: human-readable text by default, JSON lines with `--log-format json`.
//! Filter with `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

use crate::config::file::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // a second init (tests) keeps the first subscriber
    let _ = result;
}
