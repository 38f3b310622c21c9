//! The blocking sled parts of variables, including the all-or-nothing
//! re-encryption used by key rotation.

use super::*;

impl SledStore {
    pub(super) fn create_variable_blocking(
        &self,
        new: NewVariable,
        now: u64,
    ) -> StoreResult<Variable> {
        let var = Variable {
            id: new_id(),
            user_id: new.user_id,
            name: new.name,
            kind: new.kind,
            value_encrypted: new.value_encrypted,
            created_at: now,
            updated_at: now,
        };
        let name_key = key(&["uservar", &var.user_id, &var.name]);
        let entries = [(name_key.clone(), var.id.as_bytes())];
        let unique = Some((name_key.as_slice(), "variable name already used"));
        self.insert_owned(
            &self.variables,
            &var.user_id,
            &var.id,
            &var,
            &entries,
            unique,
        )?;
        Ok(var)
    }

    pub(super) fn get_variable_by_name_blocking(
        &self,
        user_id: &str,
        name: &str,
    ) -> StoreResult<Variable> {
        valid(user_id)?;
        let id = self
            .index
            .get(key(&["uservar", user_id, name]))
            .map_err(storage)?;
        let id = id.ok_or(StoreError::NotFound)?;
        self.get_json(&self.variables, "variable", &String::from_utf8_lossy(&id))
    }

    pub(super) fn update_variable_blocking(
        &self,
        id: &str,
        kind: VariableKind,
        value_encrypted: String,
        now: u64,
    ) -> StoreResult<Variable> {
        let (_, var) = self.cas_update(&self.variables, "variable", id, |mut var: Variable| {
            var.kind = kind;
            var.value_encrypted = value_encrypted.clone();
            var.updated_at = now;
            (Some(var.clone()), var)
        })?;
        Ok(var)
    }

    pub(super) fn delete_variable_blocking(&self, id: &str) -> StoreResult<()> {
        valid(id)?;
        (&self.variables, &self.index)
            .transaction(|(variables, index)| {
                let Some(bytes) = variables.remove(id.as_bytes())? else {
                    return abort(StoreError::NotFound);
                };
                let var: Variable = dec("variable", &bytes).or_else(abort)?;
                index.remove(key(&["uservar", &var.user_id, &var.name]))?;
                Ok(())
            })
            .map_err(tx_error)
    }

    pub(super) fn list_variables_blocking(&self, user_id: &str) -> StoreResult<Vec<Variable>> {
        // The index orders a user's variables by name.
        self.list_children("uservar", &self.variables, "variable", user_id)
    }

    /// Maps every stored value through `f` first (any failure: nothing is
    /// written), then swaps them all in one transaction that refuses if any
    /// variable changed in between.
    pub(super) fn reencrypt_variables_blocking<F, E>(&self, mut f: F) -> StoreResult<u64>
    where
        F: FnMut(&str) -> Result<String, E>,
        E: fmt::Display,
    {
        let mut changes = Vec::new();
        for item in self.variables.iter() {
            let (k, old) = item.map_err(storage)?;
            let mut var: Variable = dec("variable", &old)?;
            var.value_encrypted = f(&var.value_encrypted).map_err(|e| StoreError::Reencrypt {
                variable_id: var.id.clone(),
                reason: e.to_string(),
            })?;
            changes.push((k, old, enc(&var)?, var.id));
        }
        self.variables
            .transaction(|tx| {
                for (k, old, new, id) in &changes {
                    match tx.get(k)? {
                        Some(current) if current == *old => tx.insert(k, new.as_slice())?,
                        _ => {
                            return abort(StoreError::Conflict(format!(
                                "variable {id} changed during re-encryption; retry"
                            )));
                        }
                    };
                }
                Ok(())
            })
            .map_err(tx_error)?;
        Ok(changes.len() as u64)
    }
}
