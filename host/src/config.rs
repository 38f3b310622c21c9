//! `agentflow.json` and its `.env`: parsed, resolved against the config
//! file's folder and validated, with errors that name the key and the reason.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::plugins::AllowList;

/// A mistake in the configuration: which key, and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}: `{key}`: {reason}")]
pub struct ConfigError {
    /// The file the mistake is in.
    pub file: String,
    /// The key path, e.g. `auth[1].path` or `env:JWT_SECRET_KEY`.
    pub key: String,
    /// What is wrong and, where possible, how to fix it.
    pub reason: String,
}

impl ConfigError {
    /// A mistake at `key` of `file`.
    pub fn new(file: impl Into<String>, key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            file: file.into(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file itself.
    pub file: PathBuf,
    /// Base URL of the agent upstream (`agent`), without a trailing slash.
    pub agent: Option<String>,
    /// Variables from the `env` file merged under the real environment.
    pub env: Env,
    /// Authentication methods, tried in order; empty means no auth.
    pub auth: Vec<AuthMethodConfig>,
    /// The authorizer plugin, if any.
    pub authorization: Option<PluginConfig>,
    /// Defaults for all plugins.
    pub plugins: PluginDefaults,
    /// Browser origins allowed to call the gateway (`cors`, `CORS_ORIGINS`).
    pub cors: Option<crate::cors::CorsPolicy>,
    /// How the caller's identity reaches the agent (`upstream`).
    pub upstream: UpstreamSettings,
    /// The shared PostgreSQL store (`database`, `AGENTFLOW_DATABASE_URL`);
    /// `None`: sled in the data dir.
    pub database: Option<crate::store::DatabaseSettings>,
    /// Peers whose forwarding headers name the client (`trusted_proxies`).
    pub trusted_proxies: crate::client_addr::TrustedProxies,
    /// Per-address and per-identity limits by route class (`rate_limits`).
    pub rate_limits: crate::rate_limit::RateLimitConfig,
    /// The ownership policy (`tenancy`); `None`: off.
    pub tenancy: Option<crate::tenancy::TenancySettings>,
    /// The file's top-level JSON, as written: what a reload compares to
    /// tell which keys changed (see [`Config::restart_only_changes`]).
    raw: Value,
}

/// The top-level keys a running server takes only at start: the listener's
/// neighbours (`agent`, `cors`, `trusted_proxies`, `rate_limits`), the
/// stores and keys (`database`, `upstream`, `env`) and the ownership policy
/// (`tenancy`), whose state lives beside the router. A reload that changes
/// one of them is refused as a whole (see the README, "Reloading
/// agentflow.json").
pub const RESTART_KEYS: [&str; 8] = [
    "agent",
    "env",
    "cors",
    "upstream",
    "database",
    "trusted_proxies",
    "rate_limits",
    "tenancy",
];

/// One entry of `auth`.
#[derive(Debug, Clone)]
pub enum AuthMethodConfig {
    /// The built-in JWT verifier.
    Jwt(JwtOptions),
    /// API keys issued by `POST /v1/api-keys` (header `x-api-key`).
    ApiKey,
    /// An authenticator plugin.
    Plugin(PluginConfig),
}

/// Options of the built-in JWT method (`{"method": "jwt", ...}`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtOptions {
    /// Clock skew tolerated for `exp` and `nbf`, in seconds (at most 60).
    #[serde(default)]
    pub leeway_s: Option<u64>,
    /// Required `iss` claim.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted `aud` values; a token's `aud` must contain one of them.
    #[serde(default)]
    pub audience: Option<Vec<String>>,
    /// Verify with the keys published at this JWKS URL (an identity
    /// provider's) instead of `JWT_SECRET_KEY` / `JWT_PUBLIC_KEY`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Find the JWKS URL by OpenID discovery:
    /// `{issuer}/.well-known/openid-configuration` -> `jwks_uri`.
    #[serde(default)]
    pub discovery: bool,
    /// Keys older than this are fetched again in the background (seconds,
    /// default 600).
    #[serde(default)]
    pub jwks_refresh_s: Option<u64>,
    /// At most one key fetch per this many seconds, however many unknown
    /// `kid`s arrive (default 10).
    #[serde(default)]
    pub jwks_min_interval_s: Option<u64>,
    /// How long a key the provider stopped publishing keeps verifying
    /// (seconds, default 600; 0 drops it at once).
    #[serde(default)]
    pub jwks_grace_s: Option<u64>,
    /// Verified tokens remembered until they expire (default 10000; 0 turns
    /// the cache off).
    #[serde(default)]
    pub token_cache: Option<usize>,
}

impl JwtOptions {
    /// Whether keys come from an identity provider rather than the `.env`.
    pub fn is_remote(&self) -> bool {
        self.jwks_url.is_some() || self.discovery
    }

