//! Tests for `secrets`: the Fernet spec vectors, interop with Python's
//! `cryptography` and the `fernet` crate, hostile tokens, key files, rotation.

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

#[derive(Deserialize)]
struct GenerateVector {
    token: String,
    now: String,
    iv: Vec<u8>,
    src: String,
    secret: String,
}

#[derive(Deserialize)]
struct VerifyVector {
    token: String,
    now: String,
    ttl_sec: u64,
    src: String,
    secret: String,
}

#[derive(Deserialize)]
struct InvalidVector {
    desc: String,
    token: String,
    now: String,
    ttl_sec: u64,
    secret: String,
}

/// Parses the vectors' RFC 3339 times (`1985-10-26T01:20:00-07:00`) to unix seconds.
fn rfc3339(s: &str) -> u64 {
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().expect("number in vector time");
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let secs = n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    let offset = match &s[19..] {
        "Z" => 0,
        o => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().unwrap() * 3600 + o[4..6].parse::<i64>().unwrap() * 60)
        }
    };
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + secs - offset).expect("time after 1970")
}

#[test]
fn rfc3339_parser_is_right() {
    assert_eq!(rfc3339("1970-01-01T00:00:00Z"), 0);
    assert_eq!(rfc3339("1985-10-26T01:20:00-07:00"), 499_162_800);
    assert_eq!(rfc3339("2000-03-01T00:00:00+01:00"), 951_865_200);
}

#[test]
fn spec_generate_vectors() {
    let vectors: Vec<GenerateVector> = serde_json::from_str(GENERATE).unwrap();
    assert!(!vectors.is_empty());
    for v in vectors {
        let b = SecretBox::new(&v.secret).unwrap();
        let iv: [u8; 16] = v.iv.as_slice().try_into().unwrap();
        let token = b.encrypt_at_time_with_iv(v.src.as_bytes(), rfc3339(&v.now), &iv);
        assert_eq!(token, v.token);
    }
}

#[test]
fn spec_verify_vectors() {
    let vectors: Vec<VerifyVector> = serde_json::from_str(VERIFY).unwrap();
    assert!(!vectors.is_empty());
    for v in vectors {
        let b = SecretBox::new(&v.secret).unwrap();
        let now = rfc3339(&v.now);
        assert_eq!(
            b.decrypt_at(&v.token, Some(v.ttl_sec), now).unwrap(),
            v.src.as_bytes()
        );
        // Values at rest ignore the timestamp.
        assert_eq!(b.decrypt(&v.token).unwrap(), v.src.as_bytes());
    }
}

#[test]
fn spec_invalid_vectors() {
    let vectors: Vec<InvalidVector> = serde_json::from_str(INVALID).unwrap();
    assert!(vectors.len() >= 8);
    for v in vectors {
        let b = SecretBox::new(&v.secret).unwrap();
        let got = b.decrypt_at(&v.token, Some(v.ttl_sec), rfc3339(&v.now));
        assert!(
            matches!(got, Err(SecretsError::Decrypt)),
            "vector {:?} was accepted",
            v.desc
        );
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
    // A correctly signed token with a timestamp of u64::MAX: the TTL check
    // must not overflow.
    let far = b.encrypt_at_time_with_iv(b"x", u64::MAX, &[0; 16]);
    assert!(b.decrypt_at(&far, Some(u64::MAX), u64::MAX).is_ok());
    assert!(b.decrypt_at(&far, Some(60), 1_000).is_err());
    for input in &inputs {
        assert!(b.decrypt(input).is_err());
        assert!(b.decrypt_at(input, Some(u64::MAX), u64::MAX).is_err());
        assert!(b.reencrypt(input).is_err());
    }
}

#[test]
fn interoperates_with_the_fernet_crate() {
    let key = fernet::Fernet::generate_key();
    let theirs = fernet::Fernet::new(&key).unwrap();
    let ours = SecretBox::new(&key).unwrap();
    let from_them = theirs.encrypt(b"from fernet-rs");
    assert_eq!(ours.decrypt(&from_them).unwrap(), b"from fernet-rs");
    let from_us = ours.encrypt(b"from agentflow");
    assert_eq!(theirs.decrypt(&from_us).unwrap(), b"from agentflow");
    assert!(fernet::Fernet::new(&SecretBox::generate_key()).is_some());
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
    assert_eq!(
        ours.decrypt_at(&token, Some(3600), unix_now()).unwrap(),
        plaintext
    );

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
