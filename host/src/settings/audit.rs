//! The audit trail's settings, from `AGENTFLOW_AUDIT_*` variables, validated
//! with errors naming the variable.

use super::SettingError;
use crate::config::Env;

/// Longest retention accepted (100 years): keeps the arithmetic far from overflow.
const MAX_RETENTION_DAYS: u64 = 36_500;

/// How long audit events are kept (see the README's "Audit" section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// `AGENTFLOW_AUDIT_RETENTION_DAYS`: events older than this are deleted
    /// (at start and every few minutes); default 90.
    pub retention_days: u64,
    /// `AGENTFLOW_AUDIT_FLOOD_WINDOW_SECONDS`: events that can flood
    /// (denials, fail-closed plugins, throttled logins) are recorded once
    /// per caller and route in this window, the rest as one aggregate;
    /// default 60.
    pub flood_window_secs: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            retention_days: 90,
            flood_window_secs: 60,
        }
    }
}

impl AuditSettings {
    /// Reads the settings.
    pub fn from_env(env: &Env) -> Result<AuditSettings, SettingError> {
        const NAME: &str = "AGENTFLOW_AUDIT_RETENTION_DAYS";
        let retention_days = match env.get(NAME) {
            None => AuditSettings::default().retention_days,
            Some(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|d| (1..=MAX_RETENTION_DAYS).contains(d))
                .ok_or_else(|| SettingError {
                    name: NAME,
                    reason: format!(
                        "{v:?} is not a whole number of days from 1 to {MAX_RETENTION_DAYS}"
                    ),
                })?,
        };
        const WINDOW: &str = "AGENTFLOW_AUDIT_FLOOD_WINDOW_SECONDS";
        let flood_window_secs = match env.get(WINDOW) {
            None => AuditSettings::default().flood_window_secs,
            Some(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|s| (1..=86_400).contains(s))
                .ok_or_else(|| SettingError {
                    name: WINDOW,
                    reason: format!("{v:?} is not a whole number of seconds from 1 to 86400"),
                })?,
        };
        Ok(AuditSettings {
            retention_days,
            flood_window_secs,
        })
    }

    /// The retention in seconds.
    pub fn retention_secs(&self) -> u64 {
        self.retention_days * 86_400
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn retention_defaults_to_ninety_days_and_rejects_junk() {
        assert_eq!(
            AuditSettings::from_env(&env(&[])).unwrap().retention_days,
            90
        );
        let week = env(&[("AGENTFLOW_AUDIT_RETENTION_DAYS", "7")]);
        assert_eq!(
            AuditSettings::from_env(&week).unwrap().retention_secs(),
            7 * 86_400
        );
        for junk in ["0", "-1", "ninety", "99999999"] {
            let e = AuditSettings::from_env(&env(&[("AGENTFLOW_AUDIT_RETENTION_DAYS", junk)]))
                .unwrap_err();
            assert_eq!(e.name, "AGENTFLOW_AUDIT_RETENTION_DAYS");
        }
        let e = AuditSettings::from_env(&env(&[("AGENTFLOW_AUDIT_FLOOD_WINDOW_SECONDS", "0")]))
            .unwrap_err();
        assert_eq!(e.name, "AGENTFLOW_AUDIT_FLOOD_WINDOW_SECONDS");
    }
}
