//! Assembling a running server from a validated config: plugins loaded,
//! gate built, router served by [`connections`] within the connection limits.

mod connections;
mod deadline;
mod fd_limit;

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::accounts::Accounts;
use crate::config::Config;
use crate::pipeline::{Gate, GateError};
use crate::plugins::{PluginError, PluginRuntime};
use crate::proxy::{HeaderPolicy, Upstream};
use crate::routes::{AppState, app};
use crate::settings::{ServerSettings, SettingError};

use crate::upstream_token::UpstreamIdentity;
pub use deadline::BodyTimeout;

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The auth setup is wrong (names the key).
    #[error(transparent)]
    Gate(#[from] GateError),
    /// The account system could not start (settings, key, database).
    #[error(transparent)]
    Accounts(#[from] crate::accounts::AccountsError),
    /// The plugin engine could not start.
    #[error(transparent)]
    Engine(#[from] PluginError),
    /// A listener setting (connection cap, timeouts) is invalid.
    #[error(transparent)]
    Settings(#[from] SettingError),
    /// The encrypted variables granted to plugins cannot be read.
    #[error("cannot read plugin secrets from the encrypted variables: {0}")]
    Secrets(String),
    /// Plugin files cannot be watched for hot reload.
    #[error("{0}")]
    Watch(String),
    /// The upstream token cannot be signed with the configured key.
    #[error("`upstream.token`: {0}")]
    Upstream(String),
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Everything a running server needs, built from the config.
pub async fn build_state(cfg: &Config) -> Result<AppState, StartError> {
    let accounts = Arc::new(Accounts::open(cfg).await?);
    accounts.spawn_maintenance();
    let mut runtime = PluginRuntime::new()?;
    if let Some(storage) = crate::plugins::open_storage(cfg)? {
        runtime = runtime.with_storage(storage);
    }
    let granted: Vec<&str> = cfg
        .plugins()
        .flat_map(|p| p.secrets.iter().map(String::as_str))
        .collect();
    let secrets = crate::accounts::PluginSecrets::load(&accounts, cfg.env.clone(), &granted)
        .await
        .map_err(|e| StartError::Secrets(e.to_string()))?;
    runtime = runtime.with_secrets(Arc::new(secrets));
    runtime =
        runtime.with_compile_cache(crate::config::data_dir(&cfg.env, &cfg.dir()).join("compiled"));
    let gate = Gate::build(cfg, &runtime, &accounts)?;
    if gate.is_open() {
        tracing::warn!("\"auth\" is null: every request is accepted without credentials");
    }
    for plugin in gate.plugins() {
        let s = plugin.status();
        tracing::info!(plugin = %s.name, slot = s.slot, sha256 = %s.sha256, "plugin loaded");
        accounts.record(crate::audit::plugins::loaded(&s)).await;
    }
    if cfg
        .env
        .get("JWT_SECRET_KEY")
        .is_some_and(|k| k.starts_with("change-me"))
    {
        tracing::warn!(
            "JWT_SECRET_KEY is the example value from .env.example: anyone can mint tokens; set your own secret"
        );
    }
    if cfg.agent.is_none() {
        tracing::warn!("no \"agent\" configured: AgentFlow routes answer 503");
    }
    let identity = UpstreamIdentity::from_settings(&cfg.upstream).map_err(StartError::Upstream)?;
    if cfg.upstream.token.is_some() && gate.is_open() {
        tracing::warn!(
            "\"upstream.token\" is set but \"auth\" is null: there is no identity to sign, the agent gets no token"
        );
    }
    let headers = HeaderPolicy::new(cfg.plugins().flat_map(|p| p.credential_headers.iter()));
    let upstream = cfg
        .agent
        .clone()
        .map(|base| Arc::new(Upstream::new(base, headers).with_identity(identity)));
    let cors = cfg.cors.clone().map(Arc::new);
    let tenancy = cfg
        .tenancy
        .clone()
        .map(|t| Arc::new(crate::tenancy::Tenancy::new(t, accounts.clone())));
    Ok(AppState {
        gate: Arc::new(gate),
        upstream,
        accounts,
        cors,
        tenancy,
    })
}

/// Binds `host:port` and serves until the process is stopped.
pub async fn serve(cfg: &Config, host: &str, port: u16) -> Result<(), StartError> {
    let settings = ServerSettings::from_env(&cfg.env)?;
    let state = build_state(cfg).await?;
    // Kept alive while serving: dropping it stops hot reload.
    let _watcher = if cfg.plugins.watch && state.gate.uses_plugins() {
        Some(
            crate::plugins::reload::watch(
                state.gate.plugins().cloned().collect(),
                crate::audit::plugins::reload_recorder(state.accounts.clone()),
            )
            .map_err(StartError::Watch)?,
        )
    } else {
        None
    };
    let addr = format!("{host}:{port}");
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    // Tests and scripts read this line to find the port when started with --port 0.
    tracing::info!("agentflow listening on http://{local}");
    let max_connections = fd_limit::fit(settings.max_connections, fd_limit::raise());
    if max_connections < settings.max_connections {
        tracing::warn!(
            max_connections,
            asked = settings.max_connections,
            "AGENTFLOW_MAX_CONNECTIONS lowered to fit the open-files limit (raise `ulimit -n`)"
        );
    }
    connections::run(
        listener,
        app(state),
        &settings,
        max_connections,
        shutdown_signal(),
    )
    .await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
