//! Keys from an identity provider: a JWKS document (at a configured URL, or
//! found by OpenID discovery), fetched with short timeouts, chosen by `kid`,
//! fetched again on an unknown `kid` at most once per interval (so a flood
//! of made-up `kid`s cannot hammer the provider; concurrent misses share
//! one fetch), and kept for a grace period after the provider stops
//! publishing them (rotation).

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::TokenError;

/// Connecting to the provider may take this long; a provider that is down
/// must not hold requests for long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A whole fetch (discovery document or key set) may take this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Larger documents are refused: real key sets are a few KiB.
const MAX_DOCUMENT: usize = 256 * 1024;

/// Where a provider publishes its keys.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    /// A JWKS document at this URL.
    JwksUrl(String),
    /// OpenID discovery: `{issuer}/.well-known/openid-configuration` names
    /// the `jwks_uri`, and must name this exact `issuer`.
    Discovery(String),
}

impl KeySource {
    fn describe(&self) -> &str {
        match self {
            KeySource::JwksUrl(url) | KeySource::Discovery(url) => url,
        }
    }
}

/// When keys are fetched and how long dropped ones live.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    /// Keys older than this are fetched again in the background.
    pub max_age: Duration,
    /// At most one fetch per this interval, whatever triggers it.
    pub min_interval: Duration,
    /// How long a key the provider no longer publishes keeps verifying.
    pub grace: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            max_age: Duration::from_secs(600),
            min_interval: Duration::from_secs(10),
            grace: Duration::from_secs(600),
        }
    }
}

/// One public key from a provider's set, with the checks that go with it.
pub struct RemoteKey {
    kid: Option<String>,
    /// The JWK's public material, to tell a reused `kid` from the same key.
    material: String,
    pub(super) key: DecodingKey,
    /// The method's checks with the algorithms this key may verify.
    pub(super) validation: Validation,
}

struct Slot {
    key: Arc<RemoteKey>,
    /// When the provider stopped publishing it (None: still published).
    retired_at: Option<Instant>,
}

#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    /// When the last successful fetch happened (None: never).
    fetched_at: Option<Instant>,
    /// Whether the last fetch attempt failed.
    last_failed: bool,
}

struct FetchState {
    last_attempt: Option<Instant>,
    /// The `jwks_uri` found by discovery, kept until a fetch from it fails.
    jwks_uri: Option<String>,
}

struct Inner {
    source: KeySource,
    policy: RefreshPolicy,
    base: Validation,
    client: reqwest::Client,
    table: RwLock<Table>,
    /// Held for the whole fetch: requests that miss while one runs wait for
    /// it and then look again instead of fetching themselves.
    fetch: tokio::sync::Mutex<FetchState>,
    background: AtomicBool,
}

/// A provider's key set, shared by every request of one auth method.
#[derive(Clone)]
pub struct RemoteKeys {
    inner: Arc<Inner>,
}

