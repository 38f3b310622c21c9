//! The ownership registry (tenancy) in SQL (table `resource_owners`, schema
//! version 3): the first claim is an `INSERT … ON CONFLICT DO NOTHING`, so
//! of two concurrent first claims on any instances exactly one wins and
//! both read the winner. Ids and owners are `bytea` (either may hold `\0`).

use super::*;

fn ownership(row: &tokio_postgres::Row) -> Ownership {
    Ownership {
        owner: String::from_utf8_lossy(row.get::<_, &[u8]>(0)).into_owned(),
        claimed_at: unsecs(row.get(1)),
    }
}

impl PgStore {
    pub(super) async fn claim_resource_sql(
        &self,
        kind: ResourceKind,
        id: &str,
        owner: &str,
        now: u64,
    ) -> StoreResult<Claim> {
        let kind = kind.as_str();
        self.with(|c| async move {
            let (id, owner) = (id.as_bytes(), owner.as_bytes());
            let row = c
                .query_opt(
                    "INSERT INTO resource_owners (kind, id, owner, claimed_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING owner, claimed_at",
                    &[&kind, &id, &owner, &secs(now)],
                )
                .await
                .map_err(db_error)?;
            if let Some(row) = row {
                return Ok(Claim {
                    ownership: ownership(&row),
                    claimed: true,
                });
            }
            let row = c
                .query_opt(
                    "SELECT owner, claimed_at FROM resource_owners WHERE kind = $1 AND id = $2",
                    &[&kind, &id],
                )
                .await
                .map_err(db_error)?;
            let row = row.ok_or_else(|| {
                StoreError::Conflict("the resource's owner changed meanwhile; retry".into())
            })?;
            Ok(Claim {
                ownership: ownership(&row),
                claimed: false,
            })
        })
        .await
    }

    pub(super) async fn resource_owner_sql(
        &self,
        kind: ResourceKind,
        id: &str,
    ) -> StoreResult<Option<Ownership>> {
        let kind = kind.as_str();
        self.with(|c| async move {
            let stmt = c
                .prepare_cached(
                    "SELECT owner, claimed_at FROM resource_owners WHERE kind = $1 AND id = $2",
                )
                .await
                .map_err(db_error)?;
            let row = c
                .query_opt(&stmt, &[&kind, &id.as_bytes()])
                .await
                .map_err(db_error)?;
            Ok(row.as_ref().map(ownership))
        })
        .await
    }

    pub(super) async fn release_resource_sql(
        &self,
        kind: ResourceKind,
        id: &str,
    ) -> StoreResult<bool> {
        let kind = kind.as_str();
        self.with(|c| async move {
            let n = c
                .execute(
                    "DELETE FROM resource_owners WHERE kind = $1 AND id = $2",
                    &[&kind, &id.as_bytes()],
                )
                .await
                .map_err(db_error)?;
            Ok(n > 0)
        })
        .await
    }

    pub(super) async fn owned_resources_sql(
        &self,
        kind: ResourceKind,
        owner: &str,
    ) -> StoreResult<Vec<String>> {
        let kind = kind.as_str();
        self.with(|c| async move {
            let rows = c
                .query(
                    "SELECT id FROM resource_owners WHERE kind = $1 AND owner = $2 ORDER BY id",
                    &[&kind, &owner.as_bytes()],
                )
                .await
                .map_err(db_error)?;
            Ok(rows
                .iter()
                .map(|r| String::from_utf8_lossy(r.get::<_, &[u8]>(0)).into_owned())
                .collect())
        })
        .await
    }
}
