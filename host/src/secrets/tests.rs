//! Tests for `secrets`: the Fernet spec vectors, interop with Python's
//! `cryptography` in both directions, hostile tokens, key files, rotation.

use super::*;
use serde::Deserialize;
use std::process::Command;

const GENERATE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fernet-vectors/generate.json"
));
const VERIFY: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fernet-vectors/verify.json"
));
const INVALID: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fernet-vectors/invalid.json"
));

/// A spec vector with a known plaintext (the generate and verify files).
#[derive(Deserialize)]
struct ValidVector {
    token: String,
    src: String,
    secret: String,
}

#[derive(Deserialize)]
struct InvalidVector {
    desc: String,
    token: String,
    secret: String,
}

/// The generate vectors are checked by decryption: making them needs a fixed
/// IV, which only a test would want from the production API.
#[test]
fn spec_generate_and_verify_vectors_decrypt() {
    for file in [GENERATE, VERIFY] {
        let vectors: Vec<ValidVector> = serde_json::from_str(file).unwrap();
        assert!(!vectors.is_empty());
        for v in vectors {
            let b = SecretBox::new(&v.secret).unwrap();
            assert_eq!(b.decrypt(&v.token).unwrap(), v.src.as_bytes());
        }
    }
}

/// Every invalid vector is refused, except the two whose only fault is the
/// time they are read at (an expired TTL, a stamp ten hours after the
/// vector's 1985 "now"): values at rest have no TTL and are read decades
/// later, so those two must open.
#[test]
fn spec_invalid_vectors_are_refused_except_for_time() {
    let vectors: Vec<InvalidVector> = serde_json::from_str(INVALID).unwrap();
    assert!(vectors.len() >= 8);
    let time_only = ["expired TTL", "far-future TS (unacceptable clock skew)"];
    for v in &vectors {
        let got = SecretBox::new(&v.secret).unwrap().decrypt(&v.token);
        if time_only.contains(&v.desc.as_str()) {
            assert!(got.is_ok(), "vector {:?} was refused", v.desc);
        } else {
            assert!(
                matches!(got, Err(SecretsError::Decrypt)),
                "vector {:?} was accepted",
                v.desc
            );
        }
    }
    let descs: Vec<&str> = vectors.iter().map(|v| v.desc.as_str()).collect();
    assert!(time_only.iter().all(|d| descs.contains(d)), "{descs:?}");
}

/// `token` with its timestamp replaced by `timestamp` and signed again with
/// `key`: a well-formed token from some other time.
fn restamped(token: &str, key: &str, timestamp: u64) -> String {
    use hmac::{Hmac, Mac};
    let key = URL_SAFE.decode(key).unwrap();
    let mut raw = URL_SAFE.decode(token).unwrap();
    raw[1..9].copy_from_slice(&timestamp.to_be_bytes());
    let body = raw.len() - 32;
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key[..16]).unwrap();
    mac.update(&raw[..body]);
    raw[body..].copy_from_slice(&mac.finalize().into_bytes());
    URL_SAFE.encode(raw)
}

/// The one time rule left at rest (the spec's clock skew): a stamp up to a
/// minute ahead opens, further ahead is refused, and `u64::MAX` is refused
/// without overflowing.
#[test]
fn future_stamps_follow_the_clock_skew_rule() {
    let key = SecretBox::generate_key();
    let b = SecretBox::new(&key).unwrap();
    let token = b.encrypt(b"x");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(b.decrypt(&restamped(&token, &key, 0)).unwrap(), b"x");
    assert_eq!(b.decrypt(&restamped(&token, &key, now + 30)).unwrap(), b"x");
    for stamp in [now + 3600, u64::MAX] {
        assert!(matches!(
            b.decrypt(&restamped(&token, &key, stamp)),
            Err(SecretsError::Decrypt)
        ));
    }
}

