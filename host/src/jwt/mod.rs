//! The built-in JWT method: key material from the environment or an
//! identity provider ([`jwks`]), verification that follows RFC 8725, a
//! verified-token cache ([`cache`]), and minting for `agentflow token`.

pub mod cache;
pub mod jwks;
mod method;

pub use method::JwtMethod;

use std::collections::HashSet;
use std::path::Path;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::config::{Env, JwtOptions};
use crate::identity::Identity;

/// Why JWT settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("`{key}`: {reason}")]
pub struct JwtConfigError {
    /// The environment variable or option at fault.
    pub key: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn config_err(key: &'static str, reason: impl Into<String>) -> JwtConfigError {
    JwtConfigError {
        key,
        reason: reason.into(),
    }
}

/// Why a presented token is not accepted. The text is safe to show clients.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    /// The token has expired.
    #[error("token has expired")]
    Expired,
    /// The token is malformed, badly signed, or uses something we do not check.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The identity provider's keys cannot be fetched, so the token can be
    /// neither accepted nor refused (a 503: try again, do not log in again).
    #[error("the identity provider's signing keys are unavailable; try again shortly")]
    KeysUnavailable,
}

/// Checks bearer tokens and turns their claims into an [`Identity`].
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

/// Mints tokens with the configured private or shared key.
pub struct JwtSigner {
    key: EncodingKey,
    algorithm: Algorithm,
}

/// Minimum HMAC secret length: RFC 7518 §3.2 asks for a key at least as long
/// as the hash output; 32 bytes covers HS256.
const MIN_HMAC_SECRET: usize = 32;

/// Header parameters that would change how the token must be processed
/// (`crit` extensions, RFC 7797 `b64`, compression, encryption) or that
/// hand us a key or a place to fetch one (`jku`, `jwk`, `x5u`, `x5c`): a
/// token carrying one is refused. Other parameters are ignored, as RFC 7515
/// §4 asks (providers add their own: `x5t`, Clerk's `cat`, ...).
const REFUSED_HEADER_PARAMS: &[&str] = &["crit", "b64", "zip", "enc", "jku", "jwk", "x5u", "x5c"];

fn algorithm(env: &Env) -> Result<Algorithm, JwtConfigError> {
    let name = env.get("JWT_ALGORITHM").unwrap_or_else(|| "HS256".into());
    match name.trim() {
        "HS256" => Ok(Algorithm::HS256),
        "HS384" => Ok(Algorithm::HS384),
        "HS512" => Ok(Algorithm::HS512),
        "RS256" => Ok(Algorithm::RS256),
        "RS384" => Ok(Algorithm::RS384),
        "RS512" => Ok(Algorithm::RS512),
        "PS256" => Ok(Algorithm::PS256),
        "PS384" => Ok(Algorithm::PS384),
        "PS512" => Ok(Algorithm::PS512),
        "ES256" => Ok(Algorithm::ES256),
        "ES384" => Ok(Algorithm::ES384),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(config_err(
            "JWT_ALGORITHM",
            format!(
                "unknown algorithm {other:?}; use one of HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA"
            ),
        )),
    }
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

fn looks_like_pem(s: &str) -> bool {
    s.trim_start().starts_with("-----BEGIN")
}

/// A PEM given inline, or a path (relative to the config folder) to a PEM file.
fn pem_text(key: &'static str, value: &str, dir: &Path) -> Result<String, JwtConfigError> {
    let value = value.replace("\\n", "\n");
    if looks_like_pem(&value) {
        return Ok(value);
    }
    let path = dir.join(value.trim());
    std::fs::read_to_string(&path).map_err(|e| {
        config_err(
            key,
            format!(
                "not a PEM key and not a readable PEM file ({}: {e})",
                path.display()
            ),
        )
    })
}

fn hmac_secret(env: &Env) -> Result<String, JwtConfigError> {
    let secret = env.get("JWT_SECRET_KEY").ok_or_else(|| {
        config_err(
            "JWT_SECRET_KEY",
            "not set; the jwt auth method needs it (see .env.example)",
        )
    })?;
    if looks_like_pem(&secret) {
        return Err(config_err(
            "JWT_SECRET_KEY",
            "is a PEM key but JWT_ALGORITHM is an HMAC algorithm; a PEM is never used as an HMAC secret",
        ));
    }
    if secret.len() < MIN_HMAC_SECRET {
        return Err(config_err(
            "JWT_SECRET_KEY",
            format!(
                "is {} bytes; HMAC secrets must be at least {MIN_HMAC_SECRET} bytes (try `openssl rand -hex 32`)",
                secret.len()
            ),
        ));
    }
    Ok(secret)
}

fn decoding_key(alg: Algorithm, pem: &str) -> Result<DecodingKey, jsonwebtoken::errors::Error> {
    let pem = pem.as_bytes();
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        _ => DecodingKey::from_rsa_pem(pem),
    }
}

