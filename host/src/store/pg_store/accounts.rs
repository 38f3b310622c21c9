//! Users, API keys, refresh-token families and variables in SQL. Children
//! reference their user `ON DELETE CASCADE`; uniqueness is the schema's
//! (`23505` is `Conflict`, a missing owner `23503` is `NotFound`).

use tokio_postgres::Row;

use super::*;

const USER_COLS: &str =
    "id, username, password_hash, is_active, is_superuser, created_at, updated_at";
const KEY_COLS: &str = "id, user_id, name, hash, prefix, last4, created_at, last_used_at";
const FAMILY_COLS: &str = "id, user_id, current_jti, revoked, created_at";
const VAR_COLS: &str = "id, user_id, name, kind, value_encrypted, created_at, updated_at";

fn user(row: &Row) -> User {
    User {
        id: row.get(0),
        username: row.get(1),
        password_hash: row.get(2),
        is_active: row.get(3),
        is_superuser: row.get(4),
        created_at: unsecs(row.get(5)),
        updated_at: unsecs(row.get(6)),
    }
}

fn api_key(row: &Row) -> ApiKey {
    ApiKey {
        id: row.get(0),
        user_id: row.get(1),
        name: row.get(2),
        hash: row.get(3),
        prefix: row.get(4),
        last4: row.get(5),
        created_at: unsecs(row.get(6)),
        last_used_at: row.get::<_, Option<i64>>(7).map(unsecs),
    }
}

fn family(row: &Row) -> RefreshFamily {
    RefreshFamily {
        id: row.get(0),
        user_id: row.get(1),
        current_jti: row.get(2),
        revoked: row.get(3),
        created_at: unsecs(row.get(4)),
    }
}

fn kind_text(kind: VariableKind) -> &'static str {
    match kind {
        VariableKind::Credential => "credential",
        VariableKind::Generic => "generic",
    }
}

fn variable(row: &Row) -> StoreResult<Variable> {
    let kind: String = row.get(3);
    let kind = match kind.as_str() {
        "credential" => VariableKind::Credential,
        "generic" => VariableKind::Generic,
        other => return Err(StoreError::Corrupt(format!("variable kind {other:?}"))),
    };
    Ok(Variable {
        id: row.get(0),
        user_id: row.get(1),
        name: row.get(2),
        kind,
        value_encrypted: row.get(4),
        created_at: unsecs(row.get(5)),
        updated_at: unsecs(row.get(6)),
    })
}

/// Maps a write's error: a unique violation is `Conflict(what)`, a missing
/// owner `NotFound`.
fn write_error(what: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| match sqlstate(&e) {
        Some("23505") => StoreError::Conflict(what.into()),
        Some("23503") => StoreError::NotFound,
        _ => db_error(e),
    }
}

fn one<T>(rows: Option<Row>, f: impl FnOnce(&Row) -> T) -> StoreResult<T> {
    rows.as_ref().map(f).ok_or(StoreError::NotFound)
}

impl PgStore {
    /// `NotFound` unless the user exists.
    async fn require_user(client: &deadpool_postgres::Object, user_id: &str) -> StoreResult<()> {
        valid(user_id)?;
        let stmt = client
            .prepare_cached("SELECT 1 FROM users WHERE id = $1")
            .await
            .map_err(db_error)?;
        let row = client
            .query_opt(&stmt, &[&user_id])
            .await
            .map_err(db_error)?;
        one(row, |_| ())
    }

