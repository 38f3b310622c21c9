//! The blocking sled parts of API keys and refresh-token families.

use super::*;

/// Marks a family revoked; `None` (no write) if it already was.
fn revoke(mut fam: RefreshFamily) -> (Option<RefreshFamily>, ()) {
    let was = fam.revoked;
    fam.revoked = true;
    ((!was).then_some(fam), ())
}

impl SledStore {
    pub(super) fn create_api_key_blocking(&self, new: NewApiKey, now: u64) -> StoreResult<ApiKey> {
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
        let hash_key = key(&["keyhash", &rec.hash]);
        let entries = [
            (hash_key.clone(), rec.id.as_bytes()),
            (key(&["userkey", &rec.user_id, &rec.id]), &b""[..]),
        ];
        let unique = Some((hash_key.as_slice(), "api key already exists"));
        self.insert_owned(
            &self.api_keys,
            &rec.user_id,
            &rec.id,
            &rec,
            &entries,
            unique,
        )?;
        Ok(rec)
    }

    pub(super) fn get_api_key_by_hash_blocking(&self, hash: &str) -> StoreResult<ApiKey> {
        let id = self.index.get(key(&["keyhash", hash])).map_err(storage)?;
        let id = id.ok_or(StoreError::NotFound)?;
        self.get_json(&self.api_keys, "api key", &String::from_utf8_lossy(&id))
    }

    pub(super) fn list_api_keys_blocking(&self, user_id: &str) -> StoreResult<Vec<ApiKey>> {
        let mut keys: Vec<ApiKey> =
            self.list_children("userkey", &self.api_keys, "api key", user_id)?;
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    pub(super) fn touch_api_key_blocking(&self, id: &str, now: u64) -> StoreResult<bool> {
        // The swap that wins decides: only it can have seen no last use.
        let (_, first) = self.cas_update(&self.api_keys, "api key", id, |mut k: ApiKey| {
            let first = k.last_used_at.is_none();
            let changed = k.last_used_at != Some(now);
            k.last_used_at = Some(now);
            (changed.then_some(k), first)
        })?;
        Ok(first)
    }

    pub(super) fn delete_api_key_blocking(&self, id: &str) -> StoreResult<()> {
        valid(id)?;
        (&self.api_keys, &self.index)
            .transaction(|(api_keys, index)| {
                let Some(bytes) = api_keys.remove(id.as_bytes())? else {
                    return abort(StoreError::NotFound);
                };
                let k: ApiKey = dec("api key", &bytes).or_else(abort)?;
                index.remove(key(&["keyhash", &k.hash]))?;
                index.remove(key(&["userkey", &k.user_id, id]))?;
                Ok(())
            })
            .map_err(tx_error)
    }

    pub(super) fn create_family_blocking(
        &self,
        user_id: &str,
        jti: &str,
        now: u64,
    ) -> StoreResult<RefreshFamily> {
        let fam = RefreshFamily {
            id: new_id(),
            user_id: user_id.to_string(),
            current_jti: jti.to_string(),
            revoked: false,
            created_at: now,
        };
        let entries = [(key(&["userfam", user_id, &fam.id]), &b""[..])];
        self.insert_owned(&self.families, user_id, &fam.id, &fam, &entries, None)?;
        Ok(fam)
    }

    /// The outcome and whether anything was written.
    pub(super) fn rotate_family_blocking(
        &self,
        id: &str,
        presented_jti: &str,
        new_jti: &str,
    ) -> StoreResult<(RotateOutcome, bool)> {
        let (changed, outcome) = self.cas_update(
            &self.families,
            "refresh family",
            id,
            |mut fam: RefreshFamily| {
                if fam.revoked {
                    return (None, RotateOutcome::Revoked(fam));
                }
                if bool::from(fam.current_jti.as_bytes().ct_eq(presented_jti.as_bytes())) {
                    fam.current_jti = new_jti.to_string();
                    (Some(fam.clone()), RotateOutcome::Rotated(fam))
                } else {
                    fam.revoked = true;
                    (Some(fam.clone()), RotateOutcome::ReuseDetected(fam))
                }
            },
        )?;
        Ok((outcome, changed))
    }

    /// Whether the family was newly revoked.
    pub(super) fn revoke_family_blocking(&self, id: &str) -> StoreResult<bool> {
        Ok(self
            .cas_update(&self.families, "refresh family", id, revoke)?
            .0)
    }

    pub(super) fn revoke_user_families_blocking(&self, user_id: &str) -> StoreResult<u64> {
        self.require_user(user_id)?;
        let mut revoked = 0;
        for (_, id) in self.children("userfam", user_id)? {
            match self.cas_update(&self.families, "refresh family", &id, revoke) {
                Ok((true, ())) => revoked += 1,
                Ok((false, ())) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(revoked)
    }
}
