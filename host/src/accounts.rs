//! The account system as a service: users, logins with rotating refresh
//! tokens, API keys and encrypted variables, over the [`Store`] trait.

use std::net::IpAddr;
use std::time::Instant;

use serde_json::{Map, Value, json};
use unicode_normalization::UnicodeNormalization;

use crate::audit::{AuditTrail, Entry, FloodKey};
use crate::config::Config;
use crate::error::ApiError;
use crate::identity::{Authenticated, Identity, IdentityOrigin};
use crate::jwt::{JwtSigner, JwtVerifier};
use crate::login_throttle::{AddressThrottle, ClientKey};
use crate::passwords::{self, PasswordError};
use crate::secrets::{KeyOrigin, SecretBox};
use crate::settings::{AccountSettings, AuditSettings, SettingError};
use crate::store::{
    AttemptKeys, AttemptOutcome, AttemptVerdict, AuditKind, LockScope, NewUser, PgStore,
    RotateOutcome, SledStore, Store, StoreBackend, StoreError, User, UserUpdate, hash_api_key,
    new_id, unix_now,
};

/// Claim that tells access tokens from refresh tokens.
pub const TOKEN_TYPE_CLAIM: &str = "type";

/// Claim of access tokens naming their login (the refresh-token family),
/// as OpenID Connect names a session. Checked against the store on every
/// request, so logout and refresh-token reuse end the login at once.
pub const LOGIN_CLAIM: &str = "sid";

/// Why the account system cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// A setting is wrong.
    #[error(transparent)]
    Setting(#[from] SettingError),
    /// The Fernet key is wrong or unreadable.
    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretsError),
    /// The database cannot be opened.
    #[error("cannot open the database {path}: {reason}")]
    Store {
        /// The data dir, or the database URL with its password masked.
        path: String,
        /// Why (e.g. another process holds it).
        reason: String,
    },
    /// Creating the configured superuser failed.
    #[error("cannot create the superuser from AGENTFLOW_SUPERUSER: {0}")]
    Superuser(String),
}

/// Tokens handed out by login and refresh.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    /// A JWT accepted by the built-in `jwt` method.
    pub access_token: String,
    /// A single-use JWT for `POST /v1/refresh`.
    pub refresh_token: String,
    /// Always `bearer`.
    #[schema(example = "bearer")]
    pub token_type: &'static str,
    /// Lifetime of the access token in seconds.
    pub expires_in: u64,
}

/// The account system.
pub struct Accounts {
    /// Where accounts live (sled, or PostgreSQL when a database URL is set).
    pub store: StoreBackend,
    /// Encrypts values at rest.
    pub secrets: SecretBox,
    /// The settings it was started with.
    pub settings: AccountSettings,
    /// The audit trail's settings and flood state (events live in `store`).
    pub audit: AuditTrail,
    jwt: Option<(JwtSigner, JwtVerifier)>,
    throttle: AddressThrottle,
}

