//! The account system's settings: `AGENTFLOW_*` variables from the
//! environment or the `env` file, validated with errors naming the variable.

mod audit;
mod server;

use std::path::{Path, PathBuf};

pub use audit::AuditSettings;
pub use server::ServerSettings;

use crate::config::Env;
use crate::store::{LockoutPolicy, LoginPolicy};

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("`env:{name}`: {reason}")]
pub struct SettingError {
    /// The variable.
    pub name: &'static str,
    /// Why.
    pub reason: String,
}

/// Account-system settings (see the README's settings table).
#[derive(Debug, Clone)]
pub struct AccountSettings {
    /// `AGENTFLOW_AUTO_LOGIN`: `GET /v1/auto_login` hands out a superuser token.
    pub auto_login: bool,
    /// `AGENTFLOW_SUPERUSER`: created (or its password updated) at start.
    pub superuser: Option<String>,
    /// `AGENTFLOW_SUPERUSER_PASSWORD`.
    pub superuser_password: Option<String>,
    /// `AGENTFLOW_SECRET_KEY`: Fernet key for values encrypted at rest.
    pub secret_key: Option<String>,
    /// `AGENTFLOW_SECRET_KEY_PREVIOUS`: still decrypts during a rotation.
    pub secret_key_previous: Option<String>,
    /// `AGENTFLOW_NEW_USER_IS_ACTIVE`: new users may log in before activation.
    pub new_user_is_active: bool,
    /// `AGENTFLOW_DATA_DIR`: where the database lives (relative to the config file).
    pub data_dir: PathBuf,
    /// `AGENTFLOW_ENABLE_SUPERUSER_CLI`: allows `agentflow superuser`.
    pub enable_superuser_cli: bool,
    /// `AGENTFLOW_ACCESS_TOKEN_EXPIRE_SECONDS`: access token lifetime (default 3600).
    pub access_token_ttl: u64,
    /// `AGENTFLOW_REFRESH_TOKEN_EXPIRE_SECONDS`: refresh token lifetime (default 7 days).
    pub refresh_token_ttl: u64,
    /// Login throttling and lockout (`AGENTFLOW_LOGIN_*`, `AGENTFLOW_PASSWORD_HASH_CONCURRENCY`).
    pub login: LoginSettings,
}

impl AccountSettings {
    /// Reads the settings; relative paths resolve against `config_dir`.
    pub fn from_env(env: &Env, config_dir: &Path) -> Result<Self, SettingError> {
        let text = |name: &str| {
            env.get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let settings = AccountSettings {
            auto_login: flag(env, "AGENTFLOW_AUTO_LOGIN", false)?,
            superuser: text("AGENTFLOW_SUPERUSER"),
            superuser_password: env
                .get("AGENTFLOW_SUPERUSER_PASSWORD")
                .filter(|p| !p.is_empty()),
            secret_key: text("AGENTFLOW_SECRET_KEY"),
            secret_key_previous: text("AGENTFLOW_SECRET_KEY_PREVIOUS"),
            new_user_is_active: flag(env, "AGENTFLOW_NEW_USER_IS_ACTIVE", false)?,
            data_dir: crate::config::data_dir(env, config_dir),
            enable_superuser_cli: flag(env, "AGENTFLOW_ENABLE_SUPERUSER_CLI", true)?,
            access_token_ttl: seconds(env, "AGENTFLOW_ACCESS_TOKEN_EXPIRE_SECONDS", 3600)?,
            refresh_token_ttl: seconds(env, "AGENTFLOW_REFRESH_TOKEN_EXPIRE_SECONDS", 7 * 86_400)?,
            login: LoginSettings::from_env(env)?,
        };
        if settings.superuser.is_some() != settings.superuser_password.is_some() {
            return Err(SettingError {
                name: "AGENTFLOW_SUPERUSER_PASSWORD",
                reason: "AGENTFLOW_SUPERUSER and AGENTFLOW_SUPERUSER_PASSWORD must be set together"
                    .into(),
            });
        }
        Ok(settings)
    }
}

/// How logins are throttled and locked (see the README's security section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginSettings {
    /// `AGENTFLOW_LOGIN_ATTEMPTS_PER_MINUTE`: failed or pending login
    /// attempts one client address may make per minute (default 30).
    pub attempts_per_minute: u32,
    /// `AGENTFLOW_LOGIN_IN_FLIGHT_PER_ADDRESS`: logins one client address
    /// may have waiting or being checked at once (default 4).
    pub in_flight_per_address: u32,
    /// `AGENTFLOW_LOGIN_MAX_FAILURES`: failures of one account from one
    /// client address that lock that pair (default 5).
    pub max_failures: u32,
    /// `AGENTFLOW_LOGIN_MAX_FAILURES_PER_ACCOUNT`: failures of one account
    /// from all addresses that lock it everywhere, with a lock that doubles
    /// from 1 minute up to 1 hour while they go on (default 50).
    pub max_failures_per_account: u32,
    /// `AGENTFLOW_LOGIN_LOCKOUT_SECONDS`: the counting window and the
    /// account-and-address lock length (default 900).
    pub lockout_secs: u64,
    /// `AGENTFLOW_PASSWORD_HASH_CONCURRENCY`: argon2 runs at once, each
    /// ~19 MiB (default: cores - 1, at least 1).
    pub hash_concurrency: usize,
}