#[test]
fn roundtrip_and_previous_key() {
    let old = SecretBox::new(&SecretBox::generate_key()).unwrap();
    let token = old.encrypt(b"top secret \x00\xff");
    assert_eq!(old.decrypt(&token).unwrap(), b"top secret \x00\xff");
    assert_eq!(old.decrypt(&old.encrypt(b"")).unwrap(), b"");

    let new_key = SecretBox::generate_key();
    let rotated = old.with_new_key(&new_key).unwrap();
    assert!(rotated.has_previous());
    assert_eq!(rotated.decrypt(&token).unwrap(), b"top secret \x00\xff");
    let re = rotated.reencrypt(&token).unwrap();
    // The re-encrypted value no longer needs the old key.
    assert_eq!(
        SecretBox::new(&new_key).unwrap().decrypt(&re).unwrap(),
        b"top secret \x00\xff"
    );
    assert!(SecretBox::new(&new_key).unwrap().decrypt(&token).is_err());
    let unrelated = SecretBox::new(&SecretBox::generate_key()).unwrap();
    assert!(matches!(
        unrelated.decrypt(&token),
        Err(SecretsError::Decrypt)
    ));
}

#[test]
fn keys_are_validated_without_echoing_them() {
    for bad in [
        "",
        "short",
        "not base64 at all !!!!!!!!!!!!!!!!!!!!!!!!!!",
        &URL_SAFE.encode([7u8; 31]),
    ] {
        assert!(SecretBox::new(bad).is_err());
    }
    // Padding is optional, standard alphabet with '+' or '/' is not url-safe.
    let key = SecretBox::generate_key();
    assert!(SecretBox::new(key.trim_end_matches('=')).is_ok());
    // Whatever form it came in, the key set aside in a rotation is the padded
    // text (a key file's trailing newline is not part of it).
    let loose = format!("  {}\n", key.trim_end_matches('='));
    assert_eq!(SecretBox::new(&loose).unwrap().current_key_text(), key);
    let dir = tempfile::tempdir().unwrap();
    let secret = "this-is-a-secret-that-must-not-leak-in-errors";
    let err = SecretBox::from_settings(Some(secret), None, dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(SECRET_KEY_SETTING) && !msg.contains(secret),
        "{msg}"
    );
    let err = SecretBox::from_settings(Some(&key), Some(secret), dir.path()).unwrap_err();
    assert!(err.to_string().contains(PREVIOUS_KEY_SETTING));
    let b = SecretBox::new(&key).unwrap();
    assert!(!format!("{b:?}").contains(key.trim_end_matches('=')));
}

#[test]
fn key_file_is_generated_once_with_0600() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (b1, origin) = SecretBox::from_settings(None, Some("  "), &data_dir).unwrap();
    let path = data_dir.join(KEY_FILE_NAME);
    assert_eq!(origin, KeyOrigin::Generated { path: path.clone() });
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let token = b1.encrypt(b"v");
    let (b2, origin) = SecretBox::from_settings(Some(""), None, &data_dir).unwrap();
    assert_eq!(
        origin,
        KeyOrigin::File {
            path: path.clone(),
            loose_permissions: false
        }
    );
    assert_eq!(b2.decrypt(&token).unwrap(), b"v");
    // No temp file is left behind.
    let names: Vec<_> = std::fs::read_dir(&data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(KEY_FILE_NAME)]);

    // A settings key wins over the file; a rotation can rewrite the file.
    let other = SecretBox::generate_key();
    let (_, origin) = SecretBox::from_settings(Some(&other), None, &data_dir).unwrap();
    assert_eq!(origin, KeyOrigin::Settings);
    write_key_file(&data_dir, &other).unwrap();
    let (b3, _) = SecretBox::from_settings(None, None, &data_dir).unwrap();
    assert!(b3.decrypt(&token).is_err());
    assert!(write_key_file(&data_dir, "nope").is_err());

    std::fs::write(&path, "garbage\n").unwrap();
    let err = SecretBox::from_settings(None, None, &data_dir).unwrap_err();
    assert!(matches!(err, SecretsError::InvalidKeyFile { .. }), "{err}");
}