fn encoding_key(alg: Algorithm, pem: &str) -> Result<EncodingKey, jsonwebtoken::errors::Error> {
    let pem = pem.as_bytes();
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    }
}

impl JwtVerifier {
    /// Builds the verifier from `JWT_SECRET_KEY` / `JWT_PUBLIC_KEY` /
    /// `JWT_ALGORITHM` and the method's options.
    pub fn from_env(
        env: &Env,
        dir: &Path,
        opts: &JwtOptions,
    ) -> Result<JwtVerifier, JwtConfigError> {
        let alg = algorithm(env)?;
        let key = if is_hmac(alg) {
            DecodingKey::from_secret(hmac_secret(env)?.as_bytes())
        } else {
            let public = env.get("JWT_PUBLIC_KEY").ok_or_else(|| {
                config_err(
                    "JWT_PUBLIC_KEY",
                    format!("not set; {alg:?} tokens are verified with a public key in PEM form"),
                )
            })?;
            let pem = pem_text("JWT_PUBLIC_KEY", &public, dir)?;
            decoding_key(alg, &pem).map_err(|e| {
                config_err(
                    "JWT_PUBLIC_KEY",
                    format!("not a valid {alg:?} public key: {e}"),
                )
            })?
        };
        Ok(JwtVerifier {
            key,
            validation: validation(alg, opts),
        })
    }

    /// Verifies `token` and returns the identity it proves. Refresh tokens
    /// issued by `POST /v1/login` are refused here: they only work on
    /// `POST /v1/refresh`.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        access_identity(self.claims(token)?)
    }

    /// Checks signature, algorithm and times, and returns the claims.
    pub fn claims(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        check_header(token)?;
        decode_checked(token, &self.key, &self.validation)
    }
}

/// The checks every built-in verifier makes, for tokens signed with `alg`.
fn validation(alg: Algorithm, opts: &JwtOptions) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = opts.leeway_s.unwrap_or(5);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.required_spec_claims = HashSet::from(["exp".to_owned()]);
    if let Some(iss) = &opts.issuer {
        validation.set_issuer(&[iss]);
        validation.required_spec_claims.insert("iss".into());
    }
    match &opts.audience {
        Some(aud) => {
            validation.set_audience(aud);
            validation.required_spec_claims.insert("aud".into());
        }
        // A token that names an audience we were not told to accept is
        // meant for someone else: refuse it (RFC 8725 §3.9).
        None => validation.validate_aud = true,
    }
    validation
}

/// Signature, algorithm, times, `iss` and `aud` of a token whose header
/// [`check_header`] accepted; the claims.
fn decode_checked(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<Map<String, Value>, TokenError> {
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::InvalidSignature => TokenError::Invalid("bad signature".into()),
            ErrorKind::InvalidAlgorithm => TokenError::Invalid("algorithm not accepted".into()),
            ErrorKind::ImmatureSignature => {
                TokenError::Invalid("token is not valid yet (nbf)".into())
            }
            ErrorKind::InvalidAudience => TokenError::Invalid("audience not accepted".into()),
            ErrorKind::InvalidIssuer => TokenError::Invalid("issuer not accepted".into()),
            ErrorKind::MissingRequiredClaim(c) => {
                TokenError::Invalid(format!("missing required claim {c:?}"))
            }
            _ => TokenError::Invalid("malformed token".into()),
        }
    })?;
    Ok(data.claims)
}