    /// Checks the options that need more than their type; the key path of
    /// the entry is `key`.
    fn check(&self, key: &str) -> Result<(), Mistake> {
        let at = |k: &str| format!("{key}.{k}");
        if self.leeway_s.is_some_and(|l| l > 60) {
            return Err((at("leeway_s"), "must be at most 60 seconds".into()));
        }
        if let Some(url) = &self.jwks_url {
            if self.discovery {
                return Err((
                    at("discovery"),
                    "use either \"jwks_url\" or \"discovery\", not both".into(),
                ));
            }
            check_key_url(url).map_err(|r| (at("jwks_url"), r))?;
        }
        if self.discovery {
            match &self.issuer {
                None => {
                    return Err((
                        at("issuer"),
                        "required with \"discovery\": keys are found at {issuer}/.well-known/openid-configuration".into(),
                    ));
                }
                Some(iss) => check_key_url(iss).map_err(|r| (at("issuer"), r))?,
            }
        }
        let remote_only = [
            ("jwks_refresh_s", self.jwks_refresh_s, 10..=86_400),
            ("jwks_min_interval_s", self.jwks_min_interval_s, 1..=3_600),
            ("jwks_grace_s", self.jwks_grace_s, 0..=86_400),
        ];
        for (name, value, range) in remote_only {
            let Some(v) = value else { continue };
            if !self.is_remote() {
                return Err((
                    at(name),
                    "only applies with \"jwks_url\" or \"discovery\"".into(),
                ));
            }
            if !range.contains(&v) {
                return Err((
                    at(name),
                    format!("must be between {} and {}", range.start(), range.end()),
                ));
            }
        }
        if self.token_cache.is_some_and(|n| n > 1_000_000) {
            return Err((at("token_cache"), "must be at most 1000000 entries".into()));
        }
        Ok(())
    }
}

/// An identity provider URL: https, or plain http on loopback only (a key
/// fetched over the network in clear text could be anyone's).
pub(crate) fn check_key_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL ({e})"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&parsed) => Ok(()),
        "http" => Err(format!(
            "{url:?}: keys must come over https (plain http is allowed for 127.0.0.1 / localhost only)"
        )),
        other => Err(format!(
            "{url:?}: scheme {other:?} is not supported; use https://"
        )),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A plugin named in the config, with its limits resolved. Two equal
/// entries load the same plugin (a config reload keeps such a plugin).
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// Short name used in logs and errors (`name`, else the file stem).
    pub name: String,
    /// Absolute path of the `.wasm` file.
    pub path: PathBuf,
    /// The plugin's own `config` value, handed to it as JSON.
    pub config: Value,
    /// Names of secrets the plugin may read.
    pub secrets: Vec<String>,
    /// The `host:port` entries the plugin may send HTTP requests to,
    /// parsed (a bad entry fails the load naming it).
    pub allowed_hosts: AllowList,
    /// Memory cap in MiB.
    pub memory_mb: u32,
    /// Time limit per call in milliseconds.
    pub timeout_ms: u32,
    /// Size cap of the plugin's key-value store, in KiB.
    pub kv_kb: u32,
    /// Whether calls may reuse a warm sandbox (`"reuse_instance": true`)
    /// instead of a fresh one each: faster, but whatever the plugin keeps in
    /// memory is seen by later callers. Off unless the plugin asks.
    pub reuse_instance: bool,
    /// Request headers the plugin reads credentials from
    /// (`"credential_headers"`), lower-case: never forwarded to the agent.
    pub credential_headers: Vec<String>,
    /// The most request body the plugin may see, in KiB (`"body_kb"`,
    /// default 64), when its manifest asks for the body (contract 0.3).
    pub body_kb: u32,
}

/// The `plugins` section: defaults that apply to every plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginDefaults {
    /// Reload plugins when their files change.
    #[serde(default)]
    pub watch: bool,
    /// Default memory cap per call, in MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// Default time limit per call, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// Default size cap of each plugin's key-value store, in KiB.
    #[serde(default = "default_kv_kb")]
    pub kv_kb: u32,
}

fn default_kv_kb() -> u32 {
    1024
}

fn default_memory_mb() -> u32 {
    32
}

fn default_timeout_ms() -> u32 {
    200
}

impl Default for PluginDefaults {
    fn default() -> Self {
        PluginDefaults {
            watch: false,
            memory_mb: default_memory_mb(),
            timeout_ms: default_timeout_ms(),
            kv_kb: default_kv_kb(),
        }
    }
}

/// Where the server keeps its state (accounts, plugin kv, compiled plugins):
/// `AGENTFLOW_DATA_DIR` resolved against the config file's folder, else
/// `data/` beside the config file.
pub fn data_dir(env: &Env, config_dir: &Path) -> PathBuf {
    match env
        .get("AGENTFLOW_DATA_DIR")
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
    {
        Some(dir) => config_dir.join(dir),
        None => config_dir.join("data"),
    }
}

/// Environment variables: the real environment over the `env` file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Env {
    from_file: HashMap<String, String>,
}

impl Env {
    /// An environment with only the real process variables.
    pub fn process_only() -> Self {
        Env::default()
    }

    /// An environment with extra variables, as if read from an `env` file.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Env {
            from_file: pairs.into_iter().collect(),
        }
    }

    /// The value of `name`: the real environment wins over the `env` file.
    pub fn get(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .or_else(|| self.from_file.get(name).cloned())
    }
}

/// Raw top-level shape; the polymorphic keys stay JSON and are parsed by hand
/// so errors can name the exact entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default, rename = "$schema")]
    _schema: Option<Value>,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    auth: Value,
    #[serde(default)]
    authorization: Value,
    #[serde(default)]
    plugins: Option<PluginDefaults>,
    #[serde(default)]
    cors: Value,
    #[serde(default)]
    upstream: Value,
    #[serde(default)]
    database: Value,
    #[serde(default)]
    trusted_proxies: Value,
    #[serde(default)]
    rate_limits: Value,
    #[serde(default)]
    tenancy: Value,
}

