//! One loaded plugin: its current compiled version and the calls into it,
//! each in a fresh sandbox with memory and time limits.

use std::cell::LazyCell;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};
use wasmtime::{Store, StoreLimitsBuilder, Trap, UpdateDeadline};

use super::log_limit;
use super::outcome_cache::OutcomeCache;
use super::runtime::PluginRuntime;
use super::state::{PluginShared, PluginState, truncate};
use super::v0_3::NoOutcome;
use super::{
    Access, AuthnOutcome, AuthzOutcome, CacheHint, CallFailure, Manifest, PluginError,
    PluginRequest, Refusal, Slot, v0_2, v0_3,
};
use crate::config::PluginConfig;
use crate::identity::Identity;

/// Limits on what a plugin may hand back, so a hostile answer cannot bloat
/// headers or logs.
const MAX_USER_ID: usize = 1024;
const MAX_ROLES: usize = 64;
const MAX_ROLE: usize = 256;
const MAX_CLAIMS: usize = 64 * 1024;
const MAX_DETAIL: usize = 1024;
/// How much of a failed plugin's stderr goes into the failure reason.
const MAX_STDERR_SAID: usize = 1024;

/// The pre-linked exports of one compiled version, per contract version.
pub(crate) enum Exports {
    Authenticate02(v0_2::authn::AuthenticatorPre<PluginState>),
    Authorize02(v0_2::authz::AuthorizerPre<PluginState>),
    Authenticate03(v0_3::authn::AuthenticatorPre<PluginState>),
    Authorize03(v0_3::authz::AuthorizerPre<PluginState>),
}

impl Exports {
    /// A new instance in `store`.
    async fn instantiate(&self, store: &mut Store<PluginState>) -> wasmtime::Result<Instance> {
        Ok(match self {
            Exports::Authenticate02(p) => {
                Instance::Authenticate02(p.instantiate_async(store).await?)
            }
            Exports::Authorize02(p) => Instance::Authorize02(p.instantiate_async(store).await?),
            Exports::Authenticate03(p) => {
                Instance::Authenticate03(p.instantiate_async(store).await?)
            }
            Exports::Authorize03(p) => Instance::Authorize03(p.instantiate_async(store).await?),
        })
    }

    /// The contract version the component was built against.
    pub(crate) fn contract(&self) -> &'static str {
        match self {
            Exports::Authenticate02(_) | Exports::Authorize02(_) => "0.2.0",
            Exports::Authenticate03(_) | Exports::Authorize03(_) => "0.3.0",
        }
    }
}

/// The exports of one instantiated sandbox.
enum Instance {
    Authenticate02(v0_2::authn::Authenticator),
    Authorize02(v0_2::authz::Authorizer),
    Authenticate03(v0_3::authn::Authenticator),
    Authorize03(v0_3::authz::Authorizer),
}

/// A store and, once instantiated, the plugin running in it.
struct Sandbox {
    store: Store<PluginState>,
    instance: Option<Instance>,
    /// Calls this sandbox has served (more than one only with reuse).
    calls: u32,
}

/// Warm sandboxes kept per version for a plugin that opted into reuse;
/// more concurrent calls than this use fresh ones.
const MAX_IDLE_SANDBOXES: usize = 16;
/// A reused sandbox is retired after this many calls, bounding whatever a
/// plugin leaks (heap, resource handles) in one instance.
const MAX_CALLS_PER_SANDBOX: u32 = 10_000;

/// One compiled version of a plugin file.
pub(crate) struct LoadedVersion {
    exports: Exports,
    sha256: String,
    wasm: PathBuf,
    loaded_at: SystemTime,
    /// Answers this version allowed the host to reuse (who an authenticator
    /// said the caller is; which accesses an authorizer allowed); a new
    /// version starts empty.
    authn_cache: OutcomeCache<Identity>,
    authz_cache: OutcomeCache<()>,
    /// Idle sandboxes of this version (only with `reuse_instance`); dropped
    /// with the version, so a reload never runs old code in them.
    warm: Mutex<Vec<Sandbox>>,
    /// What the version declared it needs (0.3 `init`; empty for 0.2).
    pub(crate) manifest: Manifest,
}

