//! `gateway`: run the API gateway, check a config, or mint a development token.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use gateway::config::file::LogFormat;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "API gateway on Pingora: routing, JWT at the edge, discovery, metrics"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve traffic with a config file (the default command).
    Run {
        #[arg(
            short,
            long,
            default_value = "config/gateway.yaml",
            env = "GATEWAY_CONFIG"
        )]
        config: PathBuf,
        /// Log format (overrides server.log.format).
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
    },
    /// Validate a config file: prints `ok`, or every error with its key path (exit code 1).
    Check {
        #[arg(short, long, default_value = "config/gateway.yaml")]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run {
        config: PathBuf::from("config/gateway.yaml"),
        log_format: None,
    });
    match command {
        Command::Run { config, log_format } => {
            let opts = gateway::server::RunOptions {
                config_path: config,
                log_format: log_format.map(|f| match f {
                    LogFormatArg::Text => LogFormat::Text,
                    LogFormatArg::Json => LogFormat::Json,
                }),
            };
            match gateway::server::run(opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gateway: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => match gateway::server::check(&config) {
            Ok(()) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{}: {} error(s)", config.display(), errors.len());
                for e in errors {
                    eprintln!("  - {e}");
                }
                ExitCode::FAILURE
            }
        },
    }
}