impl Accounts {
    /// Opens the data dir, loads or creates the Fernet key, and creates the
    /// superuser named in the settings.
    pub async fn open(cfg: &Config) -> Result<Accounts, AccountsError> {
        let settings = AccountSettings::from_env(&cfg.env, &cfg.dir())?;
        // Owner-only before anything (key file, database) is written into it.
        crate::store::permissions::private_dir(&settings.data_dir).map_err(|e| {
            AccountsError::Store {
                path: settings.data_dir.display().to_string(),
                reason: format!("cannot make it private (0700): {e}"),
            }
        })?;
        let hashers = passwords::pool::configure(settings.login.hash_concurrency);
        if hashers != settings.login.hash_concurrency {
            tracing::warn!(
                in_force = hashers,
                "the password hashing pool was sized before AGENTFLOW_PASSWORD_HASH_CONCURRENCY was read"
            );
        }
        let (secrets, origin) = SecretBox::from_settings(
            settings.secret_key.as_deref(),
            settings.secret_key_previous.as_deref(),
            &settings.data_dir,
        )?;
        match origin {
            KeyOrigin::Generated { path } => tracing::warn!(
                path = %path.display(),
                "no AGENTFLOW_SECRET_KEY: generated one in the data dir; multi-instance deployments must set AGENTFLOW_SECRET_KEY"
            ),
            KeyOrigin::File {
                path,
                loose_permissions: true,
            } => {
                tracing::warn!(path = %path.display(), "the secret key file is readable by others; chmod 600 it")
            }
            _ => {}
        }
        let store = open_store(&settings, cfg.database.as_ref()).await?;
        let jwt = match (
            JwtSigner::from_env(&cfg.env, &cfg.dir()),
            JwtVerifier::from_env(&cfg.env, &cfg.dir(), &Default::default()),
        ) {
            (Ok(s), Ok(v)) => Some((s, v)),
            (Err(e), _) | (_, Err(e)) => {
                tracing::info!("login is disabled until the JWT key is configured ({e})");
                None
            }
        };
        if settings.auto_login {
            tracing::warn!(
                "AGENTFLOW_AUTO_LOGIN is on: GET /v1/auto_login hands a superuser token to anyone who asks"
            );
        }
        let throttle = AddressThrottle::new(
            settings.login.attempts_per_minute,
            settings.login.in_flight_per_address,
        );
        let audit = AuditTrail::new(AuditSettings::from_env(&cfg.env)?);
        let accounts = Accounts {
            store,
            secrets,
            settings,
            audit,
            jwt,
            throttle,
        };
        if let (Some(name), Some(password)) = (
            &accounts.settings.superuser,
            &accounts.settings.superuser_password,
        ) {
            accounts
                .ensure_superuser(name, password)
                .await
                .map_err(|e| AccountsError::Superuser(e.to_string()))?;
        }
        Ok(accounts)
    }

    /// Creates `username` as an active superuser, or updates its password
    /// and flags if it exists.
    pub async fn ensure_superuser(&self, username: &str, password: &str) -> Result<User, ApiError> {
        validate_password(password)?;
        let existing = self.find_user_by_name(username).await?;
        if existing.is_none() {
            // Names stored before the ASCII rule keep working; new ones follow it.
            validate_username(username)?;
        }
        let hash = passwords::hash_password_async(password.to_owned())
            .await
            .map_err(internal)?;
        let now = unix_now();
        match existing {
            Some(user) => {
                let update = UserUpdate {
                    password_hash: Some(hash),
                    is_active: Some(true),
                    is_superuser: Some(true),
                    username: None,
                };
                Ok(self.store.update_user(&user.id, update, now).await?)
            }
            None => {
                let new = NewUser {
                    username: username.to_owned(),
                    password_hash: hash,
                    is_active: true,
                    is_superuser: true,
                };
                Ok(self.store.create_user(new, now).await?)
            }
        }
    }

