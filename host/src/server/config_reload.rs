//! Hot reload of `agentflow.json` itself (with `plugins.watch` or
//! `--watch`): the auth chain, the authorizer, each plugin's entry (path,
//! `config`, `secrets` and `allowed_hosts` grants, limits) and the plugin
//! defaults change while the server runs.
//!
//! A change is debounced, then the whole file is parsed and validated, and
//! every new or changed plugin is loaded and its `init` run with its new
//! config, beside the running setup. Only when all of that succeeded is the
//! new setup swapped in, at once ([`LiveSetup::replace`]): requests already
//! running finish on the setup they started with. Unchanged plugins keep
//! their instances and answer caches; changed ones start with empty caches.
//!
//! Anything wrong (bad JSON, a bad key, a plugin that fails to load or
//! refuses its config, a change to a key read only at start) refuses the
//! reload as a whole: the reason, naming the key, goes to the log, to
//! `config.last_error` in `GET /v1/plugins` and to the audit trail, and the
//! last good setup keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};

use crate::accounts::Accounts;
use crate::config::Config;
use crate::live::{LiveSetup, Setup};
use crate::pipeline::Gate;
use crate::plugins::PluginRuntime;
use crate::plugins::reload::PluginWatcher;
use crate::routes::AppState;

/// Quiet time after the last write of the config file before it is read:
/// an editor's save (or a truncate then write) is read once, whole.
const QUIET: Duration = Duration::from_millis(150);

/// Watches the config file while alive; dropping it stops watching (and
/// the plugin watcher it keeps).
pub struct ConfigWatcher {
    _watcher: notify::RecommendedWatcher,
}

/// What the reload thread keeps between reloads.
struct Reloader {
    /// The config the running setup was built from.
    running: Config,
    /// The config file, resolved, and its folder (which is watched: editors
    /// and tools replace the file rather than rewrite it).
    path: PathBuf,
    dir: PathBuf,
    /// The plugin runtime with storage and compile cache; secrets are read
    /// again for each reload.
    base: PluginRuntime,
    accounts: Arc<Accounts>,
    live: Arc<LiveSetup>,
    /// Watches the running setup's plugin files; replaced with the setup.
    plugins: Option<PluginWatcher>,
    runtime: tokio::runtime::Handle,
}

/// Starts watching `cfg.file` (and, through the setup it serves, the plugin
/// files); reloads run on a thread of their own. Must be called on the
/// server's Tokio runtime.
pub fn watch(cfg: &Config, base: PluginRuntime, state: &AppState) -> Result<ConfigWatcher, String> {
    let path = cfg
        .file
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", cfg.file.display()))?;
    let dir = path
        .parent()
        .ok_or_else(|| format!("{} has no folder", path.display()))?
        .to_path_buf();
    let plugins = watch_plugins(&state.live.current().gate, &state.accounts)?;
    let (tx, rx) = channel();
    let mut watcher = notify::recommended_watcher(tx)
        .map_err(|e| format!("cannot watch the config file: {e}"))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    tracing::info!(config = %path.display(), "config hot reload on");
    let reloader = Reloader {
        running: cfg.clone(),
        path,
        dir,
        base,
        accounts: state.accounts.clone(),
        live: state.live.clone(),
        plugins,
        runtime: tokio::runtime::Handle::current(),
    };
    std::thread::Builder::new()
        .name("config-reload".into())
        .spawn(move || reloader.run(rx))
        .map_err(|e| format!("cannot start the config reload thread: {e}"))?;
    Ok(ConfigWatcher { _watcher: watcher })
}

/// A watcher of `gate`'s plugin files, when it has plugins. Needs the
/// Tokio runtime's context (its reports are recorded there).
fn watch_plugins(gate: &Gate, accounts: &Arc<Accounts>) -> Result<Option<PluginWatcher>, String> {
    if !gate.uses_plugins() {
        return Ok(None);
    }
    crate::plugins::reload::watch(
        gate.plugins().cloned().collect(),
        crate::audit::plugins::reload_recorder(accounts.clone()),
    )
    .map(Some)
}

/// What an applied reload did, for the log and the audit trail.
struct Applied {
    /// Plugins loaded anew (new or changed entries).
    loaded: Vec<String>,
    /// Plugins that kept their running instance.
    kept: Vec<String>,
}

