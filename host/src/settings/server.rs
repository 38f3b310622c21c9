//! The listener's settings: connection cap and timeouts, from `AGENTFLOW_*`
//! variables, validated with errors naming the variable.

use std::time::Duration;

use super::SettingError;
use crate::config::Env;

/// Longest timeout accepted (a day): keeps deadline arithmetic far from overflow.
const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// Most connections accepted as a cap.
const MAX_CONNECTIONS: u64 = 1_000_000;

/// How the listener protects itself (see the README's settings table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// `AGENTFLOW_MAX_CONNECTIONS`: open connections at most; when full, the
    /// oldest connection is asked to close (at once if it is idle) so a new
    /// client still gets in.
    pub max_connections: usize,
    /// `AGENTFLOW_HEADER_TIMEOUT_MS`: a connection must deliver a complete
    /// request head this soon after it opens or after its previous response
    /// (so this is also the keep-alive idle limit).
    pub header_timeout: Duration,
    /// `AGENTFLOW_BODY_TIMEOUT_MS`: the whole request body must arrive this
    /// soon after its head.
    pub body_timeout: Duration,
    /// `AGENTFLOW_SHUTDOWN_TIMEOUT_MS`: on ctrl-c/SIGTERM, how long in-flight
    /// requests (streams included) may take to finish.
    pub shutdown_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl ServerSettings {
    /// Reads the settings; unset variables keep the defaults.
    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        let d = ServerSettings::default();
        Ok(ServerSettings {
            max_connections: number(
                env,
                "AGENTFLOW_MAX_CONNECTIONS",
                d.max_connections as u64,
                MAX_CONNECTIONS,
            )? as usize,
            header_timeout: millis(env, "AGENTFLOW_HEADER_TIMEOUT_MS", d.header_timeout)?,
            body_timeout: millis(env, "AGENTFLOW_BODY_TIMEOUT_MS", d.body_timeout)?,
            shutdown_timeout: millis(env, "AGENTFLOW_SHUTDOWN_TIMEOUT_MS", d.shutdown_timeout)?,
        })
    }
}

fn millis(env: &Env, name: &'static str, default: Duration) -> Result<Duration, SettingError> {
    number(env, name, default.as_millis() as u64, MAX_TIMEOUT_MS).map(Duration::from_millis)
}

/// A whole number in `1..=max`; empty means the default.
fn number(env: &Env, name: &'static str, default: u64, max: u64) -> Result<u64, SettingError> {
    match env.get(name).map(|v| v.trim().to_owned()) {
        None => Ok(default),
        Some(v) if v.is_empty() => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| SettingError {
                name,
                reason: format!("{v:?} is not a whole number from 1 to {max}"),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<ServerSettings, SettingError> {
        ServerSettings::from_env(&Env::from_pairs(
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        ))
    }

    #[test]
    fn defaults_bound_every_connection() {
        let s = settings(&[]).unwrap();
        assert_eq!(s, ServerSettings::default());
        assert_eq!(s.header_timeout, Duration::from_secs(10));
    }

    #[test]
    fn reads_each_variable() {
        let s = settings(&[
            ("AGENTFLOW_MAX_CONNECTIONS", "64"),
            ("AGENTFLOW_HEADER_TIMEOUT_MS", "1500"),
            ("AGENTFLOW_BODY_TIMEOUT_MS", " 2000 "),
            ("AGENTFLOW_SHUTDOWN_TIMEOUT_MS", "3000"),
        ])
        .unwrap();
        assert_eq!(s.max_connections, 64);
        assert_eq!(s.header_timeout, Duration::from_millis(1500));
        assert_eq!(s.body_timeout, Duration::from_millis(2000));
        assert_eq!(s.shutdown_timeout, Duration::from_millis(3000));
    }

    #[test]
    fn refuses_zero_junk_and_huge_values_naming_the_variable() {
        for (name, value) in [
            ("AGENTFLOW_MAX_CONNECTIONS", "0"),
            ("AGENTFLOW_MAX_CONNECTIONS", "-5"),
            ("AGENTFLOW_HEADER_TIMEOUT_MS", "10s"),
            ("AGENTFLOW_BODY_TIMEOUT_MS", "99999999999999999999"),
            ("AGENTFLOW_SHUTDOWN_TIMEOUT_MS", "86400001"),
        ] {
            let e = settings(&[(name, value)]).unwrap_err();
            assert_eq!(e.name, name);
            assert!(e.to_string().contains(name), "{e}");
        }
    }
}
