//! `agentflow plugin new | check | call`: a plugin developer's tools.
//! Scaffolding lives in `plugin/scaffold.rs`.

mod scaffold;

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::config::{Env, PluginConfig};
use crate::identity::Identity;
use crate::plugins::inspect::{self, world_name};
use crate::plugins::{
    Access, AllowList, AuthnOutcome, AuthzOutcome, KvStore, PluginRequest, PluginRuntime, Slot,
};

/// The `plugin` subcommands.
#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Create a plugin crate that builds as is and has a unit test.
    New(scaffold::NewArgs),
    /// Say which plugin worlds a `.wasm` satisfies and what it imports.
    Check(CheckArgs),
    /// Run one authenticate/authorize call locally and print the outcome.
    Call(CallArgs),
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
    file: PathBuf,
    /// JSON file: `method`, `path`, `query`, `headers` (object or list of
    /// pairs), `client_ip`, the plugin's `config`, and for authorizers the
    /// `identity` and `access` to decide on.
    #[arg(long)]
    request: PathBuf,
    /// Environment variables the plugin may read as secrets.
    #[arg(long = "secret", value_name = "NAME")]
    secrets: Vec<String>,
    /// `host:port` the plugin may send HTTP requests to.
    #[arg(long = "allow-host", value_name = "HOST:PORT")]
    allowed_hosts: Vec<String>,
    /// Time limit of the call, in milliseconds.
    #[arg(long, default_value_t = 200)]
    timeout_ms: u32,
    /// Memory cap, in MiB.
    #[arg(long, default_value_t = 32)]
    memory_mb: u32,
}

/// Runs a `plugin` subcommand.
pub fn run(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::New(args) => scaffold::run(args),
        PluginCommand::Check(args) => check(args),
        PluginCommand::Call(args) => call(args),
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
    headers: Headers,
    #[serde(default)]
    client_ip: Option<String>,
    #[serde(default)]
    config: Value,
    #[serde(default)]
    identity: Option<CallIdentity>,
    #[serde(default)]
    access: Option<CallAccess>,
}

fn get() -> String {
    "GET".into()
}

fn root() -> String {
    "/".into()
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Headers {
    #[default]
    None,
    Map(Map<String, Value>),
    Pairs(Vec<(String, String)>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallIdentity {
    user_id: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    claims: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallAccess {
    resource: String,
    action: String,
    #[serde(default)]
    resource_id: Option<String>,
    /// The resource's recorded owner (contract 0.3 `resource-owner`).
    #[serde(default)]
    resource_owner: Option<String>,
    /// The caller's tenant key (contract 0.3 `caller-tenant`).
    #[serde(default)]
    caller_tenant: Option<String>,
}

fn call(mut args: CallArgs) -> anyhow::Result<()> {
    args.file = component_file(&args.file)?;
    let text = std::fs::read_to_string(&args.request)
        .with_context(|| format!("cannot read {}", args.request.display()))?;
    let req: CallRequest =
        serde_json::from_str(&text).with_context(|| format!("{}", args.request.display()))?;
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let runtime =
        PluginRuntime::new()?.with_storage(KvStore::temporary().map_err(anyhow::Error::msg)?);
    let report = inspect::check(&runtime, &bytes)
        .map_err(|why| anyhow::anyhow!("{}: {why}", args.file.display()))?;
    let fits: Vec<&str> = report.fits().collect();
    let slot = match (
        fits.contains(&"authenticator"),
        fits.contains(&"authorizer"),
    ) {
        (true, true) if req.access.is_some() => Slot::Authorizer,
        (true, _) => Slot::Authenticator,
        (false, true) => Slot::Authorizer,
        (false, false) => bail!(
            "{} fits no plugin world (run `agentflow plugin check` for why)",
            args.file.display()
        ),
    };
    let name = args
        .file
        .file_stem()
        .map(|s| s.to_string_lossy().replace('_', "-"))
        .unwrap_or_else(|| "plugin".into());
    let cfg = PluginConfig {
        name,
        path: args.file.clone(),
        config: req.config.clone(),
        secrets: args.secrets.clone(),
        allowed_hosts: AllowList::parse(&args.allowed_hosts)
            .map_err(|(_, why)| anyhow::anyhow!("--allow-host: {why}"))?,
        memory_mb: args.memory_mb,
        timeout_ms: args.timeout_ms,
        kv_kb: 1024,
        reuse_instance: false,
        credential_headers: Vec::new(),
        body_kb: 64,
    };
    let plugin = runtime.load(&cfg, slot, &Env::process_only())?;
    let headers = match req.headers {
        Headers::None => Vec::new(),
        Headers::Pairs(p) => p
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        Headers::Map(m) => m
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect(),
    };
    let view = PluginRequest::new(
        req.method.to_ascii_uppercase(),
        req.path,
        req.query,
        headers,
        req.client_ip,
    );
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = match slot {
        Slot::Authenticator => match tokio.block_on(plugin.authenticate(&view))? {
            AuthnOutcome::Authenticated { who, cache } => json!({
                "outcome": "authenticated",
                "identity": who.to_json(),
                "cache": cache.map(|c| json!({"ttl_ms": c.ttl_ms, "vary": c.vary})),
            }),
            AuthnOutcome::NoCredentials => json!({"outcome": "no-credentials"}),
            AuthnOutcome::Refused(r) => {
                json!({"outcome": "refused", "status": r.status(), "detail": r.detail()})
            }
        },
        Slot::Authorizer => {
            let who = req
                .identity
                .context("an authorizer call needs \"identity\" in the request file")?;
            let what = req
                .access
                .context("an authorizer call needs \"access\" in the request file")?;
            let who = Identity {
                user_id: who.user_id,
                roles: who.roles,
                claims: who.claims,
            };
            // A one-shot command: leaking two short strings is harmless.
            let access = Access {
                resource: Box::leak(what.resource.into_boxed_str()),
                action: Box::leak(what.action.into_boxed_str()),
                resource_id: what.resource_id,
                owner: what.resource_owner,
                tenant: what.caller_tenant,
            };
            match tokio.block_on(plugin.authorize(&who, &access, &view))? {
                AuthzOutcome::Allow => json!({"outcome": "allow"}),
                AuthzOutcome::Deny(r) => {
                    json!({"outcome": "deny", "status": r.status(), "detail": r.detail()})
                }
            }
        }
    };
    eprintln!(
        "called {} of {} ({})",
        slot.function(),
        args.file.display(),
        world_name(slot)
    );
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
