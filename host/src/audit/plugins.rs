//! Audit entries for the plugin lifecycle: loaded at start, reloaded, a
//! reload refused (fail-closed calls are in `refusals`); and for reloads of
//! the config file that names the plugins.

use std::sync::Arc;

use super::Entry;
use crate::accounts::Accounts;
use crate::plugins::PluginStatus;
use crate::plugins::reload::{ReloadCallback, ReloadReport};
use crate::store::AuditKind;

/// `plugin.loaded` for a plugin the server started with.
pub fn loaded(status: &PluginStatus) -> Entry {
    Entry::new(AuditKind::PluginLoaded)
        .subject(status.name.clone())
        .detail("slot", status.slot)
        .detail("sha256", status.sha256.clone())
}

/// `plugin.reloaded` or `plugin.reload_failed`.
pub fn reloaded(report: ReloadReport) -> Entry {
    match report.outcome {
        Ok(sha256) => Entry::new(AuditKind::PluginReloaded)
            .subject(report.plugin)
            .detail("sha256", sha256),
        Err(error) => Entry::new(AuditKind::PluginReloadFailed)
            .subject(report.plugin)
            .detail("error", error),
    }
}

/// A reload callback that records each report on the current Tokio
/// runtime (the watcher calls it from its own thread).
pub fn reload_recorder(accounts: Arc<Accounts>) -> ReloadCallback {
    let runtime = tokio::runtime::Handle::current();
    Box::new(move |report| {
        let accounts = accounts.clone();
        runtime.spawn(async move { accounts.record(reloaded(report)).await });
    })
}

/// `config.reloaded`: the changed file `file` is serving; `loaded` names
/// the plugins loaded anew (a changed entry), `kept` those that kept their
/// running instance.
pub fn config_reloaded(file: &str, loaded: Vec<String>, kept: Vec<String>) -> Entry {
    Entry::new(AuditKind::ConfigReloaded)
        .subject(file.to_owned())
        .detail("loaded", loaded)
        .detail("kept", kept)
}

/// `config.reload_failed`: the changed file `file` was refused for `error`.
pub fn config_reload_failed(file: &str, error: &str) -> Entry {
    Entry::new(AuditKind::ConfigReloadFailed)
        .subject(file.to_owned())
        .detail("error", error.to_owned())
}
