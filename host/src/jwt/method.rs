//! The built-in `jwt` auth method as the gate runs it: one key source (the
//! `.env` key, or an identity provider's published keys), the RFC 8725
//! checks, and the verified-token cache in front of both.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::Algorithm;
use serde_json::Value;

use super::cache::{self, TokenCache};
use super::jwks::{KeySource, RefreshPolicy, RemoteKey, RemoteKeys};
use super::{
    JwtConfigError, JwtVerifier, TokenError, access_identity, check_header, config_err,
    decode_checked, validation,
};
use crate::config::{Env, JwtOptions};
use crate::identity::Identity;

/// Tokens remembered per method unless `token_cache` says otherwise.
const DEFAULT_CACHE: usize = 10_000;

#[allow(
    clippy::large_enum_variant,
    reason = "one per JWT method, built at start: boxing buys nothing"
)]
enum Keys {
    /// `JWT_SECRET_KEY` / `JWT_PUBLIC_KEY` from the environment.
    Local(JwtVerifier),
    /// A JWKS from an identity provider.
    Remote(RemoteKeys),
}

/// One configured `jwt` method.
pub struct JwtMethod {
    keys: Keys,
    issuer: Option<String>,
    cache: Option<TokenCache>,
}

impl JwtMethod {
    /// Builds the method from its options: keys from `jwks_url` or OpenID
    /// discovery when set (fetched in the background from now on), else
    /// from the environment.
    pub fn build(env: &Env, dir: &Path, opts: &JwtOptions) -> Result<JwtMethod, JwtConfigError> {
        let source = match (&opts.jwks_url, opts.discovery, &opts.issuer) {
            (Some(url), _, _) => Some(KeySource::JwksUrl(url.clone())),
            (None, true, Some(issuer)) => Some(KeySource::Discovery(issuer.clone())),
            (None, true, None) => {
                return Err(config_err("issuer", "\"discovery\" needs \"issuer\""));
            }
            (None, false, _) => None,
        };
        let keys = match source {
            None => Keys::Local(JwtVerifier::from_env(env, dir, opts)?),
            Some(source) => {
                let defaults = RefreshPolicy::default();
                let secs = |v: Option<u64>, d: Duration| v.map(Duration::from_secs).unwrap_or(d);
                let policy = RefreshPolicy {
                    max_age: secs(opts.jwks_refresh_s, defaults.max_age),
                    min_interval: secs(opts.jwks_min_interval_s, defaults.min_interval),
                    grace: secs(opts.jwks_grace_s, defaults.grace),
                };
                // The algorithm is replaced per key by what the key allows.
                let remote = RemoteKeys::new(source, policy, validation(Algorithm::RS256, opts))
                    .map_err(|reason| config_err("jwks_url", reason))?;
                remote.start();
                Keys::Remote(remote)
            }
        };
        let cache = match opts.token_cache.unwrap_or(DEFAULT_CACHE) {
            0 => None,
            n => Some(TokenCache::new(n)),
        };
        Ok(JwtMethod {
            keys,
            issuer: opts.issuer.clone(),
            cache,
        })
    }

    /// The `iss` this method requires, if any.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// Verifies `token` (or finds it verified before and not yet expired)
    /// and returns the identity it proves. Refresh tokens are refused.
    pub async fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let now = unix_now();
        let digest = self.cache.as_ref().map(|_| cache::digest(token));
        if let (Some(cache), Some(digest)) = (&self.cache, &digest) {
            let hit = cache
                .get(digest, now)
                .filter(|hit| hit.key.as_ref().is_none_or(|key| self.is_live(key)));
            crate::metrics::global().cache_lookup("token", hit.is_some());
            if let Some(hit) = hit {
                return Ok(hit.identity);
            }
        }
        let (claims, key) = match &self.keys {
            Keys::Local(verifier) => (verifier.claims(token)?, None),
            Keys::Remote(remote) => {
                let header = check_header(token)?;
                let key = remote.key_for(header.kid.as_deref()).await?;
                (decode_checked(token, &key.key, &key.validation)?, Some(key))
            }
        };
        let identity = access_identity(claims)?;
        if let (Some(cache), Some(digest), Some(exp)) = (&self.cache, digest, expiry(&identity)) {
            cache.insert(digest, identity.clone(), exp, key, now);
        }
        Ok(identity)
    }

    fn is_live(&self, key: &std::sync::Arc<RemoteKey>) -> bool {
        match &self.keys {
            Keys::Remote(remote) => remote.is_live(key),
            Keys::Local(_) => false,
        }
    }

    /// How many verified tokens are remembered (for tests and benchmarks).
    pub fn cached(&self) -> usize {
        self.cache.as_ref().map_or(0, TokenCache::len)
    }
}

/// The token's `exp` in whole seconds (a fractional `exp` is rounded down,
/// so the cache never outlives the token).
fn expiry(who: &Identity) -> Option<u64> {
    match who.claims.get("exp")? {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f.floor() as u64)),
        _ => None,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn method(opts: JwtOptions) -> JwtMethod {
        let env = Env::from_pairs([("JWT_SECRET_KEY".to_owned(), SECRET.to_owned())]);
        JwtMethod::build(&env, Path::new("."), &opts).unwrap()
    }

    fn sign(claims: Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    }

    #[tokio::test]
    async fn a_verified_token_is_remembered_and_failures_are_not() {
        let m = method(JwtOptions::default());
        let good = sign(json!({"sub": "u1", "exp": unix_now() + 60}));
        assert_eq!(m.verify(&good).await.unwrap().user_id, "u1");
        assert_eq!(m.cached(), 1);
        assert_eq!(
            m.verify(&good).await.unwrap().user_id,
            "u1",
            "a hit answers the same identity"
        );
        for bad in [
            sign(json!({"sub": "u1", "exp": unix_now() - 3600})),
            sign(json!({"sub": "u1"})),
            sign(json!({"sub": "u1", "exp": unix_now() + 60, "type": "refresh"})),
            format!("{good}x"),
        ] {
            assert!(m.verify(&bad).await.is_err());
            assert!(
                m.verify(&bad).await.is_err(),
                "a refusal is refused again, not remembered"
            );
        }
        assert_eq!(m.cached(), 1);
    }

    #[tokio::test]
    async fn a_remembered_token_dies_at_its_exp() {
        let m = method(JwtOptions {
            leeway_s: Some(0),
            ..Default::default()
        });
        let short = sign(json!({"sub": "u1", "exp": unix_now() + 1}));
        assert!(m.verify(&short).await.is_ok());
        assert_eq!(m.cached(), 1);
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        assert_eq!(m.verify(&short).await, Err(TokenError::Expired));
    }

    #[tokio::test]
    async fn the_cache_can_be_turned_off() {
        let m = method(JwtOptions {
            token_cache: Some(0),
            ..Default::default()
        });
        let good = sign(json!({"sub": "u1", "exp": unix_now() + 60}));
        assert!(m.verify(&good).await.is_ok());
        assert_eq!(m.cached(), 0);
    }

    #[test]
    fn expiry_never_rounds_up() {
        let who = |exp: Value| Identity {
            user_id: "u".into(),
            roles: vec![],
            claims: json!({"exp": exp}).as_object().unwrap().clone(),
        };
        assert_eq!(expiry(&who(json!(100))), Some(100));
        assert_eq!(expiry(&who(json!(100.9))), Some(100));
        assert_eq!(expiry(&who(json!(-5))), None);
        assert_eq!(expiry(&who(json!("100"))), None);
    }
}
