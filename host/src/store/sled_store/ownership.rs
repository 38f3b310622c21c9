//! The blocking sled parts of the ownership registry.
//!
//! Trees: `owners` (`{kind}\0{id}` → JSON [`Ownership`]) and `owned`
//! (`{kind}\0{owner length, u32 BE}{owner}{id}` → empty), the reverse index
//! for listings. The owner is length-prefixed so that no byte in an owner or
//! id (NUL included) can make one key read as another.

use super::*;

fn owner_key(kind: ResourceKind, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(kind.as_str().len() + 1 + id.len());
    k.extend_from_slice(kind.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The kind and id of an `owners` key (the inverse of `owner_key`).
pub(super) fn parse_owner_key(key: &[u8]) -> StoreResult<(ResourceKind, String)> {
    let corrupt = || StoreError::Corrupt("an ownership registry key is malformed".into());
    let split = key.iter().position(|b| *b == 0).ok_or_else(corrupt)?;
    let kind = std::str::from_utf8(&key[..split])
        .ok()
        .and_then(ResourceKind::parse)
        .ok_or_else(corrupt)?;
    let id = String::from_utf8(key[split + 1..].to_vec()).map_err(|_| corrupt())?;
    Ok((kind, id))
}

fn owned_prefix(kind: ResourceKind, owner: &str) -> Vec<u8> {
    let len = u32::try_from(owner.len()).unwrap_or(u32::MAX);
    let mut k = Vec::with_capacity(kind.as_str().len() + 5 + owner.len());
    k.extend_from_slice(kind.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(owner.as_bytes());
    k
}

fn owned_key(kind: ResourceKind, owner: &str, id: &str) -> Vec<u8> {
    let mut k = owned_prefix(kind, owner);
    k.extend_from_slice(id.as_bytes());
    k
}

impl SledStore {
    pub(super) fn claim_resource_blocking(
        &self,
        kind: ResourceKind,
        id: &str,
        owner: &str,
        now: u64,
    ) -> StoreResult<Claim> {
        let key = owner_key(kind, id);
        // Fast path: already owned (the common case), no transaction.
        if let Some(bytes) = self.owners.get(&key).map_err(storage)? {
            return Ok(Claim {
                ownership: dec("ownership", &bytes)?,
                claimed: false,
            });
        }
        let mine = Ownership {
            owner: owner.to_string(),
            claimed_at: now,
        };
        let bytes = enc(&mine)?;
        let index_key = owned_key(kind, owner, id);
        (&self.owners, &self.owned)
            .transaction(|(owners, owned): &(TransactionalTree, TransactionalTree)| {
                if let Some(existing) = owners.get(&key)? {
                    let ownership = match dec("ownership", &existing) {
                        Ok(o) => o,
                        Err(e) => return abort(e),
                    };
                    return Ok(Claim {
                        ownership,
                        claimed: false,
                    });
                }
                owners.insert(key.as_slice(), bytes.as_slice())?;
                owned.insert(index_key.as_slice(), &[] as &[u8])?;
                Ok(Claim {
                    ownership: mine.clone(),
                    claimed: true,
                })
            })
            .map_err(tx_error)
    }

    pub(super) fn resource_owner_blocking(
        &self,
        kind: ResourceKind,
        id: &str,
    ) -> StoreResult<Option<Ownership>> {
        match self.owners.get(owner_key(kind, id)).map_err(storage)? {
            Some(bytes) => Ok(Some(dec("ownership", &bytes)?)),
            None => Ok(None),
        }
    }

    pub(super) fn release_resource_blocking(
        &self,
        kind: ResourceKind,
        id: &str,
    ) -> StoreResult<bool> {
        let key = owner_key(kind, id);
        (&self.owners, &self.owned)
            .transaction(|(owners, owned): &(TransactionalTree, TransactionalTree)| {
                let Some(existing) = owners.remove(key.as_slice())? else {
                    return Ok(false);
                };
                let ownership: Ownership = match dec("ownership", &existing) {
                    Ok(o) => o,
                    Err(e) => return abort(e),
                };
                owned.remove(owned_key(kind, &ownership.owner, id))?;
                Ok(true)
            })
            .map_err(tx_error)
    }

    pub(super) fn owned_resources_blocking(
        &self,
        kind: ResourceKind,
        owner: &str,
    ) -> StoreResult<Vec<String>> {
        let prefix = owned_prefix(kind, owner);
        self.owned
            .scan_prefix(&prefix)
            .map(|item| {
                let (k, _) = item.map_err(storage)?;
                String::from_utf8(k[prefix.len()..].to_vec())
                    .map_err(|e| StoreError::Corrupt(format!("owned resource id: {e}")))
            })
            .collect()
    }
}