/// The object form of a plugin entry in `auth` or `authorization`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    #[serde(default)]
    method: Option<String>,
    path: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    config: Value,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    #[serde(default)]
    memory_mb: Option<u32>,
    #[serde(default)]
    timeout_ms: Option<u32>,
    #[serde(default)]
    kv_kb: Option<u32>,
    #[serde(default)]
    reuse_instance: bool,
    #[serde(default)]
    credential_headers: Vec<String>,
    #[serde(default)]
    body_kb: Option<u32>,
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let err = |key: &str, reason: String| ConfigError::new(&file, key, reason);
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("(file)", format!("cannot read: {e}")))?;
        let mut de = serde_json::Deserializer::from_str(&text);
        let raw: RawConfig = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| err(&shape_key(&e, ""), e.inner().to_string()))?;
        de.end().map_err(|e| err("(json)", e.to_string()))?;
        // Parsed above, so this parses too.
        let raw_json: Value = serde_json::from_str(&text).unwrap_or_default();
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let plugins = raw.plugins.unwrap_or_default();
        check_limits(&plugins.memory_mb, &plugins.timeout_ms, "plugins")
            .map_err(|(k, r)| err(&k, r))?;
        check_kv(plugins.kv_kb, "plugins").map_err(|(k, r)| err(&k, r))?;

        let env = match &raw.env {
            None => Env::default(),
            Some(name) => {
                let env_path = dir.join(name);
                let mut from_file = HashMap::new();
                let iter = dotenvy::from_path_iter(&env_path)
                    .map_err(|e| err("env", format!("cannot read {}: {e}", env_path.display())))?;
                for item in iter {
                    let (k, v) =
                        item.map_err(|e| err("env", format!("{}: {e}", env_path.display())))?;
                    from_file.insert(k, v);
                }
                Env { from_file }
            }
        };

        let agent = match raw.agent {
            None => None,
            Some(url) => Some(parse_agent_url(&url).map_err(|r| err("agent", r))?),
        };

        let ctx = Ctx {
            dir: &dir,
            defaults: &plugins,
        };
        let auth = match &raw.auth {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| ctx.auth_method(v, &format!("auth[{i}]")))
                .collect::<Result<_, _>>()
                .map_err(|(k, r)| err(&k, r))?,
            single => vec![
                ctx.auth_method(single, "auth")
                    .map_err(|(k, r)| err(&k, r))?,
            ],
        };
        let authorization = match &raw.authorization {
            Value::Null => None,
            v => Some(
                ctx.plugin(v, "authorization", None)
                    .map_err(|(k, r)| err(&k, r))?,
            ),
        };
        check_unique_names(&raw.auth, &auth, &raw.authorization, authorization.as_ref())
            .map_err(|(k, r)| err(&k, r))?;

        let cors =
            crate::cors::CorsPolicy::from_config(&raw.cors, &env).map_err(|(k, r)| err(&k, r))?;
        let upstream = upstream_settings(&raw.upstream, &env, &dir).map_err(|(k, r)| err(&k, r))?;
        let database = crate::store::DatabaseSettings::from_config(&raw.database, &env)
            .map_err(|(k, r)| err(&k, r))?;
        let trusted_proxies = crate::client_addr::TrustedProxies::from_config(&raw.trusted_proxies)
            .map_err(|(k, r)| err(&k, r))?;
        let rate_limits = crate::rate_limit::RateLimitConfig::from_config(&raw.rate_limits)
            .map_err(|(k, r)| err(&k, r))?;
        let tenancy = crate::tenancy::settings::parse(&raw.tenancy).map_err(|(k, r)| err(&k, r))?;
        if tenancy.is_some() && auth.is_empty() {
            return Err(err(
                "tenancy",
                "needs authentication: with \"auth\": null every caller is the same anonymous tenant".into(),
            ));
        }
        if tenancy.as_ref().is_some_and(|t| t.share_via_authorizer) && authorization.is_none() {
            return Err(err(
                "tenancy.share_via_authorizer",
                "needs an authorizer (`authorization`): it is the authorizer that decides what another tenant may use".into(),
            ));
        }

        Ok(Config {
            file: path.to_path_buf(),
            agent,
            env,
            auth,
            authorization,
            plugins,
            cors,
            upstream,
            database,
            trusted_proxies,
            rate_limits,
            tenancy,
            raw: raw_json,
        })
    }

    /// Whether `next` (this file read again) says exactly the same: same
    /// JSON, same `env` file contents.
    pub fn same_file(&self, next: &Config) -> bool {
        self.raw == next.raw && self.env == next.env
    }

    /// The keys `next` (this file reloaded) changes that the running server
    /// takes only at start ([`RESTART_KEYS`] and the contents of the `env`
    /// file), as key paths; empty when a reload can apply everything that
    /// changed. (`plugins.watch` is read at start too, but turning it off
    /// in the file is no reason to refuse the rest.)
    pub fn restart_only_changes(&self, next: &Config) -> Vec<String> {
        let mut changed: Vec<String> = RESTART_KEYS
            .iter()
            .filter(|k| self.raw.get(**k) != next.raw.get(**k))
            .map(|k| (*k).to_owned())
            .collect();
        if self.env != next.env && !changed.iter().any(|k| k == "env") {
            changed.push("env (the file's contents)".into());
        }
        changed
    }

    /// Every plugin the config names: the `auth` plugins, then the
    /// authorizer.
    pub fn plugins(&self) -> impl Iterator<Item = &PluginConfig> {
        self.auth
            .iter()
            .filter_map(|m| match m {
                AuthMethodConfig::Plugin(p) => Some(p),
                AuthMethodConfig::Jwt(_) | AuthMethodConfig::ApiKey => None,
            })
            .chain(self.authorization.iter())
    }

    /// The folder relative paths are resolved against.
    pub fn dir(&self) -> PathBuf {
        self.file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// The options of the first `jwt` auth method, if one is configured.
    pub fn jwt_options(&self) -> Option<&JwtOptions> {
        self.auth.iter().find_map(|m| match m {
            AuthMethodConfig::Jwt(o) => Some(o),
            AuthMethodConfig::ApiKey | AuthMethodConfig::Plugin(_) => None,
        })
    }
}

/// A key path and a reason, before the file name is attached.
type Mistake = (String, String);

struct Ctx<'a> {
    dir: &'a Path,
    defaults: &'a PluginDefaults,
}

