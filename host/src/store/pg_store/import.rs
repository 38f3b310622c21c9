//! Copies an [`Export`] of a sled database into PostgreSQL, keeping ids, in
//! one transaction; rows already there are left alone, so running it again
//! changes nothing. Then counts what of the export the database holds.

use super::super::sled_store::Export;
use super::*;

/// How many of each entity the export had and the database now holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportCounts {
    /// `(entity, in the export, found in the database)`.
    pub rows: Vec<(&'static str, u64, u64)>,
}

impl ImportCounts {
    /// Entities whose counts differ.
    pub fn mismatches(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|(_, want, got)| want != got)
            .map(|(what, want, got)| format!("{what}: {want} in sled, {got} in PostgreSQL"))
            .collect()
    }
}

async fn count_ids(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &str,
    ids: Vec<String>,
) -> StoreResult<u64> {
    let sql = format!("SELECT COUNT(*) FROM {table} WHERE id = ANY($1)");
    let n: i64 = tx.query_one(&sql, &[&ids]).await.map_err(db_error)?.get(0);
    Ok(unsecs(n))
}

impl PgStore {
    /// Inserts what is missing of `export`, then counts it back.
    pub async fn import(&self, export: &Export) -> StoreResult<ImportCounts> {
        let mut c = self.inner.pool.get().await.map_err(pool_error)?;
        let tx = c.transaction().await.map_err(db_error)?;
        for u in &export.users {
            tx.execute(
                "INSERT INTO users (id, username, username_key, password_hash, is_active, \
                 is_superuser, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT DO NOTHING",
                &[
                    &u.id,
                    &u.username,
                    &u.username.to_lowercase(),
                    &u.password_hash,
                    &u.is_active,
                    &u.is_superuser,
                    &secs(u.created_at),
                    &secs(u.updated_at),
                ],
            )
            .await
            .map_err(db_error)?;
        }
        for k in &export.api_keys {
            tx.execute(
                "INSERT INTO api_keys (id, user_id, name, hash, prefix, last4, created_at, \
                 last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                &[
                    &k.id,
                    &k.user_id,
                    &k.name,
                    &k.hash,
                    &k.prefix,
                    &k.last4,
                    &secs(k.created_at),
                    &k.last_used_at.map(secs),
                ],
            )
            .await
            .map_err(db_error)?;
        }
        for f in &export.families {
            tx.execute(
                "INSERT INTO refresh_families (id, user_id, current_jti, revoked, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[
                    &f.id,
                    &f.user_id,
                    &f.current_jti,
                    &f.revoked,
                    &secs(f.created_at),
                ],
            )
            .await
            .map_err(db_error)?;
        }
        for v in &export.variables {
            let kind = match v.kind {
                VariableKind::Credential => "credential",
                VariableKind::Generic => "generic",
            };
            tx.execute(
                "INSERT INTO variables (id, user_id, name, kind, value_encrypted, created_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[
                    &v.id,
                    &v.user_id,
                    &v.name,
                    &kind,
                    &v.value_encrypted,
                    &secs(v.created_at),
                    &secs(v.updated_at),
                ],
            )
            .await
            .map_err(db_error)?;
        }
        for (key, st) in &export.failures {
            tx.execute(
                "INSERT INTO login_failures (key, count, locked_until, last_failure_at, lockouts) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[
                    key,
                    &i32::try_from(st.count).unwrap_or(i32::MAX),
                    &st.locked_until.map(secs),
                    &secs(st.last_failure_at),
                    &i32::try_from(st.lockouts).unwrap_or(i32::MAX),
                ],
            )
            .await
            .map_err(db_error)?;
        }
        for e in &export.audit {
            let details = serde_json::to_string(&e.event.details)
                .map_err(|err| StoreError::Corrupt(format!("cannot encode: {err}")))?;
            tx.execute(
                "INSERT INTO audit_events (id, time, kind, actor, subject, client_ip, request_id, \
                 details) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                &[
                    &e.id,
                    &secs(e.event.time),
                    &e.event.kind.as_str(),
                    &e.event.actor,
                    &e.event.subject,
                    &e.event.client_ip,
                    &e.event.request_id,
                    &details,
                ],
            )
            .await
            .map_err(db_error)?;
        }
        for (kind, id, o) in &export.owners {
            tx.execute(
                "INSERT INTO resource_owners (kind, id, owner, claimed_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
                &[
                    &kind.as_str(),
                    &id.as_bytes(),
                    &o.owner.as_bytes(),
                    &secs(o.claimed_at),
                ],
            )
            .await
            .map_err(db_error)?;
        }
        let ids = |v: Vec<&String>| v.into_iter().cloned().collect::<Vec<_>>();
        let mut counts = ImportCounts::default();
        let users = count_ids(
            &tx,
            "users",
            ids(export.users.iter().map(|u| &u.id).collect()),
        );
        counts
            .rows
            .push(("users", export.users.len() as u64, users.await?));
        let keys = count_ids(
            &tx,
            "api_keys",
            ids(export.api_keys.iter().map(|k| &k.id).collect()),
        );
        counts
            .rows
            .push(("api keys", export.api_keys.len() as u64, keys.await?));
        let fams = count_ids(
            &tx,
            "refresh_families",
            ids(export.families.iter().map(|f| &f.id).collect()),
        );
        counts
            .rows
            .push(("logins", export.families.len() as u64, fams.await?));
        let vars = count_ids(
            &tx,
            "variables",
            ids(export.variables.iter().map(|v| &v.id).collect()),
        );
        counts
            .rows
            .push(("variables", export.variables.len() as u64, vars.await?));
        let keys: Vec<&[u8]> = export.failures.iter().map(|(k, _)| k.as_slice()).collect();
        let failures: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM login_failures WHERE key = ANY($1)",
                &[&keys],
            )
            .await
            .map_err(db_error)?
            .get(0);
        let audit = count_ids(
            &tx,
            "audit_events",
            ids(export.audit.iter().map(|e| &e.id).collect()),
        );
        counts
            .rows
            .push(("audit events", export.audit.len() as u64, audit.await?));
        // Counted only where the owner is the same: a clashing row already
        // there is a mismatch, not a copy.
        let kinds: Vec<&str> = export.owners.iter().map(|(k, _, _)| k.as_str()).collect();
        let owner_ids: Vec<&[u8]> = export
            .owners
            .iter()
            .map(|(_, id, _)| id.as_bytes())
            .collect();
        let owners: Vec<&[u8]> = export
            .owners
            .iter()
            .map(|(_, _, o)| o.owner.as_bytes())
            .collect();
        let owned: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM resource_owners r \
                 JOIN unnest($1::text[], $2::bytea[], $3::bytea[]) AS x(kind, id, owner) \
                 ON r.kind = x.kind AND r.id = x.id AND r.owner = x.owner",
                &[&kinds, &owner_ids, &owners],
            )
            .await
            .map_err(db_error)?
            .get(0);
        counts.rows.push((
            "owned threads and memories",
            export.owners.len() as u64,
            unsecs(owned),
        ));
        counts.rows.push((
            "failed-login counters",
            export.failures.len() as u64,
            unsecs(failures),
        ));
        tx.commit().await.map_err(db_error)?;
        Ok(counts)
    }

    /// Inserts plugin `plugin`'s entries that are missing; how many of
    /// `entries` the database holds afterwards.
    pub async fn import_plugin_kv(
        &self,
        plugin: &str,
        entries: &[(Vec<u8>, Vec<u8>)],
    ) -> StoreResult<u64> {
        let mut c = self.inner.pool.get().await.map_err(pool_error)?;
        let tx = c.transaction().await.map_err(db_error)?;
        for (k, v) in entries {
            tx.execute(
                "INSERT INTO plugin_kv (plugin, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                &[&plugin, k, v],
            )
            .await
            .map_err(db_error)?;
        }
        let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| k.as_slice()).collect();
        let n: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM plugin_kv WHERE plugin = $1 AND key = ANY($2)",
                &[&plugin, &keys],
            )
            .await
            .map_err(db_error)?
            .get(0);
        tx.commit().await.map_err(db_error)?;
        Ok(unsecs(n))
    }
}
