//! The identity the agent can verify: a short-lived JWT the gateway signs for
//! the caller and sends upstream as `Authorization: Bearer …`, so an agent
//! with its own JWT auth (the AgentFlow server's `"auth": "jwt"`) knows the
//! user on every route. Tokens are cached per identity and reused until
//! shortly before they expire, so a request does not cost a signature.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::config::{UpstreamAlgorithm, UpstreamKey, UpstreamSettings, UpstreamTokenConfig};
use crate::error::ApiError;
use crate::identity::Identity;

/// Claims the gateway decides; an identity's claims of the same name are
/// dropped (its own `exp` must not outlive ours, its `aud` is not the agent).
const RESERVED: &[&str] = &[
    "user_id", "sub", "roles", "exp", "iat", "iss", "aud", "nbf", "jti",
];

/// Identities remembered at once; beyond this the oldest tokens are evicted.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// `iat` is set this many seconds in the past: PyJWT ≥ 2.10 (the AgentFlow
/// server's verifier) refuses an `iat` in its future with no leeway, so a
/// gateway clock a little ahead of the agent's would fail every request.
const IAT_BACKDATE_S: u64 = 5;

/// Which identity channels reach the agent, with the token signer if any.
#[derive(Clone)]
pub struct UpstreamIdentity {
    /// The gateway-signed JWT (`Authorization: Bearer …`).
    pub token: Option<Arc<TokenIssuer>>,
    /// The `x-agentflow-*` headers.
    pub headers: bool,
    /// `config.user` / `config.user_id` merged into graph bodies.
    pub merge_body: bool,
}

impl Default for UpstreamIdentity {
    fn default() -> Self {
        let defaults = UpstreamSettings::default();
        UpstreamIdentity {
            token: None,
            headers: defaults.headers,
            merge_body: defaults.merge_body,
        }
    }
}

impl UpstreamIdentity {
    /// The channels `settings` asks for; builds the signer when a token is configured.
    pub fn from_settings(settings: &UpstreamSettings) -> Result<UpstreamIdentity, String> {
        let token = settings
            .token
            .as_ref()
            .map(TokenIssuer::new)
            .transpose()?
            .map(Arc::new);
        Ok(UpstreamIdentity {
            token,
            headers: settings.headers,
            merge_body: settings.merge_body,
        })
    }
}

/// Signs upstream tokens and keeps one per identity until it is due for renewal.
pub struct TokenIssuer {
    algorithm: Algorithm,
    key: EncodingKey,
    kid: Option<String>,
    jwks: Option<Value>,
    ttl_s: u64,
    issuer: Option<String>,
    audience: Option<String>,
    capacity: usize,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

/// A signed token ready to send.
struct Cached {
    header: HeaderValue,
    /// Unix time after which the token is re-signed (a third of its life left).
    renew_at: u64,
}

impl TokenIssuer {
    /// A signer for `cfg`; the error says why the key cannot be used.
    pub fn new(cfg: &UpstreamTokenConfig) -> Result<TokenIssuer, String> {
        TokenIssuer::with_capacity(cfg, DEFAULT_CACHE_CAPACITY)
    }

