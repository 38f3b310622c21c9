//! Assembling a running server from a validated config: plugins loaded,
//! gate built, router served by [`connections`] within the connection limits.

mod config_reload;
mod connections;
mod deadline;
mod fd_limit;
mod loading;

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::accounts::Accounts;
use crate::config::Config;
use crate::pipeline::{Gate, GateError};
use crate::plugins::{PluginError, PluginRuntime};
use crate::proxy::{HeaderPolicy, Upstream};
use crate::routes::{AppState, app};
use crate::settings::{ServerSettings, SettingError};

use crate::store::Store as _;
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
    #[error("{0}")]
    Secrets(String),
    /// The config file or plugin files cannot be watched for hot reload.
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
    Ok(build(cfg).await?.0)
}

/// The state, and the plugin runtime a config reload loads new plugins with
/// (its storage and compile cache; secrets are read again per reload).
async fn build(cfg: &Config) -> Result<(AppState, PluginRuntime), StartError> {
    let accounts = Arc::new(Accounts::open(cfg).await?);
    accounts.spawn_maintenance();
    let mut base = PluginRuntime::new()?;
    if cfg.plugins.watch {
        // Crate folders rebuild on every save: build them for speed, not
        // for shipping (no LTO, many codegen units, incremental).
        base = base.with_crate_profile(crate::plugins::BuildProfile::Watch);
    }
    if let Some(storage) = crate::plugins::open_storage(cfg)? {
        base = base.with_storage(storage);
    }
    base = base.with_compile_cache(crate::config::data_dir(&cfg.env, &cfg.dir()).join("compiled"));
    let runtime = with_plugin_secrets(&base, cfg, &accounts)
        .await
        .map_err(StartError::Secrets)?;
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
    let gateway = Arc::new(crate::gateway::GatewayState {
        trusted_proxies: Arc::new(cfg.trusted_proxies.clone()),
        identity: identity.clone(),
        rate_limits: crate::rate_limit::RateLimits::local(cfg.rate_limits.clone()),
        metrics_token: cfg
            .env
            .get("AGENTFLOW_METRICS_TOKEN")
            .filter(|t| !t.is_empty()),
        readiness: Arc::new(crate::readiness::Readiness::new(cfg.agent.as_deref())),
        docs: crate::openapi::DocsPath::from_env(&cfg.env)?,
    });
    warn_open_upstream(cfg, &gate);
    let upstream = cfg.agent.clone().map(|base| {
        Arc::new(Upstream::new(base, header_policy(cfg, &gate)).with_identity(identity))
    });
    let cors = cfg.cors.clone().map(Arc::new);
    let tenancy = cfg
        .tenancy
        .clone()
        .map(|t| Arc::new(crate::tenancy::Tenancy::new(t, accounts.clone())));
    let setup = crate::live::Setup {
        gate: Arc::new(gate),
        upstream,
    };
    let live =
        crate::live::LiveSetup::new(setup, cfg.file.display().to_string(), cfg.plugins.watch);
    Ok((
        AppState {
            live: Arc::new(live),
            accounts,
            cors,
            gateway,
            tenancy,
        },
        base,
    ))
}

/// `base` with the secrets `cfg` grants its plugins: from the environment,
/// else from the superuser's encrypted variables.
pub(crate) async fn with_plugin_secrets(
    base: &PluginRuntime,
    cfg: &Config,
    accounts: &Accounts,
) -> Result<PluginRuntime, String> {
    let granted: Vec<&str> = cfg
        .plugins()
        .flat_map(|p| p.secrets.iter().map(String::as_str))
        .collect();
    let secrets = crate::accounts::PluginSecrets::load(accounts, cfg.env.clone(), &granted)
        .await
        .map_err(|e| format!("cannot read plugin secrets from the encrypted variables: {e}"))?;
    Ok(base.clone().with_secrets(Arc::new(secrets)))
}

/// What each plugin's config and manifest name as credential headers: never
/// forwarded to the agent.
pub(crate) fn header_policy(cfg: &Config, gate: &Gate) -> HeaderPolicy {
    HeaderPolicy::new(
        gate.plugins()
            .flat_map(|p| p.credential_headers().to_vec())
            .chain(cfg.plugins().flat_map(|p| p.credential_headers.clone())),
    )
}