/// The identity of an access token; refresh tokens are refused.
fn access_identity(claims: Map<String, Value>) -> Result<Identity, TokenError> {
    if claims.get("type").and_then(Value::as_str) == Some("refresh") {
        return Err(TokenError::Invalid(
            "a refresh token cannot be used for access".into(),
        ));
    }
    identity_from_claims(claims)
}

/// What the header says about how to check the token.
struct TokenHeader {
    /// The key id, used to pick a key from a provider's set.
    kid: Option<String>,
}

fn decode_part(part: &str) -> Option<Map<String, Value>> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Refuses tokens whose header asks for processing we do not do.
fn check_header(token: &str) -> Result<TokenHeader, TokenError> {
    let malformed = || TokenError::Invalid("malformed token".into());
    let first = token.split('.').next().ok_or_else(malformed)?;
    let header = decode_part(first).ok_or_else(malformed)?;
    if let Some(refused) = header
        .keys()
        .find(|k| REFUSED_HEADER_PARAMS.contains(&k.as_str()))
    {
        return Err(TokenError::Invalid(format!(
            "unsupported header parameter {refused:?}"
        )));
    }
    match header.get("kid") {
        None => Ok(TokenHeader { kid: None }),
        Some(Value::String(kid)) => Ok(TokenHeader {
            kid: Some(kid.clone()),
        }),
        Some(_) => Err(malformed()),
    }
}

/// The `iss` claim of a token, read WITHOUT checking the signature: only
/// to choose which configured issuer's keys must check it.
pub fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    match decode_part(payload)?.remove("iss")? {
        Value::String(iss) => Some(iss),
        _ => None,
    }
}

/// `user_id` (else `sub`) becomes the user id; `roles` (list) or `role`
/// (string) the roles; every claim is kept.
pub fn identity_from_claims(claims: Map<String, Value>) -> Result<Identity, TokenError> {
    let user_id = ["user_id", "sub"]
        .iter()
        .find_map(|k| claims.get(*k).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| TokenError::Invalid("token has no user_id or sub claim".into()))?
        .to_owned();
    let roles = match (claims.get("roles"), claims.get("role")) {
        (Some(Value::Array(list)), _) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        (Some(Value::String(one)), _) | (None, Some(Value::String(one))) => vec![one.clone()],
        _ => Vec::new(),
    };
    Ok(Identity {
        user_id,
        roles,
        claims,
    })
}

impl JwtSigner {
    /// Builds the signer: the HMAC secret, or a private key PEM in
    /// `JWT_SECRET_KEY` for asymmetric algorithms.
    pub fn from_env(env: &Env, dir: &Path) -> Result<JwtSigner, JwtConfigError> {
        let alg = algorithm(env)?;
        let key = if is_hmac(alg) {
            EncodingKey::from_secret(hmac_secret(env)?.as_bytes())
        } else {
            let private = env.get("JWT_SECRET_KEY").ok_or_else(|| {
                config_err(
                    "JWT_SECRET_KEY",
                    format!("not set; signing {alg:?} tokens needs a private key PEM"),
                )
            })?;
            let pem = pem_text("JWT_SECRET_KEY", &private, dir)?;
            encoding_key(alg, &pem).map_err(|e| {
                config_err(
                    "JWT_SECRET_KEY",
                    format!("not a valid {alg:?} private key: {e}"),
                )
            })?
        };
        Ok(JwtSigner {
            key,
            algorithm: alg,
        })
    }

