//! Where the PostgreSQL store is and how it is used: the `database` section
//! of agentflow.json under the `AGENTFLOW_DATABASE_*` variables, validated
//! with errors naming the key. Without a URL the server keeps sled.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::config::Env;

/// Settings of the PostgreSQL store (see the README's deployment section).
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseSettings {
    /// `AGENTFLOW_DATABASE_URL` / `database.url`: `postgres://user:pass@host:port/db`.
    pub url: String,
    /// `AGENTFLOW_DATABASE_POOL_SIZE` / `database.pool_size`: connections
    /// per instance (default 16).
    pub pool_size: usize,
    /// `database.connect_timeout_ms`: how long opening one connection may take
    /// (default 3000).
    pub connect_timeout: Duration,
    /// `database.acquire_timeout_ms`: how long a request waits for a free
    /// connection before it gets 503 `store_unavailable` (default 2000).
    pub acquire_timeout: Duration,
    /// `database.statement_timeout_ms`: how long one store operation may
    /// take before it gets 503 `store_unavailable` (default 5000).
    pub statement_timeout: Duration,
    /// `AGENTFLOW_DATABASE_CACHE_TTL_MS` / `database.cache_ttl_ms`: the
    /// longest a cached user, login or API key is trusted when an
    /// invalidation was missed (default 5000; 0 turns the cache off).
    pub cache_ttl: Duration,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &mask_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("cache_ttl", &self.cache_ttl)
            .finish()
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    pool_size: Option<u64>,
    #[serde(default)]
    connect_timeout_ms: Option<u64>,
    #[serde(default)]
    acquire_timeout_ms: Option<u64>,
    #[serde(default)]
    statement_timeout_ms: Option<u64>,
    #[serde(default)]
    cache_ttl_ms: Option<u64>,
}

/// A mistake in the database settings: `(key, reason)`.
pub type SettingMistake = (String, String);

impl DatabaseSettings {
    /// Settings from the `database` value of agentflow.json (`Null` if
    /// absent) under the environment; `None` when no URL is set (sled).
    pub fn from_config(raw: &Value, env: &Env) -> Result<Option<Self>, SettingMistake> {
        let raw: RawDatabase = match raw {
            Value::Null => RawDatabase::default(),
            v => serde_json::from_value(v.clone())
                .map_err(|e| ("database".to_string(), e.to_string()))?,
        };
        let env_text = |name: &str| {
            env.get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let (url_key, url) = match (env_text("AGENTFLOW_DATABASE_URL"), raw.url) {
            (Some(url), _) => ("env:AGENTFLOW_DATABASE_URL", url),
            (None, Some(url)) => ("database.url", url),
            (None, None) => return Ok(None),
        };
        check_url(&url).map_err(|r| (url_key.to_string(), r))?;
        let env_number = |name: &'static str| -> Result<Option<u64>, SettingMistake> {
            match env_text(name) {
                None => Ok(None),
                Some(v) => v.parse().map(Some).map_err(|_| {
                    (
                        format!("env:{name}"),
                        format!("{v:?} is not a whole number"),
                    )
                }),
            }
        };
        let pool_size = env_number("AGENTFLOW_DATABASE_POOL_SIZE")?
            .map(|n| (n, "env:AGENTFLOW_DATABASE_POOL_SIZE"))
            .or(raw.pool_size.map(|n| (n, "database.pool_size")));
        let pool_size = match pool_size {
            None => 16,
            Some((n, _)) if (1..=1024).contains(&n) => n as usize,
            Some((n, key)) => {
                return Err((key.to_string(), format!("{n} is not between 1 and 1024")));
            }
        };
        let ms = |value: Option<u64>, key: &str, default: u64, min: u64| {
            let v = value.unwrap_or(default);
            if (min..=600_000).contains(&v) {
                Ok(Duration::from_millis(v))
            } else {
                Err((
                    key.to_string(),
                    format!("{v} is not between {min} and 600000 milliseconds"),
                ))
            }
        };
        let cache_ttl = env_number("AGENTFLOW_DATABASE_CACHE_TTL_MS")?
            .map(|v| (v, "env:AGENTFLOW_DATABASE_CACHE_TTL_MS"))
            .unwrap_or((raw.cache_ttl_ms.unwrap_or(5000), "database.cache_ttl_ms"));
        Ok(Some(DatabaseSettings {
            url,
            pool_size,
            connect_timeout: ms(
                raw.connect_timeout_ms,
                "database.connect_timeout_ms",
                3000,
                1,
            )?,
            acquire_timeout: ms(
                raw.acquire_timeout_ms,
                "database.acquire_timeout_ms",
                2000,
                1,
            )?,
            statement_timeout: ms(
                raw.statement_timeout_ms,
                "database.statement_timeout_ms",
                5000,
                1,
            )?,
            cache_ttl: ms(Some(cache_ttl.0), cache_ttl.1, 5000, 0)?,
        }))
    }

