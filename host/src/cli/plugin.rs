//! `agentflow plugin new | check | call | test`: a plugin developer's
//! tools. Scaffolding lives in `plugin/scaffold.rs`, the case runner in
//! `plugin/cases.rs`, what `call` and `test` share in `plugin/harness.rs`.

mod cases;
mod harness;
mod scaffold;

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::Value;

pub use cases::CasesFailed;

use crate::config::{Env, PluginConfig};
use crate::plugins::PluginRuntime;
use crate::plugins::inspect::{self, world_name};

/// The `plugin` subcommands.
#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Create a plugin crate that builds as is and has a unit test.
    New(scaffold::NewArgs),
    /// Say which plugin worlds a `.wasm` satisfies and what it imports.
    Check(CheckArgs),
    /// Run one authenticate/authorize call locally and print the outcome.
    Call(CallArgs),
    /// Run a plugin against a file of request -> expected-outcome cases.
    Test(cases::TestArgs),
}

/// Arguments of `plugin check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The component to inspect, or a plugin crate folder (built first).
    file: PathBuf,
}

/// Arguments of `plugin call`.
#[derive(Args, Debug)]
pub struct CallArgs {
    /// The component to call, or a plugin crate folder (built first).
    /// Default: the `path` of the `--config-from` entry.
    file: Option<PathBuf>,
    /// JSON file: `method`, `path`, `query`, `headers` (object or list of
    /// pairs), `client_ip`, `body`, the plugin's `config`, and for
    /// authorizers the `identity` and `access` to decide on.
    #[arg(long)]
    request: PathBuf,
    /// Take the plugin's config, grants, limits and name from an entry of
    /// an agentflow.json: `FILE#KEY`, KEY being `auth`, `auth[N]`,
    /// `authorization` or the plugin's name (just `FILE` when it names one
    /// plugin). A `config` in the request file still wins.
    #[arg(long, value_name = "FILE#KEY")]
    config_from: Option<String>,
    /// Store KEY=VALUE in the plugin's (throw-away) key-value store before
    /// the call; the store is printed after it.
    #[arg(long = "kv", value_name = "KEY=VALUE", value_parser = harness::kv_pair)]
    kv: Vec<(String, String)>,
    /// Environment variables the plugin may read as secrets.
    #[arg(long = "secret", value_name = "NAME")]
    secrets: Vec<String>,
    /// `host:port` the plugin may send HTTP requests to.
    #[arg(long = "allow-host", value_name = "HOST:PORT")]
    allowed_hosts: Vec<String>,
    /// Time limit of the call, in milliseconds (default 200, or the entry's).
    #[arg(long)]
    timeout_ms: Option<u32>,
    /// Memory cap, in MiB (default 32, or the entry's).
    #[arg(long)]
    memory_mb: Option<u32>,
}

/// Runs a `plugin` subcommand.
pub fn run(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::New(args) => scaffold::run(args),
        PluginCommand::Check(args) => check(args),
        PluginCommand::Call(args) => call(args),
        PluginCommand::Test(args) => cases::run(args),
    }
}

/// The component a tool was pointed at, building a crate folder.
fn component_file(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    crate::plugins::component_path(path).map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))
}

fn check(mut args: CheckArgs) -> anyhow::Result<()> {
    args.file = component_file(&args.file)?;
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let runtime = PluginRuntime::new()?;
    let report = inspect::check(&runtime, &bytes)
        .map_err(|why| anyhow::anyhow!("{}: {why}", args.file.display()))?;
    println!("{} (sha256 {})", args.file.display(), report.sha256);
    println!("imports:");
    for name in &report.imports {
        println!("  {name}");
    }
    println!("exports:");
    for name in &report.exports {
        println!("  {name}");
    }
    for fit in &report.worlds {
        match &fit.problem {
            None => println!("fits agentflow:auth/{}: yes", fit.world),
            Some(why) => println!("fits agentflow:auth/{}: no ({why})", fit.world),
        }
    }
    if report.fits().next().is_none() {
        bail!(
            "{} fits no plugin world: it can be neither an authenticator nor an authorizer",
            args.file.display()
        );
    }
    Ok(())
}

/// The request file of `plugin call`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallRequest {
    #[serde(default = "get")]
    method: String,
    #[serde(default = "root")]
    path: String,
    #[serde(default)]
    query: String,
    #[serde(default)]
    headers: harness::Headers,
    #[serde(default)]
    client_ip: Option<String>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    identity: Option<harness::IdentitySpec>,
    #[serde(default)]
    access: Option<harness::AccessSpec>,
}

fn get() -> String {
    "GET".into()
}

fn root() -> String {
    "/".into()
}

/// The plugin settings of a tool run: the `--config-from` entry, or the
/// defaults named after the component; the file to run (given, or the
/// entry's path) is built when it is a crate folder.
fn settings(
    file: Option<PathBuf>,
    config_from: Option<&str>,
) -> anyhow::Result<(PathBuf, PluginConfig, Env)> {
    let entry = config_from.map(harness::entry).transpose()?;
    let source = match (file, &entry) {
        (Some(file), _) => file,
        (None, Some(entry)) => entry.cfg.path.clone(),
        (None, None) => bail!("name the component or crate folder, or give --config-from"),
    };
    let wasm = component_file(&source)?;
    Ok(match entry {
        Some(entry) => (wasm, entry.cfg, entry.env),
        None => {
            let name = harness::name_of(&wasm);
            let cfg = harness::default_config(name, wasm.clone());
            (wasm, cfg, Env::process_only())
        }
    })
}

fn call(args: CallArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.request)
        .with_context(|| format!("cannot read {}", args.request.display()))?;
    let req: CallRequest =
        serde_json::from_str(&text).with_context(|| format!("{}", args.request.display()))?;
    let (wasm, mut cfg, env) = settings(args.file, args.config_from.as_deref())?;
    if let Some(config) = req.config {
        cfg.config = config;
    }
    cfg.secrets.extend(args.secrets);
    cfg.allowed_hosts
        .extend_parsed(&args.allowed_hosts)
        .map_err(|(_, why)| anyhow::anyhow!("--allow-host: {why}"))?;
    cfg.timeout_ms = args.timeout_ms.unwrap_or(cfg.timeout_ms);
    cfg.memory_mb = args.memory_mb.unwrap_or(cfg.memory_mb);
    let harness = harness::Harness::new(&wasm)?;
    let slot = harness.slot(req.access.is_some())?;
    harness.seed(&cfg, &args.kv)?;
    let request = harness::RequestSpec::new(
        req.method,
        req.path,
        req.query,
        req.headers,
        req.client_ip,
        req.body,
    );
    let mut answer = harness.call(&cfg, &env, slot, request, req.identity, req.access)??;
    answer["kv"] = Value::Object(harness.kv(&cfg)?);
    eprintln!(
        "called {} of {} ({})",
        slot.function(),
        wasm.display(),
        world_name(slot)
    );
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
