//! Secrets at rest: the registered merchants' credentials and the mini programs' AppSecrets are
//! stored sealed with AES-256-GCM under a master key that is not in the database.
//!
//! - The key: `WXPAY_MASTER_KEY` (64 hexadecimal characters, or the base64 of 32 bytes) or
//!   `WXPAY_MASTER_KEY_FILE` (a file holding that text). In sandbox mode without either, the key
//!   is kept in [`SANDBOX_KEY_FILE`] (made once, mode 0600) beside the SQLite database, or in the
//!   sandbox directory on PostgreSQL, so that what was registered survives a restart.
//! - A sealed value is text: `v1:` + base64(nonce (12 bytes) || ciphertext || tag (16 bytes)),
//!   with a random nonce per value.
//! - The associated data binds a value to its row and field (`merchant:{mchid}:credentials`,
//!   `app:{appid}:app_secret`): a value copied to another row does not open.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use secrecy::SecretSlice;

/// Opened secret bytes (zeroed when dropped).
pub type SecretBytes = SecretSlice<u8>;

/// The file holding the sandbox's master key when none is configured.
pub const SANDBOX_KEY_FILE: &str = "wxpay-master.key";

/// The version prefix of a sealed value.
const V1: &str = "v1:";

/// The length of a master key, in bytes.
pub const KEY_LEN: usize = 32;

/// The AES-GCM tag length.
const TAG_LEN: usize = 16;

/// The master key. Cheap to clone; `Debug` shows nothing of it.
#[derive(Clone)]
pub struct MasterKey {
    key: Arc<LessSafeKey>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl PartialEq for MasterKey {
    /// Two keys are the same when one opens what the other sealed (for settings' equality).
    fn eq(&self, other: &Self) -> bool {
        seal(self, "compare", b"x").is_ok_and(|s| open(other, "compare", &s).is_ok())
    }
}

/// Why a master key is refused: one line, never the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// Why a value could not be sealed (no randomness).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sealing failed: no randomness for the nonce")]
pub struct SealError;

/// Why a sealed value did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not a sealed value of a known version.
    #[error("not a sealed value (expected v1:BASE64)")]
    Format,
    /// The key, the associated data (row and field) or the bytes are not those it was sealed
    /// with.
    #[error(
        "the sealed value does not open: another master key sealed it, it belongs to another row, or it was altered"
    )]
    Mismatch,
}

impl MasterKey {
    /// A key from its text: 64 hexadecimal characters, or the base64 of 32 bytes (surrounding
    /// whitespace ignored).
    ///
    /// # Errors
    /// [`KeyError`] (one line) for anything else.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| key_error())?
        } else {
            match BASE64.decode(text) {
                Ok(bytes) if bytes.len() == KEY_LEN => bytes,
                Ok(bytes) => {
                    return Err(KeyError(format!(
                        "must be 32 bytes: 64 hexadecimal characters or base64 of 32 bytes (this is base64 of {} bytes)",
                        bytes.len()
                    )));
                }
                Err(_) => return Err(key_error()),
            }
        };
        Self::from_bytes(&bytes)
    }

    /// A key from a file holding its text.
    ///
    /// # Errors
    /// [`KeyError`] when the file cannot be read or does not hold a key.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| KeyError(format!("{}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| KeyError(format!("{}: {e}", path.display())))
    }

    /// A new random key and its text (64 hexadecimal characters).
    ///
    /// # Errors
    /// [`KeyError`] when there is no randomness.
    pub fn generate() -> Result<(Self, String), KeyError> {
        let mut bytes = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| KeyError("no randomness".into()))?;
        let text = hex::encode(bytes);
        let key = Self::from_bytes(&bytes)?;
        bytes.fill(0);
        Ok((key, text))
    }

    /// The key kept in `dir/`[`SANDBOX_KEY_FILE`]: read when the file exists, otherwise made
    /// and written with mode 0600 (atomically: a concurrent start reads the same key).
    ///
    /// # Errors
    /// [`KeyError`] when the file cannot be read, written or holds no key.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyError> {
        let path = dir.join(SANDBOX_KEY_FILE);
        if path.exists() {
            return Self::from_file(&path);
        }
        let io = |e: std::io::Error, p: &Path| KeyError(format!("{}: {e}", p.display()));
        std::fs::create_dir_all(dir).map_err(|e| io(e, dir))?;
        let (_, text) = Self::generate()?;
        // Written whole under a name of its own, then linked into place: the link fails when
        // another start made the file first, and nobody ever reads a half-written key.
        let tmp: PathBuf = dir.join(format!(
            "{SANDBOX_KEY_FILE}.{}.tmp",
            wxpay::nonce::random_string(12)
        ));
        {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp).map_err(|e| io(e, &tmp))?;
            file.write_all(format!("{text}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| io(e, &tmp))?;
        }
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e, &path)),
        }
        Self::from_file(&path)
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| key_error())?;
        Ok(MasterKey {
            key: Arc::new(LessSafeKey::new(unbound)),
        })
    }
}

fn key_error() -> KeyError {
    KeyError("must be 64 hexadecimal characters or the base64 of 32 bytes".into())
}

