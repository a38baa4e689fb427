//! `wxpay verify v3`: checks the signature only (not the timestamp window, not the serial).
//!
//! When the signature does not verify, the tool says which of the two usual causes it is: a
//! signature made with another key (the wrong public key or certificate, e.g. a platform
//! certificate for a `PUB_KEY_ID_` serial), or one made with this key over another message (the
//! body was reformatted, a trailing newline, another timestamp or nonce). The verdict itself is
//! always aws-lc's; the raw RSA operation below only explains a failure.

use std::io::Write;

use base64::Engine as _;
use der::Reader as _;
use der::asn1::UintRef;
use num_bigint::BigUint;
use wxpay::RsaPublicKey;
use wxpay::v3::auth::response_message;
use wxpay::v3::verifier::SIGNTEST_PREFIX;

use crate::cli::VerifyV3Args;
use crate::commands::sign::emit;
use crate::failure::Failure;
use crate::input;

/// The DER prefix of a SHA-256 `DigestInfo` in a PKCS#1 v1.5 signature (RFC 8017, 9.2 note 1).
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Verifies; writes `valid` to `out`.
///
/// # Errors
/// [`Failure::Invalid`] with the reason when the signature does not verify;
/// [`Failure::Input`] when a file cannot be read or the timestamp is not Unix seconds.
pub fn v3(args: &VerifyV3Args, out: &mut dyn Write) -> Result<(), Failure> {
    if args.timestamp.is_empty() || !args.timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Failure::input(format!(
            "--timestamp {:?} is not Unix seconds (the Wechatpay-Timestamp header)",
            args.timestamp
        )));
    }
    let (key, source) = match (&args.public_key, &args.certificate) {
        (Some(path), _) => (input::public_key(path)?, "the public key".to_owned()),
        (None, Some(path)) => {
            let cert = input::certificate(path)?;
            (cert.public_key, format!("certificate {}", cert.serial_no))
        }
        (None, None) => return Err(Failure::input("pass --public-key or --certificate")),
    };
    let body = input::read_body(args.body_file.as_deref())?;
    let signature = args.signature.trim();

    if signature.starts_with(SIGNTEST_PREFIX) {
        return Err(Failure::invalid(
            "this is a WECHATPAY/SIGNTEST/ probe: WeChat Pay sends these deliberately invalid signatures to check that you verify; refuse it (answer a notification with 4xx/5xx)",
        ));
    }
    let Some(sig_bytes) = decode_base64(signature) else {
        return Err(Failure::invalid("the signature is not valid base64"));
    };
    let message = response_message(&args.timestamp, &args.nonce, &body);
    match key.verify_sha256_base64(&message, signature) {
        Ok(()) => emit(
            out,
            "valid", // the signature only: the timestamp window and serial are the caller's checks
        ),
        Err(_) => Err(Failure::invalid(explain_failure(&key, &sig_bytes, &source))),
    }
}

fn explain_failure(key: &RsaPublicKey, signature: &[u8], source: &str) -> String {
    match recover_encoded_message(key, signature) {
        Recovered::WrongLength { signature, modulus } => format!(
            "wrong length: the signature is {signature} bytes but a signature by {source} is {modulus} bytes (truncated, or made with another key)"
        ),
        Recovered::Sha256Padding => format!(
            "signature mismatch: it was made with {source}, but over another message; check that the body is the exact raw bytes received (no re-serialized JSON, no added trailing newline) and the timestamp and nonce are the headers' values"
        ),
        Recovered::OtherPadding => format!(
            "signature mismatch: it was made with {source}, but not as SHA256withRSA over this message"
        ),
        Recovered::Garbage => format!(
            "wrong key: the signature was not made with the private key of {source} (check Wechatpay-Serial: PUB_KEY_ID_ needs the WeChat Pay public key, a hex serial the platform certificate with that serial)"
        ),
        Recovered::KeyUnreadable => format!("the signature does not verify with {source}"),
    }
}

enum Recovered {
    WrongLength { signature: usize, modulus: usize },
    Sha256Padding,
    OtherPadding,
    Garbage,
    KeyUnreadable,
}

/// `signature^e mod n`, read as a PKCS#1 v1.5 encoded message: `00 01 FF.. 00 DigestInfo`.
/// A well-formed block means the key is right and the message is not.
fn recover_encoded_message(key: &RsaPublicKey, signature: &[u8]) -> Recovered {
    let Some((n, e)) = rsa_components(key.spki_der()) else {
        return Recovered::KeyUnreadable;
    };
    let modulus_len = n.bits().div_ceil(8) as usize;
    if signature.len() != modulus_len {
        return Recovered::WrongLength {
            signature: signature.len(),
            modulus: modulus_len,
        };
    }
    let s = BigUint::from_bytes_be(signature);
    if s >= n {
        return Recovered::Garbage;
    }
    let em = s.modpow(&e, &n).to_bytes_be();
    // to_bytes_be drops the leading 00, so a well-formed block starts 01 FF and is one byte short.
    if em.len() + 1 != modulus_len || em.first() != Some(&0x01) {
        return Recovered::Garbage;
    }
    let rest = &em[1..];
    let padding = rest.iter().take_while(|&&b| b == 0xff).count();
    if padding < 8 || rest.get(padding) != Some(&0x00) {
        return Recovered::Garbage;
    }
    let digest_info = &rest[padding + 1..];
    if digest_info.len() == SHA256_DIGEST_INFO.len() + 32
        && digest_info.starts_with(&SHA256_DIGEST_INFO)
    {
        Recovered::Sha256Padding
    } else if digest_info.first() == Some(&0x30) {
        Recovered::OtherPadding
    } else {
        Recovered::Garbage
    }
}

/// The modulus and exponent of an RSA SPKI.
fn rsa_components(spki_der: &[u8]) -> Option<(BigUint, BigUint)> {
    use der::Decode as _;
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der).ok()?;
    let pkcs1 = spki.subject_public_key.as_bytes()?;
    let mut reader = der::SliceReader::new(pkcs1).ok()?;
    let (n, e) = reader
        .sequence(|r| {
            let n: UintRef<'_> = r.decode()?;
            let e: UintRef<'_> = r.decode()?;
            Ok::<_, der::Error>((n, e))
        })
        .ok()?;
    Some((
        BigUint::from_bytes_be(n.as_bytes()),
        BigUint::from_bytes_be(e.as_bytes()),
    ))
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    // The library's verifier decodes with the same engine, so "not base64" here means the same.
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}
