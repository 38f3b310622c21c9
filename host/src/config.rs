//! `agentflow.json` and its `.env`: parsed, resolved against the config
//! file's folder and validated, with errors that name the key and the reason.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

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
        ConfigError { file: file.into(), key: key.into(), reason: reason.into() }
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
}

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
#[derive(Debug, Clone, Default, Deserialize)]
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
                return Err((at("discovery"), "use either \"jwks_url\" or \"discovery\", not both".into()));
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
                return Err((at(name), "only applies with \"jwks_url\" or \"discovery\"".into()));
            }
            if !range.contains(&v) {
                return Err((at(name), format!("must be between {} and {}", range.start(), range.end())));
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
        "http" => Err(format!("{url:?}: keys must come over https (plain http is allowed for 127.0.0.1 / localhost only)")),
        other => Err(format!("{url:?}: scheme {other:?} is not supported; use https://")),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else { return false };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A plugin named in the config, with its limits resolved.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// Short name used in logs and errors (`name`, else the file stem).
    pub name: String,
    /// Absolute path of the `.wasm` file.
    pub path: PathBuf,
    /// The plugin's own `config` value, handed to it as JSON.
    pub config: Value,
    /// Names of secrets the plugin may read.
    pub secrets: Vec<String>,
    /// `host:port` entries the plugin may send HTTP requests to.
    pub allowed_hosts: Vec<String>,
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
    match env.get("AGENTFLOW_DATA_DIR").map(|d| d.trim().to_owned()).filter(|d| !d.is_empty()) {
        Some(dir) => config_dir.join(dir),
        None => config_dir.join("data"),
    }
}

/// Environment variables: the real environment over the `env` file.
#[derive(Debug, Clone, Default)]
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
        Env { from_file: pairs.into_iter().collect() }
    }

    /// The value of `name`: the real environment wins over the `env` file.
    pub fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().or_else(|| self.from_file.get(name).cloned())
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
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let err = |key: &str, reason: String| ConfigError::new(&file, key, reason);
        let text = std::fs::read_to_string(path).map_err(|e| err("(file)", format!("cannot read: {e}")))?;
        let raw: RawConfig = serde_json::from_str(&text).map_err(|e| err(top_level_key(&e), e.to_string()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        let plugins = raw.plugins.unwrap_or_default();
        check_limits(&plugins.memory_mb, &plugins.timeout_ms, "plugins").map_err(|(k, r)| err(&k, r))?;
        check_kv(plugins.kv_kb, "plugins").map_err(|(k, r)| err(&k, r))?;

        let env = match &raw.env {
            None => Env::default(),
            Some(name) => {
                let env_path = dir.join(name);
                let mut from_file = HashMap::new();
                let iter = dotenvy::from_path_iter(&env_path)
                    .map_err(|e| err("env", format!("cannot read {}: {e}", env_path.display())))?;
                for item in iter {
                    let (k, v) = item.map_err(|e| err("env", format!("{}: {e}", env_path.display())))?;
                    from_file.insert(k, v);
                }
                Env { from_file }
            }
        };

        let agent = match raw.agent {
            None => None,
            Some(url) => Some(parse_agent_url(&url).map_err(|r| err("agent", r))?),
        };

        let ctx = Ctx { dir: &dir, defaults: &plugins };
        let auth = match &raw.auth {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| ctx.auth_method(v, &format!("auth[{i}]")))
                .collect::<Result<_, _>>()
                .map_err(|(k, r)| err(&k, r))?,
            single => vec![ctx.auth_method(single, "auth").map_err(|(k, r)| err(&k, r))?],
        };
        let authorization = match &raw.authorization {
            Value::Null => None,
            v => Some(ctx.plugin(v, "authorization", None).map_err(|(k, r)| err(&k, r))?),
        };

        Ok(Config { file: path.to_path_buf(), agent, env, auth, authorization, plugins })
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
        self.file.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
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
                format!("unknown auth method {s:?}; use \"jwt\", \"api_key\" or {{\"method\": \"custom\", \"path\": \"plugin.wasm\"}}"),
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
                Some("custom") => Ok(AuthMethodConfig::Plugin(self.plugin(v, key, Some("custom"))?)),
                Some(other) => Err((format!("{key}.method"), format!("unknown method {other:?}; use \"jwt\" or \"custom\""))),
                None => Err((format!("{key}.method"), "missing; use \"jwt\" or \"custom\"".into())),
            },
            _ => Err((key.to_owned(), "must be \"jwt\", an object with \"method\", or a list of these".into())),
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
            },
            Value::Object(_) => serde_json::from_value(v.clone()).map_err(|e| (key.to_owned(), e.to_string()))?,
            _ => return Err((key.to_owned(), "must be a path or an object with \"path\"".into())),
        };
        if raw.method.is_some() && method.is_none() {
            return Err((format!("{key}.method"), "not allowed here".into()));
        }
        let path = self.dir.join(&raw.path);
        if !path.exists() {
            return Err((format!("{key}.path"), format!("file not found: {}", path.display())));
        }
        let name = match raw.name {
            Some(n) if !n.trim().is_empty() => n,
            Some(_) => return Err((format!("{key}.name"), "must not be empty".into())),
            None => path.file_stem().map(|s| s.to_string_lossy().replace('_', "-")).unwrap_or_else(|| "plugin".into()),
        };
        let memory_mb = raw.memory_mb.unwrap_or(self.defaults.memory_mb);
        let timeout_ms = raw.timeout_ms.unwrap_or(self.defaults.timeout_ms);
        check_limits(&memory_mb, &timeout_ms, key)?;
        let kv_kb = raw.kv_kb.unwrap_or(self.defaults.kv_kb);
        check_kv(kv_kb, key)?;
        for (i, host) in raw.allowed_hosts.iter().enumerate() {
            check_allowed_host(host).map_err(|r| (format!("{key}.allowed_hosts[{i}]"), r))?;
        }
        Ok(PluginConfig {
            name,
            path,
            config: raw.config,
            secrets: raw.secrets,
            allowed_hosts: raw.allowed_hosts,
            memory_mb,
            timeout_ms,
            kv_kb,
            reuse_instance: raw.reuse_instance,
        })
    }
}

