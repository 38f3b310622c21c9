//! Encryption at rest: Fernet tokens, the server's secret key (from settings or a
//! generated `secret_key` file in the data dir) and key rotation.
//!
//! Tokens are made and opened by the `fernet` crate (its pure-Rust
//! `rustcrypto` backend), so values interoperate with Python's
//! `cryptography.fernet` and every other Fernet implementation. The key is 32
//! bytes of url-safe base64: the first 16 bytes sign, the last 16 encrypt.
//!
//! Only `Fernet::encrypt` / `MultiFernet::decrypt` are used: values at rest
//! have no TTL, so the crate's TTL arithmetic (which can overflow on a hostile
//! timestamp) is never reached. Its one time rule still applies: a token
//! stamped more than a minute in the future is refused, as in every Fernet
//! implementation, so after the clock steps back by more than a minute, values
//! written in that minute read again once the clock has caught up.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use fernet::{Fernet, MultiFernet};
use rand::RngCore;

#[cfg(test)]
mod tests;

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

/// One parsed key: its text (for setting it aside in a rotation) and the
/// `Fernet` built from it. Never printed.
#[derive(Clone)]
struct Key {
    /// Padded url-safe base64, whatever form it was given in.
    text: String,
    fernet: Fernet,
}

impl Key {
    /// Parses url-safe base64 (padding optional, surrounding whitespace
    /// ignored, as key files end in a newline).
    fn parse(text: &str) -> Option<Key> {
        let text = text.trim();
        let fernet = Fernet::new(text)?;
        // `Fernet::new` accepted it, so it decodes to 32 bytes; the text is
        // kept padded, the form `Fernet::generate_key` and Python write.
        let bytes = URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()?;
        Some(Key {
            text: URL_SAFE.encode(bytes),
            fernet,
        })
    }
}

/// The server's Fernet keys: the current one (encrypts and decrypts) and,
/// during a rotation, the previous one (only decrypts).
///
/// `Debug` never shows key material.
#[derive(Clone)]
pub struct SecretBox {
    current: Key,
    previous: Option<Key>,
    /// `current` then `previous`: encrypts with the first, decrypts with
    /// each in turn.
    keys: MultiFernet,
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
    fn from_keys(current: Key, previous: Option<Key>) -> SecretBox {
        let mut fernets = vec![current.fernet.clone()];
        fernets.extend(previous.as_ref().map(|k| k.fernet.clone()));
        SecretBox {
            current,
            previous,
            keys: MultiFernet::new(fernets),
        }
    }

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
        let previous = match set(previous) {
            Some(text) => Some(parse_setting(text, PREVIOUS_KEY_SETTING)?),
            // An interrupted rotation leaves the old key here; keep reading
            // values it encrypted until the rotation is finished.
            None => match std::fs::read_to_string(data_dir.join(PREVIOUS_KEY_FILE_NAME)) {
                Ok(text) => {
                    Some(
                        Key::parse(&text).ok_or_else(|| SecretsError::InvalidKeyFile {
                            path: data_dir.join(PREVIOUS_KEY_FILE_NAME),
                        })?,
                    )
                }
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
        Ok((SecretBox::from_keys(current, previous), origin))
    }

    /// A box with just this key (no previous key).
    pub fn new(key: &str) -> Result<SecretBox, SecretsError> {
        Ok(SecretBox::from_keys(parse_setting(key, "the key")?, None))
    }

    /// A box with a current key and an optional previous key.
    pub fn with_previous(key: &str, previous: Option<&str>) -> Result<SecretBox, SecretsError> {
        let previous = match previous {
            Some(p) => Some(parse_setting(p, "the previous key")?),
            None => None,
        };
        Ok(SecretBox::from_keys(
            parse_setting(key, "the key")?,
            previous,
        ))
    }

    /// Generates a new random key: 32 bytes, url-safe base64 with padding,
    /// the format Python's `Fernet.generate_key()` produces.
    pub fn generate_key() -> String {
        Fernet::generate_key()
    }

    /// For a rotation: a box whose current key is `new_key` and whose previous
    /// key is this box's current key. Re-encrypt stored values with
    /// [`SecretBox::reencrypt`] on the returned box.
    pub fn with_new_key(&self, new_key: &str) -> Result<SecretBox, SecretsError> {
        Ok(SecretBox::from_keys(
            parse_setting(new_key, "the new key")?,
            Some(self.current.clone()),
        ))
    }

    /// The current key as text, for writing it aside during a rotation.
    /// Never log it.
    pub fn current_key_text(&self) -> String {
        self.current.text.clone()
    }

    /// Whether a previous key is configured.
    pub fn has_previous(&self) -> bool {
        self.previous.is_some()
    }

    /// Encrypts with the current key, the current time and a random IV.
    pub fn encrypt(&self, plaintext: &[u8]) -> String {
        self.keys.encrypt(plaintext)
    }

    /// Decrypts a value at rest, trying the current key then the previous one.
    ///
    /// Stored values do not expire (no TTL). Any malformed, tampered,
    /// oversized or foreign token, or one stamped more than a minute in the
    /// future, gives [`SecretsError::Decrypt`]; nothing here panics.
    pub fn decrypt(&self, token: &str) -> Result<Vec<u8>, SecretsError> {
        // Refused before the crate decodes (and copies) it.
        if token.len() > MAX_TOKEN_LEN {
            return Err(SecretsError::Decrypt);
        }
        self.keys.decrypt(token).map_err(|_| SecretsError::Decrypt)
    }

    /// Decrypts with any key of this box and encrypts again with the current
    /// key (the per-value step of a key rotation).
    pub fn reencrypt(&self, token: &str) -> Result<String, SecretsError> {
        let plaintext = self.decrypt(token)?;
        Ok(self.encrypt(&plaintext))
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

fn parse_setting(text: &str, setting: &str) -> Result<Key, SecretsError> {
    Key::parse(text).ok_or_else(|| SecretsError::InvalidKey {
        setting: setting.to_string(),
    })
}

/// Reads the key file, or creates it without ever clobbering a key another
/// process wrote at the same moment (temp file + hard link, which fails if the
/// target exists).
fn load_or_generate_key_file(data_dir: &Path) -> Result<(Key, KeyOrigin), SecretsError> {
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

fn read_existing(path: &Path, text: &str) -> Result<(Key, KeyOrigin), SecretsError> {
    let key = Key::parse(text).ok_or_else(|| SecretsError::InvalidKeyFile {
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
