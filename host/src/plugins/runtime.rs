//! The shared WebAssembly engine: one per server, with a clock that drives
//! every plugin's time limit, one linker offering only what plugins may
//! use, the plugins' storage and where their secrets come from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::Digest;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::compile_cache::CompileCache;
use super::crate_build;
use super::kv::{KvStore, PluginKv};
use super::plugin::{Exports, LoadedVersion, Plugin};
use super::state::{PluginShared, PluginState};
use super::{PluginError, SecretSource, Slot, WIT_VERSIONS, v0_2, v0_3};
use crate::config::{Env, PluginConfig};

/// How often the engine's epoch advances; the resolution of time limits.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Compiles plugins and owns what all sandboxes share.
#[derive(Clone)]
pub struct PluginRuntime {
    engine: Engine,
    linker: Arc<Linker<PluginState>>,
    storage: Option<KvStore>,
    secrets: Option<Arc<dyn SecretSource>>,
    compile_cache: Option<Arc<CompileCache>>,
    crate_profile: crate_build::BuildProfile,
}

impl PluginRuntime {
    /// Sets up the engine and starts its epoch clock. Plugins get no
    /// storage until [`PluginRuntime::with_storage`].
    pub fn new() -> Result<Self, PluginError> {
        let engine_err = |e: wasmtime::Error| PluginError::Engine(e.to_string());
        let engine = match Engine::new(&engine_config(true)) {
            Ok(engine) => engine,
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable (address space limits?); instantiating on demand");
                Engine::new(&engine_config(false)).map_err(engine_err)?
            }
        };

        let mut linker = Linker::new(&engine);
        // WASI with a closed context: plugins built with std import it, but
        // the context grants no files, no environment and no sockets.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_err)?;
        // wasi:http, policed per call by the plugin's allow-list.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(engine_err)?;
        // Both contract versions' `host` interfaces: a 0.2 and a 0.3 plugin
        // load side by side.
        v0_2::authn::Authenticator::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(engine_err)?;
        v0_3::authn::Authenticator::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(engine_err)?;