impl LoadedVersion {
    pub(crate) fn new(exports: Exports, sha256: String, wasm: PathBuf) -> Self {
        LoadedVersion {
            exports,
            sha256,
            wasm,
            loaded_at: SystemTime::now(),
            authn_cache: OutcomeCache::default(),
            authz_cache: OutcomeCache::default(),
            warm: Mutex::new(Vec::new()),
            manifest: Manifest::default(),
        }
    }

    /// SHA-256 of the component bytes.
    pub(crate) fn sha256(&self) -> &str {
        &self.sha256
    }
}

/// What a reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// A new version serves new requests.
    Swapped {
        /// SHA-256 of the new version.
        sha256: String,
    },
    /// The file has the bytes already running; nothing changed.
    Unchanged,
}

/// A plugin as the server uses it; cheap to share behind an `Arc`.
pub struct Plugin {
    cfg: PluginConfig,
    slot: Slot,
    shared: Arc<PluginShared>,
    current: RwLock<Arc<LoadedVersion>>,
    runtime: PluginRuntime,
    counters: Counters,
    /// Why the latest reload failed; cleared by a successful one.
    last_error: Mutex<Option<String>>,
    /// Headers stripped before forwarding for this plugin: the config's
    /// `credential_headers` and what the first version's manifest added.
    /// A reload may not add more (the proxy's list is fixed at start).
    credential_headers: Vec<String>,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    cache_hits: AtomicU64,
    denials: AtomicU64,
    failures: AtomicU64,
    /// Time of each call into the guest (cache hits excluded).
    latency: super::latency::LatencyHistogram,
}

/// A snapshot of a plugin for status listings.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PluginStatus {
    /// The plugin's name.
    pub name: String,
    /// `authenticator` or `authorizer`.
    pub slot: &'static str,
    /// The file it was loaded from.
    pub path: String,
    /// The component running (the build output for a crate folder).
    pub wasm: String,
    /// SHA-256 of the running version.
    pub sha256: String,
    /// The contract version it was built against (`0.3.0`, `0.2.0`).
    pub contract: &'static str,
    /// What the running version declared it needs (empty for 0.2).
    pub manifest: Manifest,
    /// When the running version was loaded (unix seconds).
    pub loaded_at: u64,
    /// Why the latest reload failed (the running version is the last good
    /// one); `None` after a successful load.
    pub last_error: Option<String>,
    /// Calls made.
    pub calls: u64,
    /// Requests answered from the plugin's cache hints without a call.
    pub cache_hits: u64,
    /// Calls that refused or denied.
    pub denials: u64,
    /// Calls that failed (503).
    pub failures: u64,
    /// Median call time in µs (bucket upper bound); `None` before a call.
    pub latency_p50_us: Option<u64>,
    /// 99th percentile call time in µs (bucket upper bound).
    pub latency_p99_us: Option<u64>,
}

impl Plugin {
    /// The plugin with its first version, once that version's `init`
    /// accepted the config and its manifest fits the grants.
    pub(crate) fn new(
        cfg: PluginConfig,
        slot: Slot,
        shared: Arc<PluginShared>,
        version: LoadedVersion,
        runtime: PluginRuntime,
    ) -> Result<Self, PluginError> {
        let mut plugin = Plugin {
            credential_headers: cfg.credential_headers.clone(),
            cfg,
            slot,
            shared,
            current: RwLock::new(Arc::new(version)),
            runtime,
            counters: Counters::default(),
            last_error: Mutex::new(None),
        };
        let manifest = plugin.init(&plugin.version(), None)?;
        for h in &manifest.credential_headers {
            if !plugin.credential_headers.contains(h) {
                plugin.credential_headers.push(h.clone());
            }
        }
        let current = plugin.current.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(version) = Arc::get_mut(current) {
            version.manifest = manifest;
        }
        Ok(plugin)
    }