    /// Settings for `url` (checked) with every other default (`store migrate`).
    pub fn from_url(url: &str) -> Result<DatabaseSettings, String> {
        check_url(url)?;
        Ok(Self::for_url(url))
    }

    /// Settings for `url` with every default (tests).
    pub fn for_url(url: &str) -> DatabaseSettings {
        DatabaseSettings {
            url: url.to_string(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(3),
            acquire_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(5),
        }
    }

    /// The URL with its password replaced by `***`, for messages and logs.
    pub fn masked_url(&self) -> String {
        mask_url(&self.url)
    }
}

/// Refuses anything but a `postgres://` / `postgresql://` URL the driver can parse.
fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!(
            "{:?} is not a PostgreSQL URL; use postgres://user:password@host:5432/database",
            mask_url(url)
        ));
    }
    url.parse::<tokio_postgres::Config>()
        .map(|_| ())
        .map_err(|e| format!("{}: {e}", mask_url(url)))
}

/// `url` with the password of its user part and any `password=` parameter
/// replaced by `***`.
pub fn mask_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                out.replace_range(start..rest_start + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let masked: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_string(),
            })
            .collect();
        out = format!("{base}{}", masked.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords() {
        assert_eq!(
            mask_url("postgres://af:s3cret@db:5432/af"),
            "postgres://af:***@db:5432/af"
        );
        assert_eq!(mask_url("postgres://af@db/af"), "postgres://af@db/af");
        assert_eq!(
            mask_url("postgres://db/af?user=x&password=p@ss&sslmode=disable"),
            "postgres://db/af?user=x&password=***&sslmode=disable"
        );
        assert_eq!(mask_url("postgres://a:b:c@h"), "postgres://a:***@h");
    }

    #[test]
    fn env_wins_and_mistakes_name_the_key() {
        let env = Env::from_pairs([(
            "AGENTFLOW_DATABASE_URL".into(),
            "postgres://u:pw@h/db".into(),
        )]);
        let json = serde_json::json!({"url": "postgres://other/db", "pool_size": 4});
        let s = DatabaseSettings::from_config(&json, &env).unwrap().unwrap();
        assert_eq!((s.url.as_str(), s.pool_size), ("postgres://u:pw@h/db", 4));
        assert!(!format!("{s:?}").contains("pw"));
        let none = DatabaseSettings::from_config(&Value::Null, &Env::default()).unwrap();
        if std::env::var_os("AGENTFLOW_DATABASE_URL").is_none() {
            assert!(none.is_none());
            let bad = serde_json::json!({"url": "mysql://x:secret@h/db"});
            let (key, reason) = DatabaseSettings::from_config(&bad, &Env::default()).unwrap_err();
            assert_eq!(key, "database.url");
            assert!(!reason.contains("secret"), "{reason}");
            let bad = serde_json::json!({"url": "postgres://h/db", "pool_size": 0});
            let (key, _) = DatabaseSettings::from_config(&bad, &Env::default()).unwrap_err();
            assert_eq!(key, "database.pool_size");
            let bad = serde_json::json!({"url": "postgres://h/db", "pool": 3});
            let (key, reason) = DatabaseSettings::from_config(&bad, &Env::default()).unwrap_err();
            assert_eq!(key, "database");
            assert!(reason.contains("pool"), "{reason}");
        }
    }
}
