//! The part of a running server that a reload of `agentflow.json` replaces:
//! the gate (authentication chain and authorizer) and the upstream whose
//! header policy strips the credentials those plugins read.
//!
//! Both are swapped together, atomically: a request takes one snapshot
//! ([`LiveSetup::current`]) when it is authenticated and keeps it to the end,
//! so the chain that proved who the caller is, the authorizer that judges
//! them and the proxy that forwards them always come from one config, and a
//! request in flight during a reload finishes on the setup it started with.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::pipeline::Gate;
use crate::proxy::Upstream;

/// One consistent setup, built from one version of the config.
pub struct Setup {
    /// Authentication chain and authorizer.
    pub gate: Arc<Gate>,
    /// The agent upstream, when configured; its header policy follows the
    /// gate's plugins (their credential headers are never forwarded).
    pub upstream: Option<Arc<Upstream>>,
}

/// The running setup and what the last reload did; shared by every request.
pub struct LiveSetup {
    current: ArcSwap<Setup>,
    status: Mutex<ConfigStatus>,
}

/// What `GET /v1/plugins` says about the config file (`config`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConfigStatus {
    /// The config file the server runs.
    pub file: String,
    /// Whether the file is watched (`plugins.watch` / `--watch`).
    pub watch: bool,
    /// When the running setup was applied (unix seconds): the start, or the
    /// latest successful reload.
    pub loaded_at: u64,
    /// Successful reloads since the start.
    pub reloads: u64,
    /// Why the latest reload was refused (the running setup is the last
    /// good one); `None` after a successful reload.
    pub last_error: Option<String>,
    /// When a reload was last tried (unix seconds), applied or refused.
    pub last_attempt_at: Option<u64>,
}

impl LiveSetup {
    /// Serves `setup`, built from `file` at start.
    pub fn new(setup: Setup, file: String, watch: bool) -> LiveSetup {
        LiveSetup {
            current: ArcSwap::from_pointee(setup),
            status: Mutex::new(ConfigStatus {
                file,
                watch,
                loaded_at: unix_now(),
                reloads: 0,
                last_error: None,
                last_attempt_at: None,
            }),
        }
    }

    /// The setup new requests use; a request keeps the one it took.
    pub fn current(&self) -> Arc<Setup> {
        self.current.load_full()
    }

    /// Puts `setup` in place for every request that starts from now on and
    /// clears the last error.
    pub fn replace(&self, setup: Setup) {
        self.current.store(Arc::new(setup));
        let now = unix_now();
        let mut status = self.lock();
        status.loaded_at = now;
        status.reloads += 1;
        status.last_error = None;
        status.last_attempt_at = Some(now);
    }

    /// Records a refused reload; the running setup stays.
    pub fn refused(&self, error: String) {
        let mut status = self.lock();
        status.last_error = Some(error);
        status.last_attempt_at = Some(unix_now());
    }

    /// A copy of the reload status.
    pub fn status(&self) -> ConfigStatus {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConfigStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