    /// Calls a 0.3 version's `init` with the plugin's config in a sandbox
    /// of its own and checks its manifest against what the operator granted
    /// (`allowed_credentials`: the headers a reload may declare, as the
    /// proxy strips only those; `None` at first load). 0.2 versions have no
    /// `init`.
    fn init(
        &self,
        version: &LoadedVersion,
        allowed_credentials: Option<&[String]>,
    ) -> Result<Manifest, PluginError> {
        if version.exports.contract() != "0.3.0" {
            return Ok(Manifest::default());
        }
        let config = self.shared.config_json.clone();
        // `init` runs from start-up and from the watcher thread alike: give
        // it a runtime of its own on a thread of its own.
        let answer = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| self.init_error("config", format!("cannot run init: {e}")))?;
                    rt.block_on(self.run(version, Call::Init(&config)))
                        .map_err(|e| match e {
                            PluginError::Call { cause, .. } => {
                                self.init_error("config", format!("init failed: {cause}"))
                            }
                            other => other,
                        })
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(self.init_error("config", "init panicked in the host".into()))
                })
        })?;
        let Answer::Initialized(answer) = answer else {
            unreachable!("an init call answers an init result")
        };
        let manifest = v0_3::manifest(answer.map_err(|reason| {
            self.init_error("config", truncate(&reason, MAX_DETAIL).to_owned())
        })?);
        self.check_grants(&manifest, allowed_credentials)?;
        Ok(manifest)
    }

    /// A manifest may ask only for what the operator granted.
    fn check_grants(
        &self,
        m: &Manifest,
        allowed_credentials: Option<&[String]>,
    ) -> Result<(), PluginError> {
        if let Some(s) = m.secrets.iter().find(|s| !self.cfg.secrets.contains(s)) {
            return Err(self.init_error(
                "secrets",
                format!("the plugin needs the secret {s:?}, which is not granted: add it to this plugin's \"secrets\""),
            ));
        }
        if let Some(h) = m
            .outbound_hosts
            .iter()
            .find(|h| !self.cfg.allowed_hosts.contains(h))
        {
            return Err(self.init_error(
                "allowed_hosts",
                format!("the plugin calls {h:?}, which is not allowed: add it to this plugin's \"allowed_hosts\""),
            ));
        }
        if let Some(h) = m
            .credential_headers
            .iter()
            .find(|h| http::HeaderName::from_bytes(h.as_bytes()).is_err())
        {
            return Err(self.init_error(
                "credential_headers",
                format!(
                    "the plugin declares {h:?} as a credential header, which is not a header name"
                ),
            ));
        }
        if let Some(allowed) = allowed_credentials
            && let Some(h) = m.credential_headers.iter().find(|h| !allowed.contains(h))
        {
            return Err(self.init_error(
                "credential_headers",
                format!("the new version reads credentials from {h:?}, which the running server does not strip: add it to this plugin's \"credential_headers\" in the config file (a config reload applies it)"),
            ));
        }
        Ok(())
    }

    fn init_error(&self, field: &'static str, reason: String) -> PluginError {
        PluginError::Refused {
            name: self.cfg.name.clone(),
            field,
            reason,
        }
    }

    /// Headers never forwarded for this plugin: its `credential_headers`
    /// and those its manifest declared at load.
    pub fn credential_headers(&self) -> &[String] {
        &self.credential_headers
    }

    /// What the running version declared it needs.
    pub fn manifest(&self) -> Manifest {
        self.version().manifest.clone()
    }

    /// How many body bytes this plugin wants to see (0: none).
    pub fn body_cap(&self) -> usize {
        if self.version().manifest.wants_body {
            self.cfg.body_kb as usize * 1024
        } else {
            0
        }
    }

    /// Rebuilds (crate folders) and recompiles the plugin, and swaps the new
    /// version in for new requests; calls already running finish on the
    /// version they started with. On failure the running version stays and
    /// the reason is kept for [`Plugin::status`].
    pub fn reload(&self) -> Result<Reloaded, PluginError> {
        let result = self.runtime.build(&self.cfg).and_then(|path| {
            let wasm = self.runtime.read_wasm(&self.cfg, &path)?;
            if wasm.sha256 == self.version().sha256() {
                return Ok(None);
            }
            let mut version = self.runtime.compile_wasm(&self.cfg, wasm, self.slot)?;
            version.manifest = self.init(&version, Some(&self.credential_headers))?;
            Ok(Some(version))
        });
        let mut last_error = lock(&self.last_error);
        let reloads = &crate::metrics::global().plugin_reloads;
        match &result {
            Ok(Some(_)) => reloads
                .with_label_values(&[&self.cfg.name, "swapped"])
                .inc(),
            Err(_) => reloads.with_label_values(&[&self.cfg.name, "failed"]).inc(),
            Ok(None) => {}
        }
        match result {
            Ok(None) => Ok(Reloaded::Unchanged),
            Ok(Some(version)) => {
                let sha256 = version.sha256.clone();
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(version);
                *last_error = None;
                Ok(Reloaded::Swapped { sha256 })
            }
            Err(e) => {
                *last_error = Some(match &e {
                    PluginError::Load { reason, .. } | PluginError::Refused { reason, .. } => {
                        reason.clone()
                    }
                    other => other.to_string(),
                });
                Err(e)
            }
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The configuration it was loaded with.
    pub fn config(&self) -> &PluginConfig {
        &self.cfg
    }

    /// The slot it serves.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// Its key-value namespace, when `cfg` (the entry replacing it on a
    /// config reload) would open the same one: same name, same size cap.
    pub(crate) fn kv_if_fits(&self, cfg: &PluginConfig) -> Option<Arc<super::kv::PluginKv>> {
        (self.cfg.name == cfg.name && self.cfg.kv_kb == cfg.kv_kb)
            .then(|| self.shared.kv.clone())
            .flatten()
    }

    fn version(&self) -> Arc<LoadedVersion> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The contract version the loaded component was built against.
    pub fn contract(&self) -> &'static str {
        self.version().exports.contract()
    }

    /// Status for listings.
    pub fn status(&self) -> PluginStatus {
        let v = self.version();
        PluginStatus {
            name: self.cfg.name.clone(),
            slot: match self.slot {
                Slot::Authenticator => "authenticator",
                Slot::Authorizer => "authorizer",
            },
            path: self.cfg.path.display().to_string(),
            wasm: v.wasm.display().to_string(),
            sha256: v.sha256.clone(),
            contract: v.exports.contract(),
            manifest: v.manifest.clone(),
            loaded_at: v
                .loaded_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            last_error: lock(&self.last_error).clone(),
            calls: self.counters.calls.load(Ordering::Relaxed),
            cache_hits: self.counters.cache_hits.load(Ordering::Relaxed),
            denials: self.counters.denials.load(Ordering::Relaxed),
            failures: self.counters.failures.load(Ordering::Relaxed),
            latency_p50_us: self.counters.latency.quantile_us(0.5),
            latency_p99_us: self.counters.latency.quantile_us(0.99),
        }
    }

    /// A sandbox for one call whose time limit starts now: a warm one when
    /// the plugin opted into reuse and one is idle, else a fresh store.
    fn sandbox(&self, version: &LoadedVersion) -> Sandbox {
        let deadline = Instant::now() + self.time_limit();
        let warm = if self.cfg.reuse_instance {
            lock(&version.warm).pop()
        } else {
            None
        };
        let mut sandbox = warm.unwrap_or_else(|| Sandbox {
            store: self.new_store(deadline),
            instance: None,
            calls: 0,
        });
        sandbox.store.data_mut().begin_call(deadline);
        // Check the clock every epoch tick and yield to the async runtime in
        // between, so a looping plugin never stalls other requests.
        sandbox.store.set_epoch_deadline(1);
        sandbox.calls += 1;
        sandbox
    }

    /// Keeps a sandbox that finished a call cleanly for the next call, when
    /// the plugin opted into reuse. One that wrote to stderr is retired: its
    /// capture buffer is full of what it said, and writing means trouble.
    fn release(&self, version: &LoadedVersion, sandbox: Sandbox) {
        if !self.cfg.reuse_instance
            || sandbox.calls >= MAX_CALLS_PER_SANDBOX
            || !sandbox.store.data().stderr.contents().is_empty()
        {
            return;
        }
        let mut warm = lock(&version.warm);
        if warm.len() < MAX_IDLE_SANDBOXES {
            warm.push(sandbox);
        }
    }

    /// A new store with this plugin's limits.
    fn new_store(&self, deadline: Instant) -> Store<PluginState> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.cfg.memory_mb as usize * 1024 * 1024)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            self.runtime.engine(),
            PluginState::new(self.shared.clone(), limits, deadline),
        );
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|ctx| {
            Ok(if Instant::now() >= ctx.data().deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store
    }

    fn time_limit(&self) -> Duration {
        Duration::from_millis(self.cfg.timeout_ms.into())
    }

    /// Runs `call` under the time limit: the epoch deadline stops running
    /// guest code, this stops a guest waiting on the host (outbound HTTP).
    async fn within_limit<T>(
        &self,
        call: impl Future<Output = wasmtime::Result<T>>,
    ) -> wasmtime::Result<T> {
        match tokio::time::timeout(self.time_limit(), call).await {
            Ok(result) => result,
            Err(_) => Err(wasmtime::Error::from(Trap::Interrupt)),
        }
    }

    /// Makes `call` on an instance of `version` in a sandbox under the
    /// plugin's limits: the one call helper behind every export.
    async fn run(&self, version: &LoadedVersion, call: Call<'_>) -> Result<Answer, PluginError> {
        let mut sandbox = self.sandbox(version);
        let started = std::time::Instant::now();
        let result = self
            .within_limit(async {
                let sb = &mut sandbox;
                let instance = match sb.instance.take() {
                    Some(instance) => instance,
                    None => version.exports.instantiate(&mut sb.store).await?,
                };
                let answer = call_export(&instance, &mut sb.store, call).await;
                sb.instance = Some(instance);
                answer
            })
            .await;
        let took = started.elapsed();
        self.counters.latency.record(took);
        crate::metrics::global()
            .plugin_seconds
            .with_label_values(&[self.cfg.name.as_str()])
            .observe(took.as_secs_f64());
        sandbox.store.data().end_call();
        match result {
            Ok(answer) => {
                self.release(version, sandbox);
                Ok(answer)
            }
            Err(e) => Err(self.failure(self.classify(e, &sandbox.store))),
        }
    }

    /// The request as this plugin's contract version shows it: 0.3 with
    /// the body when the manifest asked for it.
    fn request_v03(&self, version: &LoadedVersion, req: &PluginRequest) -> v0_3::wit::Request {
        let cap = u32::try_from(u64::from(self.cfg.body_kb) * 1024).unwrap_or(u32::MAX);
        v0_3::request(req, version.manifest.wants_body, cap)
    }

    /// Asks the plugin who sent `req`.
    pub async fn authenticate(&self, req: &PluginRequest) -> Result<AuthnOutcome, PluginError> {
        let version = self.version();
        let cached = version.authn_cache.lookup("", req);
        if !version.authn_cache.is_unused() {
            crate::metrics::global().cache_lookup("plugin_outcome", cached.is_some());
        }
        if let Some(who) = cached {
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(AuthnOutcome::Authenticated { who, cache: None });
        }
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let outcome = match &version.exports {
            Exports::Authenticate02(_) => {
                let wreq = v0_2::request(req);
                let Answer::Authenticated02(answer) =
                    self.run(&version, Call::Authenticate02(&wreq)).await?
                else {
                    unreachable!("a 0.2 authenticate call answers a 0.2 outcome")
                };
                v0_2::authn_outcome(answer).map_err(|m| self.failure(CallFailure::BadOutput(m)))?
            }
            Exports::Authenticate03(_) => {
                let wreq = self.request_v03(&version, req);
                let Answer::Authenticated03(answer) =
                    self.run(&version, Call::Authenticate03(&wreq)).await?
                else {
                    unreachable!("a 0.3 authenticate call answers a 0.3 outcome")
                };
                v0_3::authn_outcome(answer).map_err(|e| self.no_outcome(e))?
            }
            Exports::Authorize02(_) | Exports::Authorize03(_) => {
                return Err(self.failure(CallFailure::BadOutput(
                    "plugin is not an authenticator".into(),
                )));
            }
        };
        match &outcome {
            AuthnOutcome::Refused(_) => {
                self.counters.denials.fetch_add(1, Ordering::Relaxed);
            }
            AuthnOutcome::Authenticated {
                who,
                cache: Some(hint),
            } => version.authn_cache.store("", req, hint, who),
            _ => {}
        }
        Ok(limit_refusal(outcome))
    }

    /// Asks the plugin whether `who` may perform `access`.
    pub async fn authorize(
        &self,
        who: &Identity,
        access: &Access,
        req: &PluginRequest,
    ) -> Result<AuthzOutcome, PluginError> {
        Ok(self.authorize_with_hint(who, access, req).await?.0)
    }

    /// [`Plugin::authorize`], also returning the cache hint the plugin sent
    /// with an allow (`None` for a denial or an answer from the cache), for
    /// the developer tools that show it.
    pub async fn authorize_with_hint(
        &self,
        who: &Identity,
        access: &Access,
        req: &PluginRequest,
    ) -> Result<(AuthzOutcome, Option<CacheHint>), PluginError> {
        let version = self.version();
        // Cached allows are scoped to this caller asking for this access;
        // the key is built only for an authorizer that sends hints.
        let scope = LazyCell::new(|| {
            serde_json::json!([
                who.user_id,
                who.roles,
                who.claims,
                access.resource,
                access.action,
                access.resource_id,
                access.owner,
                access.tenant
            ])
            .to_string()
        });
        if !version.authz_cache.is_unused() {
            let hit = version.authz_cache.lookup(&scope, req).is_some();
            crate::metrics::global().cache_lookup("plugin_outcome", hit);
            if hit {
                self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok((AuthzOutcome::Allow, None));
            }
        }
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let (outcome, hint) = match &version.exports {
            Exports::Authorize02(_) => {
                let (wwho, what, wreq) = (
                    v0_2::identity(who),
                    v0_2::access(access),
                    v0_2::request(req),
                );
                let Answer::Authorized02(answer) = self
                    .run(&version, Call::Authorize02(&wwho, &what, &wreq))
                    .await?
                else {
                    unreachable!("a 0.2 authorize call answers a 0.2 outcome")
                };
                v0_2::authz_outcome(answer)
            }
            Exports::Authorize03(_) => {
                let (wwho, what) = (v0_3::identity(who), v0_3::access(access));
                let wreq = self.request_v03(&version, req);
                let Answer::Authorized03(answer) = self
                    .run(&version, Call::Authorize03(&wwho, &what, &wreq))
                    .await?
                else {
                    unreachable!("a 0.3 authorize call answers a 0.3 outcome")
                };
                v0_3::authz_outcome(answer).map_err(|e| self.no_outcome(e))?
            }
            Exports::Authenticate02(_) | Exports::Authenticate03(_) => {
                return Err(
                    self.failure(CallFailure::BadOutput("plugin is not an authorizer".into()))
                );
            }
        };
        match &outcome {
            AuthzOutcome::Allow => {
                if let Some(hint) = &hint {
                    version.authz_cache.store(&scope, req, hint, &());
                }
                Ok((AuthzOutcome::Allow, hint))
            }
            AuthzOutcome::Deny(r) => {
                self.counters.denials.fetch_add(1, Ordering::Relaxed);
                Ok((AuthzOutcome::Deny(limit_detail(r.clone())), None))
            }
        }
    }

    /// A `failed` answer or one the host refuses: the request fails closed.
    fn no_outcome(&self, e: NoOutcome) -> PluginError {
        match e {
            NoOutcome::Failed(why) => {
                self.failure(CallFailure::Failed(log_limit::sanitize(&why, MAX_DETAIL)))
            }
            NoOutcome::Bad(m) => self.failure(CallFailure::BadOutput(m)),
        }
    }

    fn failure(&self, cause: CallFailure) -> PluginError {
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        PluginError::Call {
            plugin: self.cfg.name.clone(),
            export: self.slot.function(),
            cause,
        }
    }

    /// Turns a wasmtime error into the reason a developer needs.
    fn classify(&self, e: wasmtime::Error, store: &Store<PluginState>) -> CallFailure {
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => CallFailure::Timeout(self.cfg.timeout_ms),
            Some(Trap::StackOverflow) => CallFailure::StackOverflow,
            Some(Trap::AllocationTooLarge) => CallFailure::MemoryLimit(self.cfg.memory_mb),
            _ if format!("{e:#}").contains("memory") && format!("{e:#}").contains("grow") => {
                CallFailure::MemoryLimit(self.cfg.memory_mb)
            }
            _ => {
                let stderr = store.data().stderr.contents();
                let stderr = String::from_utf8_lossy(&stderr);
                let said = stderr
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    // Advice for native programs; a guest's backtrace
                    // cannot be turned on that way.
                    .filter(|l| !l.contains("RUST_BACKTRACE"))
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" | ");
                // What the plugin wrote is its to choose: bound and escape it
                // like its log lines.
                let said = log_limit::sanitize(&said, MAX_STDERR_SAID);
                // The trap kind, not wasmtime's multi-line backtrace.
                let trap = match e.downcast_ref::<Trap>() {
                    Some(t) => t.to_string(),
                    None => e.to_string().lines().next().unwrap_or_default().to_owned(),
                };
                CallFailure::Trap(if said.is_empty() {
                    trap
                } else {
                    format!("{trap} ({said})")
                })
            }
        }
    }
}