impl Ctx<'_> {
    fn auth_method(&self, v: &Value, key: &str) -> Result<AuthMethodConfig, Mistake> {
        match v {
            Value::String(s) if s == "jwt" => Ok(AuthMethodConfig::Jwt(JwtOptions::default())),
            Value::String(s) if s == "api_key" => Ok(AuthMethodConfig::ApiKey),
            Value::String(s) => Err((
                key.to_owned(),
                format!(
                    "unknown auth method {s:?}; use \"jwt\", \"api_key\" or {{\"method\": \"custom\", \"path\": \"plugin.wasm\"}}"
                ),
            )),
            Value::Object(map) => match map.get("method").and_then(Value::as_str) {
                Some("jwt") => {
                    let mut rest = map.clone();
                    rest.remove("method");
                    let opts: JwtOptions = serde_json::from_value(Value::Object(rest))
                        .map_err(|e| (key.to_owned(), e.to_string()))?;
                    opts.check(key)?;
                    Ok(AuthMethodConfig::Jwt(opts))
                }
                Some("custom") => Ok(AuthMethodConfig::Plugin(self.plugin(
                    v,
                    key,
                    Some("custom"),
                )?)),
                Some(other) => Err((
                    format!("{key}.method"),
                    format!("unknown method {other:?}; use \"jwt\" or \"custom\""),
                )),
                None => Err((
                    format!("{key}.method"),
                    "missing; use \"jwt\" or \"custom\"".into(),
                )),
            },
            _ => Err((
                key.to_owned(),
                "must be \"jwt\", an object with \"method\", or a list of these".into(),
            )),
        }
    }

    fn plugin(&self, v: &Value, key: &str, method: Option<&str>) -> Result<PluginConfig, Mistake> {
        let raw: RawPlugin = match v {
            Value::String(path) => RawPlugin {
                method: None,
                path: path.clone(),
                name: None,
                config: Value::Null,
                secrets: Vec::new(),
                allowed_hosts: Vec::new(),
                memory_mb: None,
                timeout_ms: None,
                kv_kb: None,
                reuse_instance: false,
                credential_headers: Vec::new(),
                body_kb: None,
            },
            Value::Object(_) => serde_path_to_error::deserialize(v.clone())
                .map_err(|e| (shape_key(&e, key), e.inner().to_string()))?,
            _ => {
                return Err((
                    key.to_owned(),
                    "must be a path or an object with \"path\"".into(),
                ));
            }
        };
        if raw.method.is_some() && method.is_none() {
            return Err((format!("{key}.method"), "not allowed here".into()));
        }
        let path = self.dir.join(&raw.path);
        if !path.exists() {
            return Err((
                format!("{key}.path"),
                format!("file not found: {}", path.display()),
            ));
        }
        let name = match raw.name {
            Some(n) if !n.trim().is_empty() => n,
            Some(_) => return Err((format!("{key}.name"), "must not be empty".into())),
            None => path
                .file_stem()
                .map(|s| s.to_string_lossy().replace('_', "-"))
                .unwrap_or_else(|| "plugin".into()),
        };
        let memory_mb = raw.memory_mb.unwrap_or(self.defaults.memory_mb);
        let timeout_ms = raw.timeout_ms.unwrap_or(self.defaults.timeout_ms);
        check_limits(&memory_mb, &timeout_ms, key)?;
        let kv_kb = raw.kv_kb.unwrap_or(self.defaults.kv_kb);
        check_kv(kv_kb, key)?;
        let allowed_hosts = AllowList::parse(&raw.allowed_hosts)
            .map_err(|(i, r)| (format!("{key}.allowed_hosts[{i}]"), r))?;
        let credential_headers = raw
            .credential_headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                check_header_name(h).map_err(|r| (format!("{key}.credential_headers[{i}]"), r))
            })
            .collect::<Result<_, _>>()?;
        Ok(PluginConfig {
            name,
            path,
            config: raw.config,
            secrets: raw.secrets,
            allowed_hosts,
            memory_mb,
            timeout_ms,
            kv_kb,
            reuse_instance: raw.reuse_instance,
            credential_headers,
            body_kb: match raw.body_kb {
                None => 64,
                Some(kb) if kb <= 16 * 1024 => kb,
                Some(_) => {
                    return Err((
                        format!("{key}.body_kb"),
                        "must be at most 16384 (16 MiB)".into(),
                    ));
                }
            },
        })
    }
}

/// Refuses two plugin entries with one name: the name is a plugin's
/// identity (its key-value store, its log and status lines), so entries
/// sharing it would share one store and one size cap. Names given in
/// `name` and names taken from the file count alike, compared without
/// regard to case or surrounding spaces so lookalikes are refused too.
fn check_unique_names(
    raw_auth: &Value,
    auth: &[AuthMethodConfig],
    raw_authorization: &Value,
    authorization: Option<&PluginConfig>,
) -> Result<(), Mistake> {
    // The key of each plugin entry and its raw JSON (to tell whether the
    // name was given), in config order.
    let raw_entries: Vec<(String, &Value)> = match raw_auth {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("auth[{i}]"), v))
            .collect(),
        single => vec![("auth".to_owned(), single)],
    };
    let plugins = auth
        .iter()
        .zip(raw_entries)
        .filter_map(|(m, (key, raw))| match m {
            AuthMethodConfig::Plugin(p) => Some((key, raw, p)),
            AuthMethodConfig::Jwt(_) | AuthMethodConfig::ApiKey => None,
        });
    let plugins =
        plugins.chain(authorization.map(|p| ("authorization".to_owned(), raw_authorization, p)));
    let mut seen: Vec<(String, String)> = Vec::new();
    for (key, raw, plugin) in plugins {
        let folded = plugin.name.trim().to_lowercase();
        if let Some((_, first)) = seen.iter().find(|(name, _)| *name == folded) {
            let (at, from) = match raw.get("name") {
                Some(_) => (format!("{key}.name"), ""),
                None => (format!("{key}.path"), " (taken from the file name)"),
            };
            let reason = format!(
                "plugin name {:?}{from} duplicates `{first}`; two plugins with one name would share one key-value store: give each entry a distinct \"name\"",
                plugin.name
            );
            return Err((at, reason));
        }
        seen.push((folded, key));
    }
    Ok(())
}

/// The `upstream` section: which identity channels carry the caller to the
/// agent. Defaults: headers on; a signed token once configured; the body
/// merge on *unless* a token is configured. Without a token the merge is
/// what keeps a client from handing an agent that reads `config.user` a
/// forged identity; with one, the AgentFlow server reads the token and
/// discards body identity, so the merge is only cost.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// A gateway-signed JWT in `Authorization` (`upstream.token`).
    pub token: Option<UpstreamTokenConfig>,
    /// The `x-agentflow-*` identity headers (`upstream.headers`, default on).
    pub headers: bool,
    /// `config.user` / `config.user_id` merged into graph request bodies
    /// (`upstream.merge_body`; default: on without a token, off with one).
    pub merge_body: bool,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            token: None,
            headers: true,
            merge_body: true,
        }
    }
}