fn check_kv(kv_kb: u32, key: &str) -> Result<(), Mistake> {
    if !(1..=1_048_576).contains(&kv_kb) {
        return Err((format!("{key}.kv_kb"), "must be between 1 and 1048576 (1 GiB)".into()));
    }
    Ok(())
}

fn check_limits(memory_mb: &u32, timeout_ms: &u32, key: &str) -> Result<(), Mistake> {
    if !(1..=4096).contains(memory_mb) {
        return Err((format!("{key}.memory_mb"), "must be between 1 and 4096".into()));
    }
    if !(1..=60_000).contains(timeout_ms) {
        return Err((format!("{key}.timeout_ms"), "must be between 1 and 60000".into()));
    }
    Ok(())
}

/// `host:port`, with no scheme or path: the unit the outbound allow-list
/// compares.
fn check_allowed_host(entry: &str) -> Result<(), String> {
    let hint = "write it as host:port, e.g. \"127.0.0.1:9100\" or \"auth.example.com:443\"";
    if entry.contains("://") || entry.contains('/') {
        return Err(format!("{entry:?} is not host:port ({hint})"));
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!("{entry:?} is not host:port ({hint})")),
    }
}

fn parse_agent_url(url: &str) -> Result<String, String> {
    let trimmed = url.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} must be an http:// or https:// base URL of the agent server"))?;
    if rest.is_empty() || rest.contains('?') || rest.contains('#') {
        return Err(format!("{url:?} must be a base URL like \"http://127.0.0.1:9000\""));
    }
    Ok(trimmed.to_owned())
}

/// serde_json reports unknown top-level fields by message only; recover the
/// field name for the key path where we can.
fn top_level_key(e: &serde_json::Error) -> &'static str {
    if e.is_syntax() || e.is_eof() { "(json)" } else { "(top level)" }
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
    fn accepts_every_auth_shape() {
        assert!(load(r#"{"auth": null}"#).unwrap().auth.is_empty());
        assert!(matches!(load(r#"{"auth": "jwt"}"#).unwrap().auth[0], AuthMethodConfig::Jwt(_)));
        let c = load(r#"{"auth": ["jwt", {"method": "custom", "path": "p.wasm", "config": {"a": 1}}]}"#).unwrap();
        match &c.auth[1] {
            AuthMethodConfig::Plugin(p) => {
                assert_eq!(p.name, "p");
                assert_eq!(p.config["a"], 1);
                assert_eq!(p.timeout_ms, 200);
                assert!(!p.reuse_instance, "a fresh sandbox per call unless the entry opts in");
            }
            other => panic!("expected plugin, got {other:?}"),
        }
    }

    #[test]
    fn reuse_instance_is_a_per_plugin_opt_in() {
        let c = load(r#"{"authorization": {"path": "p.wasm", "reuse_instance": true}}"#).unwrap();
        assert!(c.authorization.unwrap().reuse_instance);
        let e = load(r#"{"authorization": {"path": "p.wasm", "reuse_instance": "yes"}}"#).unwrap_err();
        assert_eq!(e.key, "authorization");
        assert!(e.reason.contains("expected a boolean"), "{e}");
        let e = load(r#"{"plugins": {"reuse_instance": true}}"#).unwrap_err();
        assert!(e.reason.contains("unknown field `reuse_instance`"), "{e}");
    }

    #[test]
    fn names_unknown_keys() {
        let e = load(r#"{"auht": "jwt"}"#).unwrap_err();
        assert!(e.reason.contains("unknown field `auht`"), "{e}");
        let e = load(r#"{"auth": [{"method": "custom", "pth": "p.wasm"}]}"#).unwrap_err();
        assert_eq!(e.key, "auth[0]");
        assert!(e.reason.contains("pth"), "{e}");
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
        assert_eq!(load(r#"{"auth": {"method": "saml"}}"#).unwrap_err().key, "auth.method");
        assert_eq!(load(r#"{"auth": {"method": "jwt", "leeway_s": 600}}"#).unwrap_err().key, "auth.leeway_s");
    }

    #[test]
    fn rejects_bad_agent_urls_and_hosts() {
        assert_eq!(load(r#"{"agent": "graph.react:app"}"#).unwrap_err().key, "agent");
        assert_eq!(load(r#"{"agent": "http://127.0.0.1:9000/"}"#).unwrap().agent.unwrap(), "http://127.0.0.1:9000");
        let e = load(r#"{"auth": {"method": "custom", "path": "p.wasm", "allowed_hosts": ["http://x"]}}"#).unwrap_err();
        assert_eq!(e.key, "auth.allowed_hosts[0]");
    }

    #[test]
    fn env_file_is_read_relative_to_config_and_real_env_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".env"), "AGENTFLOW_TEST_ONLY_A=file\nPATH=from-file\n").unwrap();
        let file = dir.path().join("agentflow.json");
        std::fs::write(&file, r#"{"env": ".env"}"#).unwrap();
        let c = Config::load(&file).unwrap();
        assert_eq!(c.env.get("AGENTFLOW_TEST_ONLY_A").as_deref(), Some("file"));
        assert_ne!(c.env.get("PATH").as_deref(), Some("from-file"));
    }
}