/// One call into an export, with its arguments in the contract version's
/// types.
enum Call<'a> {
    Init(&'a str),
    Authenticate02(&'a v0_2::wit::Request),
    Authenticate03(&'a v0_3::wit::Request),
    Authorize02(
        &'a v0_2::wit::Identity,
        &'a v0_2::wit::Access,
        &'a v0_2::wit::Request,
    ),
    Authorize03(
        &'a v0_3::wit::Identity,
        &'a v0_3::wit::Access,
        &'a v0_3::wit::Request,
    ),
}

/// What an export answered.
enum Answer {
    Initialized(Result<v0_3::wit::Manifest, String>),
    Authenticated02(v0_2::wit::AuthnOutcome),
    Authenticated03(v0_3::wit::AuthnOutcome),
    Authorized02(v0_2::wit::AuthzOutcome),
    Authorized03(v0_3::wit::AuthzOutcome),
}

/// Makes `call` on `instance`. A call that does not fit the instance (a
/// bug in the host, never a plugin's doing) is an error, not a panic.
async fn call_export(
    instance: &Instance,
    store: &mut Store<PluginState>,
    call: Call<'_>,
) -> wasmtime::Result<Answer> {
    Ok(match (instance, call) {
        (Instance::Authenticate03(i), Call::Init(config)) => Answer::Initialized(
            i.agentflow_auth_authenticate()
                .call_init(store, config)
                .await?,
        ),
        (Instance::Authorize03(i), Call::Init(config)) => Answer::Initialized(
            i.agentflow_auth_authorize()
                .call_init(store, config)
                .await?,
        ),
        (Instance::Authenticate02(i), Call::Authenticate02(req)) => Answer::Authenticated02(
            i.agentflow_auth_authenticate()
                .call_authenticate(store, req)
                .await?,
        ),
        (Instance::Authenticate03(i), Call::Authenticate03(req)) => Answer::Authenticated03(
            i.agentflow_auth_authenticate()
                .call_authenticate(store, req)
                .await?,
        ),
        (Instance::Authorize02(i), Call::Authorize02(who, what, req)) => Answer::Authorized02(
            i.agentflow_auth_authorize()
                .call_authorize(store, who, what, req)
                .await?,
        ),
        (Instance::Authorize03(i), Call::Authorize03(who, what, req)) => Answer::Authorized03(
            i.agentflow_auth_authorize()
                .call_authorize(store, who, what, req)
                .await?,
        ),
        _ => wasmtime::bail!("host bug: a call that does not fit the plugin's exports"),
    })
}

/// Locks `m`, recovering from a panic elsewhere (the data stays usable).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An identity a plugin answered, checked against the host's limits.
pub(crate) fn checked_identity(
    user_id: String,
    roles: Vec<String>,
    claims: &str,
) -> Result<Identity, String> {
    if user_id.is_empty() || user_id.len() > MAX_USER_ID {
        return Err(format!(
            "user id must be 1..={MAX_USER_ID} bytes, got {}",
            user_id.len()
        ));
    }
    if roles.len() > MAX_ROLES || roles.iter().any(|r| r.len() > MAX_ROLE) {
        return Err(format!(
            "at most {MAX_ROLES} roles of at most {MAX_ROLE} bytes"
        ));
    }
    if claims.len() > MAX_CLAIMS {
        return Err(format!("claims must be at most {MAX_CLAIMS} bytes"));
    }
    let claims = match claims.trim() {
        "" => Map::new(),
        text => match serde_json::from_str(text) {
            Ok(Value::Object(m)) => m,
            _ => return Err("claims must be a JSON object".into()),
        },
    };
    Ok(Identity {
        user_id,
        roles,
        claims,
    })
}

/// A refusal with its detail cut to what the host passes on.
fn limit_detail(r: Refusal) -> Refusal {
    let cut = |d: String| truncate(&d, MAX_DETAIL).to_owned();
    match r {
        Refusal::Unauthenticated(d) => Refusal::Unauthenticated(cut(d)),
        Refusal::Forbidden(d) => Refusal::Forbidden(cut(d)),
        Refusal::RateLimited {
            retry_after_s,
            detail,
        } => Refusal::RateLimited {
            retry_after_s,
            detail: cut(detail),
        },
    }
}

fn limit_refusal(o: AuthnOutcome) -> AuthnOutcome {
    match o {
        AuthnOutcome::Refused(r) => AuthnOutcome::Refused(limit_detail(r)),
        other => other,
    }
}