impl RemoteKeys {
    /// Keys from `source`, refreshed per `policy`; `base` holds the checks
    /// (issuer, audience, leeway) every key's validation starts from.
    /// Nothing is fetched until [`RemoteKeys::start`] or the first token.
    pub fn new(
        source: KeySource,
        policy: RefreshPolicy,
        base: Validation,
    ) -> Result<RemoteKeys, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(FETCH_TIMEOUT)
            // A redirect could lead to plain http; providers serve their
            // keys where they say they do.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("agentflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let inner = Inner {
            source,
            policy,
            base,
            client,
            table: RwLock::new(Table::default()),
            fetch: tokio::sync::Mutex::new(FetchState {
                last_attempt: None,
                jwks_uri: None,
            }),
            background: AtomicBool::new(false),
        };
        Ok(RemoteKeys {
            inner: Arc::new(inner),
        })
    }

    /// Fetches the keys in the background when a runtime is running, so the
    /// log says at start-up whether the provider answers. The server starts
    /// either way: until keys arrive, its tokens get 503 `jwks_unavailable`.
    pub fn start(&self) {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.spawn_refresh();
        }
    }

    /// The key that must verify a token with this `kid`, fetching the set
    /// again (at most once per interval) when the `kid` is unknown.
    pub async fn key_for(&self, kid: Option<&str>) -> Result<Arc<RemoteKey>, TokenError> {
        if let Some(key) = self.find(kid, Instant::now()) {
            self.refresh_if_stale();
            return Ok(key);
        }
        self.refresh().await;
        if let Some(key) = self.find(kid, Instant::now()) {
            return Ok(key);
        }
        let table = self.read();
        if table.fetched_at.is_none() || table.last_failed {
            return Err(TokenError::KeysUnavailable);
        }
        Err(TokenError::Invalid(match kid {
            Some(_) => "unknown key id (kid)".into(),
            None => "token has no kid and the provider publishes several keys".into(),
        }))
    }

    /// Whether `key` still verifies: published, or dropped less than the
    /// grace period ago. Cached verifications check this on every hit.
    pub fn is_live(&self, key: &Arc<RemoteKey>) -> bool {
        let now = Instant::now();
        self.read()
            .slots
            .iter()
            .any(|s| Arc::ptr_eq(&s.key, key) && self.in_grace(s, now))
    }

    fn in_grace(&self, slot: &Slot, now: Instant) -> bool {
        slot.retired_at
            .is_none_or(|at| now.duration_since(at) < self.inner.policy.grace)
    }

    fn find(&self, kid: Option<&str>, now: Instant) -> Option<Arc<RemoteKey>> {
        let table = self.read();
        match kid {
            Some(kid) => table
                .slots
                .iter()
                .find(|s| s.key.kid.as_deref() == Some(kid) && self.in_grace(s, now))
                .map(|s| s.key.clone()),
            // Without a kid, only an unambiguous set will do.
            None => match table
                .slots
                .iter()
                .filter(|s| s.retired_at.is_none())
                .collect::<Vec<_>>()
                .as_slice()
            {
                [only] => Some(only.key.clone()),
                _ => None,
            },
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.inner.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.inner.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Keys older than `max_age` are fetched again without holding up the
    /// request that noticed.
    fn refresh_if_stale(&self) {
        let stale = self
            .read()
            .fetched_at
            .is_some_and(|at| at.elapsed() >= self.inner.policy.max_age);
        if stale {
            self.spawn_refresh();
        }
    }

    fn spawn_refresh(&self) {
        if self.inner.background.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.refresh().await;
            this.inner.background.store(false, Ordering::Release);
        });
    }

    /// Fetches the set unless a fetch was attempted within `min_interval`
    /// (then whoever waited here just looks again).
    async fn refresh(&self) {
        let mut state = self.inner.fetch.lock().await;
        if state
            .last_attempt
            .is_some_and(|at| at.elapsed() < self.inner.policy.min_interval)
        {
            return;
        }
        state.last_attempt = Some(Instant::now());
        let source = self.inner.source.describe();
        match self.fetch(&mut state).await {
            Ok(keys) => {
                let count = keys.len();
                merge(
                    &mut self.write(),
                    keys,
                    Instant::now(),
                    self.inner.policy.grace,
                );
                tracing::info!(
                    provider = source,
                    keys = count,
                    "identity provider keys loaded"
                );
            }
            Err(error) => {
                self.write().last_failed = true;
                tracing::warn!(provider = source, %error, "cannot fetch the identity provider's keys; its tokens get 503 until it answers (old keys keep verifying)");
            }
        }
    }

    async fn fetch(&self, state: &mut FetchState) -> Result<Vec<RemoteKey>, String> {
        let url = match (&self.inner.source, &state.jwks_uri) {
            (KeySource::JwksUrl(url), _) => url.clone(),
            (KeySource::Discovery(_), Some(known)) => known.clone(),
            (KeySource::Discovery(issuer), None) => {
                let found = discover(&self.inner.client, issuer).await?;
                state.jwks_uri = Some(found.clone());
                found
            }
        };
        let result = get_json(&self.inner.client, &url)
            .await
            .and_then(|doc| parse_jwks(&doc, &self.inner.base));
        if result.is_err() {
            // The provider may have moved its keys: discover again next time.
            state.jwks_uri = None;
        }
        result
    }
}

