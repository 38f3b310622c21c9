//! Password hashing: argon2id PHC strings with OWASP's parameters, constant-ish
//! time verification for unknown users, and async wrappers that keep the hashing
//! off the async runtime's worker threads.
//!
//! Every async hash runs inside one process-wide budget ([`pool`]): at most
//! a few at once, so a login flood costs bounded memory and CPU.
//!
//! Password policy (minimum length, character rules) is the caller's job; this
//! module hashes whatever it is given.

use std::sync::OnceLock;

mod memory;
pub mod pool;

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;

/// Memory cost in KiB (OWASP's argon2id recommendation: 19 MiB).
pub const MEMORY_KIB: u32 = 19_456;
/// Number of passes (OWASP: 2).
pub const TIME_COST: u32 = 2;
/// Degree of parallelism (OWASP: 1).
pub const PARALLELISM: u32 = 1;

/// Largest memory cost a stored hash may ask for when verified (1 GiB); a
/// tampered hash asking for more is treated as a mismatch instead of
/// exhausting memory.
const MAX_VERIFY_MEMORY_KIB: u32 = 1024 * 1024;
/// Largest time cost a stored hash may ask for when verified.
const MAX_VERIFY_TIME_COST: u32 = 64;
/// Largest parallelism a stored hash may ask for when verified.
const MAX_VERIFY_PARALLELISM: u32 = 16;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// argon2 refused to hash (it does not for the parameters used here).
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// The blocking task running the hash panicked or was cancelled.
    #[error("password hashing task failed: {0}")]
    Task(String),
    /// Every hashing slot stayed busy for the whole wait: shed the request.
    #[error("the server is busy checking passwords; retry in {retry_after} s")]
    Busy {
        /// Seconds the caller should wait before retrying.
        retry_after: u64,
    },
}

/// The argon2id hasher with this module's parameters.
fn hasher() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(MEMORY_KIB, TIME_COST, PARALLELISM, None)
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password with argon2id (m=19456 KiB, t=2, p=1) and a random
/// 16-byte salt, returning a PHC string such as `$argon2id$v=19$m=19456,t=2,p=1$…`.
///
/// CPU- and memory-heavy (tens of milliseconds): in async code use
/// [`hash_password_async`].
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let hash = hasher()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// Checks a password against a stored PHC string, in constant time with
/// respect to the password. Any malformed or unsupported hash gives `false`
/// (never a panic); the hash's own parameters are used, within sane limits.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    if params.m_cost() > MAX_VERIFY_MEMORY_KIB
        || params.t_cost() > MAX_VERIFY_TIME_COST
        || params.p_cost() > MAX_VERIFY_PARALLELISM
    {
        return false;
    }
    // Algorithm, version, parameters, salt and output length all come from
    // the stored hash, as argon2's own verifier takes them.
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    let mut computed = [0u8; Output::MAX_LENGTH];
    let computed = &mut computed[..expected.len()];
    // The memory argon2 hashes in is reused between checks (see `memory`):
    // allocating and faulting in 19 MiB per login cost about a fifth of it.
    let hashed = memory::with_blocks(blocks, |memory| {
        argon2.hash_password_into_with_memory(password.as_bytes(), salt, computed, memory)
    });
    // `Output`'s equality is constant-time.
    hashed.is_ok() && Output::new(computed).is_ok_and(|c| c == expected)
}

/// True when a stored hash is not argon2id with at least this module's
/// parameters (or cannot be parsed): rehash it after the next successful login.
pub fn needs_rehash(phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return true;
    };
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return true;
    }
    match Params::try_from(&parsed) {
        Ok(p) => p.m_cost() < MEMORY_KIB || p.t_cost() < TIME_COST || p.p_cost() < PARALLELISM,
        Err(_) => true,
    }
}

/// A hash of a random password with this module's parameters, made once.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut pw = [0u8; 24];
        rand::rng().fill_bytes(&mut pw);
        // Hashing cannot fail with these parameters; if it ever did, an
        // unparsable string makes `dummy_verify` cheap but still correct.
        hash_password(&hex::encode(pw)).unwrap_or_default()
    })
}

/// Burns the time of one real [`verify_password`] without any user: call it
/// when the username is unknown, so "no such user" and "wrong password" take
/// about the same time. Always "fails".
///
/// The first call also computes the dummy hash; call [`warm_up`] at startup to
/// keep that one-off cost out of a request.
pub fn dummy_verify(password: &str) {
    let _ = verify_password(password, dummy_hash());
}

/// Computes the dummy hash used by [`dummy_verify`] ahead of time.
pub fn warm_up() {
    let _ = dummy_hash();
}

/// Runs `work` on tokio's blocking pool while holding `permit`: the permit
/// moves into the task, so the slot stays taken until the hash is done even
/// if the caller is dropped meanwhile.
async fn run_with<T: Send + 'static>(
    permit: tokio::sync::OwnedSemaphorePermit,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PasswordError> {
    tokio::task::spawn_blocking(move || {
        let value = work();
        drop(permit);
        value
    })
    .await
    .map_err(|e| PasswordError::Task(e.to_string()))
}

/// [`hash_password`] on tokio's blocking thread pool, within the
/// process-wide hashing budget ([`pool`]). Waits for a slot as long as it
/// takes: it serves authenticated callers (setting a password), whom an
/// anonymous login flood must not be able to refuse.
pub async fn hash_password_async(password: String) -> Result<String, PasswordError> {
    let permit = pool::global().acquire().await?;
    run_with(permit, move || hash_password(&password)).await?
}

