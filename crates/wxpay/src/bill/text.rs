//! A downloaded bill body: gzip, size limits, UTF-8, the SHA-1 digest of v3.

use std::io::Read as _;

use crate::error::DecodeError;

/// Decompresses a gzip body, refusing output over `limit` bytes (a small gzip can inflate to
/// gigabytes).
///
/// # Errors
/// [`DecodeError::Bill`] for data that is not gzip or is corrupt, or output over `limit`.
pub fn gunzip_limited(bytes: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let decoder = flate2::read::MultiGzDecoder::new(bytes);
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(limit));
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    decoder
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Bill(format!("gzip: {e}")))?;
    if out.len() > limit {
        return Err(DecodeError::Bill(format!(
            "gzip: the decompressed bill is over the {limit} byte limit"
        )));
    }
    Ok(out)
}

/// Whether `bytes` start with the gzip magic `1f 8b`.
#[must_use]
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// A downloaded bill body as text: gunzipped (under `limit`) when it is gzip, then UTF-8.
///
/// # Errors
/// As [`gunzip_limited`], or [`DecodeError::NotUtf8`].
pub fn bill_text(bytes: &[u8], limit: usize) -> Result<String, DecodeError> {
    let raw = if is_gzip(bytes) {
        gunzip_limited(bytes, limit)?
    } else if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit,
        });
    } else {
        bytes.to_vec()
    };
    String::from_utf8(raw).map_err(|_| DecodeError::NotUtf8)
}

/// Lowercase hex SHA-1, the `hash_value` of a v3 bill (over the decompressed bill).
#[must_use]
pub fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes).as_ref(),
    )
}