#[test]
fn hostile_tokens_never_panic() {
    let b = SecretBox::new(&SecretBox::generate_key()).unwrap();
    let good = b.encrypt(b"hello world, a value at rest");
    let mut inputs: Vec<String> = vec![
        String::new(),
        "=".into(),
        "====".into(),
        "gA".into(),
        "gAAAAA".into(),
        "\u{0}\u{1}é✓".into(),
        "%%%%".into(),
        "a".repeat(MAX_TOKEN_LEN + 1),
        "A".repeat(1 << 20),
        URL_SAFE.encode([0x80u8; 57]),
        URL_SAFE.encode([0xffu8; 200]),
    ];
    // Every truncation of a valid token (dropping only the '=' padding leaves
    // it valid: padding is optional on input, as in fernet-rs).
    let unpadded = good.trim_end_matches('=').len();
    assert_eq!(
        b.decrypt(&good[..unpadded]).unwrap(),
        b"hello world, a value at rest"
    );
    inputs.extend((0..unpadded).map(|i| good[..i].to_string()));
    // Single-bit flips of the decoded token.
    let raw = URL_SAFE.decode(&good).unwrap();
    for i in 0..raw.len() {
        let mut t = raw.clone();
        t[i] ^= 0x01;
        inputs.push(URL_SAFE.encode(t));
    }
    for input in &inputs {
        assert!(b.decrypt(input).is_err());
        assert!(b.reencrypt(input).is_err());
    }
}

fn python_has_cryptography() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import cryptography.fernet"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "note: skipping the Python interop test: `python3 -c \"import cryptography\"` failed (pip install cryptography)"
        );
    }
    ok
}

fn python(script: &str, key: &str, arg: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", script, arg])
        .env("FERNET_KEY", key)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn interoperates_with_python_cryptography() {
    if !python_has_cryptography() {
        return;
    }
    let plaintext = "interop ✓ \u{0} bytes".as_bytes();
    // Python generates the key and encrypts; we decrypt.
    let key = python(
        "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())",
        "",
        "",
    );
    let encrypt = "import os, sys; from cryptography.fernet import Fernet; \
                   print(Fernet(os.environ['FERNET_KEY'].encode()).encrypt(bytes.fromhex(sys.argv[1])).decode())";
    let token = python(encrypt, &key, &hex::encode(plaintext));
    let ours = SecretBox::new(&key).unwrap();
    assert_eq!(ours.decrypt(&token).unwrap(), plaintext);

    // We generate the key and encrypt; Python decrypts (with a TTL, so the
    // timestamp we wrote is checked too).
    let key = SecretBox::generate_key();
    let ours = SecretBox::new(&key).unwrap();
    let decrypt = "import os, sys; from cryptography.fernet import Fernet; \
                   print(Fernet(os.environ['FERNET_KEY'].encode()).decrypt(sys.argv[1].encode(), ttl=3600).hex())";
    assert_eq!(
        python(decrypt, &key, &ours.encrypt(plaintext)),
        hex::encode(plaintext)
    );
    assert_eq!(python(decrypt, &key, &ours.encrypt(b"")), "");
}

#[test]
fn an_interrupted_rotation_still_reads_values_under_either_key() {
    let dir = tempfile::tempdir().unwrap();
    let (old, _) = SecretBox::from_settings(None, None, dir.path()).unwrap();
    let under_old = old.encrypt(b"written before the rotation");
    let new_key = SecretBox::generate_key();

    // Step 1 done: the old key set aside.
    write_previous_key_file(dir.path(), &old.current_key_text()).unwrap();
    let (mid, _) = SecretBox::from_settings(None, None, dir.path()).unwrap();
    assert_eq!(
        mid.decrypt(&under_old).unwrap(),
        b"written before the rotation"
    );

    // Step 2 done: the new key is current, values not yet re-encrypted.
    write_key_file(dir.path(), &new_key).unwrap();
    let (mid, _) = SecretBox::from_settings(None, None, dir.path()).unwrap();
    let under_new = mid.reencrypt(&under_old).unwrap();
    assert_eq!(
        mid.decrypt(&under_old).unwrap(),
        b"written before the rotation"
    );

    // Finished: only the new key is needed.
    remove_previous_key_file(dir.path()).unwrap();
    let (done, _) = SecretBox::from_settings(None, None, dir.path()).unwrap();
    assert_eq!(
        done.decrypt(&under_new).unwrap(),
        b"written before the rotation"
    );
    assert!(done.decrypt(&under_old).is_err());
}
