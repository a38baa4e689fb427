//! `wxpay decrypt v3`.

use std::io::Write;

use wxpay::CryptoError;
use wxpay::v3::aead::ApiV3Key;

use crate::cli::DecryptV3Args;
use crate::failure::Failure;

/// Decrypts; writes the plaintext to `out`, followed by a newline unless it ends with one.
///
/// # Errors
/// [`Failure::Input`] for a key that is not 32 bytes, a nonce that is not 12, or a ciphertext
/// that is not base64; [`Failure::Invalid`] when authentication fails.
pub fn v3(args: &DecryptV3Args, out: &mut dyn Write) -> Result<(), Failure> {
    // The library's error names only the length, never the key.
    let key = ApiV3Key::new(&args.apiv3_key).map_err(|e| match e {
        CryptoError::InvalidKey(why) => Failure::input(format!("--apiv3-key: {why}")),
        other => Failure::input(format!("--apiv3-key: {other}")),
    })?;
    if args.nonce.len() != 12 {
        return Err(Failure::input(format!(
            "--nonce must be the 12-character nonce of the resource, got {} bytes",
            args.nonce.len()
        )));
    }
    let plaintext = key
        .decrypt(&args.nonce, &args.associated_data, &args.ciphertext)
        .map_err(|e| match e {
            CryptoError::Base64(_) => Failure::input("--ciphertext is not valid base64"),
            CryptoError::Decrypt => Failure::invalid(
                "decryption failed: the GCM tag does not verify, so the APIv3 key, nonce, associated data or ciphertext is wrong",
            ),
            other => Failure::input(other.to_string()),
        })?;
    let write = |out: &mut dyn Write| -> std::io::Result<()> {
        out.write_all(&plaintext)?;
        if plaintext.last() != Some(&b'\n') {
            out.write_all(b"\n")?;
        }
        out.flush()
    };
    write(out).map_err(|e| Failure::input(format!("cannot write to stdout: {e}")))
}