    /// Signs `claims` as a JWT.
    pub fn sign(&self, claims: &Map<String, Value>) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(self.algorithm);
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env_with(vars: &[(&str, &str)]) -> Env {
        Env::from_pairs(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn pair() -> (JwtSigner, JwtVerifier) {
        let env = env_with(&[("JWT_SECRET_KEY", SECRET)]);
        (
            JwtSigner::from_env(&env, Path::new(".")).unwrap(),
            JwtVerifier::from_env(&env, Path::new("."), &JwtOptions::default()).unwrap(),
        )
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn refuses_short_hmac_secret() {
        let e = JwtVerifier::from_env(
            &env_with(&[("JWT_SECRET_KEY", "short")]),
            Path::new("."),
            &JwtOptions::default(),
        )
        .err()
        .unwrap();
        assert_eq!(e.key, "JWT_SECRET_KEY");
    }

    #[test]
    fn refuses_pem_as_hmac_secret() {
        let pem = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n-----END PUBLIC KEY-----";
        let e = JwtVerifier::from_env(
            &env_with(&[("JWT_SECRET_KEY", pem)]),
            Path::new("."),
            &JwtOptions::default(),
        )
        .err()
        .unwrap();
        assert!(e.reason.contains("PEM"), "{e}");
    }

    #[test]
    fn refuses_unknown_algorithm() {
        let env = env_with(&[("JWT_SECRET_KEY", SECRET), ("JWT_ALGORITHM", "none")]);
        assert_eq!(
            JwtVerifier::from_env(&env, Path::new("."), &JwtOptions::default())
                .err()
                .unwrap()
                .key,
            "JWT_ALGORITHM"
        );
    }

    #[test]
    fn maps_user_id_roles_and_keeps_claims() {
        let (s, v) = pair();
        let t = s
            .sign(&claims(
                json!({"sub": "u1", "role": "user", "name": "Alice", "exp": now() + 60}),
            ))
            .unwrap();
        let who = v.verify(&t).unwrap();
        assert_eq!(
            (who.user_id.as_str(), who.roles.clone()),
            ("u1", vec!["user".to_string()])
        );
        assert_eq!(who.claims["name"], "Alice");
        let t = s
            .sign(&claims(
                json!({"sub": "u1", "user_id": "u2", "roles": ["a", "b"], "exp": now() + 60}),
            ))
            .unwrap();
        let who = v.verify(&t).unwrap();
        assert_eq!((who.user_id.as_str(), who.roles.len()), ("u2", 2));
    }

    #[test]
    fn requires_exp_and_checks_nbf() {
        let (s, v) = pair();
        let t = s.sign(&claims(json!({"sub": "u1"}))).unwrap();
        assert!(matches!(v.verify(&t), Err(TokenError::Invalid(_))));
        let t = s
            .sign(&claims(json!({"sub": "u1", "exp": now() - 3600})))
            .unwrap();
        assert_eq!(v.verify(&t), Err(TokenError::Expired));
        let t = s
            .sign(&claims(
                json!({"sub": "u1", "exp": now() + 3600, "nbf": now() + 600}),
            ))
            .unwrap();
        assert!(matches!(v.verify(&t), Err(TokenError::Invalid(m)) if m.contains("nbf")));
    }

    #[test]
    fn refuses_crit_header_and_garbage() {
        let (_, v) = pair();
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let t = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"HS256","crit":["exp"]}"#),
            b64(r#"{"sub":"x"}"#)
        );
        assert!(matches!(v.verify(&t), Err(TokenError::Invalid(m)) if m.contains("crit")));
        for junk in ["", ".", "..", "a.b.c", "\u{0}", "eyJ.eyJ.eyJ"] {
            assert!(v.verify(junk).is_err());
        }
    }

    #[test]
    fn refuses_tokens_for_another_audience_unless_configured() {
        let (s, v) = pair();
        let t = s
            .sign(&claims(
                json!({"sub": "u1", "aud": "other", "exp": now() + 60}),
            ))
            .unwrap();
        assert!(v.verify(&t).is_err());
        let env = env_with(&[("JWT_SECRET_KEY", SECRET)]);
        let opts = JwtOptions {
            audience: Some(vec!["other".into()]),
            ..Default::default()
        };
        assert!(
            JwtVerifier::from_env(&env, Path::new("."), &opts)
                .unwrap()
                .verify(&t)
                .is_ok()
        );
    }
}
