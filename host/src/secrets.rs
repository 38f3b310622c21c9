//! Encryption at rest: Fernet tokens, the server's secret key (from settings or a
//! generated `secret_key` file in the data dir) and key rotation.
//!
//! The token format follows the Fernet spec byte for byte, so values interoperate
//! with Python's `cryptography.fernet` and every other Fernet implementation:
//! `0x80 ‖ timestamp (u64 BE) ‖ IV (16) ‖ AES-128-CBC/PKCS7 ciphertext ‖
//! HMAC-SHA256 (32)`, url-safe base64 with padding. The key is 32 bytes of
//! url-safe base64: the first 16 bytes sign, the last 16 encrypt.
//!
//! It is built on the RustCrypto primitives directly (the ones the `fernet`
//! crate uses) because the spec's generate vectors need encryption with a given
//! IV, and because no input here may panic: every length and timestamp from a
//! token is checked before use.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use rand::RngCore;

use token::FernetKey;

#[cfg(test)]
mod tests;
mod token;

/// File name of the generated key inside the data dir.
pub const KEY_FILE_NAME: &str = "secret_key";
/// File in the data dir holding the key being rotated away from, while a
/// rotation of a key kept in the data dir is in progress.
pub const PREVIOUS_KEY_FILE_NAME: &str = "secret_key.previous";
/// Name of the setting holding the current key (used in error messages).
pub const SECRET_KEY_SETTING: &str = "AGENTFLOW_SECRET_KEY";
/// Name of the setting holding the previous key during a rotation.
pub const PREVIOUS_KEY_SETTING: &str = "AGENTFLOW_SECRET_KEY_PREVIOUS";
/// Longest token text accepted by `decrypt` (8 MiB); longer input is refused
/// before it is decoded.
pub const MAX_TOKEN_LEN: usize = 8 * 1024 * 1024;
/// How far in the future a token's timestamp may be when checked with
/// [`SecretBox::decrypt_at`] (the spec's and Python's value).
pub const MAX_CLOCK_SKEW_SECS: u64 = 60;

/// Errors of this module. None of them ever contains key material.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// A key given in a setting (or to [`SecretBox::with_new_key`]) is not 32
    /// bytes of url-safe base64.
    #[error("{setting} is not a valid Fernet key (expected 32 bytes in url-safe base64)")]
    InvalidKey {
        /// Which setting or argument held the bad key.
        setting: String,
    },
    /// The key file exists but does not hold a valid Fernet key.
    #[error("the key file {} does not hold a valid Fernet key", path.display())]
    InvalidKeyFile {
        /// Path of the key file.
        path: PathBuf,
    },
    /// The key file or data dir could not be read or written.
    #[error("cannot use the key file {}: {source}", path.display())]
    KeyFile {
        /// Path of the key file (or data dir).
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The token is malformed, was tampered with, is expired, or was not
    /// encrypted with any key this box holds.
    #[error("invalid token: not decryptable with the configured keys")]
    Decrypt,
}

/// Where the current key came from, so the caller can log or warn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// From the `AGENTFLOW_SECRET_KEY` setting.
    Settings,
    /// Read from an existing key file in the data dir.
    File {
        /// Path of the key file.
        path: PathBuf,
        /// True when the file is readable or writable by group or others.
        loose_permissions: bool,
    },
    /// No key was configured: a new one was generated and written (mode 0600).
    /// The caller should warn that losing this file loses every encrypted value.
    Generated {
        /// Path of the new key file.
        path: PathBuf,
    },
}