/// Seals `plaintext` for the row and field named by `aad`: `v1:` + base64(nonce || ciphertext
/// || tag).
///
/// # Errors
/// [`SealError`] when there is no randomness for the nonce.
pub fn seal(key: &MasterKey, aad: &str, plaintext: &[u8]) -> Result<String, SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SealError)?;
    let mut buffer = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    buffer.extend_from_slice(&nonce);
    buffer.extend_from_slice(plaintext);
    let mut body = buffer.split_off(NONCE_LEN);
    key.key
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_bytes()),
            &mut body,
        )
        .map_err(|_| SealError)?;
    buffer.extend_from_slice(&body);
    Ok(format!("{V1}{}", BASE64.encode(&buffer)))
}

/// Opens what [`seal`] made with the same key and `aad`.
///
/// # Errors
/// [`OpenError::Format`] for text that is not a sealed value, [`OpenError::Mismatch`] for
/// another key, another row or field, or altered bytes.
pub fn open(key: &MasterKey, aad: &str, sealed: &str) -> Result<SecretBytes, OpenError> {
    let encoded = sealed.trim().strip_prefix(V1).ok_or(OpenError::Format)?;
    let mut bytes = BASE64.decode(encoded).map_err(|_| OpenError::Format)?;
    if bytes.len() < NONCE_LEN + TAG_LEN {
        return Err(OpenError::Format);
    }
    let mut body = bytes.split_off(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| OpenError::Format)?;
    let opened = key
        .key
        .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut body)
        .map_err(|_| OpenError::Mismatch)?
        .len();
    body.truncate(opened);
    Ok(SecretBytes::from(body))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_sealed_value_opens_with_its_key_and_aad_only() {
        let key = MasterKey::parse(HEX).unwrap();
        let sealed = seal(&key, "merchant:1:credentials", b"secret text").unwrap();
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("secret"));
        let opened = open(&key, "merchant:1:credentials", &sealed).unwrap();
        assert_eq!(opened.expose_secret(), b"secret text");
        // A fresh nonce each time.
        assert_ne!(
            sealed,
            seal(&key, "merchant:1:credentials", b"secret text").unwrap()
        );
        // Another row, another field.
        assert_eq!(
            open(&key, "merchant:2:credentials", &sealed).unwrap_err(),
            OpenError::Mismatch
        );
        assert_eq!(
            open(&key, "app:1:app_secret", &sealed).unwrap_err(),
            OpenError::Mismatch
        );
        // Another key.
        let (other, _) = MasterKey::generate().unwrap();
        assert_eq!(
            open(&other, "merchant:1:credentials", &sealed).unwrap_err(),
            OpenError::Mismatch
        );
        // One altered byte anywhere (nonce, ciphertext, tag).
        let raw = BASE64.decode(&sealed[3..]).unwrap();
        for i in [0, NONCE_LEN, raw.len() - 1] {
            let mut tampered = raw.clone();
            tampered[i] ^= 1;
            let text = format!("v1:{}", BASE64.encode(&tampered));
            assert_eq!(
                open(&key, "merchant:1:credentials", &text).unwrap_err(),
                OpenError::Mismatch
            );
        }
        for bad in ["", "v1:", "v2:AAAA", "v1:%%%", "v1:AAAA", "plain"] {
            assert_eq!(
                open(&key, "merchant:1:credentials", bad).unwrap_err(),
                OpenError::Format,
                "{bad}"
            );
        }
    }

    #[test]
    fn both_key_forms_parse_to_the_same_key() {
        let from_hex = MasterKey::parse(HEX).unwrap();
        let b64 = BASE64.encode(hex::decode(HEX).unwrap());
        let from_b64 = MasterKey::parse(&format!("  {b64}\n")).unwrap();
        let sealed = seal(&from_hex, "a", b"x").unwrap();
        assert_eq!(open(&from_b64, "a", &sealed).unwrap().expose_secret(), b"x");
        assert_eq!(from_hex, from_b64);
        assert_eq!(
            MasterKey::parse(&HEX.to_ascii_uppercase()).unwrap(),
            from_hex
        );
        assert_eq!(format!("{from_hex:?}"), "MasterKey(..)");
    }

    #[test]
    fn bad_keys_are_refused_with_one_line() {
        for bad in [
            "",
            &HEX[..62],
            &format!("{HEX}00"),
            &HEX.replace('0', "g"),
            &BASE64.encode([0u8; 31]),
            &BASE64.encode([0u8; 33]),
            "not a key",
        ] {
            let e = MasterKey::parse(bad).unwrap_err().to_string();
            assert!(!e.contains('\n') && e.contains("32 bytes"), "{bad}: {e}");
            if !bad.is_empty() {
                assert!(!e.contains(bad), "the key is not echoed: {e}");
            }
        }
    }

    #[test]
    fn the_sandbox_key_file_is_made_once_with_mode_0600() {
        let dir =
            std::env::temp_dir().join(format!("wxpay-sealing-{}", wxpay::nonce::random_string(10)));
        let first = MasterKey::load_or_create(&dir).unwrap();
        let again = MasterKey::load_or_create(&dir).unwrap();
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join(SANDBOX_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
