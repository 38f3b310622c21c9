//! The blocking sled parts of the audit trail: the `audit` tree, keyed by the
//! event's time (8 bytes, big-endian) then a sequence number from sled's id
//! generator (8 bytes), so a key range is a time range and a reverse scan is
//! newest first. The event id is that key in hex.

use super::*;

/// The first key at or after `time`.
fn time_key(time: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&time.to_be_bytes());
    k
}

impl SledStore {
    pub(super) fn append_audit_blocking(&self, event: NewAuditEvent) -> StoreResult<AuditEvent> {
        let seq = self.db.generate_id().map_err(storage)?;
        let mut k = time_key(event.time);
        k[8..].copy_from_slice(&seq.to_be_bytes());
        self.audit.insert(k, enc(&event)?).map_err(storage)?;
        Ok(AuditEvent {
            id: hex::encode(k),
            event,
        })
    }

    pub(super) fn list_audit_blocking(&self, query: &AuditQuery) -> StoreResult<Page<AuditEvent>> {
        let start = time_key(query.since.unwrap_or(0));
        let range = match query.until.and_then(|t| t.checked_add(1)) {
            Some(end) => self.audit.range(start..time_key(end)),
            None => self.audit.range(start..),
        };
        let mut items = Vec::new();
        let mut total = 0u64;
        for item in range.rev() {
            let (k, v) = item.map_err(storage)?;
            let event: NewAuditEvent = dec("audit event", &v)?;
            if !query.matches(&event) {
                continue;
            }
            if total >= query.offset && (items.len() as u64) < query.limit {
                items.push(AuditEvent {
                    id: hex::encode(&k),
                    event,
                });
            }
            total += 1;
        }
        Ok(Page { items, total })
    }

    pub(super) fn prune_audit_blocking(&self, before: u64) -> StoreResult<u64> {
        let mut removed = 0;
        for item in self.audit.range(..time_key(before)) {
            let (k, _) = item.map_err(storage)?;
            if self.audit.remove(k).map_err(storage)?.is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}
