//! Reading what the commands work on: files, stdin, keys, and the checks on header-bound values.

use std::io::Read;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use wxpay::{RsaPrivateKey, RsaPublicKey, X509Certificate};

use crate::failure::Failure;

/// The largest PEM file read (keys and certificates are a few KiB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The largest body file read. v3 bodies are JSON of a few KiB; this only stops a mistaken
/// `/dev/zero` from eating the memory.
const MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// Reads at most `limit` bytes from `reader`; more is an error naming `what`.
///
/// # Errors
/// [`Failure::Input`] on an I/O error or when the input is over the limit.
pub fn read_limited(reader: impl Read, limit: u64, what: &str) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::input(format!("cannot read {what}: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(Failure::input(format!(
            "{what} is larger than {limit} bytes"
        )));
    }
    Ok(bytes)
}

fn read_file(path: &Path, limit: u64, option: &str) -> Result<Vec<u8>, Failure> {
    let file = std::fs::File::open(path)
        .map_err(|e| Failure::input(format!("{option} {}: {e}", path.display())))?;
    read_limited(file, limit, &format!("{option} {}", path.display()))
}

fn read_pem(path: &Path, option: &str) -> Result<String, Failure> {
    let bytes = read_file(path, MAX_PEM_BYTES, option)?;
    String::from_utf8(bytes)
        .map_err(|_| Failure::input(format!("{option} {}: not a PEM text file", path.display())))
}

/// Reads an exact body from a file, or the empty body when no file is given.
///
/// # Errors
/// [`Failure::Input`] when the file cannot be read.
pub fn read_body(path: Option<&Path>) -> Result<Vec<u8>, Failure> {
    path.map_or(Ok(Vec::new()), |p| {
        read_file(p, MAX_BODY_BYTES, "--body-file")
    })
}

/// Loads a PKCS#1 or PKCS#8 PEM private key. Errors never show the file's content.
///
/// # Errors
/// [`Failure::Input`] when the file cannot be read or is not an RSA private key.
pub fn private_key(path: &Path) -> Result<RsaPrivateKey, Failure> {
    let pem = read_pem(path, "--private-key")?;
    RsaPrivateKey::from_pem(&pem)
        .map_err(|e| Failure::input(format!("--private-key {}: {e}", path.display())))
}

/// Loads an SPKI (or PKCS#1) PEM public key.
///
/// # Errors
/// [`Failure::Input`] when the file cannot be read or is not an RSA public key.
pub fn public_key(path: &Path) -> Result<RsaPublicKey, Failure> {
    let pem = read_pem(path, "--public-key")?;
    if pem.contains("PRIVATE KEY-----") {
        return Err(Failure::input(format!(
            "--public-key {}: this is a private key; pass the WeChat Pay public key (PUBLIC KEY PEM)",
            path.display()
        )));
    }
    RsaPublicKey::from_pem(&pem)
        .map_err(|e| Failure::input(format!("--public-key {}: {e}", path.display())))
}

/// Loads an X.509 PEM certificate.
///
/// # Errors
/// [`Failure::Input`] when the file cannot be read or is not an RSA certificate.
pub fn certificate(path: &Path) -> Result<X509Certificate, Failure> {
    let pem = read_pem(path, "--certificate")?;
    if pem.contains("-----BEGIN PUBLIC KEY-----") {
        return Err(Failure::input(format!(
            "--certificate {}: this is a public key, not a certificate; pass it with --public-key",
            path.display()
        )));
    }
    X509Certificate::from_pem(&pem)
        .map_err(|e| Failure::input(format!("--certificate {}: {e}", path.display())))
}

/// An API v2 key as WeChat makes them: 32 visible ASCII characters. Anything else is surely not
/// the key (a truncated copy, the APIv3 key's neighbour, a placeholder) and signs nothing WeChat
/// would accept.
///
/// # Errors
/// [`Failure::Input`] naming `--key` (never its value).
pub fn check_v2_key(key: &str) -> Result<(), Failure> {
    if key.len() == 32 && key.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(Failure::input(format!(
            "--key must be the 32-character API v2 key of the merchant platform (got {} characters)",
            key.chars().count()
        )))
    }
}

/// The current Unix time in seconds.
///
/// # Errors
/// [`Failure::Input`] if the system clock is before 1970.
pub fn now() -> Result<i64, Failure> {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Failure::input("the system clock is before 1970; pass --timestamp"))?;
    i64::try_from(since.as_secs()).map_err(|_| Failure::input("the system clock is out of range"))
}

/// Checks a value that goes into a header or a signed line: not empty, at most `max` bytes,
/// printable ASCII, and none of `forbidden`.
///
/// # Errors
/// [`Failure::Input`] naming `option` and the rule broken.
pub fn check_token(
    value: &str,
    option: &str,
    max: usize,
    forbidden: &[char],
) -> Result<(), Failure> {
    if value.is_empty() {
        return Err(Failure::input(format!("{option} is empty")));
    }
    if value.len() > max {
        return Err(Failure::input(format!(
            "{option} is {} bytes, at most {max} are allowed",
            value.len()
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !c.is_ascii_graphic() || forbidden.contains(c))
    {
        return Err(Failure::input(format!(
            "{option} contains the character {c:?}, which is not allowed"
        )));
    }
    Ok(())
}
