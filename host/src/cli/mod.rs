//! The command line: `agentflow run` (the default) and the other commands,
//! one file each.

mod plugin;
mod secret_key;
mod store;
mod superuser;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Config;

/// Authentication and authorization in front of an agent API.
#[derive(Parser, Debug)]
#[command(name = "agentflow", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Options for `run` when no subcommand is given.
    #[command(flatten)]
    run: RunArgs,
    /// Log line format on stderr: `text` (colour only on a terminal) or
    /// `json` (one object per line, for log collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How log lines are written.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the server (the default).
    Run(RunArgs),
    /// Mint a JWT with the configured key (for testing and scripts).
    Token(token::TokenArgs),
    /// Create a superuser (or reset its password) in the data dir.
    Superuser(superuser::SuperuserArgs),
    /// Develop plugins: scaffold a crate, check a component, call it once.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Generate or rotate the Fernet key that encrypts values at rest.
    #[command(subcommand)]
    SecretKey(secret_key::SecretKeyCommand),
    /// Move the data dir's accounts and plugin storage to PostgreSQL.
    #[command(subcommand)]
    Store(store::StoreCommand),
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Path of agentflow.json.
    #[arg(long, default_value = "agentflow.json")]
    config: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Reload plugins when their files change (as `"plugins": {"watch": true}`).
    #[arg(long)]
    watch: bool,
    /// Also serve `GET /metrics` without credentials on this port (0 picks
    /// a free one), on `--metrics-host`.
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Address of the `--metrics-port` listener (loopback by default: the
    /// metrics are not for the public).
    #[arg(long, default_value = "127.0.0.1")]
    metrics_host: String,
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Some(Command::Token(args)) => token::run(args),
        Some(Command::Superuser(args)) => superuser::run(args),
        Some(Command::SecretKey(command)) => secret_key::run(command),
        Some(Command::Plugin(command)) => plugin::run(command),
        Some(Command::Store(command)) => store::run(command),
        Some(Command::Run(args)) => run(args),
        None => run(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Cases that ran and failed are already reported, one line each.
        Err(e) if e.is::<plugin::CasesFailed>() => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`); colour codes
/// only when stderr is a terminal, so log files stay plain text.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut cfg = Config::load(&args.config)?;
    cfg.plugins.watch |= args.watch;
    let runtime = tokio::runtime::Runtime::new()?;
    let metrics = args
        .metrics_port
        .map(|port| format!("{}:{port}", args.metrics_host));
    runtime.block_on(crate::server::serve(
        &cfg,
        &args.host,
        args.port,
        metrics.as_deref(),
    ))?;
    Ok(())
}