/// Replaces the published keys with `fresh`, keeping the `Arc` of a key
/// that is still published (so cached verifications stay valid) and keys
/// that disappeared less than `grace` ago.
fn merge(table: &mut Table, fresh: Vec<RemoteKey>, now: Instant, grace: Duration) {
    let mut old = std::mem::take(&mut table.slots);
    let mut slots: Vec<Slot> = fresh
        .into_iter()
        .map(|key| {
            let same = old
                .iter()
                .position(|s| s.key.kid == key.kid && s.key.material == key.material);
            let key = match same {
                Some(i) => old.swap_remove(i).key,
                None => Arc::new(key),
            };
            Slot {
                key,
                retired_at: None,
            }
        })
        .collect();
    for slot in old {
        // A kid now naming other material is replaced, not kept.
        if slots.iter().any(|s| s.key.kid == slot.key.kid) {
            continue;
        }
        let retired_at = slot.retired_at.unwrap_or(now);
        if now.duration_since(retired_at) < grace {
            slots.push(Slot {
                key: slot.key,
                retired_at: Some(retired_at),
            });
        }
    }
    table.slots = slots;
    table.fetched_at = Some(now);
    table.last_failed = false;
}

/// The `jwks_uri` of `issuer`'s OpenID configuration.
async fn discover(client: &reqwest::Client, issuer: &str) -> Result<String, String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let doc = get_json(client, &url).await?;
    // OpenID Connect Discovery §4.3: the document must name the issuer it
    // was fetched for, exactly (tokens carry it in `iss`).
    match doc.get("issuer").and_then(Value::as_str) {
        Some(named) if named == issuer => {}
        named => {
            return Err(format!(
                "{url} names issuer {named:?}, not {issuer:?}; set \"issuer\" to exactly the provider's issuer"
            ));
        }
    }
    let uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{url} has no \"jwks_uri\""))?;
    crate::config::check_key_url(uri).map_err(|e| format!("{url}: jwks_uri {e}"))?;
    Ok(uri.to_owned())
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("{url}: {}", error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(format!("{url}: HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("{url}: {}", error_chain(&e)))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_DOCUMENT {
            return Err(format!("{url}: larger than {MAX_DOCUMENT} bytes"));
        }
    }
    serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON ({e})"))
}

/// reqwest's top-level message hides the cause ("error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The signing keys of a JWKS document; keys for encryption, symmetric
/// keys and unsupported curves are skipped. No usable key is an error.
fn parse_jwks(doc: &Value, base: &Validation) -> Result<Vec<RemoteKey>, String> {
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the key set has no \"keys\" list")?;
    let keys: Vec<RemoteKey> = list.iter().filter_map(|jwk| parse_jwk(jwk, base)).collect();
    if keys.is_empty() {
        return Err(
            "the key set has no usable signing key (RSA, EC P-256 / P-384, Ed25519)".into(),
        );
    }
    Ok(keys)
}

const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