impl Reloader {
    /// Collects change events of the config file and reloads once it has
    /// been quiet for a moment. Ends when the watcher is dropped.
    fn run(mut self, rx: Receiver<notify::Result<notify::Event>>) {
        let mut pending: Option<Instant> = None;
        loop {
            let wait = pending
                .map(|last| (last + QUIET).saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3600));
            match rx.recv_timeout(wait) {
                Ok(Ok(event)) if is_change(&event.kind) => {
                    if event.paths.iter().any(|p| self.matches(p)) {
                        pending = Some(Instant::now());
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "config file watch error"),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if let Some(last) = pending
                && last + QUIET <= Instant::now()
            {
                pending = None;
                // Removed mid-save: its re-creation brings us back.
                if self.path.is_file() {
                    self.reload(last);
                }
            }
        }
    }

    fn matches(&self, changed: &Path) -> bool {
        changed.file_name() == self.path.file_name() && changed.parent() == Some(&self.dir)
    }

    /// Tries the file as it is now; logs, records and exposes the outcome.
    fn reload(&mut self, changed_at: Instant) {
        let runtime = self.runtime.clone();
        let file = self.running.file.display().to_string();
        let accounts = self.accounts.clone();
        let outcome = runtime.block_on(self.try_reload());
        let metrics = &crate::metrics::global().config_reloads;
        match outcome {
            Ok(None) => {
                tracing::debug!(config = %file, "config file touched, content unchanged");
            }
            Ok(Some(applied)) => {
                metrics.with_label_values(&["applied"]).inc();
                tracing::info!(
                    config = %file,
                    loaded = ?applied.loaded,
                    kept = ?applied.kept,
                    after_ms = changed_at.elapsed().as_millis() as u64,
                    "config reloaded: new requests use the new setup, requests in flight finish on the old one"
                );
                let entry =
                    crate::audit::plugins::config_reloaded(&file, applied.loaded, applied.kept);
                runtime.block_on(accounts.record(entry));
            }
            Err(error) => {
                metrics.with_label_values(&["refused"]).inc();
                tracing::error!(
                    config = %file,
                    error = %error,
                    "config reload refused; the last good setup keeps serving"
                );
                self.live.refused(error.clone());
                let entry = crate::audit::plugins::config_reload_failed(&file, &error);
                runtime.block_on(accounts.record(entry));
            }
        }
    }

    /// Builds the setup the file describes beside the running one and swaps
    /// it in; `None` when nothing changed. Nothing is swapped on an error.
    async fn try_reload(&mut self) -> Result<Option<Applied>, String> {
        let next = Config::load(&self.running.file).map_err(|e| e.to_string())?;
        if self.running.same_file(&next) {
            return Ok(None);
        }
        let restart = self.running.restart_only_changes(&next);
        if !restart.is_empty() {
            let keys = restart
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(format!(
                "{}: {keys}: changed, but read only at start: needs a restart (nothing of this change was applied; restart, or undo it to apply the rest)",
                next.file.display()
            ));
        }
        // The first plugin of a server that started without any: its
        // storage is opened now.
        if !self.base.has_storage()
            && next.plugins().next().is_some()
            && let Some(storage) =
                crate::plugins::open_storage(&next).map_err(|e| format!("plugin storage: {e}"))?
        {
            self.base = self.base.clone().with_storage(storage);
        }
        let runtime = super::with_plugin_secrets(&self.base, &next, &self.accounts).await?;
        let current = self.live.current();
        let gate = Gate::build_beside(&next, &runtime, &self.accounts, Some(current.gate.as_ref()))
            .map_err(|e| e.to_string())?;
        let plugins = watch_plugins(&gate, &self.accounts)?;
        let (kept, loaded): (Vec<_>, Vec<_>) = gate
            .plugins()
            .partition(|p| current.gate.plugins().any(|old| Arc::ptr_eq(old, *p)));
        for plugin in &loaded {
            let s = plugin.status();
            tracing::info!(plugin = %s.name, slot = s.slot, sha256 = %s.sha256, "plugin loaded");
            self.accounts
                .record(crate::audit::plugins::loaded(&s))
                .await;
        }
        let names = |ps: Vec<&Arc<crate::plugins::Plugin>>| -> Vec<String> {
            ps.into_iter().map(|p| p.name().to_owned()).collect()
        };
        let applied = Applied {
            loaded: names(loaded),
            kept: names(kept),
        };
        if gate.is_open() {
            tracing::warn!("\"auth\" is null: every request is accepted without credentials");
        }
        super::warn_open_upstream(&next, &gate);
        let upstream = current
            .upstream
            .as_ref()
            .map(|u| Arc::new(u.with_headers(super::header_policy(&next, &gate))));
        self.live.replace(Setup {
            gate: Arc::new(gate),
            upstream,
        });
        // The old setup's plugin watcher stops; the new one follows the
        // plugins now serving.
        self.plugins = plugins;
        self.running = next;
        Ok(Some(applied))
    }
}

/// Writes and renames count; reads (including our own) do not.
fn is_change(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any
    )
}
