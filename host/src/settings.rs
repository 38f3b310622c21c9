//! The account system's settings: `AGENTFLOW_*` variables from the
//! environment or the `env` file, validated with errors naming the variable.

mod server;

use std::path::{Path, PathBuf};

pub use server::ServerSettings;

use crate::config::Env;

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
}

impl AccountSettings {
    /// Reads the settings; relative paths resolve against `config_dir`.
    pub fn from_env(env: &Env, config_dir: &Path) -> Result<Self, SettingError> {
        let text = |name: &str| env.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let settings = AccountSettings {
            auto_login: flag(env, "AGENTFLOW_AUTO_LOGIN", false)?,
            superuser: text("AGENTFLOW_SUPERUSER"),
            superuser_password: env.get("AGENTFLOW_SUPERUSER_PASSWORD").filter(|p| !p.is_empty()),
            secret_key: text("AGENTFLOW_SECRET_KEY"),
            secret_key_previous: text("AGENTFLOW_SECRET_KEY_PREVIOUS"),
            new_user_is_active: flag(env, "AGENTFLOW_NEW_USER_IS_ACTIVE", false)?,
            data_dir: crate::config::data_dir(env, config_dir),
            enable_superuser_cli: flag(env, "AGENTFLOW_ENABLE_SUPERUSER_CLI", true)?,
            access_token_ttl: seconds(env, "AGENTFLOW_ACCESS_TOKEN_EXPIRE_SECONDS", 3600)?,
            refresh_token_ttl: seconds(env, "AGENTFLOW_REFRESH_TOKEN_EXPIRE_SECONDS", 7 * 86_400)?,
        };
        if settings.superuser.is_some() != settings.superuser_password.is_some() {
            return Err(SettingError {
                name: "AGENTFLOW_SUPERUSER_PASSWORD",
                reason: "AGENTFLOW_SUPERUSER and AGENTFLOW_SUPERUSER_PASSWORD must be set together".into(),
            });
        }
        Ok(settings)
    }
}

fn flag(env: &Env, name: &'static str, default: bool) -> Result<bool, SettingError> {
    match env.get(name).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if v.is_empty() => Ok(default),
        Some(v) => match v.as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(SettingError { name, reason: format!("{v:?} is not a boolean; use True or False") }),
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
            .ok_or_else(|| SettingError { name, reason: format!("{v:?} is not a positive number of seconds") }),
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
        assert!(settings(&[("AGENTFLOW_AUTO_LOGIN", "True")]).unwrap().auto_login);
        let e = settings(&[("AGENTFLOW_NEW_USER_IS_ACTIVE", "maybe")]).unwrap_err();
        assert_eq!(e.name, "AGENTFLOW_NEW_USER_IS_ACTIVE");
    }

    #[test]
    fn superuser_needs_both_settings() {
        assert!(settings(&[("AGENTFLOW_SUPERUSER", "admin")]).is_err());
        assert!(settings(&[("AGENTFLOW_SUPERUSER", "admin"), ("AGENTFLOW_SUPERUSER_PASSWORD", "pw")]).is_ok());
    }
}