/// A signed upstream token for everyone is worth a warning.
pub(crate) fn warn_open_upstream(cfg: &Config, gate: &Gate) {
    if cfg.upstream.token.is_some() && gate.is_open() {
        tracing::warn!(
            "\"upstream.token\" is set but \"auth\" is null: every request reaches the agent with a token for `anonymous`"
        );
    }
}

/// Binds `host:port` first (a port in use is reported at once), answers
/// `/ping` and a 503 "loading" while plugins load, then serves until the
/// process is stopped; with `metrics_addr`, `GET /metrics` is served there
/// too, without credentials. A start that fails removes the data dir it
/// created, so no generated secret is left behind.
pub async fn serve(
    cfg: &Config,
    host: &str,
    port: u16,
    metrics_addr: Option<&str>,
) -> Result<(), StartError> {
    let settings = ServerSettings::from_env(&cfg.env)?;
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
    tracing::info!("bound to http://{local}; loading the store and plugins");
    let max_connections = fd_limit::fit(settings.max_connections, fd_limit::raise());
    if max_connections < settings.max_connections {
        tracing::warn!(
            max_connections,
            asked = settings.max_connections,
            "AGENTFLOW_MAX_CONNECTIONS lowered to fit the open-files limit (raise `ulimit -n`)"
        );
    }
    let ready = Arc::new(std::sync::OnceLock::new());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn({
        let router = loading::front(ready.clone());
        let settings = settings.clone();
        async move {
            let stop = async {
                tokio::select! { () = shutdown_signal() => {}, _ = stop_rx => {} }
            };
            connections::run(listener, router, &settings, max_connections, stop).await;
        }
    });

    let data_dir = crate::config::data_dir(&cfg.env, &cfg.dir());
    let fresh_data_dir = !data_dir.exists();
    let started = start(cfg, metrics_addr).await;
    let (state, _watcher) = match started {
        Ok(running) => running,
        Err(e) => {
            let _ = stop_tx.send(());
            let _ = serving.await;
            if fresh_data_dir {
                let _ = std::fs::remove_dir_all(&data_dir);
            }
            return Err(e);
        }
    };
    let accounts = state.accounts.clone();
    let _ = ready.set(app(state));
    // Tests and scripts read this line to find the port when started with --port 0.
    tracing::info!("agentflow listening on http://{local}");
    let _ = serving.await;
    // Whatever the store has not persisted yet (usage stamps, counters).
    if let Err(e) = accounts.store.flush().await {
        tracing::error!(error = %e, "flushing the store at shutdown failed");
    }
    tracing::info!("stopped");
    Ok(())
}

/// The state, the hot-reload watchers (of the config file and of the
/// plugins; kept alive while serving: dropping them stops hot reload) and
/// the metrics listener.
async fn start(
    cfg: &Config,
    metrics_addr: Option<&str>,
) -> Result<(AppState, Option<config_reload::ConfigWatcher>), StartError> {
    let (state, runtime) = build(cfg).await?;
    let watcher = if cfg.plugins.watch {
        Some(config_reload::watch(cfg, runtime, &state).map_err(StartError::Watch)?)
    } else {
        None
    };
    if let Some(addr) = metrics_addr {
        crate::routes::serve_metrics(addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
    }
    Ok((state, watcher))
}

/// Resolves on the first SIGTERM or SIGINT (then in-flight requests get
/// `AGENTFLOW_SHUTDOWN_TIMEOUT_MS` to finish); a second signal exits at once.
async fn shutdown_signal() {
    Signals::listen().recv().await;
    // Listening again before saying so: a second signal sent as soon as the
    // line appears must not be missed.
    let second = Signals::listen();
    tracing::info!(
        "shutting down: no new connections, finishing requests in flight (a second signal exits at once)"
    );
    tokio::spawn(async move {
        second.recv().await;
        tracing::warn!("second signal: exiting without waiting");
        std::process::exit(130);
    });
}

/// SIGTERM and SIGINT listeners, registered when made.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn listen() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next signal (never, if none could be registered).
    async fn recv(mut self) {
        #[cfg(unix)]
        {
            let term = async {
                match self.term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let int = async {
                match self.int.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! { () = term => {}, () = int => {} }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