    /// Checks a username and password sent from `client` (the address the
    /// login is throttled under; a proxy-aware caller passes the real
    /// client). In order: the per-address budget (429), the attempt counted
    /// against the account-and-address and account counters before any
    /// hashing (429 when either is locked), the password checked within the
    /// bounded hashing pool (429 when it stays busy), and only a right
    /// password on an active account clears this address's counter.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<TokenPair, ApiError> {
        let address = ClientKey::of(client);
        let client_ip = client.map(|ip| ip.to_string());
        // Who the attempt was for, bounded: a huge name is cut in the trail.
        let attempted: String = username.chars().take(MAX_USERNAME_CHARS).collect();
        let failed = |reason: &str| {
            Entry::new(AuditKind::LoginFailed)
                .subject(attempted.clone())
                .client(client_ip.clone())
                .detail("reason", reason)
        };
        let mut ticket = match self.throttle.admit(&address, Instant::now()) {
            Ok(ticket) => ticket,
            Err(t) => {
                crate::metrics::global().login_refused("throttled");
                let key = FloodKey::new(AuditKind::LoginFailed, address.as_str(), "throttled");
                self.record_limited(failed("throttled"), key).await;
                return Err(too_many(
                    "Too many login attempts from your address; try again later",
                    t.retry_after,
                ));
            }
        };
        // No account has a longer name (the rule is public), and a huge name
        // must not become a counter key.
        if username.chars().count() > MAX_USERNAME_CHARS {
            self.record(failed("bad_credentials")).await;
            return Err(wrong_credentials());
        }
        let name = canonical_username(username);
        let locked = |scope: &str| {
            crate::metrics::global().login_refused(&format!("locked_{scope}"));
            let entry = Entry::new(AuditKind::LoginLocked)
                .subject(attempted.clone())
                .client(client_ip.clone())
                .detail("scope", scope);
            let key = FloodKey::new(AuditKind::LoginLocked, address.as_str(), &name);
            (entry, key)
        };
        let keys = AttemptKeys::new(&name, address.as_str());
        let policy = self.settings.login.policy();
        match self
            .store
            .begin_login_attempt(&keys, unix_now(), policy)
            .await?
        {
            AttemptVerdict::Admitted => {}
            AttemptVerdict::Locked {
                retry_after,
                scope: LockScope::Address,
            } => {
                let (entry, key) = locked("address");
                self.record_limited(entry, key).await;
                return Err(too_many(
                    "Too many failed login attempts; try again later",
                    retry_after,
                ));
            }
            AttemptVerdict::Locked {
                retry_after,
                scope: LockScope::Account,
            } => {
                let (entry, key) = locked("account");
                self.record_limited(entry, key).await;
                return Err(too_many(
                    "Too many failed login attempts on this account; try again later",
                    retry_after,
                ));
            }
        }
        let verified = match self.check_password(&name, username, password).await {
            Ok(verified) => verified,
            Err(e) => {
                // Never checked: neither the address nor the account pays for it.
                ticket.refund();
                self.store
                    .finish_login_attempt(&keys, AttemptOutcome::NotChecked, policy)
                    .await?;
                self.record(failed("not_checked")).await;
                return Err(e);
            }
        };
        // A wrong password, an unknown user, and the right password of an
        // inactive account all stay counted: none of them resets a counter.
        let Some(user) = verified else {
            self.record(failed("bad_credentials")).await;
            return Err(wrong_credentials());
        };
        if !user.is_active {
            self.record(failed("inactive").subject(user.username.clone()))
                .await;
            return Err(ApiError::InvalidCredentials {
                detail: "Your account is not active; ask an administrator to activate it".into(),
                invalid_token: false,
            });
        }
        self.store
            .finish_login_attempt(&keys, AttemptOutcome::Succeeded, policy)
            .await?;
        ticket.refund();
        let pair = self.start_login(&user).await?;
        self.record(
            Entry::new(AuditKind::LoginSucceeded)
                .actor(user.username.clone())
                .subject(user.username)
                .client(client_ip),
        )
        .await;
        Ok(pair)
    }

    /// The user `name` (canonical) or, for names stored before
    /// normalization, `raw` if the password matches; `None` for an unknown
    /// user or a wrong password (both cost one hash). `Err` when the
    /// password was not checked.
    async fn check_password(
        &self,
        name: &str,
        raw: &str,
        password: &str,
    ) -> Result<Option<User>, ApiError> {
        let user = match self.find_user_by_name(name).await? {
            Some(user) => Some(user),
            None if raw != name => self.find_user_by_name(raw).await?,
            None => None,
        };
        if password.chars().count() > MAX_PASSWORD_CHARS {
            // No stored password is this long (the rule is public): skip the hash.
            return Ok(None);
        }
        let checked = match &user {
            Some(u) => {
                passwords::verify_password_async(password.to_owned(), u.password_hash.clone()).await
            }
            // Same work as a real check, so timing does not reveal which usernames exist.
            None => passwords::dummy_verify_async(password.to_owned())
                .await
                .map(|()| false),
        };
        match checked {
            Ok(true) => Ok(user),
            Ok(false) => Ok(None),
            Err(PasswordError::Busy { retry_after }) => Err(too_many(
                "The server is busy checking passwords; try again shortly",
                retry_after,
            )),
            Err(e) => Err(internal(e)),
        }
    }

    /// A user by (any case of) `name`, or `None`.
    async fn find_user_by_name(&self, name: &str) -> Result<Option<User>, ApiError> {
        match self.store.get_user_by_username(name).await {
            Ok(user) => Ok(Some(user)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts a refresh-token family for a new login and signs its first pair.
    async fn start_login(&self, user: &User) -> Result<TokenPair, ApiError> {
        let jti = new_id();
        let family = self.store.create_family(&user.id, &jti, unix_now()).await?;
        self.sign_pair(user, &family.id, &jti)
    }

    /// Exchanges a refresh token for a new pair; a reused token revokes its
    /// whole family.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        client: Option<IpAddr>,
    ) -> Result<TokenPair, ApiError> {
        let client_ip = client.map(|ip| ip.to_string());
        let (family, jti, user_id) = self.refresh_claims(refresh_token)?;
        let next = new_id();
        match self
            .store
            .rotate_family(&family, &jti, &next)
            .await
            .map_err(not_found_is_invalid)?
        {
            RotateOutcome::Rotated(_) => {}
            RotateOutcome::ReuseDetected(_) => {
                tracing::warn!(
                    user_id,
                    "refresh token reused: the login's whole token family is revoked"
                );
                let name = self.username_of(&user_id).await;
                self.record(
                    Entry::new(AuditKind::TokenReuseDetected)
                        .subject(name)
                        .client(client_ip)
                        .detail("revoked", "login"),
                )
                .await;
                return Err(invalid_refresh(
                    "refresh token was already used; this login has been revoked",
                ));
            }
            RotateOutcome::Revoked(_) => {
                return Err(invalid_refresh("this login has been revoked"));
            }
        }
        let user = self
            .active_user(&user_id)
            .await
            .map_err(|_| invalid_refresh("account is not active"))?;
        let pair = self.sign_pair(&user, &family, &next)?;
        self.record(
            Entry::new(AuditKind::TokenRefreshed)
                .actor(user.username.clone())
                .subject(user.username)
                .client(client_ip),
        )
        .await;
        Ok(pair)
    }

    /// The username behind `user_id` for the trail (the id if it is gone).
    async fn username_of(&self, user_id: &str) -> String {
        match self.store.get_user(user_id).await {
            Ok(u) => u.username,
            Err(_) => user_id.to_owned(),
        }
    }

    /// Signs an access token and the refresh token `jti` of `family`. The
    /// family remembers only the current jti: an older refresh token
    /// presented later is a replay.
    fn sign_pair(&self, user: &User, family: &str, jti: &str) -> Result<TokenPair, ApiError> {
        let (signer, _) = self.jwt()?;
        let now = unix_now();
        let ttl = self.settings.access_token_ttl;
        let access = json!({
            "sub": user.id, "user_id": user.id, "username": user.username, "roles": roles_of(user),
            "type": "access", LOGIN_CLAIM: family, "iat": now, "exp": now + ttl,
        });
        let refresh = json!({
            "sub": user.id, "type": "refresh", "fam": family, "jti": jti,
            "iat": now, "exp": now + self.settings.refresh_token_ttl,
        });
        let sign = |v: Value| match v {
            Value::Object(claims) => signer.sign(&claims).map_err(internal),
            _ => Err(ApiError::Internal("token claims must be an object".into())),
        };
        Ok(TokenPair {
            access_token: sign(access)?,
            refresh_token: sign(refresh)?,
            token_type: "bearer",
            expires_in: ttl,
        })
    }

    /// Revokes the login a refresh token belongs to.
    pub async fn logout(
        &self,
        refresh_token: &str,
        client: Option<IpAddr>,
    ) -> Result<(), ApiError> {
        let (family, _, user_id) = self.refresh_claims(refresh_token)?;
        self.store
            .revoke_family(&family)
            .await
            .map_err(not_found_is_invalid)?;
        let name = self.username_of(&user_id).await;
        self.record(
            Entry::new(AuditKind::Logout)
                .actor(name.clone())
                .subject(name)
                .client(client.map(|ip| ip.to_string())),
        )
        .await;
        Ok(())
    }

    /// (family, jti, user id) of a valid refresh token.
    fn refresh_claims(&self, token: &str) -> Result<(String, String, String), ApiError> {
        let (_, verifier) = self.jwt()?;
        let claims = verifier
            .claims(token)
            .map_err(|e| invalid_refresh(&e.to_string()))?;
        let get = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_owned);
        match (
            get(TOKEN_TYPE_CLAIM).as_deref(),
            get("fam"),
            get("jti"),
            get("sub"),
        ) {
            (Some("refresh"), Some(fam), Some(jti), Some(sub)) => Ok((fam, jti, sub)),
            _ => Err(invalid_refresh("not a refresh token")),
        }
    }

    /// A token for the auto-login superuser (only when AUTO_LOGIN is on).
    pub async fn auto_login(&self, client: Option<IpAddr>) -> Result<TokenPair, ApiError> {
        if !self.settings.auto_login {
            return Err(ApiError::Forbidden(
                "Auto login is disabled (AGENTFLOW_AUTO_LOGIN=False)".into(),
            ));
        }
        let name = self
            .settings
            .superuser
            .clone()
            .unwrap_or_else(|| "agentflow".into());
        let user = match self.store.get_user_by_username(&name).await {
            Ok(u) if u.is_superuser && u.is_active => u,
            Ok(_) => {
                return Err(ApiError::Forbidden(format!(
                    "auto login user {name:?} is not an active superuser"
                )));
            }
            Err(StoreError::NotFound) => {
                let random = crate::secrets::SecretBox::generate_key();
                self.ensure_superuser(&name, &random).await?
            }
            Err(e) => return Err(e.into()),
        };
        let pair = self.start_login(&user).await?;
        self.record(
            Entry::new(AuditKind::AutoLogin)
                .subject(user.username)
                .client(client.map(|ip| ip.to_string())),
        )
        .await;
        Ok(pair)
    }

    /// The user behind `user_id` if it exists and is active.
    pub async fn active_user(&self, user_id: &str) -> Result<User, ApiError> {
        match self.store.get_user(user_id).await {
            Ok(u) if u.is_active => Ok(u),
            Ok(_) => Err(ApiError::InvalidCredentials {
                detail: "account is not active".into(),
                invalid_token: false,
            }),
            Err(StoreError::NotFound) => Err(ApiError::InvalidCredentials {
                detail: "account no longer exists".into(),
                invalid_token: false,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a credential the account system issued is still good: its
    /// login not ended, its API key not revoked, its account active. For a
    /// caller authenticated long ago (an open WebSocket), so a revocation
    /// reaches it too. Credentials from elsewhere (other JWTs, plugins) have
    /// nothing here to revoke and pass.
    pub async fn still_valid(&self, origin: &IdentityOrigin) -> Result<(), ApiError> {
        let revoked = |detail: &str| ApiError::InvalidCredentials {
            detail: detail.into(),
            invalid_token: false,
        };
        let user_id = match origin {
            IdentityOrigin::Account { user_id, login } => {
                match self.store.get_family(login).await {
                    Ok(f) if f.user_id == *user_id && !f.revoked => {}
                    Ok(_) | Err(StoreError::NotFound) => {
                        return Err(revoked("this login has ended"));
                    }
                    Err(e) => return Err(e.into()),
                }
                user_id
            }
            IdentityOrigin::ApiKey { user_id, key_id } => {
                match self.store.get_api_key(key_id).await {
                    Ok(k) if k.user_id == *user_id => {}
                    Ok(_) | Err(StoreError::NotFound) => {
                        return Err(revoked("this API key has been revoked"));
                    }
                    Err(e) => return Err(e.into()),
                }
                user_id
            }
            IdentityOrigin::Anonymous | IdentityOrigin::Jwt | IdentityOrigin::Plugin { .. } => {
                return Ok(());
            }
        };
        self.active_user(user_id).await.map(|_| ())
    }

    /// Checks a verified access token (claim `type: "access"`) against the
    /// store: its login must exist, belong to its user and not be revoked,
    /// and the user must be active. Roles come from the account as it is now,
    /// not from the token, so a demoted superuser loses `admin` at once.
    // No cache here: one sled read per lookup is cheap; the PostgreSQL store
    // caches these reads itself, invalidated across instances (pg_store::cache).
    pub async fn resume_login(&self, mut who: Identity) -> Result<Authenticated, ApiError> {
        let refused = |why: &str| ApiError::InvalidCredentials {
            detail: format!("invalid token: {why}"),
            invalid_token: true,
        };
        let login = who
            .claims
            .get(LOGIN_CLAIM)
            .and_then(Value::as_str)
            .ok_or_else(|| refused("not issued by this server's login; log in again"))?
            .to_owned();
        let family = match self.store.get_family(&login).await {
            Ok(f) if f.user_id == who.user_id => f,
            Ok(_) | Err(StoreError::NotFound) => {
                return Err(refused("unknown login; log in again"));
            }
            Err(e) => return Err(e.into()),
        };
        if family.revoked {
            return Err(refused(
                "this login has ended (logged out, or its refresh token was reused)",
            ));
        }
        let user = match self.store.get_user(&family.user_id).await {
            Ok(u) if u.is_active => u,
            Ok(_) | Err(StoreError::NotFound) => {
                return Err(refused("the account is no longer active"));
            }
            Err(e) => return Err(e.into()),
        };
        who.roles = roles_of(&user);
        // The agent and `/v1/whoami` see the claims too: keep them truthful.
        who.claims.insert("roles".into(), json!(who.roles));
        Ok(Authenticated {
            identity: who,
            origin: IdentityOrigin::Account {
                user_id: user.id,
                login,
            },
        })
    }

    /// Authenticates an `x-api-key` value issued by `POST /v1/api-keys`.
    ///
    /// A key this server never issued is `Ok(None)`: not a credential of
    /// this method, so the auth chain passes it to the next method (an
    /// api-key plugin may know it). A known key of an inactive account is
    /// refused.
    pub async fn authenticate_api_key(&self, key: &str) -> Result<Option<Authenticated>, ApiError> {
        let refused = || ApiError::InvalidCredentials {
            detail: "invalid API key".into(),
            invalid_token: false,
        };
        let record = match self.store.get_api_key_by_hash(&hash_api_key(key)).await {
            Ok(r) => r,
            Err(StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let user = self
            .active_user(&record.user_id)
            .await
            .map_err(|_| refused())?;
        // The store decides first use (the record may come from a cache
        // that never sees the key's last use), once across instances.
        let first_use = match self.store.touch_api_key(&record.id, unix_now()).await {
            Ok(first) => first,
            Err(e) => {
                tracing::warn!(error = %e, "could not record API key use");
                false
            }
        };
        if first_use {
            self.record(
                Entry::new(AuditKind::ApiKeyFirstUsed)
                    .actor(user.username.clone())
                    .subject(record.name.clone())
                    .detail("key_id", record.id.clone()),
            )
            .await;
        }
        let mut claims = Map::new();
        claims.insert("auth_method".into(), json!("api_key"));
        claims.insert("api_key_id".into(), json!(record.id));
        claims.insert("username".into(), json!(user.username));
        let identity = Identity {
            user_id: user.id.clone(),
            roles: roles_of(&user),
            claims,
        };
        Ok(Some(Authenticated {
            identity,
            origin: IdentityOrigin::ApiKey {
                user_id: user.id,
                key_id: record.id,
            },
        }))
    }

    /// Forgets failed-login counters older than the lockout window and audit
    /// events older than the retention every few minutes (and at once), so
    /// guessing at random usernames cannot grow the database; writes
    /// aggregated audit events every few seconds.
    pub fn spawn_maintenance(self: &std::sync::Arc<Self>) {
        let floods = std::sync::Arc::downgrade(self);
        // Aggregated audit events are written soon after their window ends.
        let flush_every = self.audit.settings().flood_window_secs.min(10);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(flush_every));
            loop {
                every.tick().await;
                let Some(accounts) = floods.upgrade() else {
                    break;
                };
                accounts.flush_audit_floods().await;
            }
        });
        let accounts = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(300));
            loop {
                every.tick().await;
                let Some(accounts) = accounts.upgrade() else {
                    break;
                };
                accounts.throttle.prune(Instant::now());
                let before =
                    unix_now().saturating_sub(accounts.settings.login.policy().memory_secs());
                if let Err(e) = accounts.store.prune_failures(before).await {
                    tracing::warn!(error = %e, "pruning failed-login counters failed");
                }
                accounts.prune_audit().await;
            }
        });
    }

    fn jwt(&self) -> Result<&(JwtSigner, JwtVerifier), ApiError> {
        self.jwt.as_ref().ok_or_else(|| {
            ApiError::Unavailable("login needs JWT_SECRET_KEY (see .env.example)".into())
        })
    }
}