        spawn_epoch_clock(&engine);
        Ok(PluginRuntime {
            engine,
            linker: Arc::new(linker),
            storage: None,
            secrets: None,
            compile_cache: None,
            crate_profile: crate_build::BuildProfile::Release,
        })
    }

    /// Keeps compiled components in `dir`, so restarts and reloads of an
    /// unchanged file skip compilation.
    pub fn with_compile_cache(mut self, dir: PathBuf) -> Self {
        self.compile_cache = Some(Arc::new(CompileCache::new(dir, &self.engine)));
        self
    }

    /// Builds crate folders with `profile` (the fast watch profile while the
    /// server watches plugins; release otherwise).
    pub fn with_crate_profile(mut self, profile: crate_build::BuildProfile) -> Self {
        self.crate_profile = profile;
        self
    }

    /// Gives every plugin loaded from now on a private namespace in `storage`.
    pub fn with_storage(mut self, storage: KvStore) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Whether plugins get storage (see [`PluginRuntime::with_storage`]).
    pub fn has_storage(&self) -> bool {
        self.storage.is_some()
    }

    /// Resolves granted secrets through `source` instead of the environment
    /// (the seam for encrypted secrets).
    pub fn with_secrets(mut self, source: Arc<dyn SecretSource>) -> Self {
        self.secrets = Some(source);
        self
    }

    /// Compiles the plugin named in `cfg` and checks it fits `slot`.
    pub fn load(&self, cfg: &PluginConfig, slot: Slot, env: &Env) -> Result<Plugin, PluginError> {
        self.load_with_kv(cfg, slot, env, None)
    }

    /// [`PluginRuntime::load`], reusing `kv` as the plugin's storage when
    /// given (a config reload hands over the namespace of the plugin it
    /// replaces, so both versions count one size cap while old calls end).
    pub fn load_with_kv(
        &self,
        cfg: &PluginConfig,
        slot: Slot,
        env: &Env,
        kv: Option<Arc<PluginKv>>,
    ) -> Result<Plugin, PluginError> {
        let version = self.compile(cfg, slot)?;
        let source: &dyn SecretSource = match &self.secrets {
            Some(s) => s.as_ref(),
            None => env,
        };
        let secrets: HashMap<String, String> = cfg
            .secrets
            .iter()
            .filter_map(|name| source.secret(name).map(|v| (name.clone(), v)))
            .collect();
        for missing in cfg.secrets.iter().filter(|n| !secrets.contains_key(*n)) {
            tracing::warn!(plugin = %cfg.name, secret = %missing, "secret granted to the plugin is not set");
        }
        let kv = match (&self.storage, kv) {
            (None, _) => None,
            (Some(_), Some(kv)) => Some(kv),
            (Some(store), None) => Some(Arc::new(
                store
                    .namespace(&cfg.name, u64::from(cfg.kv_kb) * 1024)
                    .map_err(|reason| PluginError::Load {
                        name: cfg.name.clone(),
                        path: cfg.path.clone(),
                        reason,
                    })?,
            )),
        };
        let shared = Arc::new(PluginShared {
            name: cfg.name.clone(),
            config_json: cfg.config.to_string(),
            secrets,
            kv,
            allowed_hosts: cfg.allowed_hosts.clone(),
            log: Arc::default(),
        });
        Plugin::new(cfg.clone(), slot, shared, version, self.clone())
    }

    /// Builds `cfg.path` when it is a crate folder, then compiles it.
    pub(crate) fn compile(
        &self,
        cfg: &PluginConfig,
        slot: Slot,
    ) -> Result<LoadedVersion, PluginError> {
        let wasm = self.read_wasm(cfg, &self.build(cfg)?)?;
        self.compile_wasm(cfg, wasm, slot)
    }

    /// The `.wasm` of `cfg`: the path itself, or what cargo built from the
    /// crate folder it names.
    pub(crate) fn build(&self, cfg: &PluginConfig) -> Result<PathBuf, PluginError> {
        if crate_build::is_crate(&cfg.path) {
            crate_build::build(&cfg.path, self.crate_profile)
                .map_err(|reason| load_error(cfg, reason))
        } else {
            Ok(cfg.path.clone())
        }
    }

    /// Reads the component at `path` and hashes it, once: the hash tells a
    /// reload whether anything changed and names the compiled copy on disk.
    pub(crate) fn read_wasm(
        &self,
        cfg: &PluginConfig,
        path: &Path,
    ) -> Result<WasmFile, PluginError> {
        let bytes = std::fs::read(path)
            .map_err(|e| load_error(cfg, format!("cannot read {}: {e}", path.display())))?;
        let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        Ok(WasmFile {
            path: path.to_path_buf(),
            bytes,
            sha256,
        })
    }

    /// Compiles a component file into a ready-to-instantiate version.
    pub(crate) fn compile_wasm(
        &self,
        cfg: &PluginConfig,
        wasm: WasmFile,
        slot: Slot,
    ) -> Result<LoadedVersion, PluginError> {
        let fail = |reason: String| load_error(cfg, reason);
        let component = self
            .compile_component(&wasm.bytes, &wasm.sha256)
            .map_err(fail)?;
        if let Some(other) = other_contract_version(&self.engine, &component) {
            return Err(fail(format!(
                "was built against `{other}`, but this server speaks agentflow:auth@{} and @{}: rebuild it with the current agentflow-plugin-sdk",
                WIT_VERSIONS[0], WIT_VERSIONS[1]
            )));
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| fail(format!("imports something the host does not offer: {e:#}")))?;
        let missing = |_| {
            fail(format!(
                "does not export `{}`, which the {slot:?} slot needs",
                slot.export()
            ))
        };
        let v02 = contract_version(&self.engine, &component) == Some(WIT_VERSIONS[1]);
        let exports = match (slot, v02) {
            (Slot::Authenticator, false) => {
                Exports::Authenticate03(v0_3::authn::AuthenticatorPre::new(pre).map_err(missing)?)
            }
            (Slot::Authorizer, false) => {
                Exports::Authorize03(v0_3::authz::AuthorizerPre::new(pre).map_err(missing)?)
            }
            (Slot::Authenticator, true) => {
                Exports::Authenticate02(v0_2::authn::AuthenticatorPre::new(pre).map_err(missing)?)
            }
            (Slot::Authorizer, true) => {
                Exports::Authorize02(v0_2::authz::AuthorizerPre::new(pre).map_err(missing)?)
            }
        };
        Ok(LoadedVersion::new(exports, wasm.sha256, wasm.path))
    }

    /// Compiles component bytes, explaining what they are when they are not
    /// a component.
    pub(crate) fn component(&self, bytes: &[u8]) -> Result<Component, String> {
        self.compile_component(bytes, &hex::encode(sha2::Sha256::digest(bytes)))
    }

    /// [`PluginRuntime::component`] for bytes whose SHA-256 is known; the
    /// compile cache keys on it.
    fn compile_component(&self, bytes: &[u8], sha256: &str) -> Result<Component, String> {
        if bytes.starts_with(b"\0asm\x01\0\0\0") {
            return Err("this is a core WebAssembly module, not a component: build it for the wasm32-wasip2 target".into());
        }
        let compile = || {
            Component::new(&self.engine, bytes)
                .map_err(|e| format!("not a valid WebAssembly component: {}", first_line(&e)))
        };
        match &self.compile_cache {
            Some(cache) => cache.get_or_compile(&self.engine, sha256, compile),
            None => compile(),
        }
    }

    /// The engine (for inspection tools).
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker holding everything the host offers.
    pub(crate) fn linker(&self) -> &Linker<PluginState> {
        &self.linker
    }
}

