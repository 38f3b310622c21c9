//! The stored entities (users, API keys, refresh-token families, variables;
//! failed-login counters are in `lockout`) and their helpers: ids, time, API-key material.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A user account. `Debug` hides the password hash.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Random 32-hex-digit id.
    pub id: String,
    /// The name as given at creation (unique ignoring case).
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Inactive users cannot log in.
    pub is_active: bool,
    /// Superusers may use the admin API.
    pub is_superuser: bool,
    /// Creation time, unix seconds.
    pub created_at: u64,
    /// Last change, unix seconds.
    pub updated_at: u64,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .field("is_active", &self.is_active)
            .field("is_superuser", &self.is_superuser)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// What is needed to create a user.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Username (unique ignoring case).
    pub username: String,
    /// argon2id PHC string (see `passwords::hash_password`).
    pub password_hash: String,
    /// Whether the user may log in.
    pub is_active: bool,
    /// Whether the user is a superuser.
    pub is_superuser: bool,
}

/// A partial update of a user; `None` fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    /// New username (unique ignoring case).
    pub username: Option<String>,
    /// New password hash.
    pub password_hash: Option<String>,
    /// New active flag.
    pub is_active: Option<bool>,
    /// New superuser flag.
    pub is_superuser: Option<bool>,
}

/// An API key. Only the SHA-256 of the full key is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Random 32-hex-digit id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// The owner's label for the key.
    pub name: String,
    /// Lower-case hex SHA-256 of the full key ([`hash_api_key`]); unique.
    pub hash: String,
    /// The key's non-secret prefix, shown in listings.
    pub prefix: String,
    /// The key's last four characters, shown in listings.
    pub last4: String,
    /// Creation time, unix seconds.
    pub created_at: u64,
    /// Last time the key authenticated a request, if ever.
    pub last_used_at: Option<u64>,
}

/// What is needed to store an API key (see [`NewApiKey::generate`]).
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Owner (must exist).
    pub user_id: String,
    /// Label.
    pub name: String,
    /// SHA-256 hex of the full key.
    pub hash: String,
    /// Non-secret prefix.
    pub prefix: String,
    /// Last four characters.
    pub last4: String,
}

/// Prefix of every API key this module generates.
pub const API_KEY_PREFIX: &str = "sk-";

impl NewApiKey {
    /// Generates a fresh key for `user_id`: returns what to store and the full
    /// key, which is shown to the user once and never stored. The key is
    /// `sk-` followed by 32 random bytes in hex; its prefix is the first 11
    /// characters.
    pub fn generate(user_id: &str, name: &str) -> (NewApiKey, String) {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let full = format!("{API_KEY_PREFIX}{}", hex::encode(secret));
        let new = NewApiKey {
            user_id: user_id.to_string(),
            name: name.to_string(),
            hash: hash_api_key(&full),
            prefix: full[..API_KEY_PREFIX.len() + 8].to_string(),
            last4: full[full.len() - 4..].to_string(),
        };
        (new, full)
    }
}

/// Lower-case hex SHA-256 of a full API key, the value looked up by
/// [`Store::get_api_key_by_hash`](super::Store::get_api_key_by_hash).
pub fn hash_api_key(full_key: &str) -> String {
    hex::encode(Sha256::digest(full_key.as_bytes()))
}

/// A refresh-token family: every refresh token issued from one login shares
/// it, and only the latest (`current_jti`) may be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshFamily {
    /// Random 32-hex-digit id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// The jti of the only refresh token that may be used next.
    pub current_jti: String,
    /// A revoked family accepts no token.
    pub revoked: bool,
    /// Creation time, unix seconds.
    pub created_at: u64,
}

/// What happened when a refresh token was presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The token was current; the family now expects the new jti.
    Rotated(RefreshFamily),
    /// The token was an old one (stolen or replayed): the whole family has just
    /// been revoked.
    ReuseDetected(RefreshFamily),
    /// The family was already revoked; nothing changed.
    Revoked(RefreshFamily),
}

/// The two kinds of variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VariableKind {
    /// A secret (API token, password).
    Credential,
    /// A non-secret setting (still encrypted at rest).
    Generic,
}

/// A per-user named value, encrypted at rest. `Debug` hides the value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variable {
    /// Random 32-hex-digit id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Name, unique per user (case-sensitive).
    pub name: String,
    /// Credential or generic.
    pub kind: VariableKind,
    /// Fernet token of the value (see `secrets::SecretBox`).
    pub value_encrypted: String,
    /// Creation time, unix seconds.
    pub created_at: u64,
    /// Last change, unix seconds.
    pub updated_at: u64,
}

impl fmt::Debug for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Variable")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("value_encrypted", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// What is needed to create a variable.
#[derive(Debug, Clone)]
pub struct NewVariable {
    /// Owner (must exist).
    pub user_id: String,
    /// Name, unique per user.
    pub name: String,
    /// Credential or generic.
    pub kind: VariableKind,
    /// Fernet token of the value.
    pub value_encrypted: String,
}

/// One page of a listing plus the total number of items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// How many items exist in all.
    pub total: u64,
}

/// A fresh random id: 16 random bytes as 32 lower-case hex digits.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// True for ids this module makes (32 lower-case hex digits); stores treat any
/// other id as not found without touching the database.
pub fn is_valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The current time in unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
