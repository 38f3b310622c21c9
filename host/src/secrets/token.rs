//! The Fernet token format itself: parsing a key, building a token from its
//! parts, and checking and opening a token without ever panicking.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{MAX_CLOCK_SKEW_SECS, MAX_TOKEN_LEN};

const VERSION: u8 = 0x80;
const HEADER_LEN: usize = 1 + 8 + 16;
const MAC_LEN: usize = 32;
const BLOCK_LEN: usize = 16;

/// One parsed Fernet key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct FernetKey {
    signing: [u8; 16],
    encryption: [u8; 16],
}

impl FernetKey {
    /// Parses url-safe base64 (padding optional, surrounding whitespace ignored).
    pub(super) fn parse(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim().trim_end_matches('='))
            .ok()?;
        let bytes: [u8; 32] = bytes.try_into().ok()?;
        let mut signing = [0u8; 16];
        let mut encryption = [0u8; 16];
        signing.copy_from_slice(&bytes[..16]);
        encryption.copy_from_slice(&bytes[16..]);
        Some(Self {
            signing,
            encryption,
        })
    }

    /// The key in its url-safe base64 text form (padded, as Fernet keys are
    /// usually written).
    pub(super) fn to_text(&self) -> String {
        let mut bytes = [0u8; 32];
        bytes[..16].copy_from_slice(&self.signing);
        bytes[16..].copy_from_slice(&self.encryption);
        URL_SAFE.encode(bytes)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; 16 bytes can never fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.signing)
            .expect("HMAC-SHA256 accepts a 16-byte key")
    }

    /// Builds a token from all of its parts (the spec's "generate").
    pub(super) fn encrypt_parts(&self, plaintext: &[u8], timestamp: u64, iv: &[u8; 16]) -> String {
        let ciphertext = cbc::Encryptor::<aes::Aes128>::new(&self.encryption.into(), iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
        let mut data = Vec::with_capacity(HEADER_LEN + ciphertext.len() + MAC_LEN);
        data.push(VERSION);
        data.extend_from_slice(&timestamp.to_be_bytes());
        data.extend_from_slice(iv);
        data.extend_from_slice(&ciphertext);
        let mut mac = self.mac();
        mac.update(&data);
        data.extend_from_slice(&mac.finalize().into_bytes());
        URL_SAFE.encode(data)
    }

    /// Decodes, authenticates and decrypts a token. `time` is `(ttl, now)`;
    /// `None` skips the timestamp checks.
    pub(super) fn decrypt(&self, token: &str, time: Option<(Option<u64>, u64)>) -> Option<Vec<u8>> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let data = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).ok()?;
        if data.len() < HEADER_LEN + BLOCK_LEN + MAC_LEN || data[0] != VERSION {
            return None;
        }
        let (message, tag) = data.split_at(data.len() - MAC_LEN);
        let mut mac = self.mac();
        mac.update(message);
        mac.verify_slice(tag).ok()?; // constant time
        let timestamp = u64::from_be_bytes(message[1..9].try_into().ok()?);
        if let Some((ttl, now)) = time {
            if let Some(ttl) = ttl
                && timestamp.saturating_add(ttl) < now
            {
                return None;
            }
            if now.saturating_add(MAX_CLOCK_SKEW_SECS) < timestamp {
                return None;
            }
        }
        let iv: [u8; 16] = message[9..HEADER_LEN].try_into().ok()?;
        let ciphertext = &message[HEADER_LEN..];
        if ciphertext.len() % BLOCK_LEN != 0 {
            return None;
        }
        cbc::Decryptor::<aes::Aes128>::new(&self.encryption.into(), &iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
            .ok()
    }
}