    /// [`TokenIssuer::new`] remembering at most `capacity` identities.
    pub fn with_capacity(
        cfg: &UpstreamTokenConfig,
        capacity: usize,
    ) -> Result<TokenIssuer, String> {
        let (algorithm, key, jwk) = match (&cfg.key, cfg.algorithm) {
            (UpstreamKey::Secret(s), UpstreamAlgorithm::Hs256) => {
                (Algorithm::HS256, EncodingKey::from_secret(s), None)
            }
            (UpstreamKey::Secret(s), UpstreamAlgorithm::Hs384) => {
                (Algorithm::HS384, EncodingKey::from_secret(s), None)
            }
            (UpstreamKey::Secret(s), UpstreamAlgorithm::Hs512) => {
                (Algorithm::HS512, EncodingKey::from_secret(s), None)
            }
            (UpstreamKey::PrivatePem(pem), UpstreamAlgorithm::Rs256) => {
                let key = EncodingKey::from_rsa_pem(pem.as_bytes())
                    .map_err(|e| format!("not an RSA private key PEM: {e}"))?;
                (Algorithm::RS256, key, Some(rsa_public_jwk(pem)?))
            }
            (UpstreamKey::PrivatePem(pem), UpstreamAlgorithm::Es256) => {
                let key = EncodingKey::from_ec_pem(pem.as_bytes())
                    .map_err(|e| format!("not a P-256 private key in PKCS#8 PEM (`openssl pkcs8 -topk8 -nocrypt` converts one): {e}"))?;
                (Algorithm::ES256, key, Some(ec_public_jwk(pem)?))
            }
            (_, alg) => return Err(format!("the key does not fit the {alg:?} algorithm")),
        };
        let (kid, jwks) = match jwk {
            None => (None, None),
            Some(mut jwk) => {
                let kid = thumbprint(&jwk);
                let alg = if algorithm == Algorithm::RS256 {
                    "RS256"
                } else {
                    "ES256"
                };
                jwk.insert("kid".into(), Value::String(kid.clone()));
                jwk.insert("alg".into(), alg.into());
                jwk.insert("use".into(), "sig".into());
                (Some(kid), Some(json!({ "keys": [Value::Object(jwk)] })))
            }
        };
        Ok(TokenIssuer {
            algorithm,
            key,
            kid,
            jwks,
            ttl_s: cfg.ttl_s,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            capacity: capacity.max(1),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The public keys as a JWKS document (`{"keys": [...]}`); `None` for
    /// HMAC, whose key must never be published.
    pub fn jwks(&self) -> Option<&Value> {
        self.jwks.as_ref()
    }

    /// `Bearer <token>` for `who`: the cached token while it has more than a
    /// third of its life left, else a freshly signed one.
    pub fn authorization(&self, who: &Identity) -> Result<HeaderValue, ApiError> {
        self.authorization_at(who, unix_now())
    }

    /// [`TokenIssuer::authorization`] at Unix time `now`.
    pub fn authorization_at(&self, who: &Identity, now: u64) -> Result<HeaderValue, ApiError> {
        let mut claims = self.claims(who);
        let body = serde_json::to_vec(&claims)
            .map_err(|e| ApiError::Internal(format!("upstream token claims: {e}")))?;
        // The key covers exactly what is signed except the times, so two
        // client tokens of the same user (different exp/jti) share an entry.
        let cache_key: [u8; 32] = Sha256::digest(&body).into();
        if let Some(hit) = self.lock().get(&cache_key).filter(|c| now < c.renew_at) {
            return Ok(hit.header.clone());
        }

        let iat = now.saturating_sub(IAT_BACKDATE_S);
        let exp = now + self.ttl_s;
        claims.insert("iat".into(), iat.into());
        claims.insert("exp".into(), exp.into());
        let mut header = Header::new(self.algorithm);
        header.typ = Some("JWT".into());
        header.kid = self.kid.clone();
        let token = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| ApiError::Internal(format!("signing the upstream token: {e}")))?;
        let header = HeaderValue::try_from(format!("Bearer {token}")).map_err(|e| {
            ApiError::Internal(format!("upstream token is not a header value: {e}"))
        })?;
        let renew_at = exp - self.ttl_s / 3;

        let mut cache = self.lock();
        if cache.len() >= self.capacity && !cache.contains_key(&cache_key) {
            cache.retain(|_, c| now < c.renew_at);
            if cache.len() >= self.capacity {
                // Still full of live tokens: drop the one due soonest.
                if let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, c)| c.renew_at)
                    .map(|(k, _)| *k)
                {
                    cache.remove(&oldest);
                }
            }
        }
        cache.insert(
            cache_key,
            Cached {
                header: header.clone(),
                renew_at,
            },
        );
        Ok(header)
    }

