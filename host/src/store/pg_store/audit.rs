//! The audit trail in SQL (table `audit_events`, schema version 2): events
//! are appended with a sequence number, listed newest first by time then
//! sequence, filtered as [`AuditQuery::matches`] does, and pruned by time.

use tokio_postgres::Row;

use super::*;

fn event(row: &Row) -> StoreResult<AuditEvent> {
    let kind: String = row.get(2);
    let details: String = row.get(7);
    Ok(AuditEvent {
        id: row.get(0),
        event: NewAuditEvent {
            time: unsecs(row.get(1)),
            kind: kind
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("audit event type {kind:?}")))?,
            actor: row.get(3),
            subject: row.get(4),
            client_ip: row.get(5),
            request_id: row.get(6),
            details: serde_json::from_str(&details)
                .map_err(|e| StoreError::Corrupt(format!("audit event details: {e}")))?,
        },
    })
}

impl PgStore {
    pub(super) async fn append_audit_sql(&self, new: NewAuditEvent) -> StoreResult<AuditEvent> {
        let details = serde_json::to_string(&new.details)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))?;
        let (n, details) = (&new, &details);
        let id = self
            .with(|c| async move {
                let stmt = c
                    .prepare_cached(
                        "INSERT INTO audit_events (id, time, kind, actor, subject, client_ip, \
                         request_id, details) VALUES (md5(random()::text || clock_timestamp()::text), \
                         $1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    )
                    .await
                    .map_err(db_error)?;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
                    &secs(n.time),
                    &n.kind.as_str(),
                    &n.actor,
                    &n.subject,
                    &n.client_ip,
                    &n.request_id,
                    details,
                ];
                let row = c.query_one(&stmt, &params).await.map_err(db_error)?;
                Ok(row.get::<_, String>(0))
            })
            .await?;
        Ok(AuditEvent { id, event: new })
    }

    pub(super) async fn list_audit_sql(&self, query: &AuditQuery) -> StoreResult<Page<AuditEvent>> {
        let kind = query.kind.map(|k| k.as_str());
        let user = query.user.as_ref().map(|u| u.to_lowercase());
        let (since, until) = (query.since.map(secs), query.until.map(secs));
        let (offset, limit) = (secs(query.offset), secs(query.limit));
        let (kind, user) = (&kind, &user);
        self.with(|c| async move {
            let filter = "($1::TEXT IS NULL OR kind = $1) \
                 AND ($2::TEXT IS NULL OR lower(actor) = $2 OR lower(subject) = $2) \
                 AND ($3::BIGINT IS NULL OR time >= $3) AND ($4::BIGINT IS NULL OR time <= $4)";
            let sql = format!(
                "SELECT id, time, kind, actor, subject, client_ip, request_id, details \
                 FROM audit_events WHERE {filter} ORDER BY time DESC, seq DESC LIMIT $6 OFFSET $5"
            );
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                [kind, user, &since, &until, &offset, &limit];
            let rows = c.query(&sql, &params).await.map_err(db_error)?;
            let count = format!("SELECT COUNT(*) FROM audit_events WHERE {filter}");
            let total: i64 = c
                .query_one(&count, &params[..4])
                .await
                .map_err(db_error)?
                .get(0);
            Ok(Page {
                items: rows.iter().map(event).collect::<StoreResult<_>>()?,
                total: unsecs(total),
            })
        })
        .await
    }

    pub(super) async fn prune_audit_sql(&self, before: u64) -> StoreResult<u64> {
        let before = secs(before);
        self.with(|c| async move {
            c.execute("DELETE FROM audit_events WHERE time < $1", &[&before])
                .await
                .map_err(db_error)
        })
        .await
    }
}
