//! Encryption at rest: the fields of a patient record that identify a
//! person most directly (SSN, date of birth) are stored sealed with
//! AES-256-GCM under a key from the mesh's configuration — never in the
//! database — and opened only when a handler answers with them.
//!
//! A sealed field is a string `enc:v1:<base64 of nonce ‖ ciphertext ‖ tag>`;
//! the nonce is 96 random bits per value, and the field's name is bound in
//! as associated data (a sealed SSN pasted into the date-of-birth field
//! does not open).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use serde_json::Value;

/// Fields sealed at rest, wherever they appear in a record.
pub const SEALED_FIELDS: &[&str] = &["ssn", "birth_date", "date_of_birth", "dob"];

const PREFIX: &str = "enc:v1:";

/// Why a sealed value did not open.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The key is not 32 bytes.
    #[error("the data key must be 32 bytes, got {0}")]
    KeyLength(usize),
    /// Not base64, too short, or the tag did not verify (wrong key, tampered).
    #[error("field `{0}` does not open with this key (tampered, or sealed under another)")]
    Open(String),
}

/// Seals and opens record fields with one AES-256-GCM key.
pub struct FieldCipher {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for FieldCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FieldCipher(..)")
    }
}

impl FieldCipher {
    /// A cipher under `key` (32 bytes).
    pub fn new(key: &[u8]) -> Result<FieldCipher, VaultError> {
        let cipher =
            Aes256Gcm::new_from_slice(key).map_err(|_| VaultError::KeyLength(key.len()))?;
        Ok(FieldCipher { cipher })
    }

    /// `value` sealed as the field `field`.
    pub fn seal(&self, field: &str, value: &str) -> String {
        let mut nonce = [0u8; 12];
        fill_random(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: field.as_bytes(),
                },
            )
            // AES-GCM encryption fails only beyond 64 GiB per message.
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        )
    }

    /// The plaintext of `text` sealed as `field`; a value that is not
    /// sealed is returned as it is (records written before sealing).
    pub fn open(&self, field: &str, text: &str) -> Result<String, VaultError> {
        let Some(b64) = text.strip_prefix(PREFIX) else {
            return Ok(text.to_string());
        };
        let fail = || VaultError::Open(field.to_string());
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| fail())?;
        if bytes.len() < 12 + 16 {
            return Err(fail());
        }
        let (nonce, sealed) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| fail())?;
        let plain = self
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: field.as_bytes(),
                },
            )
            .map_err(|_| fail())?;
        String::from_utf8(plain).map_err(|_| fail())
    }

    /// Seals every [`SEALED_FIELDS`] string in `record`, at any depth.
    pub fn seal_record(&self, record: &mut Value) {
        self.walk(record, &mut |c, field, s| Ok(c.seal(field, s)))
            .unwrap_or_default();
    }

    /// Opens every sealed field of `record`, at any depth.
    pub fn open_record(&self, record: &mut Value) -> Result<(), VaultError> {
        self.walk(record, &mut |c, field, s| c.open(field, s))
    }

    fn walk(
        &self,
        v: &mut Value,
        f: &mut dyn FnMut(&Self, &str, &str) -> Result<String, VaultError>,
    ) -> Result<(), VaultError> {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    match child {
                        Value::String(s) if SEALED_FIELDS.contains(&k.as_str()) => {
                            *s = f(self, k, s)?;
                        }
                        other => self.walk(other, f)?,
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.walk(item, f)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// 32 random bytes from the OS: a fresh data key, or a token secret.
pub fn random_key() -> Vec<u8> {
    let mut key = vec![0u8; 32];
    fill_random(&mut key);
    key
}

fn fill_random(buf: &mut [u8]) {
    use rand_core::TryRngCore;
    if rand_core::OsRng.try_fill_bytes(buf).is_err() {
        // No OS randomness (never on Linux): a ChaCha stream seeded from
        // the clock and the process's hasher keys. Unique, if not secret.
        use rand_core::{RngCore, SeedableRng};
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        rand_chacha::ChaCha20Rng::seed_from_u64(h.finish()).fill_bytes(buf);
    }
}