impl LoginSettings {
    /// Reads the `AGENTFLOW_LOGIN_*` settings.
    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        let per_address = count(env, "AGENTFLOW_LOGIN_MAX_FAILURES", 5)?;
        let per_account = count(env, "AGENTFLOW_LOGIN_MAX_FAILURES_PER_ACCOUNT", 50)?;
        if per_account < per_address {
            return Err(SettingError {
                name: "AGENTFLOW_LOGIN_MAX_FAILURES_PER_ACCOUNT",
                reason: format!(
                    "{per_account} is below AGENTFLOW_LOGIN_MAX_FAILURES ({per_address}); the account-wide limit must be the looser one"
                ),
            });
        }
        Ok(LoginSettings {
            attempts_per_minute: count(env, "AGENTFLOW_LOGIN_ATTEMPTS_PER_MINUTE", 30)?,
            in_flight_per_address: count(env, "AGENTFLOW_LOGIN_IN_FLIGHT_PER_ADDRESS", 4)?,
            max_failures: per_address,
            max_failures_per_account: per_account,
            lockout_secs: seconds(env, "AGENTFLOW_LOGIN_LOCKOUT_SECONDS", 900)?,
            hash_concurrency: match env.get("AGENTFLOW_PASSWORD_HASH_CONCURRENCY") {
                None => crate::passwords::pool::default_permits(),
                Some(_) => count(env, "AGENTFLOW_PASSWORD_HASH_CONCURRENCY", 1)? as usize,
            },
        })
    }

    /// The lockout rules these settings describe.
    pub fn policy(&self) -> LoginPolicy {
        LoginPolicy {
            per_address: LockoutPolicy {
                max_failures: self.max_failures,
                lockout_secs: self.lockout_secs,
                max_lockout_secs: self.lockout_secs,
                window_secs: self.lockout_secs,
            },
            per_account: LockoutPolicy {
                max_failures: self.max_failures_per_account,
                window_secs: self.lockout_secs,
                ..LockoutPolicy::per_account()
            },
        }
    }
}

fn count(env: &Env, name: &'static str, default: u32) -> Result<u32, SettingError> {
    match env.get(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(|| SettingError {
                name,
                reason: format!("{v:?} is not a whole number from 1 to 1000000"),
            }),
    }
}

fn flag(env: &Env, name: &'static str, default: bool) -> Result<bool, SettingError> {
    match env.get(name).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if v.is_empty() => Ok(default),
        Some(v) => match v.as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(SettingError {
                name,
                reason: format!("{v:?} is not a boolean; use True or False"),
            }),
        },
    }
}

fn seconds(env: &Env, name: &'static str, default: u64) -> Result<u64, SettingError> {
    match env.get(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| SettingError {
                name,
                reason: format!("{v:?} is not a positive number of seconds"),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<AccountSettings, SettingError> {
        let env = Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        AccountSettings::from_env(&env, Path::new("/cfg"))
    }

    #[test]
    fn defaults_are_the_safe_ones() {
        let s = settings(&[]).unwrap();
        assert!(!s.auto_login && !s.new_user_is_active && s.enable_superuser_cli);
        assert_eq!(s.data_dir, PathBuf::from("/cfg/data"));
    }

    #[test]
    fn booleans_accept_python_style_and_reject_junk() {
        assert!(
            settings(&[("AGENTFLOW_AUTO_LOGIN", "True")])
                .unwrap()
                .auto_login
        );
        let e = settings(&[("AGENTFLOW_NEW_USER_IS_ACTIVE", "maybe")]).unwrap_err();
        assert_eq!(e.name, "AGENTFLOW_NEW_USER_IS_ACTIVE");
    }

    #[test]
    fn login_limits_default_to_the_documented_policy_and_reject_junk() {
        let s = settings(&[]).unwrap().login;
        assert_eq!((s.attempts_per_minute, s.in_flight_per_address), (30, 4));
        assert_eq!(
            (s.max_failures, s.max_failures_per_account, s.lockout_secs),
            (5, 50, 900)
        );
        assert!(s.hash_concurrency >= 1);
        assert_eq!(s.policy(), LoginPolicy::default());
        let e = settings(&[("AGENTFLOW_LOGIN_MAX_FAILURES", "0")]).unwrap_err();
        assert_eq!(e.name, "AGENTFLOW_LOGIN_MAX_FAILURES");
        let e = settings(&[("AGENTFLOW_PASSWORD_HASH_CONCURRENCY", "many")]).unwrap_err();
        assert_eq!(e.name, "AGENTFLOW_PASSWORD_HASH_CONCURRENCY");
        let e = settings(&[
            ("AGENTFLOW_LOGIN_MAX_FAILURES", "10"),
            ("AGENTFLOW_LOGIN_MAX_FAILURES_PER_ACCOUNT", "9"),
        ])
        .unwrap_err();
        assert_eq!(e.name, "AGENTFLOW_LOGIN_MAX_FAILURES_PER_ACCOUNT");
        let two = settings(&[("AGENTFLOW_PASSWORD_HASH_CONCURRENCY", "2")])
            .unwrap()
            .login;
        assert_eq!(two.hash_concurrency, 2);
    }

    #[test]
    fn superuser_needs_both_settings() {
        assert!(settings(&[("AGENTFLOW_SUPERUSER", "admin")]).is_err());
        assert!(
            settings(&[
                ("AGENTFLOW_SUPERUSER", "admin"),
                ("AGENTFLOW_SUPERUSER_PASSWORD", "pw")
            ])
            .is_ok()
        );
    }
}