/// Algorithms the gateway signs upstream tokens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    Hs256,
    /// HMAC-SHA384 with a shared secret.
    Hs384,
    /// HMAC-SHA512 with a shared secret.
    Hs512,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (private key PEM; public half in the JWKS).
    Rs256,
    /// ECDSA P-256 with SHA-256 (PKCS#8 private key PEM; public half in the JWKS).
    Es256,
}

impl UpstreamAlgorithm {
    /// Whether the key is a shared secret (no public half to publish).
    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            UpstreamAlgorithm::Hs256 | UpstreamAlgorithm::Hs384 | UpstreamAlgorithm::Hs512
        )
    }
}

/// Key material of the upstream token.
#[derive(Clone)]
pub enum UpstreamKey {
    /// The HMAC secret (read from the variable `secret_env` names).
    Secret(Vec<u8>),
    /// The PEM text of the private key (read from `private_key_file`).
    PrivatePem(String),
}

/// Secrets never reach logs, not even through `{:?}`.
impl std::fmt::Debug for UpstreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamKey::Secret(s) => write!(f, "Secret(<{} bytes>)", s.len()),
            UpstreamKey::PrivatePem(_) => f.write_str("PrivatePem(<redacted>)"),
        }
    }
}

/// `upstream.token`: how the gateway signs the JWT the agent verifies.
#[derive(Debug, Clone)]
pub struct UpstreamTokenConfig {
    /// Signing algorithm (`algorithm`, default `HS256`).
    pub algorithm: UpstreamAlgorithm,
    /// The secret or private key.
    pub key: UpstreamKey,
    /// Lifetime of a token in seconds (`ttl_s`, 10..=3600, default 60).
    pub ttl_s: u64,
    /// `iss` claim; sent only when set (must equal the agent's `JWT_ISSUER`).
    pub issuer: Option<String>,
    /// `aud` claim; sent only when set (must equal the agent's `JWT_AUDIENCE`).
    pub audience: Option<String>,
}

/// Default lifetime of an upstream token: a minute.
pub const DEFAULT_UPSTREAM_TTL_S: u64 = 60;

/// Shortest HMAC secret accepted for the upstream token (RFC 7518 §3.2).
const MIN_UPSTREAM_SECRET: usize = 32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    #[serde(default)]
    token: Value,
    #[serde(default)]
    headers: Option<bool>,
    #[serde(default)]
    merge_body: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreamToken {
    #[serde(default)]
    algorithm: Option<String>,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default)]
    private_key_file: Option<String>,
    #[serde(default)]
    ttl_s: Option<u64>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    audience: Option<String>,
}

/// Parses and checks `upstream`; reads the token's key material so a bad
/// key stops the server at start, naming the key.
fn upstream_settings(v: &Value, env: &Env, dir: &Path) -> Result<UpstreamSettings, Mistake> {
    let raw: RawUpstream = match v {
        Value::Null => return Ok(UpstreamSettings::default()),
        Value::Object(_) => {
            serde_json::from_value(v.clone()).map_err(|e| ("upstream".to_owned(), e.to_string()))?
        }
        _ => {
            return Err((
                "upstream".into(),
                "must be an object like {\"token\": {...}, \"headers\": true}".into(),
            ));
        }
    };
    let token = match &raw.token {
        Value::Null => None,
        Value::Object(_) => Some(upstream_token(&raw.token, env, dir)?),
        _ => return Err(("upstream.token".into(), "must be an object like {\"algorithm\": \"HS256\", \"secret_env\": \"UPSTREAM_JWT_SECRET\"}".into())),
    };
    let defaults = UpstreamSettings::default();
    Ok(UpstreamSettings {
        headers: raw.headers.unwrap_or(defaults.headers),
        merge_body: raw.merge_body.unwrap_or(token.is_none()),
        token,
    })
}