/// The server's Fernet keys: the current one (encrypts and decrypts) and,
/// during a rotation, the previous one (only decrypts).
///
/// `Debug` never shows key material.
#[derive(Clone)]
pub struct SecretBox {
    current: FernetKey,
    previous: Option<FernetKey>,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBox")
            .field("current", &"<redacted>")
            .field("previous", &self.previous.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl SecretBox {
    /// Builds the box from the settings.
    ///
    /// `secret_key` is `AGENTFLOW_SECRET_KEY`, `previous` is
    /// `AGENTFLOW_SECRET_KEY_PREVIOUS`; empty or blank strings count as unset.
    /// Without a secret key, the key in `data_dir/secret_key` is used, and if
    /// there is none a new key is generated and written there with mode 0600
    /// (the data dir is created if needed); [`KeyOrigin::Generated`] says so.
    /// An invalid key is an error naming the setting or file, never its value.
    pub fn from_settings(
        secret_key: Option<&str>,
        previous: Option<&str>,
        data_dir: &Path,
    ) -> Result<(SecretBox, KeyOrigin), SecretsError> {
        let previous =
            match set(previous) {
                Some(text) => Some(parse_setting(text, PREVIOUS_KEY_SETTING)?),
                // An interrupted rotation leaves the old key here; keep reading
                // values it encrypted until the rotation is finished.
                None => match std::fs::read_to_string(data_dir.join(PREVIOUS_KEY_FILE_NAME)) {
                    Ok(text) => Some(FernetKey::parse(&text).ok_or_else(|| {
                        SecretsError::InvalidKeyFile {
                            path: data_dir.join(PREVIOUS_KEY_FILE_NAME),
                        }
                    })?),
                    Err(_) => None,
                },
            };
        let (current, origin) = match set(secret_key) {
            Some(text) => (
                parse_setting(text, SECRET_KEY_SETTING)?,
                KeyOrigin::Settings,
            ),
            None => load_or_generate_key_file(data_dir)?,
        };
        Ok((SecretBox { current, previous }, origin))
    }

    /// A box with just this key (no previous key).
    pub fn new(key: &str) -> Result<SecretBox, SecretsError> {
        Ok(SecretBox {
            current: parse_setting(key, "the key")?,
            previous: None,
        })
    }

    /// A box with a current key and an optional previous key.
    pub fn with_previous(key: &str, previous: Option<&str>) -> Result<SecretBox, SecretsError> {
        let previous = match previous {
            Some(p) => Some(parse_setting(p, "the previous key")?),
            None => None,
        };
        Ok(SecretBox {
            current: parse_setting(key, "the key")?,
            previous,
        })
    }

    /// Generates a new random key: 32 bytes, url-safe base64 with padding,
    /// the format Python's `Fernet.generate_key()` produces.
    pub fn generate_key() -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        URL_SAFE.encode(bytes)
    }

    /// For a rotation: a box whose current key is `new_key` and whose previous
    /// key is this box's current key. Re-encrypt stored values with
    /// [`SecretBox::reencrypt`] on the returned box.
    pub fn with_new_key(&self, new_key: &str) -> Result<SecretBox, SecretsError> {
        Ok(SecretBox {
            current: parse_setting(new_key, "the new key")?,
            previous: Some(self.current.clone()),
        })
    }

    /// The current key as text, for writing it aside during a rotation.
    /// Never log it.
    pub fn current_key_text(&self) -> String {
        self.current.to_text()
    }

    /// Whether a previous key is configured.
    pub fn has_previous(&self) -> bool {
        self.previous.is_some()
    }

    /// Encrypts with the current key, the current time and a random IV.
    pub fn encrypt(&self, plaintext: &[u8]) -> String {
        let mut iv = [0u8; 16];
        rand::rng().fill_bytes(&mut iv);
        self.current.encrypt_parts(plaintext, unix_now(), &iv)
    }

    /// Encrypts with an explicit timestamp and IV. Only for tests and test
    /// vectors: reusing an IV with the same key leaks information.
    pub fn encrypt_at_time_with_iv(
        &self,
        plaintext: &[u8],
        timestamp: u64,
        iv: &[u8; 16],
    ) -> String {
        self.current.encrypt_parts(plaintext, timestamp, iv)
    }

    /// Decrypts a value at rest, trying the current key then the previous one.
    ///
    /// The token's timestamp is authenticated but not checked: stored values do
    /// not expire, and a clock stepping backwards must not make them unreadable.
    /// Any malformed, tampered, oversized or foreign token gives
    /// [`SecretsError::Decrypt`]; nothing here panics.
    pub fn decrypt(&self, token: &str) -> Result<Vec<u8>, SecretsError> {
        self.try_keys(|key| key.decrypt(token, None))
    }

    /// Decrypts with the spec's time checks at time `now` (unix seconds): with
    /// `ttl`, a token older than `ttl` seconds is refused; a token more than
    /// [`MAX_CLOCK_SKEW_SECS`] in the future is always refused. For short-lived
    /// tokens (and the spec's verify/invalid vectors).
    pub fn decrypt_at(
        &self,
        token: &str,
        ttl: Option<u64>,
        now: u64,
    ) -> Result<Vec<u8>, SecretsError> {
        self.try_keys(|key| key.decrypt(token, Some((ttl, now))))
    }

    /// Decrypts with any key of this box and encrypts again with the current
    /// key (the per-value step of a key rotation).
    pub fn reencrypt(&self, token: &str) -> Result<String, SecretsError> {
        let plaintext = self.decrypt(token)?;
        Ok(self.encrypt(&plaintext))
    }

    fn try_keys(&self, f: impl Fn(&FernetKey) -> Option<Vec<u8>>) -> Result<Vec<u8>, SecretsError> {
        f(&self.current)
            .or_else(|| self.previous.as_ref().and_then(&f))
            .ok_or(SecretsError::Decrypt)
    }
}

/// A setting's value, or `None` when unset, empty or blank.
fn set(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// Writes `key` to `data_dir/secret_key` (mode 0600), replacing any existing
/// file atomically; for a rotation of a key that lives in the data dir.
/// The key is validated first.
pub fn write_key_file(data_dir: &Path, key: &str) -> Result<PathBuf, SecretsError> {
    write_named_key_file(data_dir, KEY_FILE_NAME, key)
}

/// Writes `key` to `data_dir/secret_key.previous` (mode 0600): the first
/// step of rotating a key kept in the data dir, so an interruption at any
/// later point still finds both keys.
pub fn write_previous_key_file(data_dir: &Path, key: &str) -> Result<PathBuf, SecretsError> {
    write_named_key_file(data_dir, PREVIOUS_KEY_FILE_NAME, key)
}

/// Removes `data_dir/secret_key.previous` once a rotation has finished.
pub fn remove_previous_key_file(data_dir: &Path) -> Result<(), SecretsError> {
    let path = data_dir.join(PREVIOUS_KEY_FILE_NAME);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(SecretsError::KeyFile { path, source: e })
        }
        _ => Ok(()),
    }
}