    /// Everything but `iat`/`exp`: the identity's own claims (reserved names
    /// dropped), then `user_id`, `sub`, `roles`, and `iss`/`aud` only when
    /// configured (an agent refuses an `aud` it does not expect).
    fn claims(&self, who: &Identity) -> Map<String, Value> {
        let mut claims: Map<String, Value> = who
            .claims
            .iter()
            .filter(|(k, _)| !RESERVED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        claims.insert("user_id".into(), Value::String(who.user_id.clone()));
        claims.insert("sub".into(), Value::String(who.user_id.clone()));
        claims.insert(
            "roles".into(),
            who.roles.iter().cloned().map(Value::String).collect(),
        );
        if let Some(iss) = &self.issuer {
            claims.insert("iss".into(), Value::String(iss.clone()));
        }
        if let Some(aud) = &self.audience {
            claims.insert("aud".into(), Value::String(aud.clone()));
        }
        claims
    }

    /// How many identities have a token cached.
    pub fn cached(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Cached>> {
        // A panic while holding the lock cannot leave the map half-updated
        // in a way that matters: every entry is a complete token.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The DER inside the first PEM block, with its label.
fn pem_der(pem: &str) -> Result<(String, Vec<u8>), String> {
    let start = pem
        .find("-----BEGIN ")
        .ok_or("no PEM block (-----BEGIN …-----) in the file")?;
    let rest = &pem[start + "-----BEGIN ".len()..];
    let (label, rest) = rest.split_once("-----").ok_or("malformed PEM header")?;
    let end = rest.find("-----END ").ok_or("PEM block has no END line")?;
    let body: String = rest[..end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("PEM body is not base64: {e}"))?;
    Ok((label.to_owned(), der))
}

/// `{"kty": "RSA", "n", "e"}` of an RSA private key (PKCS#1 or PKCS#8 PEM).
fn rsa_public_jwk(pem: &str) -> Result<Map<String, Value>, String> {
    let (label, der) = pem_der(pem)?;
    let pair = match label.as_str() {
        "RSA PRIVATE KEY" => ring::rsa::KeyPair::from_der(&der),
        "PRIVATE KEY" => ring::rsa::KeyPair::from_pkcs8(&der),
        other => return Err(format!("expected an RSA private key PEM, found {other:?}")),
    }
    .map_err(|e| format!("not a usable RSA private key: {e}"))?;
    let public: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
    let mut jwk = Map::new();
    jwk.insert("kty".into(), "RSA".into());
    jwk.insert("n".into(), b64(&public.n).into());
    jwk.insert("e".into(), b64(&public.e).into());
    Ok(jwk)
}

/// `{"kty": "EC", "crv": "P-256", "x", "y"}` of a P-256 PKCS#8 private key.
fn ec_public_jwk(pem: &str) -> Result<Map<String, Value>, String> {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    let (label, der) = pem_der(pem)?;
    if label != "PRIVATE KEY" {
        return Err(format!(
            "expected a PKCS#8 \"PRIVATE KEY\" PEM, found {label:?} (`openssl pkcs8 -topk8 -nocrypt` converts it)"
        ));
    }
    let rng = ring::rand::SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
        .map_err(|e| format!("not a usable P-256 private key: {e}"))?;
    // Uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
    let point = pair.public_key().as_ref();
    if point.len() != 65 || point[0] != 4 {
        return Err("unexpected P-256 public key encoding".into());
    }
    let mut jwk = Map::new();
    jwk.insert("kty".into(), "EC".into());
    jwk.insert("crv".into(), "P-256".into());
    jwk.insert("x".into(), b64(&point[1..33]).into());
    jwk.insert("y".into(), b64(&point[33..]).into());
    Ok(jwk)
}

/// RFC 7638 thumbprint: SHA-256 of the required members in lexical order.
fn thumbprint(jwk: &Map<String, Value>) -> String {
    let members: &[&str] = if jwk["kty"] == "RSA" {
        &["e", "kty", "n"]
    } else {
        &["crv", "kty", "x", "y"]
    };
    let canonical = members
        .iter()
        .map(|m| format!("\"{m}\":{}", jwk[*m]))
        .collect::<Vec<_>>()
        .join(",");
    b64(&Sha256::digest(format!("{{{canonical}}}").as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    const SECRET: &[u8] = b"upstream-unit-test-secret-0123456789abcdef";

    fn issuer(capacity: usize, issuer: Option<&str>, audience: Option<&str>) -> TokenIssuer {
        let cfg = UpstreamTokenConfig {
            algorithm: UpstreamAlgorithm::Hs256,
            key: UpstreamKey::Secret(SECRET.to_vec()),
            ttl_s: 60,
            issuer: issuer.map(str::to_owned),
            audience: audience.map(str::to_owned),
        };
        TokenIssuer::with_capacity(&cfg, capacity).unwrap()
    }

    fn who(user: &str, claims: Value) -> Identity {
        Identity {
            user_id: user.into(),
            roles: vec!["user".into()],
            claims: claims.as_object().unwrap().clone(),
        }
    }

    fn token(h: &HeaderValue) -> String {
        h.to_str()
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap()
            .to_owned()
    }

    fn decode(h: &HeaderValue) -> Map<String, Value> {
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        jsonwebtoken::decode::<Map<String, Value>>(&token(h), &DecodingKey::from_secret(SECRET), &v)
            .unwrap()
            .claims
    }

    #[test]
    fn reuses_a_token_until_a_third_of_its_life_is_left() {
        let i = issuer(10, None, None);
        let alice = who("alice", json!({}));
        let first = i.authorization_at(&alice, 1_000).unwrap();
        assert_eq!(i.authorization_at(&alice, 1_000).unwrap(), first);
        // ttl 60: re-signed from 1_040 on (20 s left).
        assert_eq!(i.authorization_at(&alice, 1_039).unwrap(), first);
        let renewed = i.authorization_at(&alice, 1_040).unwrap();
        assert_ne!(renewed, first);
        assert_eq!(decode(&renewed)["exp"], 1_100);
        assert_eq!(decode(&first)["exp"], 1_060);
        assert_eq!(i.authorization_at(&alice, 1_041).unwrap(), renewed);
        assert_eq!(i.cached(), 1);
    }

    #[test]
    fn the_same_user_with_another_client_token_shares_the_entry() {
        let i = issuer(10, None, None);
        let a = i
            .authorization_at(&who("alice", json!({"exp": 5, "jti": "one"})), 1_000)
            .unwrap();
        let b = i
            .authorization_at(&who("alice", json!({"exp": 9, "jti": "two"})), 1_000)
            .unwrap();
        assert_eq!(a, b);
        let c = i
            .authorization_at(&who("alice", json!({"team": "red"})), 1_000)
            .unwrap();
        assert_ne!(a, c, "different claims are a different token");
        let bob = i.authorization_at(&who("bob", json!({})), 1_000).unwrap();
        assert_eq!(decode(&bob)["user_id"], "bob");
    }

    #[test]
    fn stays_bounded_and_evicts_expired_then_oldest() {
        let i = issuer(3, None, None);
        for (n, user) in ["a", "b", "c"].iter().enumerate() {
            i.authorization_at(&who(user, json!({})), 1_000 + n as u64)
                .unwrap();
        }
        assert_eq!(i.cached(), 3);
        let d = who("d", json!({}));
        i.authorization_at(&d, 1_010).unwrap();
        assert_eq!(i.cached(), 3, "full: the entry due soonest (a) made room");
        let b = i.authorization_at(&who("b", json!({})), 1_010).unwrap();
        assert_eq!(
            i.authorization_at(&who("b", json!({})), 1_010).unwrap(),
            b,
            "b kept"
        );
        // Much later every entry is due: inserting clears them all but the new one.
        for n in 0..100 {
            i.authorization_at(&who(&format!("u{n}"), json!({})), 5_000 + n)
                .unwrap();
            assert!(i.cached() <= 3);
        }
    }

    #[test]
    fn identity_claims_never_override_reserved_ones() {
        let i = issuer(10, None, None);
        let mallory = who(
            "alice",
            json!({"user_id": "mallory", "sub": "mallory", "roles": ["admin"], "exp": 9_999_999_999u64,
                   "iat": 1, "nbf": 9_999_999_999u64, "iss": "evil", "aud": "evil", "jti": "x", "team": "red"}),
        );
        let c = decode(&i.authorization_at(&mallory, 1_000).unwrap());
        assert_eq!(c["user_id"], "alice");
        assert_eq!(c["sub"], "alice");
        assert_eq!(c["roles"], json!(["user"]));
        assert_eq!(c["exp"], 1_060);
        assert_eq!(c["iat"], 1_000 - IAT_BACKDATE_S);
        assert_eq!(c["team"], "red");
        for absent in ["nbf", "iss", "aud", "jti"] {
            assert!(!c.contains_key(absent), "{absent} sent: {c:?}");
        }
    }

    #[test]
    fn issuer_and_audience_only_when_configured() {
        let i = issuer(10, Some("gw"), Some("agent-api"));
        let c = decode(&i.authorization_at(&who("alice", json!({})), 1_000).unwrap());
        assert_eq!(
            (c["iss"].as_str(), c["aud"].as_str()),
            (Some("gw"), Some("agent-api"))
        );
        assert!(i.jwks().is_none(), "an HMAC secret is never published");
    }

    #[test]
    fn refuses_keys_that_do_not_fit() {
        let cfg = UpstreamTokenConfig {
            algorithm: UpstreamAlgorithm::Rs256,
            key: UpstreamKey::PrivatePem(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into(),
            ),
            ttl_s: 60,
            issuer: None,
            audience: None,
        };
        assert!(TokenIssuer::new(&cfg).is_err());
        let cfg = UpstreamTokenConfig {
            algorithm: UpstreamAlgorithm::Es256,
            ..cfg
        };
        assert!(TokenIssuer::new(&cfg).is_err());
        assert!(pem_der("no pem here").is_err());
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 §3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let jwk = json!({"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"});
        assert_eq!(
            thumbprint(jwk.as_object().unwrap()),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }
}
