//! The audit trail as a service: what happened ([`Entry`]), stamped with the
//! time and the request id, written as one JSON line to the log (target
//! `agentflow::audit`) and appended to the account store; events that can
//! flood (authorization denials, fail-closed plugins, throttled logins) go
//! through a [`FloodGate`] first; old events are pruned after the retention.
//!
//! Recording never fails the request that caused it: a store error is logged
//! and the request goes on (the log line is already written).

mod flood;
pub mod plugins;
mod refusals;

use std::sync::Mutex;

use serde_json::{Map, Value};

pub use flood::{FloodGate, FloodKey};
pub use refusals::{Route, caller_name, refusal};

use crate::accounts::Accounts;
use crate::settings::AuditSettings;
use crate::store::{AuditKind, NewAuditEvent, Store, unix_now};

/// The `tracing` target audit lines are written under (filter on it with
/// `RUST_LOG=agentflow::audit=info`).
pub const LOG_TARGET: &str = "agentflow::audit";

/// An event about to be recorded: what, who, to what, from where, and small
/// facts. Build it with the methods; never put a secret in it.
#[derive(Debug, Clone)]
pub struct Entry {
    kind: AuditKind,
    actor: Option<String>,
    subject: Option<String>,
    client_ip: Option<String>,
    details: Map<String, Value>,
}

impl Entry {
    /// An event of `kind` with nothing else known yet.
    pub fn new(kind: AuditKind) -> Entry {
        Entry {
            kind,
            actor: None,
            subject: None,
            client_ip: None,
            details: Map::new(),
        }
    }

    /// Who did it (a username).
    pub fn actor(mut self, name: impl Into<String>) -> Entry {
        self.actor = Some(name.into());
        self
    }

    /// What it was done to (a username, plugin, key or variable name).
    pub fn subject(mut self, name: impl Into<String>) -> Entry {
        self.subject = Some(name.into());
        self
    }

    /// The client's address, when a request caused the event.
    pub fn client(mut self, ip: Option<String>) -> Entry {
        self.client_ip = ip;
        self
    }

    /// A non-secret fact (`reason`, `changed`, `count`, …).
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Entry {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// The stored form, stamped with `time` and the current request's id.
    fn into_event(self, time: u64) -> NewAuditEvent {
        NewAuditEvent {
            time,
            kind: self.kind,
            actor: self.actor,
            subject: self.subject,
            client_ip: self.client_ip,
            request_id: crate::request_id::current(),
            details: self.details,
        }
    }
}

/// The audit trail's settings and flood state; lives in [`Accounts`], whose
/// store holds the events.
#[derive(Debug)]
pub struct AuditTrail {
    settings: AuditSettings,
    flood: Mutex<FloodGate>,
}

impl AuditTrail {
    /// A trail with these settings.
    pub fn new(settings: AuditSettings) -> AuditTrail {
        let flood = Mutex::new(FloodGate::new(settings.flood_window_secs));
        AuditTrail { settings, flood }
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &AuditSettings {
        &self.settings
    }

    fn flood(&self) -> std::sync::MutexGuard<'_, FloodGate> {
        // A panic while holding it leaves only counters behind: keep going.
        self.flood.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Writes the event as one JSON line to the log.
fn log_line(event: &NewAuditEvent) {
    match serde_json::to_string(event) {
        Ok(line) => tracing::info!(target: LOG_TARGET, "{line}"),
        Err(e) => tracing::warn!(target: LOG_TARGET, error = %e, "cannot encode an audit event"),
    }
}

impl Accounts {
    /// Records `entry` now: a log line, then the store.
    // The `Send` future is spelled out so handlers that record need not
    // see through it (which made rustc fail to prove them `Send`).
    pub fn record(&self, entry: Entry) -> impl Future<Output = ()> + Send + '_ {
        let event = entry.into_event(unix_now());
        log_line(&event);
        async move {
            if let Err(e) = self.store.append_audit(event).await {
                tracing::warn!(target: LOG_TARGET, error = %e, "cannot store an audit event");
            }
        }
    }

    /// Records `entry` unless events under `key` flood: the first of each
    /// window is recorded (with `details.suppressed`, how many the previous
    /// window held back, when any were); the rest are counted and written as
    /// one aggregate event (`details.count`, `details.aggregated`) by
    /// [`flush_audit_floods`](Accounts::flush_audit_floods).
    pub fn record_limited(
        &self,
        entry: Entry,
        key: FloodKey,
    ) -> impl Future<Output = ()> + Send + '_ {
        let admitted = self.audit.flood().admit(key, entry, unix_now());
        async move {
            if let Some((entry, suppressed)) = admitted {
                let entry = match suppressed {
                    0 => entry,
                    n => entry.detail("suppressed", n),
                };
                self.record(entry).await;
            }
        }
    }

    /// Writes one aggregate event per flood key whose window ended with
    /// events held back (run periodically by the maintenance task).
    pub async fn flush_audit_floods(&self) {
        let drained = self.audit.flood().drain_expired(unix_now());
        for (entry, count) in drained {
            self.record(entry.detail("aggregated", true).detail("count", count))
                .await;
        }
    }

    /// Deletes events older than the retention; returns how many.
    pub async fn prune_audit(&self) -> u64 {
        let before = unix_now().saturating_sub(self.audit.settings().retention_secs());
        match self.store.prune_audit(before).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, error = %e, "pruning the audit trail failed");
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_carry_only_what_they_are_given() {
        let e = Entry::new(AuditKind::LoginFailed)
            .actor("alice")
            .subject("alice")
            .client(Some("10.0.0.1".into()))
            .detail("reason", "wrong_password")
            .into_event(7);
        assert_eq!(e.time, 7);
        assert_eq!(e.kind, AuditKind::LoginFailed);
        assert_eq!(e.actor.as_deref(), Some("alice"));
        assert_eq!(e.client_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(e.request_id, None, "no request is running in this test");
        assert_eq!(e.details["reason"], "wrong_password");
    }
}
