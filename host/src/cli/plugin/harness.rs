//! What `plugin call` and `plugin test` share: the plugin's entry from an
//! `agentflow.json`, requests as the request and case files describe them,
//! one call with the outcome as JSON, and the throw-away key-value store.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::config::{AuthMethodConfig, Config, Env, PluginConfig};
use crate::identity::Identity;
use crate::plugins::inspect;
use crate::plugins::{
    Access, AuthnOutcome, AuthzOutcome, BufferedBody, CacheHint, KvStore, PluginError,
    PluginRequest, PluginRuntime, Slot,
};

/// A plugin entry of an `agentflow.json` (`--config-from FILE#KEY`): its
/// config, grants, limits and name, and the config's environment.
pub struct Entry {
    /// The entry, resolved as the server resolves it.
    pub cfg: PluginConfig,
    /// The config's `env` file under the real environment (secrets).
    pub env: Env,
}

/// Reads the entry `spec` names: `FILE#KEY` where KEY is the entry's key
/// as config errors print it (`auth`, `auth[1]`, `authorization`) or the
/// plugin's name; plain `FILE` when the config has exactly one plugin.
pub fn entry(spec: &str) -> anyhow::Result<Entry> {
    let (file, key) = match spec.rsplit_once('#') {
        Some((file, key)) => (file, Some(key)),
        None => (spec, None),
    };
    let config = Config::load(Path::new(file)).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Every plugin entry with the key config errors would name it by.
    let single = !matches!(
        std::fs::read_to_string(file)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .map(|v| v["auth"].clone()),
        Some(Value::Array(_))
    );
    let mut entries: Vec<(String, &PluginConfig)> = config
        .auth
        .iter()
        .enumerate()
        .filter_map(|(i, m)| match m {
            AuthMethodConfig::Plugin(p) if single => Some(("auth".to_owned(), p)),
            AuthMethodConfig::Plugin(p) => Some((format!("auth[{i}]"), p)),
            AuthMethodConfig::Jwt(_) | AuthMethodConfig::ApiKey => None,
        })
        .collect();
    if let Some(p) = &config.authorization {
        entries.push(("authorization".to_owned(), p));
    }
    let listed = || {
        entries
            .iter()
            .map(|(k, p)| format!("{file}#{k} ({:?})", p.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let found = match key {
        Some(key) => entries
            .iter()
            .find(|(k, p)| k == key || p.name == key)
            .with_context(|| {
                format!(
                    "{file} has no plugin entry {key:?}; its entries: {}",
                    listed()
                )
            })?,
        None if entries.len() == 1 => &entries[0],
        None if entries.is_empty() => bail!("{file} names no plugin"),
        None => bail!(
            "{file} names {} plugins: say which, e.g. {}",
            entries.len(),
            listed()
        ),
    };
    Ok(Entry {
        cfg: found.1.clone(),
        env: config.env.clone(),
    })
}

/// The default plugin settings of a call without a config entry.
pub fn default_config(name: String, path: PathBuf) -> PluginConfig {
    PluginConfig {
        name,
        path,
        config: Value::Null,
        secrets: Vec::new(),
        allowed_hosts: Default::default(),
        memory_mb: 32,
        timeout_ms: 200,
        kv_kb: 1024,
        reuse_instance: false,
        credential_headers: Vec::new(),
        body_kb: 64,
    }
}

/// The name a component file gets without an entry: its file stem, as the
/// server names it.
pub fn name_of(wasm: &Path) -> String {
    wasm.file_stem()
        .map(|s| s.to_string_lossy().replace('_', "-"))
        .unwrap_or_else(|| "plugin".into())
}

/// A request as the request and case files give it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
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
    /// A string is sent as is, any other JSON value serialized.
    #[serde(default)]
    body: Option<Value>,
}

impl Default for RequestSpec {
    /// `GET /`, as a case without `request` means.
    fn default() -> Self {
        RequestSpec::new(get(), root(), String::new(), Headers::None, None, None)
    }
}

fn get() -> String {
    "GET".into()
}

fn root() -> String {
    "/".into()
}

/// Headers as an object or a list of pairs (for repeated names).
#[derive(Deserialize, Default)]
#[serde(untagged)]
pub enum Headers {
    /// None given.
    #[default]
    None,
    /// `{"name": "value"}`.
    Map(Map<String, Value>),
    /// `[["name", "value"]]`.
    Pairs(Vec<(String, String)>),
}

impl RequestSpec {
    /// A request with these fields (the flat form of `plugin call`'s file).
    pub fn new(
        method: String,
        path: String,
        query: String,
        headers: Headers,
        client_ip: Option<String>,
        body: Option<Value>,
    ) -> Self {
        RequestSpec {
            method,
            path,
            query,
            headers,
            client_ip,
            body,
        }
    }

    /// The plugin's view of this request.
    pub fn view(self) -> PluginRequest {
        let headers = match self.headers {
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
            self.method.to_ascii_uppercase(),
            self.path,
            self.query,
            headers,
            self.client_ip,
        );
        match self.body {
            None => view,
            Some(body) => view.with_body(BufferedBody {
                bytes: match body {
                    Value::String(s) => s.into_bytes().into(),
                    other => other.to_string().into_bytes().into(),
                },
                complete: true,
            }),
        }
    }
}

/// The identity an authorizer is asked about.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    user_id: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    claims: Map<String, Value>,
}

/// The access an authorizer decides on.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AccessSpec {
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

/// A component ready to be called: its bytes checked once, loaded afresh
/// (from the compile cache) for each config.
pub struct Harness {
    runtime: PluginRuntime,
    store: KvStore,
    wasm: PathBuf,
    fits: Vec<&'static str>,
    /// Keeps the compiled copy for later loads of the same bytes.
    _compiled: ScratchDir,
}

/// A folder of our own under the system's temporary folder, removed when
/// dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> anyhow::Result<ScratchDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("agentflow-plugin-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Harness {
    /// Reads and checks the component at `wasm`, with an empty throw-away
    /// key-value store.
    pub fn new(wasm: &Path) -> anyhow::Result<Harness> {
        let bytes =
            std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
        let compiled = ScratchDir::new()?;
        let store = KvStore::temporary().map_err(anyhow::Error::msg)?;
        let runtime = PluginRuntime::new()?
            .with_storage(store.clone())
            .with_compile_cache(compiled.0.clone());
        let report = inspect::check(&runtime, &bytes)
            .map_err(|why| anyhow::anyhow!("{}: {why}", wasm.display()))?;
        let fits = report.fits().collect();
        Ok(Harness {
            runtime,
            store,
            wasm: wasm.to_path_buf(),
            fits,
            _compiled: compiled,
        })
    }

    /// The slot a call uses: the authorizer when an access is given (or
    /// the component is only an authorizer), else the authenticator.
    pub fn slot(&self, wants_authorizer: bool) -> anyhow::Result<Slot> {
        let authn = self.fits.contains(&"authenticator");
        let authz = self.fits.contains(&"authorizer");
        Ok(match (authn, authz) {
            (true, true) if wants_authorizer => Slot::Authorizer,
            (true, _) => Slot::Authenticator,
            (false, true) => Slot::Authorizer,
            (false, false) => bail!(
                "{} fits no plugin world (run `agentflow plugin check` for why)",
                self.wasm.display()
            ),
        })
    }

    /// Stores `pairs` in the key-value store of the plugin `cfg` names.
    pub fn seed(&self, cfg: &PluginConfig, pairs: &[(String, String)]) -> anyhow::Result<()> {
        let kv = self
            .store
            .namespace(&cfg.name, u64::from(cfg.kv_kb) * 1024)
            .map_err(anyhow::Error::msg)?;
        for (key, value) in pairs {
            kv.set(key, value.as_bytes(), None)
                .map_err(|e| anyhow::anyhow!("--kv {key}: {e}"))?;
        }
        Ok(())
    }

    /// The plugin's key-value store: values as text when they are UTF-8,
    /// else `{"hex": "..."}`.
    pub fn kv(&self, cfg: &PluginConfig) -> anyhow::Result<Map<String, Value>> {
        let kv = self
            .store
            .namespace(&cfg.name, u64::from(cfg.kv_kb) * 1024)
            .map_err(anyhow::Error::msg)?;
        Ok(kv
            .entries()
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .map(|(k, v)| {
                let key = String::from_utf8_lossy(&k).into_owned();
                let value = match String::from_utf8(v) {
                    Ok(text) => Value::String(text),
                    Err(bytes) => json!({"hex": hex::encode(bytes.into_bytes())}),
                };
                (key, value)
            })
            .collect())
    }

    /// Loads the plugin with `cfg` (its `path` is replaced by the checked
    /// component) and makes one call. A plugin failure (trap, time or
    /// memory limit, nonsense answer) is an `Ok(Err(..))`: an outcome the
    /// server would answer 503 for.
    pub fn call(
        &self,
        cfg: &PluginConfig,
        env: &Env,
        slot: Slot,
        request: RequestSpec,
        identity: Option<IdentitySpec>,
        access: Option<AccessSpec>,
    ) -> anyhow::Result<Result<Value, PluginError>> {
        let cfg = PluginConfig {
            path: self.wasm.clone(),
            ..cfg.clone()
        };
        let plugin = match self.runtime.load(&cfg, slot, env) {
            Ok(plugin) => plugin,
            // A config the plugin's `init` refuses stops a server at start.
            Err(e) => bail!("{e}"),
        };
        let view = request.view();
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let cache_json =
            |c: Option<CacheHint>| c.map(|c| json!({"ttl_ms": c.ttl_ms, "vary": c.vary}));
        Ok(match slot {
            Slot::Authenticator => tokio.block_on(plugin.authenticate(&view)).map(|o| match o {
                AuthnOutcome::Authenticated { who, cache } => json!({
                    "outcome": "authenticated",
                    "identity": who.to_json(),
                    "cache": cache_json(cache),
                }),
                AuthnOutcome::NoCredentials => json!({"outcome": "no-credentials"}),
                AuthnOutcome::Refused(r) => {
                    json!({"outcome": "refused", "status": r.status(), "detail": r.detail()})
                }
            }),
            Slot::Authorizer => {
                let who = identity.context("an authorizer call needs \"identity\"")?;
                let what = access.context("an authorizer call needs \"access\"")?;
                let who = Identity {
                    user_id: who.user_id,
                    roles: who.roles,
                    claims: who.claims,
                };
                // A short-lived command: leaking the two strings per call is
                // harmless, and `Access` borrows them for 'static.
                let access = Access {
                    resource: Box::leak(what.resource.into_boxed_str()),
                    action: Box::leak(what.action.into_boxed_str()),
                    resource_id: what.resource_id,
                    owner: what.resource_owner,
                    tenant: what.caller_tenant,
                };
                tokio
                    .block_on(plugin.authorize_with_hint(&who, &access, &view))
                    .map(|(o, hint)| match o {
                        AuthzOutcome::Allow => {
                            json!({"outcome": "allow", "cache": cache_json(hint)})
                        }
                        AuthzOutcome::Deny(r) => {
                            json!({"outcome": "deny", "status": r.status(), "detail": r.detail()})
                        }
                    })
            }
        })
    }
}

/// `KEY=VALUE` of `--kv`.
pub fn kv_pair(arg: &str) -> Result<(String, String), String> {
    arg.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{arg:?}: use KEY=VALUE"))
}
