//! The shared WebAssembly engine: one per server, with a clock that drives
//! every plugin's time limit, and one linker offering only what plugins may
//! use.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sha2::Digest;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::bindings::{authn, authz};
use super::crate_build;
use super::plugin::{Exports, LoadedVersion, Plugin};
use super::state::{PluginShared, PluginState};
use super::{PluginError, Slot};
use crate::config::{Env, PluginConfig};

/// How often the engine's epoch advances; the resolution of time limits.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Compiles plugins and owns what all sandboxes share.
#[derive(Clone)]
pub struct PluginRuntime {
    engine: Engine,
    linker: Arc<Linker<PluginState>>,
}

impl PluginRuntime {
    /// Sets up the engine and starts its epoch clock.
    pub fn new() -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(e.to_string()))?;

        let mut linker = Linker::new(&engine);
        // WASI with a closed context: plugins built with std import it, but
        // the context grants no files, no environment and no sockets.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| PluginError::Engine(e.to_string()))?;
        authn::Authenticator::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Engine(e.to_string()))?;

        spawn_epoch_clock(&engine);
        Ok(PluginRuntime { engine, linker: Arc::new(linker) })
    }

    /// Compiles the plugin named in `cfg` and checks it fits `slot`.
    pub fn load(&self, cfg: &PluginConfig, slot: Slot, env: &Env) -> Result<Plugin, PluginError> {
        let version = self.compile(cfg, slot)?;
        let secrets: HashMap<String, String> =
            cfg.secrets.iter().filter_map(|name| env.get(name).map(|v| (name.clone(), v))).collect();
        let shared = Arc::new(PluginShared {
            name: cfg.name.clone(),
            config_json: cfg.config.to_string(),
            secrets,
        });
        Ok(Plugin::new(cfg.clone(), slot, shared, version, self.engine.clone()))
    }

    /// Compiles `cfg.path` into a ready-to-instantiate version.
    pub(crate) fn compile(&self, cfg: &PluginConfig, slot: Slot) -> Result<LoadedVersion, PluginError> {
        let fail = |reason: String| PluginError::Load { name: cfg.name.clone(), path: cfg.path.clone(), reason };
        let wasm = if crate_build::is_crate(&cfg.path) { crate_build::build(&cfg.path).map_err(fail)? } else { cfg.path.clone() };
        let bytes = std::fs::read(&wasm).map_err(|e| fail(format!("cannot read {}: {e}", wasm.display())))?;
        let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        let component = Component::new(&self.engine, &bytes)
            .map_err(|e| fail(format!("not a valid WebAssembly component: {}", first_line(&e))))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| fail(format!("imports something the host does not offer: {e:#}")))?;
        let missing = |_| fail(format!("does not export `{}`, which the {slot:?} slot needs", slot.export()));
        let exports = match slot {
            Slot::Authenticator => Exports::Authenticate(authn::AuthenticatorPre::new(pre).map_err(missing)?),
            Slot::Authorizer => Exports::Authorize(authz::AuthorizerPre::new(pre).map_err(missing)?),
        };
        Ok(LoadedVersion::new(exports, sha256))
    }
}

fn first_line(e: &wasmtime::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

/// Advances the engine's epoch every tick until the engine is dropped.
fn spawn_epoch_clock(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("plugin-epoch-clock".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning a thread at start-up");
}
