//! Everything in a sled database, read in one pass, for `agentflow store
//! migrate` (see `pg_store::import`).

use super::*;

/// Every stored entity of a sled database.
#[derive(Debug, Default)]
pub struct Export {
    /// All users.
    pub users: Vec<User>,
    /// All API keys.
    pub api_keys: Vec<ApiKey>,
    /// All refresh-token families.
    pub families: Vec<RefreshFamily>,
    /// All variables (values stay encrypted).
    pub variables: Vec<Variable>,
    /// Failed-login counters by key.
    pub failures: Vec<(Vec<u8>, FailureState)>,
    /// The audit trail, oldest first.
    pub audit: Vec<AuditEvent>,
    /// The ownership registry (tenancy): kind, resource id, owner.
    pub owners: Vec<(ResourceKind, String, Ownership)>,
}

fn all<T: DeserializeOwned>(tree: &Tree, what: &str) -> StoreResult<Vec<T>> {
    tree.iter()
        .map(|item| {
            let (_, v) = item.map_err(storage)?;
            dec(what, &v)
        })
        .collect()
}

impl SledStore {
    /// Reads every entity (for migrating to another store).
    pub fn export(&self) -> StoreResult<Export> {
        let failures = self
            .failures
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(storage)?;
                Ok((k.to_vec(), dec("failure counter", &v)?))
            })
            .collect::<StoreResult<_>>()?;
        let audit = self
            .audit
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(storage)?;
                Ok(AuditEvent {
                    id: hex::encode(&k),
                    event: dec("audit event", &v)?,
                })
            })
            .collect::<StoreResult<_>>()?;
        let owners = self
            .owners
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(storage)?;
                let (kind, id) = ownership::parse_owner_key(&k)?;
                Ok((kind, id, dec("ownership", &v)?))
            })
            .collect::<StoreResult<_>>()?;
        Ok(Export {
            audit,
            owners,
            users: all(&self.users, "user")?,
            api_keys: all(&self.api_keys, "api key")?,
            families: all(&self.families, "refresh family")?,
            variables: all(&self.variables, "variable")?,
            failures,
        })
    }
}
