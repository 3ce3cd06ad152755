//! `gateway`: run the API gateway, check a config, or mint a development token.

#![deny(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use gateway::logging::LogFormat;

#[cfg(all(not(feature = "system-allocator"), not(feature = "count-allocations")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(not(feature = "system-allocator"), feature = "count-allocations"))]
#[global_allocator]
static GLOBAL: alloc_count::Counting<mimalloc::MiMalloc> =
    alloc_count::Counting::new(mimalloc::MiMalloc);

#[cfg(all(feature = "system-allocator", feature = "count-allocations"))]
#[global_allocator]
static GLOBAL: alloc_count::Counting<std::alloc::System> =
    alloc_count::Counting::new(std::alloc::System);

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
    /// Mint a development JWT (prints it) for trying protected routes with curl.
    Token(Box<TokenArgs>),
    /// Convert another gateway's configuration into ours (printed on stdout).
    #[command(subcommand)]
    Import(ImportCommand),
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Convert a Spring Cloud Gateway application.yml / application.properties.
    ///
    /// The config is printed on stdout; what cannot be converted is listed on stderr
    /// with its line. Exit code 0: everything converted, 2: something was reported
    /// (the output is still written), 1: the file cannot be read or parsed.
    Scg {
        /// application.yml, application.yaml or application.properties
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct TokenArgs {
    /// HMAC secret (HS* algorithms).
    #[arg(long, conflicts_with_all = ["secret_env", "private_key"])]
    secret: Option<String>,
    /// Environment variable holding the HMAC secret.
    #[arg(long, conflicts_with = "private_key")]
    secret_env: Option<String>,
    /// Private key PEM file (RS*, PS*, ES*, EdDSA).
    #[arg(long)]
    private_key: Option<PathBuf>,
    /// Signing algorithm.
    #[arg(long, default_value = "HS256")]
    alg: String,
    #[arg(long, default_value = "dev-user")]
    sub: String,
    #[arg(long)]
    email: Option<String>,
    /// Roles claim (comma-separated).
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    /// Lifetime, e.g. 15m, 1h.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    ttl: std::time::Duration,
    #[arg(long)]
    iss: Option<String>,
    #[arg(long)]
    aud: Option<String>,
    /// Key id (`kid` header), to pick a key from a JWKS.
    #[arg(long)]
    kid: Option<String>,
    /// Leave out the random `jti` claim.
    #[arg(long)]
    no_jti: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

fn main() -> ExitCode {
    #[cfg(feature = "count-allocations")]
    if let Some(Err(e)) = alloc_count::report_to_env_file(&GLOBAL) {
        eprintln!("gateway: cannot write the allocation counters: {e}");
    }
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
            let result = gateway::server::run(opts);
            // buffered access-log lines go out before the process does
            gateway::logging::flush();
            match result {
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
        Command::Token(args) => mint_token(*args),
        Command::Import(ImportCommand::Scg { file }) => import_scg(&file),
    }
}

fn import_scg(file: &std::path::Path) -> ExitCode {
    use gateway::import::scg;
    match scg::import(file) {
        Ok(imported) => {
            print!("{}", imported.yaml);
            if imported.notes.is_empty() {
                return ExitCode::SUCCESS;
            }
            let name = file.display().to_string();
            eprintln!("{name}: {} part(s) not converted:", imported.notes.len());
            for note in &imported.notes {
                eprintln!("  {}", scg::Located { file: &name, note });
            }
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("gateway import scg: {e}");
            ExitCode::FAILURE
        }
    }
}

fn mint_token(a: TokenArgs) -> ExitCode {
    use plugins::auth::mint::{MintKey, MintOptions};
    let key = match (a.secret, a.secret_env, a.private_key) {
        (Some(s), _, _) => MintKey::Secret(s.into_bytes()),
        (_, Some(var), _) => match std::env::var(&var) {
            Ok(s) => MintKey::Secret(s.into_bytes()),
            Err(_) => {
                eprintln!("gateway token: environment variable {var} is not set");
                return ExitCode::FAILURE;
            }
        },
        (_, _, Some(path)) => match std::fs::read(&path) {
            Ok(pem) => MintKey::PrivateKeyPem(pem),
            Err(e) => {
                eprintln!("gateway token: cannot read {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        _ => {
            eprintln!("gateway token: give --secret, --secret-env or --private-key");
            return ExitCode::FAILURE;
        }
    };
    let opts = MintOptions {
        alg: a.alg,
        key,
        sub: a.sub,
        email: a.email,
        roles: a.roles,
        ttl: a.ttl,
        iss: a.iss,
        aud: a.aud,
        kid: a.kid,
        jti: !a.no_jti,
        extra: Default::default(),
    };
    match plugins::auth::mint::mint_token(&opts) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gateway token: {e}");
            ExitCode::FAILURE
        }
    }
}