/// Secrets for plugins: the environment first, then the encrypted
/// variables of the superuser named by `AGENTFLOW_SUPERUSER` (decrypted
/// once, when the plugins load).
pub struct PluginSecrets {
    env: crate::config::Env,
    variables: std::collections::HashMap<String, String>,
}

impl PluginSecrets {
    /// Reads and decrypts the operator's variables among `granted` (the
    /// secret names plugins are granted); names the environment already
    /// answers, and variables no plugin may read, stay encrypted.
    pub async fn load(
        accounts: &Accounts,
        env: crate::config::Env,
        granted: &[&str],
    ) -> Result<PluginSecrets, ApiError> {
        let mut variables = std::collections::HashMap::new();
        let wanted: Vec<&str> = granted
            .iter()
            .copied()
            .filter(|name| env.get(name).is_none())
            .collect();
        if let (Some(name), false) = (&accounts.settings.superuser, wanted.is_empty()) {
            let owner = accounts.store.get_user_by_username(name).await?;
            for v in accounts.store.list_variables(&owner.id).await? {
                if !wanted.contains(&v.name.as_str()) {
                    continue;
                }
                match accounts.secrets.decrypt(&v.value_encrypted) {
                    Ok(bytes) => {
                        variables.insert(v.name, String::from_utf8_lossy(&bytes).into_owned());
                    }
                    Err(e) => {
                        tracing::warn!(variable = %v.name, error = %e, "cannot decrypt a variable for plugin secrets")
                    }
                }
            }
        }
        Ok(PluginSecrets { env, variables })
    }
}