fn write_named_key_file(data_dir: &Path, name: &str, key: &str) -> Result<PathBuf, SecretsError> {
    parse_setting(key, "the new key")?;
    let path = data_dir.join(name);
    let tmp = write_temp_key(data_dir, key)?;
    std::fs::rename(&tmp, &path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        SecretsError::KeyFile {
            path: path.clone(),
            source,
        }
    })?;
    Ok(path)
}

fn parse_setting(text: &str, setting: &str) -> Result<FernetKey, SecretsError> {
    FernetKey::parse(text).ok_or_else(|| SecretsError::InvalidKey {
        setting: setting.to_string(),
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads the key file, or creates it without ever clobbering a key another
/// process wrote at the same moment (temp file + hard link, which fails if the
/// target exists).
fn load_or_generate_key_file(data_dir: &Path) -> Result<(FernetKey, KeyOrigin), SecretsError> {
    let path = data_dir.join(KEY_FILE_NAME);
    let io_err = |source| SecretsError::KeyFile {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => return read_existing(&path, &text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    std::fs::create_dir_all(data_dir).map_err(|source| SecretsError::KeyFile {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let key = SecretBox::generate_key();
    let tmp = write_temp_key(data_dir, &key)?;
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            let parsed = parse_setting(&key, "the generated key")?;
            Ok((parsed, KeyOrigin::Generated { path }))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(&path).map_err(io_err)?;
            read_existing(&path, &text)
        }
        Err(e) => Err(io_err(e)),
    }
}

fn read_existing(path: &Path, text: &str) -> Result<(FernetKey, KeyOrigin), SecretsError> {
    let key = FernetKey::parse(text).ok_or_else(|| SecretsError::InvalidKeyFile {
        path: path.to_path_buf(),
    })?;
    let loose_permissions = loose_permissions(path);
    Ok((
        key,
        KeyOrigin::File {
            path: path.to_path_buf(),
            loose_permissions,
        },
    ))
}

#[cfg(unix)]
fn loose_permissions(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o077 != 0)
        .unwrap_or(false)
}

#[cfg(not(unix))]
fn loose_permissions(_path: &Path) -> bool {
    false
}

/// Writes `key` plus a newline to a fresh temp file (0600) in `dir`, synced.
fn write_temp_key(dir: &Path, key: &str) -> Result<PathBuf, SecretsError> {
    let mut suffix = [0u8; 8];
    rand::rng().fill_bytes(&mut suffix);
    let tmp = dir.join(format!(".{KEY_FILE_NAME}.{}.tmp", hex::encode(suffix)));
    let io_err = |source| SecretsError::KeyFile {
        path: tmp.clone(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(io_err)?;
    let written = file
        .write_all(format!("{key}\n").as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    Ok(tmp)
}
