//! Phone numbers (`getuserphonenumber`).

use bytes::Bytes;
use serde::Deserialize;

use super::super::validate_code;
use super::{MpClient, decode_answer, post_json};
use crate::error::{DecodeError, Error, Result};
use crate::http::Idempotency;

/// The phone number bound to the user's WeChat account.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PhoneInfo {
    /// The number with its country code when outside mainland China.
    #[serde(rename = "phoneNumber")]
    pub phone_number: String,
    /// The number without country code.
    #[serde(rename = "purePhoneNumber")]
    pub pure_phone_number: String,
    /// The country code, e.g. `86` (WeChat's documentation shows it both as a string and as a
    /// number; both are accepted).
    #[serde(rename = "countryCode", deserialize_with = "string_or_number")]
    pub country_code: String,
    /// Which app the number was issued to, and when.
    pub watermark: PhoneWatermark,
}

/// The `watermark` of a phone number: the app it was issued to, and when.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PhoneWatermark {
    /// Unix seconds.
    pub timestamp: i64,
    /// The AppID.
    pub appid: String,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Text(String),
        Number(u64),
    }
    Ok(match Text::deserialize(deserializer)? {
        Text::Text(text) => text,
        Text::Number(number) => number.to_string(),
    })
}

impl MpClient {
    /// The phone number behind a `getPhoneNumber` button code
    /// (`POST /wxa/business/getuserphonenumber`). The code is single-use and valid 5 minutes.
    /// With `openid`, WeChat also checks that the code was issued to that user. Retried once with
    /// a new token when WeChat says the token is invalid or expired.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for an empty or non-printable code or openid (nothing sent);
    /// [`ApiError::MiniProgram`] with e.g. [`ErrCode::InvalidCode`]; [`DecodeError`] when the
    /// watermark names another app; token, transport errors.
    pub async fn get_user_phone_number(
        &self,
        code: &str,
        openid: Option<&str>,
    ) -> Result<PhoneInfo> {
        validate_code("phone number code", code)?;
        if let Some(openid) = openid {
            validate_openid(openid)?;
        }
        let mut body = serde_json::Map::new();
        body.insert("code".into(), code.into());
        if let Some(openid) = openid {
            body.insert("openid".into(), openid.into());
        }
        let body = Bytes::from(serde_json::Value::Object(body).to_string());
        let info = self
            .with_token(|token| {
                let body = body.clone();
                async move {
                    let url = self.url(
                        "/wxa/business/getuserphonenumber",
                        &[("access_token", token.expose_secret())],
                    )?;
                    let response = self
                        .inner
                        .http
                        .send(Idempotency::Once, || post_json(&url, body.clone()))
                        .await?;
                    #[derive(Deserialize)]
                    struct Answer {
                        phone_info: PhoneInfo,
                    }
                    let answer: Answer = decode_answer(&response)?;
                    Ok(answer.phone_info)
                }
            })
            .await?;
        if info.watermark.appid != self.inner.config.appid {
            return Err(
                DecodeError::invalid("phone_info.watermark.appid", "names another AppID").into(),
            );
        }
        Ok(info)
    }
}

fn validate_openid(openid: &str) -> Result<()> {
    if openid.is_empty() || openid.len() > 128 || !openid.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::InvalidRequest(
            "openid must be 1 to 128 visible ASCII characters".into(),
        ));
    }
    Ok(())
}