/// [`verify_password`] on tokio's blocking thread pool, within the
/// process-wide hashing budget: `Busy` when no slot frees up within
/// [`pool::QUEUE_WAIT`] (shed the login with `Retry-After`). A failed task
/// counts as a mismatch.
pub async fn verify_password_async(password: String, phc: String) -> Result<bool, PasswordError> {
    let permit = pool::global().acquire_within(pool::QUEUE_WAIT).await?;
    Ok(run_with(permit, move || verify_password(&password, &phc))
        .await
        .unwrap_or(false))
}

/// [`dummy_verify`] like [`verify_password_async`] (same budget, same
/// shedding), so an unknown username behaves like a known one.
pub async fn dummy_verify_async(password: String) -> Result<(), PasswordError> {
    let permit = pool::global().acquire_within(pool::QUEUE_WAIT).await?;
    let _ = run_with(permit, move || dummy_verify(&password)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn hash_and_verify() {
        let phc = hash_password("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("correct horse battery staple", &phc));
        assert!(!verify_password("correct horse battery stapl", &phc));
        assert!(!verify_password("", &phc));
        // Salted: the same password hashes differently.
        assert_ne!(phc, hash_password("correct horse battery staple").unwrap());
        assert!(!needs_rehash(&phc));
        let unicode = hash_password("pässwörd ✓").unwrap();
        assert!(verify_password("pässwörd ✓", &unicode));
    }

    #[test]
    fn verification_agrees_with_argon2s_own_verifier() {
        use argon2::password_hash::PasswordVerifier;
        // Other algorithms, the old version, other costs and output
        // lengths: everything the stored hash says is honoured.
        let mut stored = vec![hash_password("pw").unwrap()];
        for (algorithm, version, m, t, p, len) in [
            (Algorithm::Argon2id, Version::V0x13, 4096, 1, 1, 32),
            (Algorithm::Argon2i, Version::V0x13, 4096, 3, 2, 16),
            (Algorithm::Argon2d, Version::V0x10, 1024, 1, 1, 64),
            (
                Algorithm::Argon2id,
                Version::V0x13,
                MEMORY_KIB,
                TIME_COST,
                1,
                24,
            ),
        ] {
            let params = Params::new(m, t, p, Some(len)).unwrap();
            let salt = SaltString::encode_b64(b"sixteen byte salt").unwrap();
            let phc = Argon2::new(algorithm, version, params)
                .hash_password(b"pw", &salt)
                .unwrap()
                .to_string();
            stored.push(phc);
        }
        for phc in &stored {
            let parsed = PasswordHash::new(phc).unwrap();
            // Twice, so the second check runs in reused memory.
            for _ in 0..2 {
                for password in ["pw", "pW", "", "pw "] {
                    let theirs = Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok();
                    assert_eq!(verify_password(password, phc), theirs, "{password:?} {phc}");
                    assert_eq!(theirs, password == "pw", "{password:?} {phc}");
                }
            }
        }
    }

    #[test]
    fn garbage_hashes_never_match_or_panic() {
        let phc = hash_password("pw").unwrap();
        for bad in [
            "",
            "$",
            "plaintext",
            "$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1$",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$",
            "$argon2id$v=19$m=4294967295,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
            "$argon2id$v=19$m=19456,t=4294967295,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
            "$bcrypt$whatever",
            &phc[..phc.len() - 3],
            &format!("{phc}AAAA"),
        ] {
            assert!(!verify_password("pw", bad), "{bad}");
        }
        assert!(needs_rehash("") && needs_rehash("$bcrypt$whatever") && needs_rehash("plaintext"));
    }

    #[test]
    fn weaker_hashes_need_rehash() {
        let params = Params::new(4096, 1, 1, None).unwrap();
        let weak = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"pw", &SaltString::encode_b64(&[1u8; 16]).unwrap())
            .unwrap()
            .to_string();
        assert!(verify_password("pw", &weak));
        assert!(needs_rehash(&weak));
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, Params::default())
            .hash_password(b"pw", &SaltString::encode_b64(&[1u8; 16]).unwrap())
            .unwrap()
            .to_string();
        assert!(verify_password("pw", &argon2i));
        assert!(needs_rehash(&argon2i));
    }

    fn median(mut f: impl FnMut(), runs: usize) -> Duration {
        let mut times: Vec<Duration> = (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect();
        times.sort();
        times[runs / 2]
    }

    #[test]
    fn dummy_verify_costs_about_a_real_verify() {
        warm_up();
        let phc = hash_password("real password").unwrap();
        let real = median(|| assert!(!verify_password("wrong", &phc)), 5);
        let dummy = median(|| dummy_verify("wrong"), 5);
        let ratio = dummy.as_secs_f64() / real.as_secs_f64();
        // Generous bounds: CI machines are noisy; a skipped hash would be ~0.
        assert!(
            (0.5..2.0).contains(&ratio),
            "real {real:?} vs dummy {dummy:?}"
        );
    }

    #[tokio::test]
    async fn async_wrappers() {
        let phc = hash_password_async("async pw".to_string()).await.unwrap();
        assert!(
            verify_password_async("async pw".to_string(), phc.clone())
                .await
                .unwrap()
        );
        assert!(
            !verify_password_async("nope".to_string(), phc)
                .await
                .unwrap()
        );
        dummy_verify_async("x".to_string()).await.unwrap();
    }
}