fn upstream_token(v: &Value, env: &Env, dir: &Path) -> Result<UpstreamTokenConfig, Mistake> {
    let key = |k: &str| format!("upstream.token.{k}");
    let raw: RawUpstreamToken = serde_json::from_value(v.clone())
        .map_err(|e| ("upstream.token".to_owned(), e.to_string()))?;
    let algorithm = match raw.algorithm.as_deref().unwrap_or("HS256") {
        "HS256" => UpstreamAlgorithm::Hs256,
        "HS384" => UpstreamAlgorithm::Hs384,
        "HS512" => UpstreamAlgorithm::Hs512,
        "RS256" => UpstreamAlgorithm::Rs256,
        "ES256" => UpstreamAlgorithm::Es256,
        other => {
            return Err((
                key("algorithm"),
                format!("{other:?} is not supported; use HS256, HS384, HS512, RS256 or ES256"),
            ));
        }
    };
    let ttl_s = raw.ttl_s.unwrap_or(DEFAULT_UPSTREAM_TTL_S);
    if !(10..=3600).contains(&ttl_s) {
        return Err((key("ttl_s"), "must be between 10 and 3600 seconds".into()));
    }
    for (name, value) in [("issuer", &raw.issuer), ("audience", &raw.audience)] {
        if value.as_deref().is_some_and(|s| s.trim().is_empty()) {
            return Err((
                key(name),
                "must not be empty; leave it out to send no such claim".into(),
            ));
        }
    }
    let key_material = if algorithm.is_hmac() {
        if raw.private_key_file.is_some() {
            return Err((
                key("private_key_file"),
                "is for RS256/ES256; HMAC algorithms take `secret_env`".into(),
            ));
        }
        let var = raw.secret_env.as_deref().unwrap_or("UPSTREAM_JWT_SECRET");
        if var.trim().is_empty() {
            return Err((
                key("secret_env"),
                "must name an environment variable".into(),
            ));
        }
        let secret = env
            .get(var)
            .ok_or_else(|| (format!("env:{var}"), format!("not set; `upstream.token` signs with the secret in {var} (the agent's JWT_SECRET_KEY)")))?;
        if secret.len() < MIN_UPSTREAM_SECRET {
            return Err((
                format!("env:{var}"),
                format!(
                    "is {} bytes; HMAC secrets must be at least {MIN_UPSTREAM_SECRET} bytes (try `openssl rand -hex 32`)",
                    secret.len()
                ),
            ));
        }
        UpstreamKey::Secret(secret.into_bytes())
    } else {
        if raw.secret_env.is_some() {
            return Err((
                key("secret_env"),
                "is for HMAC algorithms; RS256/ES256 take `private_key_file`".into(),
            ));
        }
        let file = raw.private_key_file.as_deref().ok_or_else(|| {
            (
                key("private_key_file"),
                "missing; RS256/ES256 sign with a private key PEM file".into(),
            )
        })?;
        let path = dir.join(file);
        let pem = std::fs::read_to_string(&path).map_err(|e| {
            (
                key("private_key_file"),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        UpstreamKey::PrivatePem(pem)
    };
    let cfg = UpstreamTokenConfig {
        algorithm,
        key: key_material,
        ttl_s,
        issuer: raw.issuer,
        audience: raw.audience,
    };
    // Parse the key now: a PEM that cannot sign must stop the start, not the first request.
    crate::upstream_token::TokenIssuer::new(&cfg).map_err(|r| {
        (
            key(if algorithm.is_hmac() {
                "secret_env"
            } else {
                "private_key_file"
            }),
            r,
        )
    })?;
    Ok(cfg)
}

fn check_kv(kv_kb: u32, key: &str) -> Result<(), Mistake> {
    if !(1..=1_048_576).contains(&kv_kb) {
        return Err((
            format!("{key}.kv_kb"),
            "must be between 1 and 1048576 (1 GiB)".into(),
        ));
    }
    Ok(())
}

fn check_limits(memory_mb: &u32, timeout_ms: &u32, key: &str) -> Result<(), Mistake> {
    if !(1..=4096).contains(memory_mb) {
        return Err((
            format!("{key}.memory_mb"),
            "must be between 1 and 4096".into(),
        ));
    }
    if !(1..=60_000).contains(timeout_ms) {
        return Err((
            format!("{key}.timeout_ms"),
            "must be between 1 and 60000".into(),
        ));
    }
    Ok(())
}

/// A request header name, returned lower-case.
fn check_header_name(name: &str) -> Result<String, String> {
    http::HeaderName::from_bytes(name.trim().as_bytes())
        .map(|n| n.as_str().to_owned())
        .map_err(|_| {
            format!(
                "{name:?} is not a valid header name (letters, digits and -_!#$%&'*+.^`|~ only)"
            )
        })
}

fn parse_agent_url(url: &str) -> Result<String, String> {
    let trimmed = url.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| {
            format!("{url:?} must be an http:// or https:// base URL of the agent server")
        })?;
    if rest.is_empty()
        || rest.contains('?')
        || rest.contains('#')
        || reqwest::Url::parse(trimmed).is_err()
    {
        return Err(format!(
            "{url:?} must be a base URL like \"http://127.0.0.1:9000\""
        ));
    }
    Ok(trimmed.to_owned())
}

/// The key a shape error points at, below `under` (`""` for the file's
/// top level): the failing field's path, which for a typo is the misspelt
/// key itself (`plugins.memroy_mb`, `auth[1].secret`), so the error names
/// where to look rather than the section or `(top level)`.
fn shape_key(e: &serde_path_to_error::Error<serde_json::Error>, under: &str) -> String {
    if e.inner().is_syntax() || e.inner().is_eof() {
        return "(json)".into();
    }
    match (e.path().to_string().as_str(), under) {
        (".", "") => "(top level)".into(),
        (".", under) => under.to_owned(),
        (path, "") => path.to_owned(),
        (path, under) if path.starts_with('[') => format!("{under}{path}"),
        (path, under) => format!("{under}.{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.wasm"), b"not really").unwrap();
        let file = dir.path().join("agentflow.json");
        std::fs::write(&file, json).unwrap();
        Config::load(&file)
    }

    #[test]
    fn a_reload_names_the_keys_that_need_a_restart() {
        let running = load(r#"{"agent": "http://127.0.0.1:9000", "auth": "jwt"}"#).unwrap();
        let same = load(r#"{"auth": "jwt", "agent": "http://127.0.0.1:9000"}"#).unwrap();
        assert!(running.same_file(&same), "key order is not a change");
        let chain = load(
            r#"{"agent": "http://127.0.0.1:9000", "auth": ["jwt", "api_key"], "authorization": "p.wasm", "plugins": {"timeout_ms": 50}}"#,
        )
        .unwrap();
        assert!(!running.same_file(&chain));
        assert!(
            running.restart_only_changes(&chain).is_empty(),
            "auth, authorization and plugin defaults reload"
        );
        let moved = load(
            r#"{"agent": "http://127.0.0.1:9001", "auth": "jwt", "cors": {"origins": ["https://a.example"]}, "tenancy": {"owner": "user_id"}}"#,
        )
        .unwrap();
        assert_eq!(
            running.restart_only_changes(&moved),
            ["agent", "cors", "tenancy"]
        );
        let env_changed = load_with_env(
            r#"{"agent": "http://127.0.0.1:9000", "auth": "jwt", "env": ".env"}"#,
            "A=1\n",
        )
        .unwrap();
        let env_again = load_with_env(
            r#"{"agent": "http://127.0.0.1:9000", "auth": "jwt", "env": ".env"}"#,
            "A=2\n",
        )
        .unwrap();
        assert_eq!(
            env_changed.restart_only_changes(&env_again),
            ["env (the file's contents)"]
        );
    }

    #[test]
    fn accepts_every_auth_shape() {
        assert!(load(r#"{"auth": null}"#).unwrap().auth.is_empty());
        assert!(matches!(
            load(r#"{"auth": "jwt"}"#).unwrap().auth[0],
            AuthMethodConfig::Jwt(_)
        ));
        let c = load(
            r#"{"auth": ["jwt", {"method": "custom", "path": "p.wasm", "config": {"a": 1}}]}"#,
        )
        .unwrap();
        match &c.auth[1] {
            AuthMethodConfig::Plugin(p) => {
                assert_eq!(p.name, "p");
                assert_eq!(p.config["a"], 1);
                assert_eq!(p.timeout_ms, 200);
                assert!(
                    !p.reuse_instance,
                    "a fresh sandbox per call unless the entry opts in"
                );
            }
            other => panic!("expected plugin, got {other:?}"),
        }
    }

    #[test]
    fn reuse_instance_is_a_per_plugin_opt_in() {
        let c = load(r#"{"authorization": {"path": "p.wasm", "reuse_instance": true}}"#).unwrap();
        assert!(c.authorization.unwrap().reuse_instance);
        let e =
            load(r#"{"authorization": {"path": "p.wasm", "reuse_instance": "yes"}}"#).unwrap_err();
        assert_eq!(e.key, "authorization.reuse_instance");
        assert!(e.reason.contains("expected a boolean"), "{e}");
        let e = load(r#"{"plugins": {"reuse_instance": true}}"#).unwrap_err();
        assert_eq!(e.key, "plugins.reuse_instance");
        assert!(e.reason.contains("unknown field `reuse_instance`"), "{e}");
    }

    #[test]
    fn names_unknown_keys() {
        let e = load(r#"{"auht": "jwt"}"#).unwrap_err();
        assert_eq!(e.key, "auht");
        assert!(e.reason.contains("unknown field `auht`"), "{e}");
        let e = load(r#"{"auth": [{"method": "custom", "pth": "p.wasm"}]}"#).unwrap_err();
        assert_eq!(e.key, "auth[0].pth");
        assert!(e.reason.contains("pth"), "{e}");
    }

    /// A typo inside a plugin entry or the `plugins` defaults names the
    /// misspelt key itself, not the section or `(top level)`.
    #[test]
    fn typos_inside_plugin_entries_name_the_real_key() {
        let e =
            load(r#"{"auth": ["jwt", {"method": "custom", "path": "p.wasm", "memroy_mb": 8}]}"#)
                .unwrap_err();
        assert_eq!(e.key, "auth[1].memroy_mb");
        assert!(e.reason.contains("unknown field `memroy_mb`"), "{e}");
        let e = load(r#"{"authorization": {"path": "p.wasm", "secrets": ["A", 7]}}"#).unwrap_err();
        assert_eq!(e.key, "authorization.secrets[1]");
        let e = load(r#"{"plugins": {"memory_mb": 8, "timout_ms": 5}}"#).unwrap_err();
        assert_eq!(e.key, "plugins.timout_ms");
        assert!(e.to_string().contains("plugins.timout_ms"), "{e}");
        // Not JSON at all, or trailing text: the file, not a key.
        assert_eq!(load(r#"{"auth": "#).unwrap_err().key, "(json)");
        assert_eq!(load(r#"{} {}"#).unwrap_err().key, "(json)");
        assert_eq!(load(r#""config""#).unwrap_err().key, "(top level)");
    }

    #[test]
    fn names_missing_plugin_files() {
        let e = load(r#"{"authorization": {"path": "missing.wasm"}}"#).unwrap_err();
        assert_eq!(e.key, "authorization.path");
        assert!(e.reason.contains("file not found"), "{e}");
    }

    #[test]
    fn rejects_unknown_methods_and_big_leeway() {
        assert_eq!(load(r#"{"auth": "oauth"}"#).unwrap_err().key, "auth");
        assert_eq!(
            load(r#"{"auth": {"method": "saml"}}"#).unwrap_err().key,
            "auth.method"
        );
        assert_eq!(
            load(r#"{"auth": {"method": "jwt", "leeway_s": 600}}"#)
                .unwrap_err()
                .key,
            "auth.leeway_s"
        );
    }

    #[test]
    fn rejects_bad_agent_urls_and_hosts() {
        assert_eq!(
            load(r#"{"agent": "graph.react:app"}"#).unwrap_err().key,
            "agent"
        );
        assert_eq!(
            load(r#"{"agent": "http://127.0.0.1:9000/"}"#)
                .unwrap()
                .agent
                .unwrap(),
            "http://127.0.0.1:9000"
        );
        let e = load(
            r#"{"auth": {"method": "custom", "path": "p.wasm", "allowed_hosts": ["http://x"]}}"#,
        )
        .unwrap_err();
        assert_eq!(e.key, "auth.allowed_hosts[0]");
    }

    fn load_with_env(json: &str, env: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".env"), env).unwrap();
        std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
        let file = dir.path().join("agentflow.json");
        std::fs::write(&file, json).unwrap();
        Config::load(&file)
    }

    const UP_SECRET: &str = "UPSTREAM_TEST_ONLY_SECRET=0123456789abcdef0123456789abcdef\n";

    #[test]
    fn upstream_defaults_fit_the_agentflow_server() {
        let c = load(r#"{}"#).unwrap();
        assert!(c.upstream.token.is_none());
        assert!(c.upstream.headers, "headers on by default");
        assert!(
            c.upstream.merge_body,
            "without a token the body merge is on: nothing else stops a forged body identity"
        );
        let c = load_with_env(r#"{"env": ".env", "upstream": {"token": {"secret_env": "UPSTREAM_TEST_ONLY_SECRET"}}}"#, UP_SECRET).unwrap();
        assert!(
            !c.upstream.merge_body,
            "with a token the merge is off: the AgentFlow server reads the token"
        );
        let c = load_with_env(
            r#"{"env": ".env", "upstream": {"token": {"secret_env": "UPSTREAM_TEST_ONLY_SECRET", "audience": "api"}, "headers": false, "merge_body": true}}"#,
            UP_SECRET,
        )
        .unwrap();
        let t = c.upstream.token.unwrap();
        assert_eq!(
            (t.algorithm, t.ttl_s, t.audience.as_deref(), t.issuer),
            (UpstreamAlgorithm::Hs256, 60, Some("api"), None)
        );
        assert!(
            !format!("{:?}", t.key).contains("0123456789abcdef"),
            "the secret never shows in Debug"
        );
        assert!(!c.upstream.headers && c.upstream.merge_body);
    }

    #[test]
    fn upstream_mistakes_name_the_key() {
        let cases = [
            (r#"{"upstream": {"tokn": {}}}"#, "upstream"),
            (r#"{"upstream": true}"#, "upstream"),
            (r#"{"upstream": {"token": "HS256"}}"#, "upstream.token"),
            (r#"{"upstream": {"token": {"ttl": 5}}}"#, "upstream.token"),
            (
                r#"{"upstream": {"token": {"algorithm": "none"}}}"#,
                "upstream.token.algorithm",
            ),
            (
                r#"{"env": ".env", "upstream": {"token": {"secret_env": "UPSTREAM_TEST_ONLY_SECRET", "ttl_s": 9}}}"#,
                "upstream.token.ttl_s",
            ),
            (
                r#"{"env": ".env", "upstream": {"token": {"secret_env": "UPSTREAM_TEST_ONLY_SECRET", "ttl_s": 3601}}}"#,
                "upstream.token.ttl_s",
            ),
            (
                r#"{"env": ".env", "upstream": {"token": {"secret_env": "UPSTREAM_TEST_ONLY_SECRET", "audience": " "}}}"#,
                "upstream.token.audience",
            ),
            (
                r#"{"upstream": {"token": {"secret_env": "UPSTREAM_TEST_ONLY_UNSET"}}}"#,
                "env:UPSTREAM_TEST_ONLY_UNSET",
            ),
            (
                r#"{"env": ".env", "upstream": {"token": {"secret_env": "UPSTREAM_TEST_ONLY_SHORT"}}}"#,
                "env:UPSTREAM_TEST_ONLY_SHORT",
            ),
            (
                r#"{"upstream": {"token": {"private_key_file": "key.pem"}}}"#,
                "upstream.token.private_key_file",
            ),
            (
                r#"{"upstream": {"token": {"algorithm": "RS256"}}}"#,
                "upstream.token.private_key_file",
            ),
            (
                r#"{"upstream": {"token": {"algorithm": "RS256", "private_key_file": "missing.pem"}}}"#,
                "upstream.token.private_key_file",
            ),
            (
                r#"{"upstream": {"token": {"algorithm": "RS256", "private_key_file": "key.pem"}}}"#,
                "upstream.token.private_key_file",
            ),
            (
                r#"{"upstream": {"token": {"algorithm": "ES256", "secret_env": "X", "private_key_file": "key.pem"}}}"#,
                "upstream.token.secret_env",
            ),
        ];
        for (json, key) in cases {
            let e = load_with_env(
                json,
                &format!("{UP_SECRET}UPSTREAM_TEST_ONLY_SHORT=short\n"),
            )
            .unwrap_err();
            assert_eq!(e.key, key, "{json}: {e}");
        }
    }

    #[test]
    fn credential_headers_are_checked_and_lower_cased() {
        let c = load(r#"{"auth": {"method": "custom", "path": "p.wasm", "credential_headers": ["X-Token", "x_session"]}}"#).unwrap();
        match &c.auth[0] {
            AuthMethodConfig::Plugin(p) => {
                assert_eq!(p.credential_headers, ["x-token", "x_session"])
            }
            other => panic!("expected plugin, got {other:?}"),
        }
        let e = load(r#"{"authorization": {"path": "p.wasm", "credential_headers": ["x-ok", "bad header"]}}"#).unwrap_err();
        assert_eq!(e.key, "authorization.credential_headers[1]");
        assert!(e.reason.contains("not a valid header name"), "{e}");
        let e = load(
            r#"{"auth": [{"method": "custom", "path": "p.wasm", "credential_headers": [""]}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.key, "auth[0].credential_headers[0]");
    }

    #[test]
    fn refuses_two_plugins_with_one_name() {
        let e = load(r#"{"auth": [{"method": "custom", "path": "p.wasm", "name": "keys"}, "jwt", {"method": "custom", "path": "p.wasm", "name": "keys"}]}"#)
            .unwrap_err();
        assert_eq!(e.key, "auth[2].name");
        assert!(
            e.reason.contains("duplicates `auth[0]`") && e.reason.contains("\"keys\""),
            "{e}"
        );

        // The name taken from the file counts too, across auth and authorization.
        let e =
            load(r#"{"auth": {"method": "custom", "path": "p.wasm"}, "authorization": "p.wasm"}"#)
                .unwrap_err();
        assert_eq!(e.key, "authorization.path");
        assert!(
            e.reason.contains("duplicates `auth`") && e.reason.contains("file name"),
            "{e}"
        );

        let e = load(r#"{"auth": [{"method": "custom", "path": "p.wasm", "name": "p"}, {"method": "custom", "path": "p.wasm", "name": "other"}], "authorization": {"path": "p.wasm", "name": " P "}}"#)
            .unwrap_err();
        assert_eq!(e.key, "authorization.name");
        assert!(e.reason.contains("duplicates `auth[0]`"), "{e}");

        let ok = load(
            r#"{"auth": [{"method": "custom", "path": "p.wasm", "name": "a"}, {"method": "custom", "path": "p.wasm", "name": "b"}], "authorization": "p.wasm"}"#,
        );
        assert!(ok.is_ok(), "distinct names load: {:?}", ok.err());
    }

    #[test]
    fn env_file_is_read_relative_to_config_and_real_env_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "AGENTFLOW_TEST_ONLY_A=file\nPATH=from-file\n",
        )
        .unwrap();
        let file = dir.path().join("agentflow.json");
        std::fs::write(&file, r#"{"env": ".env"}"#).unwrap();
        let c = Config::load(&file).unwrap();
        assert_eq!(c.env.get("AGENTFLOW_TEST_ONLY_A").as_deref(), Some("file"));
        assert_ne!(c.env.get("PATH").as_deref(), Some("from-file"));
    }
}