/// The engine settings: component model, epoch interruption for time
/// limits and, when `pooled`, the pooling allocator. A fresh sandbox per
/// call is cheap only with pooling: memories, tables and fiber stacks are
/// reused from pre-reserved slots instead of mapped per call.
fn engine_config(pooled: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    if pooled {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_SLOTS)
            .total_core_instances(POOL_SLOTS * 4)
            .total_memories(POOL_SLOTS)
            .total_tables(POOL_SLOTS * 2)
            .total_stacks(POOL_SLOTS)
            // Keep a reused slot's pages mapped and reset only the pages the
            // last sandbox dirtied (Linux PAGEMAP_SCAN, 6.7+; elsewhere a
            // memset of the first MiB). Without the scan every call paid a
            // 1 MiB memset for the Rust guest's 1 MiB stack.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// A component file as read from disk.
pub(crate) struct WasmFile {
    path: PathBuf,
    bytes: Vec<u8>,
    /// SHA-256 of `bytes`, hex.
    pub sha256: String,
}

/// Sandboxes that can exist at once (concurrent plugin calls, all plugins).
const POOL_SLOTS: u32 = 1000;

/// The first `agentflow:auth` interface the component imports or exports at
/// a version this server does not load (a plugin built with an older SDK),
/// if any.
fn other_contract_version(engine: &Engine, component: &Component) -> Option<String> {
    let ty = component.component_type();
    let imports = ty.imports(engine).map(|(name, _)| name);
    let exports = ty.exports(engine).map(|(name, _)| name);
    imports.chain(exports).find_map(|name| {
        let (interface, version) = name.split_once('@')?;
        (interface.starts_with("agentflow:auth/") && !WIT_VERSIONS.contains(&version))
            .then(|| name.to_owned())
    })
}

/// The contract version of the component's `agentflow:auth` exports (one
/// of [`WIT_VERSIONS`]), if it has any.
fn contract_version(engine: &Engine, component: &Component) -> Option<&'static str> {
    let ty = component.component_type();
    let mut exports = ty.exports(engine).map(|(name, _)| name);
    exports.find_map(|name| {
        let (interface, version) = name.split_once('@')?;
        if !interface.starts_with("agentflow:auth/") {
            return None;
        }
        WIT_VERSIONS.iter().copied().find(|v| *v == version)
    })
}

fn load_error(cfg: &PluginConfig, reason: String) -> PluginError {
    PluginError::Load {
        name: cfg.name.clone(),
        path: cfg.path.clone(),
        reason,
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
