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

use super::bindings::{authn, authz, wit};
use super::log_limit;
use super::outcome_cache::OutcomeCache;
use super::runtime::PluginRuntime;
use super::state::{PluginShared, PluginState, truncate};
use super::{
    Access, AuthnOutcome, AuthzOutcome, CacheHint, CallFailure, PluginError, PluginRequest, Slot,
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

/// The pre-linked exports of one compiled version.
pub(crate) enum Exports {
    Authenticate(authn::AuthenticatorPre<PluginState>),
    Authorize(authz::AuthorizerPre<PluginState>),
}

/// The exports of one instantiated sandbox.
enum Instance {
    Authenticate(authn::Authenticator),
    Authorize(authz::Authorizer),
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
#[derive(Debug, Clone, serde::Serialize)]
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
    /// The WIT contract version the host serves plugins.
    pub contract: &'static str,
    /// Median call time in µs (bucket upper bound); `None` before a call.
    pub latency_p50_us: Option<u64>,
    /// 99th percentile call time in µs (bucket upper bound).
    pub latency_p99_us: Option<u64>,
}

impl Plugin {
    pub(crate) fn new(
        cfg: PluginConfig,
        slot: Slot,
        shared: Arc<PluginShared>,
        version: LoadedVersion,
        runtime: PluginRuntime,
    ) -> Self {
        Plugin {
            cfg,
            slot,
            shared,
            current: RwLock::new(Arc::new(version)),
            runtime,
            counters: Counters::default(),
            last_error: Mutex::new(None),
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
            self.runtime
                .compile_wasm(&self.cfg, wasm, self.slot)
                .map(Some)
        });
        let mut last_error = lock(&self.last_error);
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
                    PluginError::Load { reason, .. } => reason.clone(),
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

    fn version(&self) -> Arc<LoadedVersion> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
            contract: super::WIT_VERSION,
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

    /// Asks the plugin who sent `req`.
    pub async fn authenticate(&self, req: &PluginRequest) -> Result<AuthnOutcome, PluginError> {
        let version = self.version();
        if let Some(who) = version.authn_cache.lookup("", req) {
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(AuthnOutcome::Authenticated { who, cache: None });
        }
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let Exports::Authenticate(pre) = &version.exports else {
            return Err(self.failure(CallFailure::BadOutput(
                "plugin is not an authenticator".into(),
            )));
        };
        let mut sandbox = self.sandbox(&version);
        let started = std::time::Instant::now();
        let result = self
            .within_limit(async {
                let sb = &mut sandbox;
                if sb.instance.is_none() {
                    sb.instance = Some(Instance::Authenticate(
                        pre.instantiate_async(&mut sb.store).await?,
                    ));
                }
                let Some(Instance::Authenticate(instance)) = &sb.instance else {
                    unreachable!("an authenticator sandbox")
                };
                instance
                    .agentflow_auth_authenticate()
                    .call_authenticate(&mut sb.store, &req.0)
                    .await
            })
            .await;
        self.counters.latency.record(started.elapsed());
        sandbox.store.data().end_call();
        let outcome = match result {
            Ok(o) => o,
            Err(e) => return Err(self.failure(self.classify(e, &sandbox.store))),
        };
        self.release(&version, sandbox);
        let outcome =
            convert_authn(outcome).map_err(|m| self.failure(CallFailure::BadOutput(m)))?;
        match &outcome {
            AuthnOutcome::Refused { .. } => {
                self.counters.denials.fetch_add(1, Ordering::Relaxed);
            }
            AuthnOutcome::Authenticated {
                who,
                cache: Some(hint),
            } => version.authn_cache.store("", req, hint, who),
            _ => {}
        }
        Ok(outcome)
    }

    /// Asks the plugin whether `who` may perform `access`.
    pub async fn authorize(
        &self,
        who: &Identity,
        access: &Access,
        req: &PluginRequest,
    ) -> Result<AuthzOutcome, PluginError> {
        let version = self.version();
        let claims = Value::Object(who.claims.clone()).to_string();
        // Cached allows are scoped to this caller asking for this access;
        // the key is built only for an authorizer that sends hints.
        let scope = LazyCell::new(|| {
            serde_json::json!([
                who.user_id,
                who.roles,
                who.claims,
                access.resource,
                access.action,
                access.resource_id
            ])
            .to_string()
        });
        if !version.authz_cache.is_unused() && version.authz_cache.lookup(&scope, req).is_some() {
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(AuthzOutcome::Allow);
        }
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let Exports::Authorize(pre) = &version.exports else {
            return Err(self.failure(CallFailure::BadOutput("plugin is not an authorizer".into())));
        };
        let who = wit::Identity {
            user_id: who.user_id.clone(),
            roles: who.roles.clone(),
            claims,
        };
        let what = wit::Access {
            resource: access.resource.to_owned(),
            action: access.action.to_owned(),
            resource_id: access.resource_id.clone(),
        };
        let mut sandbox = self.sandbox(&version);
        let started = std::time::Instant::now();
        let result = self
            .within_limit(async {
                let sb = &mut sandbox;
                if sb.instance.is_none() {
                    sb.instance = Some(Instance::Authorize(
                        pre.instantiate_async(&mut sb.store).await?,
                    ));
                }
                let Some(Instance::Authorize(instance)) = &sb.instance else {
                    unreachable!("an authorizer sandbox")
                };
                instance
                    .agentflow_auth_authorize()
                    .call_authorize(&mut sb.store, &who, &what, &req.0)
                    .await
            })
            .await;
        self.counters.latency.record(started.elapsed());
        sandbox.store.data().end_call();
        let result = match result {
            Ok(answer) => {
                self.release(&version, sandbox);
                Ok(answer)
            }
            Err(e) => Err(self.failure(self.classify(e, &sandbox.store))),
        };
        match result {
            Ok(wit::AuthzOutcome::Allow(hint)) => {
                if let Some(c) = hint {
                    version.authz_cache.store(
                        &scope,
                        req,
                        &CacheHint {
                            ttl_ms: c.ttl_ms,
                            vary: c.vary,
                        },
                        &(),
                    );
                }
                Ok(AuthzOutcome::Allow)
            }
            Ok(wit::AuthzOutcome::Deny(r)) => {
                self.counters.denials.fetch_add(1, Ordering::Relaxed);
                let status = if matches!(r.status, 401 | 403 | 429) {
                    r.status
                } else {
                    403
                };
                Ok(AuthzOutcome::Deny {
                    status,
                    detail: truncate(&r.detail, MAX_DETAIL).to_owned(),
                })
            }
            Err(e) => Err(e),
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

/// Locks `m`, recovering from a panic elsewhere (the data stays usable).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Validates and converts an authenticator's answer.
fn convert_authn(o: wit::AuthnOutcome) -> Result<AuthnOutcome, String> {
    Ok(match o {
        wit::AuthnOutcome::Authenticated(grant) => {
            let w = grant.who;
            if w.user_id.is_empty() || w.user_id.len() > MAX_USER_ID {
                return Err(format!(
                    "user id must be 1..={MAX_USER_ID} bytes, got {}",
                    w.user_id.len()
                ));
            }
            if w.roles.len() > MAX_ROLES || w.roles.iter().any(|r| r.len() > MAX_ROLE) {
                return Err(format!(
                    "at most {MAX_ROLES} roles of at most {MAX_ROLE} bytes"
                ));
            }
            if w.claims.len() > MAX_CLAIMS {
                return Err(format!("claims must be at most {MAX_CLAIMS} bytes"));
            }
            let claims = match w.claims.trim() {
                "" => Map::new(),
                text => match serde_json::from_str(text) {
                    Ok(Value::Object(m)) => m,
                    _ => return Err("claims must be a JSON object".into()),
                },
            };
            let cache = grant.cache.map(|c| CacheHint {
                ttl_ms: c.ttl_ms,
                vary: c.vary,
            });
            AuthnOutcome::Authenticated {
                who: Identity {
                    user_id: w.user_id,
                    roles: w.roles,
                    claims,
                },
                cache,
            }
        }
        wit::AuthnOutcome::NoCredentials => AuthnOutcome::NoCredentials,
        wit::AuthnOutcome::Refused(r) => AuthnOutcome::Refused {
            status: if matches!(r.status, 401 | 403 | 429) {
                r.status
            } else {
                401
            },
            detail: truncate(&r.detail, MAX_DETAIL).to_owned(),
        },
    })
}