fn parse_jwk(jwk: &Value, base: &Validation) -> Option<RemoteKey> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    if field("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let (key, algorithms, material) = match (field("kty")?, field("crv")) {
        ("RSA", _) => {
            let (n, e) = (field("n")?, field("e")?);
            (
                DecodingKey::from_rsa_components(n, e).ok()?,
                RSA_ALGORITHMS.to_vec(),
                format!("RSA {n} {e}"),
            )
        }
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let (x, y) = (field("x")?, field("y")?);
            let alg = if crv == "P-256" {
                Algorithm::ES256
            } else {
                Algorithm::ES384
            };
            (
                DecodingKey::from_ec_components(x, y).ok()?,
                vec![alg],
                format!("EC {crv} {x} {y}"),
            )
        }
        ("OKP", Some("Ed25519")) => {
            let x = field("x")?;
            (
                DecodingKey::from_ed_components(x).ok()?,
                vec![Algorithm::EdDSA],
                format!("OKP {x}"),
            )
        }
        // `oct` keys are never taken from a network document: anyone who
        // can read it could sign with them.
        _ => return None,
    };
    // A key that names its algorithm verifies only that one.
    let algorithms = match field("alg") {
        None => algorithms,
        Some(name) => {
            let alg = Algorithm::from_str(name).ok()?;
            algorithms.contains(&alg).then(|| vec![alg])?
        }
    };
    let mut validation = base.clone();
    validation.algorithms = algorithms;
    Some(RemoteKey {
        kid: field("kid").map(str::to_owned),
        material,
        key,
        validation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Not a real modulus: `from_rsa_components` only decodes base64, which
    // is all these bookkeeping tests need.
    fn rsa(kid: &str, n: &str) -> Value {
        json!({"kty": "RSA", "kid": kid, "n": n, "e": "AQAB", "alg": "RS256", "use": "sig"})
    }

    fn keys(doc: Value) -> Vec<RemoteKey> {
        parse_jwks(&doc, &Validation::new(Algorithm::RS256)).unwrap()
    }

    fn kids(table: &Table) -> Vec<(String, bool)> {
        table
            .slots
            .iter()
            .map(|s| {
                (
                    s.key.kid.clone().unwrap_or_default(),
                    s.retired_at.is_some(),
                )
            })
            .collect()
    }

    #[test]
    fn takes_signing_keys_and_skips_the_rest() {
        let doc = json!({"keys": [
            rsa("a", "AQAB"),
            {"kty": "RSA", "kid": "enc", "n": "AQAB", "e": "AQAB", "use": "enc"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AQAB", "y": "AQAB"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AQAB", "y": "AQAB"},
            {"kty": "RSA", "kid": "mismatch", "n": "AQAB", "e": "AQAB", "alg": "ES256"},
            {"kty": "RSA", "kid": "noalg", "n": "AQAB", "e": "AQAB"},
            "not an object",
        ]});
        let parsed = keys(doc);
        let names: Vec<_> = parsed.iter().map(|k| k.kid.as_deref().unwrap()).collect();
        assert_eq!(names, ["a", "ec", "noalg"]);
        assert_eq!(parsed[0].validation.algorithms, [Algorithm::RS256]);
        assert_eq!(parsed[1].validation.algorithms, [Algorithm::ES256]);
        assert_eq!(
            parsed[2].validation.algorithms.len(),
            6,
            "an RSA key without alg takes any RSA algorithm"
        );
    }

    #[test]
    fn a_set_without_signing_keys_is_an_error() {
        let base = Validation::new(Algorithm::RS256);
        assert!(parse_jwks(&json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}), &base).is_err());
        assert!(parse_jwks(&json!({"nokeys": []}), &base).is_err());
        assert!(parse_jwks(&json!([]), &base).is_err());
    }

    #[test]
    fn rotation_keeps_dropped_keys_for_the_grace_period() {
        let grace = Duration::from_secs(60);
        let t0 = Instant::now();
        let mut table = Table::default();
        merge(
            &mut table,
            keys(json!({"keys": [rsa("old", "AQAB")]})),
            t0,
            grace,
        );
        let old = table.slots[0].key.clone();
        merge(
            &mut table,
            keys(json!({"keys": [rsa("new", "AQAC")]})),
            t0 + Duration::from_secs(10),
            grace,
        );
        assert_eq!(kids(&table), [("new".into(), false), ("old".into(), true)]);
        assert!(
            Arc::ptr_eq(&table.slots[1].key, &old),
            "the dropped key is the same key"
        );
        // Still missing later: the grace runs from when it first went missing.
        merge(
            &mut table,
            keys(json!({"keys": [rsa("new", "AQAC")]})),
            t0 + Duration::from_secs(69),
            grace,
        );
        assert_eq!(kids(&table).len(), 2);
        merge(
            &mut table,
            keys(json!({"keys": [rsa("new", "AQAC")]})),
            t0 + Duration::from_secs(71),
            grace,
        );
        assert_eq!(kids(&table), [("new".into(), false)]);
    }

    #[test]
    fn an_unchanged_key_keeps_its_identity_and_a_reused_kid_is_replaced() {
        let grace = Duration::from_secs(60);
        let t0 = Instant::now();
        let mut table = Table::default();
        merge(
            &mut table,
            keys(json!({"keys": [rsa("a", "AQAB")]})),
            t0,
            grace,
        );
        let first = table.slots[0].key.clone();
        merge(
            &mut table,
            keys(json!({"keys": [rsa("a", "AQAB")]})),
            t0,
            grace,
        );
        assert!(Arc::ptr_eq(&table.slots[0].key, &first));
        merge(
            &mut table,
            keys(json!({"keys": [rsa("a", "AQAD")]})),
            t0,
            grace,
        );
        assert_eq!(table.slots.len(), 1);
        assert!(
            !Arc::ptr_eq(&table.slots[0].key, &first),
            "new material under an old kid replaces the old key"
        );
    }

    #[tokio::test]
    async fn an_unreachable_provider_is_unavailable_not_invalid() {
        // A port nothing listens on: bind, note the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let source = KeySource::JwksUrl(format!("http://127.0.0.1:{port}/jwks"));
        let keys = RemoteKeys::new(
            source,
            RefreshPolicy::default(),
            Validation::new(Algorithm::RS256),
        )
        .unwrap();
        assert!(matches!(
            keys.key_for(Some("k")).await,
            Err(TokenError::KeysUnavailable)
        ));
        assert!(keys.read().last_failed);
    }
}