    pub(super) async fn create_user_sql(&self, new: NewUser, now: u64) -> StoreResult<User> {
        let user = User {
            id: new_id(),
            username: new.username,
            password_hash: new.password_hash,
            is_active: new.is_active,
            is_superuser: new.is_superuser,
            created_at: now,
            updated_at: now,
        };
        let u = &user;
        self.with(|c| async move {
            let sql = "INSERT INTO users (id, username, username_key, password_hash, is_active, \
                       is_superuser, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)";
            let stmt = c.prepare_cached(sql).await.map_err(db_error)?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
                &u.id,
                &u.username,
                &u.username.to_lowercase(),
                &u.password_hash,
                &u.is_active,
                &u.is_superuser,
                &secs(now),
            ];
            c.execute(&stmt, &params)
                .await
                .map_err(write_error("username already taken"))?;
            Ok(())
        })
        .await?;
        Ok(user)
    }

    pub(super) async fn get_user_sql(&self, id: &str) -> StoreResult<User> {
        valid(id)?;
        if let Some(u) = self.cache().user(id) {
            return Ok(u);
        }
        let ticket = self.cache().ticket();
        let found = self
            .with(|c| async move {
                let sql = format!("SELECT {USER_COLS} FROM users WHERE id = $1");
                let stmt = c.prepare_cached(&sql).await.map_err(db_error)?;
                one(c.query_opt(&stmt, &[&id]).await.map_err(db_error)?, user)
            })
            .await?;
        self.cache().put_user(ticket, &found);
        Ok(found)
    }

    pub(super) async fn get_user_by_username_sql(&self, username: &str) -> StoreResult<User> {
        storable(username)?;
        let key = username.to_lowercase();
        let key = &key;
        self.with(|c| async move {
            let sql = format!("SELECT {USER_COLS} FROM users WHERE username_key = $1");
            let stmt = c.prepare_cached(&sql).await.map_err(db_error)?;
            one(c.query_opt(&stmt, &[key]).await.map_err(db_error)?, user)
        })
        .await
    }

    pub(super) async fn update_user_sql(
        &self,
        id: &str,
        update: UserUpdate,
        now: u64,
    ) -> StoreResult<User> {
        valid(id)?;
        let key = update.username.as_ref().map(|u| u.to_lowercase());
        let (update, key) = (&update, &key);
        let updated = self
            .with(|c| async move {
                let sql = format!(
                    "UPDATE users SET username = COALESCE($2, username), \
                     username_key = COALESCE($3, username_key), \
                     password_hash = COALESCE($4, password_hash), \
                     is_active = COALESCE($5, is_active), \
                     is_superuser = COALESCE($6, is_superuser), updated_at = $7 \
                     WHERE id = $1 RETURNING {USER_COLS}"
                );
                let stmt = c.prepare_cached(&sql).await.map_err(db_error)?;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
                    &id,
                    &update.username,
                    key,
                    &update.password_hash,
                    &update.is_active,
                    &update.is_superuser,
                    &secs(now),
                ];
                let row = c
                    .query_opt(&stmt, &params)
                    .await
                    .map_err(write_error("username already taken"))?;
                one(row, user)
            })
            .await;
        self.cache().invalidate(&format!("u:{id}"));
        updated
    }

    pub(super) async fn delete_user_sql(&self, id: &str) -> StoreResult<()> {
        valid(id)?;
        let result = self
            .with_transaction(|mut c| async move {
                let tx = c.transaction().await.map_err(db_error)?;
                let row = tx
                    .query_opt(
                        "DELETE FROM users WHERE id = $1 RETURNING username_key",
                        &[&id],
                    )
                    .await
                    .map_err(db_error)?;
                let name: String = one(row, |r| r.get(0))?;
                tx.execute(
                    "DELETE FROM login_failures WHERE key = $1",
                    &[&name.as_bytes()],
                )
                .await
                .map_err(db_error)?;
                tx.commit().await.map_err(db_error)
            })
            .await;
        self.cache().invalidate_user_everything(id);
        result
    }

    pub(super) async fn list_users_sql(&self, offset: u64, limit: u64) -> StoreResult<Page<User>> {
        let (offset, limit) = (secs(offset), secs(limit));
        self.with(|c| async move {
            let sql = format!(
                "SELECT {USER_COLS} FROM users ORDER BY username_key COLLATE \"C\" \
                 LIMIT $2 OFFSET $1"
            );
            let stmt = c.prepare_cached(&sql).await.map_err(db_error)?;
            let rows = c.query(&stmt, &[&offset, &limit]).await.map_err(db_error)?;
            let total: i64 = c
                .query_one("SELECT COUNT(*) FROM users", &[])
                .await
                .map_err(db_error)?
                .get(0);
            Ok(Page {
                items: rows.iter().map(user).collect(),
                total: unsecs(total),
            })
        })
        .await
    }

    pub(super) async fn create_api_key_sql(&self, new: NewApiKey, now: u64) -> StoreResult<ApiKey> {
        valid(&new.user_id)?;
        let rec = ApiKey {
            id: new_id(),
            user_id: new.user_id,
            name: new.name,
            hash: new.hash,
            prefix: new.prefix,
            last4: new.last4,
            created_at: now,
            last_used_at: None,
        };
        let k = &rec;
        self.with(|c| async move {
            let sql = "INSERT INTO api_keys (id, user_id, name, hash, prefix, last4, created_at) \
                       VALUES ($1, $2, $3, $4, $5, $6, $7)";
            let stmt = c.prepare_cached(sql).await.map_err(db_error)?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
                &k.id,
                &k.user_id,
                &k.name,
                &k.hash,
                &k.prefix,
                &k.last4,
                &secs(now),
            ];
            c.execute(&stmt, &params)
                .await
                .map_err(write_error("api key already exists"))?;
            Ok(())
        })
        .await?;
        Ok(rec)
    }

    pub(super) async fn get_api_key_sql(&self, id: &str) -> StoreResult<ApiKey> {
        valid(id)?;
        self.with(|c| async move {
            let sql = format!("SELECT {KEY_COLS} FROM api_keys WHERE id = $1");
            let stmt = c.prepare_cached(&sql).await.map_err(db_error)?;
            one(c.query_opt(&stmt, &[&id]).await.map_err(db_error)?, api_key)
        })
        .await
    }

    pub(super) async fn get_api_key_by_hash_sql(&self, hash: &str) -> StoreResult<ApiKey> {
        storable(hash)?;
        if let Some(k) = self.cache().key(hash) {
            return Ok(k);
        }
        let ticket = self.cache().ticket();
        let found = self
            .with(|c| async move {
                let sql = format!("SELECT {KEY_COLS} FROM api_keys WHERE hash = $1");
                let stmt = c.prepare_cached(&sql).await.map_err(db_error)?;
                one(
                    c.query_opt(&stmt, &[&hash]).await.map_err(db_error)?,
                    api_key,
                )
            })
            .await?;
        self.cache().put_key(ticket, &found);
        Ok(found)
    }

    pub(super) async fn list_api_keys_sql(&self, user_id: &str) -> StoreResult<Vec<ApiKey>> {
        valid(user_id)?;
        self.with(|c| async move {
            Self::require_user(&c, user_id).await?;
            let sql = format!(
                "SELECT {KEY_COLS} FROM api_keys WHERE user_id = $1 \
                 ORDER BY created_at, id COLLATE \"C\""
            );
            let stmt = c.prepare_cached(&sql).await.map_err(db_error)?;
            let rows = c.query(&stmt, &[&user_id]).await.map_err(db_error)?;
            Ok(rows.iter().map(api_key).collect())
        })
        .await
    }

    pub(super) async fn touch_api_key_sql(&self, id: &str, now: u64) -> StoreResult<bool> {
        valid(id)?;
        let forget = || {
            let mut touched = self.inner.touched.lock().unwrap_or_else(|e| e.into_inner());
            touched.remove(id);
        };
        {
            let mut touched = self.inner.touched.lock().unwrap_or_else(|e| e.into_inner());
            if touched.get(id) == Some(&now) {
                // Already written this second, so not the first use.
                return Ok(false);
            }
            if touched.len() > 100_000 {
                touched.clear();
            }
            touched.insert(id.to_string(), now);
        }
        // The row is locked before its old value is read, so of two
        // instances touching a never-used key at once exactly one sees NULL.
        let written = self
            .with(|c| async move {
                let stmt = c
                    .prepare_cached(
                        "UPDATE api_keys k SET last_used_at = $2 \
                         FROM (SELECT id, last_used_at FROM api_keys WHERE id = $1 FOR UPDATE) old \
                         WHERE k.id = old.id RETURNING old.last_used_at IS NULL",
                    )
                    .await
                    .map_err(db_error)?;
                let row = c
                    .query_opt(&stmt, &[&id, &secs(now)])
                    .await
                    .map_err(db_error)?;
                one(row, |r| r.get::<_, bool>(0))
            })
            .await;
        if written.is_err() {
            forget();
        }
        written
    }

    pub(super) async fn delete_api_key_sql(&self, id: &str) -> StoreResult<()> {
        valid(id)?;
        let hash = self
            .with(|c| async move {
                let row = c
                    .query_opt("DELETE FROM api_keys WHERE id = $1 RETURNING hash", &[&id])
                    .await
                    .map_err(db_error)?;
                one(row, |r| r.get::<_, String>(0))
            })
            .await?;
        self.cache().invalidate(&format!("k:{hash}"));
        Ok(())
    }

    pub(super) async fn create_family_sql(
        &self,
        user_id: &str,
        jti: &str,
        now: u64,
    ) -> StoreResult<RefreshFamily> {
        valid(user_id)?;
        let fam = RefreshFamily {
            id: new_id(),
            user_id: user_id.to_string(),
            current_jti: jti.to_string(),
            revoked: false,
            created_at: now,
        };
        let f = &fam;
        self.with(|c| async move {
            let stmt = c
                .prepare_cached(
                    "INSERT INTO refresh_families (id, user_id, current_jti, revoked, created_at) \
                     VALUES ($1, $2, $3, false, $4)",
                )
                .await
                .map_err(db_error)?;
            c.execute(&stmt, &[&f.id, &f.user_id, &f.current_jti, &secs(now)])
                .await
                .map_err(write_error("refresh family already exists"))?;
            Ok(())
        })
        .await?;
        Ok(fam)
    }

    pub(super) async fn get_family_sql(&self, id: &str) -> StoreResult<RefreshFamily> {
        valid(id)?;
        if let Some(f) = self.cache().family(id) {
            return Ok(f);
        }
        let ticket = self.cache().ticket();
        let found = self
            .with(|c| async move {
                let sql = format!("SELECT {FAMILY_COLS} FROM refresh_families WHERE id = $1");
                let stmt = c.prepare_cached(&sql).await.map_err(db_error)?;
                one(c.query_opt(&stmt, &[&id]).await.map_err(db_error)?, family)
            })
            .await?;
        self.cache().put_family(ticket, &found);
        Ok(found)
    }

    /// One conditional `UPDATE`: the row lock makes concurrent rotations of
    /// one family (on any instance) take turns, and the second sees the
    /// first's new jti, so it revokes instead of rotating.
    pub(super) async fn rotate_family_sql(
        &self,
        id: &str,
        presented: &str,
        new: &str,
    ) -> StoreResult<RotateOutcome> {
        valid(id)?;
        let outcome = self
            .with(|c| async move {
                let sql = format!(
                    "UPDATE refresh_families SET \
                     current_jti = CASE WHEN current_jti = $2 THEN $3 ELSE current_jti END, \
                     revoked = (current_jti <> $2) \
                     WHERE id = $1 AND NOT revoked RETURNING {FAMILY_COLS}"
                );
                let stmt = c.prepare_cached(&sql).await.map_err(db_error)?;
                let row = c
                    .query_opt(&stmt, &[&id, &presented, &new])
                    .await
                    .map_err(db_error)?;
                if let Some(row) = row {
                    let fam = family(&row);
                    return Ok(if fam.revoked {
                        RotateOutcome::ReuseDetected(fam)
                    } else {
                        RotateOutcome::Rotated(fam)
                    });
                }
                let sql = format!("SELECT {FAMILY_COLS} FROM refresh_families WHERE id = $1");
                let row = c.query_opt(&sql, &[&id]).await.map_err(db_error)?;
                one(row, family).map(RotateOutcome::Revoked)
            })
            .await?;
        if matches!(outcome, RotateOutcome::ReuseDetected(_)) {
            self.cache().invalidate(&format!("f:{id}"));
        }
        Ok(outcome)
    }

    pub(super) async fn revoke_family_sql(&self, id: &str) -> StoreResult<()> {
        valid(id)?;
        let result = self
            .with(|c| async move {
                let stmt = c
                    .prepare_cached("UPDATE refresh_families SET revoked = true WHERE id = $1")
                    .await
                    .map_err(db_error)?;
                match c.execute(&stmt, &[&id]).await.map_err(db_error)? {
                    0 => Err(StoreError::NotFound),
                    _ => Ok(()),
                }
            })
            .await;
        self.cache().invalidate(&format!("f:{id}"));
        result
    }

    pub(super) async fn revoke_user_families_sql(&self, user_id: &str) -> StoreResult<u64> {
        valid(user_id)?;
        let result = self
            .with(|c| async move {
                Self::require_user(&c, user_id).await?;
                c.execute(
                    "UPDATE refresh_families SET revoked = true WHERE user_id = $1 AND NOT revoked",
                    &[&user_id],
                )
                .await
                .map_err(db_error)
            })
            .await;
        self.cache().invalidate_user_families(user_id);
        result
    }

    pub(super) async fn create_variable_sql(
        &self,
        new: NewVariable,
        now: u64,
    ) -> StoreResult<Variable> {
        valid(&new.user_id)?;
        let var = Variable {
            id: new_id(),
            user_id: new.user_id,
            name: new.name,
            kind: new.kind,
            value_encrypted: new.value_encrypted,
            created_at: now,
            updated_at: now,
        };
        let v = &var;
        self.with(|c| async move {
            let sql = "INSERT INTO variables (id, user_id, name, kind, value_encrypted, \
                       created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)";
            let stmt = c.prepare_cached(sql).await.map_err(db_error)?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
                &v.id,
                &v.user_id,
                &v.name,
                &kind_text(v.kind),
                &v.value_encrypted,
                &secs(now),
            ];
            c.execute(&stmt, &params)
                .await
                .map_err(write_error("variable name already used"))?;
            Ok(())
        })
        .await?;
        Ok(var)
    }

    pub(super) async fn get_variable_sql(&self, id: &str) -> StoreResult<Variable> {
        valid(id)?;
        self.with(|c| async move {
            let sql = format!("SELECT {VAR_COLS} FROM variables WHERE id = $1");
            let stmt = c.prepare_cached(&sql).await.map_err(db_error)?;
            one(
                c.query_opt(&stmt, &[&id]).await.map_err(db_error)?,
                variable,
            )?
        })
        .await
    }

    pub(super) async fn get_variable_by_name_sql(
        &self,
        user_id: &str,
        name: &str,
    ) -> StoreResult<Variable> {
        valid(user_id)?;
        storable(name)?;
        self.with(|c| async move {
            let sql = format!("SELECT {VAR_COLS} FROM variables WHERE user_id = $1 AND name = $2");
            let stmt = c.prepare_cached(&sql).await.map_err(db_error)?;
            let row = c
                .query_opt(&stmt, &[&user_id, &name])
                .await
                .map_err(db_error)?;
            one(row, variable)?
        })
        .await
    }

    pub(super) async fn update_variable_sql(
        &self,
        id: &str,
        kind: VariableKind,
        value_encrypted: String,
        now: u64,
    ) -> StoreResult<Variable> {
        valid(id)?;
        let value = &value_encrypted;
        self.with(|c| async move {
            let sql = format!(
                "UPDATE variables SET kind = $2, value_encrypted = $3, updated_at = $4 \
                 WHERE id = $1 RETURNING {VAR_COLS}"
            );
            let stmt = c.prepare_cached(&sql).await.map_err(db_error)?;
            let row = c
                .query_opt(&stmt, &[&id, &kind_text(kind), value, &secs(now)])
                .await
                .map_err(db_error)?;
            one(row, variable)?
        })
        .await
    }

    pub(super) async fn delete_variable_sql(&self, id: &str) -> StoreResult<()> {
        valid(id)?;
        self.with(|c| async move {
            match c
                .execute("DELETE FROM variables WHERE id = $1", &[&id])
                .await
                .map_err(db_error)?
            {
                0 => Err(StoreError::NotFound),
                _ => Ok(()),
            }
        })
        .await
    }

    pub(super) async fn list_variables_sql(&self, user_id: &str) -> StoreResult<Vec<Variable>> {
        valid(user_id)?;
        self.with(|c| async move {
            Self::require_user(&c, user_id).await?;
            let sql = format!(
                "SELECT {VAR_COLS} FROM variables WHERE user_id = $1 ORDER BY name COLLATE \"C\""
            );
            let stmt = c.prepare_cached(&sql).await.map_err(db_error)?;
            let rows = c.query(&stmt, &[&user_id]).await.map_err(db_error)?;
            rows.iter().map(variable).collect()
        })
        .await
    }

    /// Maps every value through `f` first (any failure: nothing written),
    /// then writes all of them in one transaction, each only if the value is
    /// still the one that was read (else `Conflict`, nothing written).
    pub(super) async fn reencrypt_variables_sql<F, E>(&self, mut f: F) -> StoreResult<u64>
    where
        F: FnMut(&str) -> Result<String, E> + Send,
        E: fmt::Display,
    {
        let current: Vec<(String, String)> = self
            .with(|c| async move {
                let rows = c
                    .query("SELECT id, value_encrypted FROM variables ORDER BY id", &[])
                    .await
                    .map_err(db_error)?;
                Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            })
            .await?;
        let mut changes = Vec::with_capacity(current.len());
        for (id, old) in current {
            let new = f(&old).map_err(|e| StoreError::Reencrypt {
                variable_id: id.clone(),
                reason: e.to_string(),
            })?;
            changes.push((id, old, new));
        }
        let changes = &changes;
        self.with(|mut c| async move {
            let tx = c.transaction().await.map_err(db_error)?;
            for (id, old, new) in changes {
                let n = tx
                    .execute(
                        "UPDATE variables SET value_encrypted = $3 \
                         WHERE id = $1 AND value_encrypted = $2",
                        &[id, old, new],
                    )
                    .await
                    .map_err(db_error)?;
                if n == 0 {
                    return Err(StoreError::Conflict(format!(
                        "variable {id} changed during re-encryption; retry"
                    )));
                }
            }
            tx.commit().await.map_err(db_error)
        })
        .await?;
        Ok(changes.len() as u64)
    }
}
