//! The blocking sled parts of users (create, rename, cascade delete, listing).

use super::*;

impl SledStore {
    pub(super) fn create_user_blocking(&self, new: NewUser, now: u64) -> StoreResult<User> {
        let user = User {
            id: new_id(),
            username: new.username,
            password_hash: new.password_hash,
            is_active: new.is_active,
            is_superuser: new.is_superuser,
            created_at: now,
            updated_at: now,
        };
        let bytes = enc(&user)?;
        let name = name_key(&user.username);
        (&self.users, &self.index)
            .transaction(|(users, index)| {
                if index.get(&name)?.is_some() {
                    return abort(StoreError::Conflict("username already taken".into()));
                }
                index.insert(name.as_slice(), user.id.as_bytes())?;
                users.insert(user.id.as_bytes(), bytes.as_slice())?;
                Ok(())
            })
            .map_err(tx_error)?;
        Ok(user)
    }

    pub(super) fn get_user_by_username_blocking(&self, username: &str) -> StoreResult<User> {
        let id = self.index.get(name_key(username)).map_err(storage)?;
        let id = id.ok_or(StoreError::NotFound)?;
        self.get_json(&self.users, "user", &String::from_utf8_lossy(&id))
    }

    pub(super) fn update_user_blocking(
        &self,
        id: &str,
        update: UserUpdate,
        now: u64,
    ) -> StoreResult<User> {
        valid(id)?;
        (&self.users, &self.index)
            .transaction(|(users, index)| {
                let Some(bytes) = users.get(id)? else {
                    return abort(StoreError::NotFound);
                };
                let mut user: User = dec("user", &bytes).or_else(abort)?;
                if let Some(username) = &update.username {
                    let (old, new) = (name_key(&user.username), name_key(username));
                    if old != new {
                        if index.get(&new)?.is_some() {
                            return abort(StoreError::Conflict("username already taken".into()));
                        }
                        index.remove(old)?;
                        index.insert(new, id.as_bytes())?;
                    }
                    user.username = username.clone();
                }
                if let Some(hash) = &update.password_hash {
                    user.password_hash = hash.clone();
                }
                user.is_active = update.is_active.unwrap_or(user.is_active);
                user.is_superuser = update.is_superuser.unwrap_or(user.is_superuser);
                user.updated_at = now;
                users.insert(id.as_bytes(), enc(&user).or_else(abort)?)?;
                Ok(user)
            })
            .map_err(tx_error)
    }

    pub(super) fn delete_user_blocking(&self, id: &str) -> StoreResult<()> {
        valid(id)?;
        self.delete_user_tx(id, true)?;
        // Children created between the scan and the transaction: none can be
        // added now that the user is gone, so a second pass catches them all.
        self.delete_user_tx(id, false)?;
        Ok(())
    }

    /// Removes a user's keys, families and variables (and, with `with_user`,
    /// the user, its username entry and failure counter) in one transaction.
    fn delete_user_tx(&self, user_id: &str, with_user: bool) -> StoreResult<()> {
        let keys = self.children("userkey", user_id)?;
        let fams = self.children("userfam", user_id)?;
        let vars = self.children("uservar", user_id)?;
        let trees = (
            &self.users,
            &self.api_keys,
            &self.families,
            &self.variables,
            &self.index,
            &self.failures,
        );
        trees
            .transaction(|(users, api_keys, families, variables, index, failures)| {
                if with_user {
                    let Some(bytes) = users.remove(user_id)? else {
                        return abort(StoreError::NotFound);
                    };
                    let user: User = dec("user", &bytes).or_else(abort)?;
                    index.remove(name_key(&user.username))?;
                    failures.remove(user.username.to_lowercase().as_bytes())?;
                }
                for (ikey, id) in &keys {
                    if let Some(bytes) = api_keys.remove(id.as_bytes())? {
                        let k: ApiKey = dec("api key", &bytes).or_else(abort)?;
                        index.remove(key(&["keyhash", &k.hash]))?;
                    }
                    index.remove(ikey)?;
                }
                for (ikey, id) in &fams {
                    families.remove(id.as_bytes())?;
                    index.remove(ikey)?;
                }
                for (ikey, id) in &vars {
                    variables.remove(id.as_bytes())?;
                    index.remove(ikey)?;
                }
                Ok(())
            })
            .map_err(tx_error)
    }

    pub(super) fn list_users_blocking(&self, offset: u64, limit: u64) -> StoreResult<Page<User>> {
        let mut items = Vec::new();
        let mut total = 0u64;
        for item in self.index.scan_prefix(key(&["name", ""])) {
            let (_, id) = item.map_err(storage)?;
            if total >= offset && (items.len() as u64) < limit {
                let id = String::from_utf8_lossy(&id);
                let user = self
                    .get_json(&self.users, "user", &id)
                    .map_err(|e| match e {
                        StoreError::NotFound => StoreError::Corrupt(format!(
                            "username index points to missing user {id}"
                        )),
                        e => e,
                    })?;
                items.push(user);
            }
            total += 1;
        }
        Ok(Page { items, total })
    }
}
