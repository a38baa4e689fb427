//! The parameters of `wx.requestPayment`, signed on the server (never in the mini program: the
//! key must not leave the server).

use serde::{Deserialize, Serialize};

use crate::error::CryptoError;
use crate::keys::RsaPrivateKey;
use crate::v2::SignType;

/// The object the mini program passes to `wx.requestPayment`. `appId` is signed but is not part
/// of the object (the client knows its own appid); [`RequestPayment::app_id`] keeps it for
/// servers that want to return it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestPayment {
    /// Unix seconds as a string (10 digits).
    #[serde(rename = "timeStamp")]
    pub time_stamp: String,
    /// Random string, at most 32 characters.
    #[serde(rename = "nonceStr")]
    pub nonce_str: String,
    /// `prepay_id=...`.
    pub package: String,
    /// `MD5`, `HMAC-SHA256` (v2) or `RSA` (v3).
    #[serde(rename = "signType")]
    pub sign_type: String,
    /// The signature.
    #[serde(rename = "paySign")]
    pub pay_sign: String,
    /// The appid that was signed. Skipped when serializing unless the caller wants it.
    #[serde(rename = "appId", default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
}

/// The message a v3 `paySign` covers: four lines, each ending in `\n`.
#[must_use]
pub fn v3_message(app_id: &str, time_stamp: &str, nonce_str: &str, package: &str) -> String {
    format!("{app_id}\n{time_stamp}\n{nonce_str}\n{package}\n")
}

/// v3 parameters: `signType` `RSA`, `paySign` = SHA256withRSA over appId, timeStamp, nonceStr and
/// package with the merchant private key.
///
/// # Errors
/// [`CryptoError::Sign`] if signing fails.
pub fn v3(
    key: &RsaPrivateKey,
    app_id: &str,
    prepay_id: &str,
    time_stamp: i64,
    nonce_str: &str,
) -> Result<RequestPayment, CryptoError> {
    let time_stamp = time_stamp.to_string();
    let package = format!("prepay_id={prepay_id}");
    let pay_sign =
        key.sign_sha256_base64(v3_message(app_id, &time_stamp, nonce_str, &package).as_bytes())?;
    Ok(RequestPayment {
        time_stamp,
        nonce_str: nonce_str.to_owned(),
        package,
        sign_type: "RSA".to_owned(),
        pay_sign,
        app_id: Some(app_id.to_owned()),
    })
}

/// The five v2 fields a `paySign` covers, exactly as the WeChat client signs them.
#[must_use]
pub fn v2_fields<'a>(
    app_id: &'a str,
    time_stamp: &'a str,
    nonce_str: &'a str,
    package: &'a str,
    sign_type: &'a str,
) -> [(&'a str, &'a str); 5] {
    [
        ("appId", app_id),
        ("nonceStr", nonce_str),
        ("package", package),
        ("signType", sign_type),
        ("timeStamp", time_stamp),
    ]
}

/// v2 parameters: `paySign` = the v2 sign over `appId` (capital I), `nonceStr`, `package`,
/// `signType` and `timeStamp`. `sign_type` must be the one used for `unifiedorder`.
#[must_use]
pub fn v2(
    api_key: &str,
    app_id: &str,
    prepay_id: &str,
    time_stamp: i64,
    nonce_str: &str,
    sign_type: SignType,
) -> RequestPayment {
    let time_stamp = time_stamp.to_string();
    let package = format!("prepay_id={prepay_id}");
    let pay_sign = crate::v2::sign::sign(
        v2_fields(app_id, &time_stamp, nonce_str, &package, sign_type.as_str()),
        api_key,
        sign_type,
    );
    RequestPayment {
        time_stamp,
        nonce_str: nonce_str.to_owned(),
        package,
        sign_type: sign_type.as_str().to_owned(),
        pay_sign,
        app_id: Some(app_id.to_owned()),
    }
}

