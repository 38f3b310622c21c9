//! The PostgreSQL schema, embedded as numbered migrations and applied at
//! start inside one transaction that holds an advisory lock, so instances
//! starting together apply each migration exactly once.
//!
//! Keys of failed-login counters and plugin storage are `bytea`: they may
//! hold `\0`, which `text` cannot. Usernames are looked up by
//! `username_key` (Rust's lower-casing, as sled does) and listed in byte
//! order (`COLLATE "C"`), so both stores answer alike. Triggers announce
//! every change that a cache on another instance may hold (`NOTIFY
//! agentflow_cache`, see `cache`).

use tokio_postgres::GenericClient;

use super::super::{StoreError, StoreResult};
use super::db_error;

/// Any fixed number: the advisory lock every instance takes while migrating.
const MIGRATION_LOCK: i64 = 0x6167_656e_7466_6c6f; // "agentflo"

/// The channel cache invalidations are announced on.
pub const CACHE_CHANNEL: &str = "agentflow_cache";

/// `(version, SQL)`, applied in order; never edit a released one, add another.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    username_key TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_active BOOLEAN NOT NULL,
    is_superuser BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    last4 TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX api_keys_user ON api_keys (user_id);
CREATE TABLE refresh_families (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    current_jti TEXT NOT NULL,
    revoked BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX refresh_families_user ON refresh_families (user_id);
CREATE TABLE variables (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    value_encrypted TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (user_id, name)
);
CREATE TABLE login_failures (
    key BYTEA PRIMARY KEY,
    count INTEGER NOT NULL DEFAULT 0,
    locked_until BIGINT,
    last_failure_at BIGINT NOT NULL DEFAULT 0,
    lockouts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE plugin_kv (
    plugin TEXT NOT NULL,
    key BYTEA NOT NULL,
    value BYTEA NOT NULL,
    expires_at BIGINT,
    PRIMARY KEY (plugin, key)
);
CREATE FUNCTION agentflow_cache_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'users' THEN
        PERFORM pg_notify('agentflow_cache', 'u:' || OLD.id);
    ELSIF TG_TABLE_NAME = 'api_keys' THEN
        PERFORM pg_notify('agentflow_cache', 'k:' || OLD.hash);
    ELSIF TG_TABLE_NAME = 'refresh_families' THEN
        PERFORM pg_notify('agentflow_cache', 'f:' || OLD.id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER users_cache AFTER UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION agentflow_cache_notify();
-- Not on last_used_at: API-key use must not flush every instance's cache.
CREATE TRIGGER api_keys_cache AFTER UPDATE OF user_id, hash OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION agentflow_cache_notify();
-- Not on current_jti: a rotation changes nothing a cached login is used for.
CREATE TRIGGER refresh_families_cache AFTER UPDATE OF revoked, user_id OR DELETE
    ON refresh_families FOR EACH ROW EXECUTE FUNCTION agentflow_cache_notify();
"#,
    ),
    (
        2,
        r#"
CREATE TABLE audit_events (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    time BIGINT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT,
    subject TEXT,
    client_ip TEXT,
    request_id TEXT,
    details TEXT NOT NULL
);
CREATE INDEX audit_events_time ON audit_events (time DESC, seq DESC);
"#,
    ),
    (
        3,
        r#"
CREATE TABLE resource_owners (
    kind TEXT NOT NULL,
    id BYTEA NOT NULL,
    owner BYTEA NOT NULL,
    claimed_at BIGINT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX resource_owners_owner ON resource_owners (kind, owner, id);
"#,
    ),
];

/// The newest schema version this build knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

/// Applies every missing migration under the advisory lock; refuses a
/// database whose schema is newer than this build.
pub async fn migrate(client: &mut tokio_postgres::Client) -> StoreResult<()> {
    let tx = client.transaction().await.map_err(db_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS agentflow_migrations (
            version INTEGER PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await
    .map_err(db_error)?;
    let applied = current_version(&tx).await?;
    if applied > latest() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {applied} is newer than this agentflow understands ({}); upgrade agentflow",
            latest()
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > applied) {
        tx.batch_execute(sql).await.map_err(db_error)?;
        tx.execute(
            "INSERT INTO agentflow_migrations (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(db_error)?;
        tracing::info!(version, "applied database migration");
    }
    tx.commit().await.map_err(db_error)
}

/// The highest applied migration (0 for an empty database).
pub async fn current_version(client: &impl GenericClient) -> StoreResult<i32> {
    let row = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM agentflow_migrations",
            &[],
        )
        .await
        .map_err(db_error)?;
    Ok(row.get(0))
}