impl crate::plugins::SecretSource for PluginSecrets {
    fn secret(&self, name: &str) -> Option<String> {
        self.env
            .get(name)
            .or_else(|| self.variables.get(name).cloned())
    }
}

/// Superusers are `admin`; everyone else is `user`.
pub fn roles_of(user: &User) -> Vec<String> {
    vec![if user.is_superuser { "admin" } else { "user" }.to_owned()]
}

/// Longest username (characters).
const MAX_USERNAME_CHARS: usize = 64;
/// Longest password (characters).
const MAX_PASSWORD_CHARS: usize = 1024;

/// The form of a typed username that lookups and failed-login counters use:
/// Unicode NFKC, so compatibility forms such as full-width `ａｌｉｃｅ` are
/// the same name as `alice` (case is ignored by the store).
pub fn canonical_username(name: &str) -> String {
    name.nfkc().collect()
}

/// Names of new accounts: 3–64 characters, each an ASCII letter or digit,
/// `.`, `_`, `-` or `@`. ASCII only, so no two names can look alike across
/// scripts (Cyrillic `а` vs Latin `a`); such text is NFKC-normal already, so
/// [`canonical_username`] of any lookalike compatibility form (full-width
/// letters) finds the same account; case is ignored when comparing.
pub fn validate_username(name: &str) -> Result<(), ApiError> {
    let ok = (3..=MAX_USERNAME_CHARS).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "username must be 3-64 ASCII letters, digits, '.', '_', '-' or '@'".into(),
        ))
    }
}