/// Verifies a `wx.requestPayment` object as the WeChat client does before it shows the cashier
/// (the simulator uses this).
///
/// # Errors
/// [`crate::SignatureError`] when `paySign` does not match.
pub fn verify(
    params: &RequestPayment,
    app_id: &str,
    v2_key: &str,
    merchant_public_key: &crate::keys::RsaPublicKey,
) -> Result<(), crate::SignatureError> {
    match params.sign_type.as_str() {
        "RSA" => merchant_public_key.verify_sha256_base64(
            v3_message(
                app_id,
                &params.time_stamp,
                &params.nonce_str,
                &params.package,
            )
            .as_bytes(),
            &params.pay_sign,
        ),
        other => {
            let sign_type: SignType = other.parse().map_err(|_| {
                crate::SignatureError::UnsupportedType(other.chars().take(20).collect())
            })?;
            let expected = crate::v2::sign::sign(
                v2_fields(
                    app_id,
                    &params.time_stamp,
                    &params.nonce_str,
                    &params.package,
                    other,
                ),
                v2_key,
                sign_type,
            );
            if crate::v2::sign::constant_time_eq_ignore_case(&expected, &params.pay_sign) {
                Ok(())
            } else {
                Err(crate::SignatureError::Mismatch)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::D5_KEY;

    #[test]
    fn d2_v2_pay_sign_vectors() {
        let key = "qazwsxedcrfvtgbyhnujmikolp111111";
        let p = v2(
            key,
            "wxd678efh567hg6787",
            "wx2017033010242291fcfe0db70013231072",
            1_490_840_662,
            "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
            SignType::Md5,
        );
        assert_eq!(p.pay_sign, "22D9B4E54AB1950F51E0649E8810ACD6");
        assert_eq!(p.package, "prepay_id=wx2017033010242291fcfe0db70013231072");
        let h = v2(
            key,
            "wxd678efh567hg6787",
            "wx2017033010242291fcfe0db70013231072",
            1_490_840_662,
            "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
            SignType::HmacSha256,
        );
        assert_eq!(
            h.pay_sign,
            "FB9D1EFB5C509131BBFF729F88A99CA2DE9B724D06D3B3262832A53083862BC0"
        );
        let pk = RsaPrivateKey::generate().unwrap();
        assert_eq!(
            verify(&h, "wxd678efh567hg6787", key, pk.public_key()),
            Ok(())
        );
        assert_eq!(
            verify(&h, "wxOTHER", key, pk.public_key()),
            Err(crate::SignatureError::Mismatch)
        );
    }

    #[test]
    fn d8_v3_pay_sign_vector() {
        let key = RsaPrivateKey::from_pem(D5_KEY).unwrap();
        let p = v3(
            &key,
            "wx8888888888888888",
            "wx201410272009395522657a690389285100",
            1_414_561_699,
            "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        )
        .unwrap();
        assert_eq!(p.sign_type, "RSA");
        assert_eq!(
            p.pay_sign,
            "TqVF9laH9pV8XhGIjctW4RxmwTaUQ3+P6OwJdgaWdg3nnDTVWmBMn/0+1HhshL/yvD7qM9xJtEmGgLyBTMlcD6RopG1bicanrjCC1pRlezK7Tea895ucmH033fENGrmSjyd528HfXpu30cj6ELhyKbqxPCt0CpYJHQdDNzWs+mqvS3ZZsTMu84ghjvjERgSkW+IorLRERZpyq1xVBJ7P9X2ZZMpJEABF4t8lnyd1pMu/D81LmGTsZA3WUBXmYK+BPrFdKD5QnHbuEbFm7NGLyr70wWKbzKOVmzWFVENWu30sJRTn65U+NQ4ZfHno4eEMEEs7qXZMPCiasoBXrYPuzQ=="
        );
        assert_eq!(
            verify(&p, "wx8888888888888888", "", key.public_key()),
            Ok(())
        );
        let mut tampered = p.clone();
        tampered.package = "prepay_id=other".into();
        assert_eq!(
            verify(&tampered, "wx8888888888888888", "", key.public_key()),
            Err(crate::SignatureError::Mismatch)
        );
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["timeStamp"], "1414561699");
        assert_eq!(json["signType"], "RSA");
    }
}