/// At least 8 characters, at most 1024 (argon2 input stays bounded).
pub fn validate_password(password: &str) -> Result<(), ApiError> {
    if (8..=MAX_PASSWORD_CHARS).contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "password must be 8-1024 characters".into(),
        ))
    }
}

/// PostgreSQL when `database` is set (an unreachable one is an error naming
/// the URL, password masked), else sled in the data dir.
async fn open_store(
    settings: &AccountSettings,
    database: Option<&crate::store::DatabaseSettings>,
) -> Result<StoreBackend, AccountsError> {
    if let Some(db) = database {
        let store = PgStore::connect(db)
            .await
            .map_err(|e| AccountsError::Store {
                path: db.masked_url(),
                reason: e.to_string(),
            })?;
        return Ok(StoreBackend::Postgres(store));
    }
    let path = settings.data_dir.join("db");
    SledStore::open(&path)
        .map(StoreBackend::Sled)
        .map_err(|e| AccountsError::Store {
            path: settings.data_dir.display().to_string(),
            reason: match e.to_string() {
                s if s.contains("WouldBlock") || s.contains("lock") => {
                    format!("{s} (is another agentflow using it?)")
                }
                s => s,
            },
        })
}

fn invalid_refresh(why: &str) -> ApiError {
    ApiError::InvalidCredentials {
        detail: format!("invalid refresh token: {why}"),
        invalid_token: true,
    }
}

fn not_found_is_invalid(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => invalid_refresh("unknown login"),
        other => other.into(),
    }
}

fn too_many(detail: &str, retry_after: u64) -> ApiError {
    ApiError::TooManyRequests {
        detail: detail.into(),
        retry_after: retry_after.max(1),
    }
}

fn wrong_credentials() -> ApiError {
    ApiError::InvalidCredentials {
        detail: "Incorrect username or password".into(),
        invalid_token: false,
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}
