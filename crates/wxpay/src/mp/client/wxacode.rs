//! Unlimited mini-program codes (`getwxacodeunlimit`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::super::{validate_page, validate_scene};
use super::{MpClient, check_answer, post_json};
use crate::error::{DecodeError, Error, Result};
use crate::http::{Idempotency, RawResponse};

/// `env_version` of a mini-program code: which version of the app the code opens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvVersion {
    /// The released version.
    #[default]
    Release,
    /// The trial version.
    Trial,
    /// The development version.
    Develop,
}

/// An RGB colour, decimal components.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineColor {
    /// Red.
    pub r: u8,
    /// Green.
    pub g: u8,
    /// Blue.
    pub b: u8,
}

/// The smallest `width` of a mini-program code.
pub const WXACODE_MIN_WIDTH: u32 = 280;
/// The largest `width` of a mini-program code.
pub const WXACODE_MAX_WIDTH: u32 = 1280;

/// The body of `POST /wxa/getwxacodeunlimit`. Codes made this way are permanent and unlimited in
/// number; the page reads `scene` from its launch options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WxaCodeRequest {
    /// Up to 32 characters of `[0-9A-Za-z]` and ``!#$&'()*+,/:;=?@-._~``.
    pub scene: String,
    /// The page to open, like `pages/index/index` (no leading `/`, no query); the home page when
    /// absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// When true, WeChat refuses a page that is not in the released version.
    pub check_path: bool,
    /// Which version of the app the code opens.
    pub env_version: EnvVersion,
    /// Width in pixels, 280 to 1280.
    pub width: u32,
    /// Let WeChat choose the line colour.
    pub auto_color: bool,
    /// The line colour when `auto_color` is false.
    pub line_color: LineColor,
    /// Transparent background.
    pub is_hyaline: bool,
}

impl WxaCodeRequest {
    /// A request with WeChat's defaults: home page, `check_path` true, release, 430 px, black.
    pub fn new(scene: impl Into<String>) -> Self {
        WxaCodeRequest {
            scene: scene.into(),
            page: None,
            check_path: true,
            env_version: EnvVersion::Release,
            width: 430,
            auto_color: false,
            line_color: LineColor::default(),
            is_hyaline: false,
        }
    }

    /// The same request for another page.
    #[must_use]
    pub fn page(mut self, page: impl Into<String>) -> Self {
        self.page = Some(page.into());
        self
    }

    /// The same request with another width.
    #[must_use]
    pub fn width(mut self, width: u32) -> Self {
        self.width = width;
        self
    }

    /// Checks the request as WeChat would, so that a bad one is refused before it is sent.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] naming the field and the rule.
    pub fn validate(&self) -> Result<()> {
        validate_scene(&self.scene)?;
        if let Some(page) = &self.page {
            validate_page(page)?;
        }
        if !(WXACODE_MIN_WIDTH..=WXACODE_MAX_WIDTH).contains(&self.width) {
            return Err(Error::InvalidRequest(format!(
                "width {} is outside {WXACODE_MIN_WIDTH}..={WXACODE_MAX_WIDTH} pixels",
                self.width
            )));
        }
        Ok(())
    }
}

/// A mini-program code image as WeChat sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WxaCodeImage {
    /// `image/jpeg`, or `image/png` for a transparent background (lowercase, no parameters).
    pub content_type: String,
    /// The image file.
    pub bytes: Bytes,
}

impl MpClient {
    /// Creates an unlimited mini-program code (`POST /wxa/getwxacodeunlimit`). The request is
    /// checked first and refused without being sent when WeChat would refuse it. Retried once with
    /// a new token when WeChat says the token is invalid or expired.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a bad scene, page or width (nothing sent);
    /// [`ApiError::MiniProgram`] with e.g. [`ErrCode::InvalidPage`] or [`ErrCode::ApiQuotaReached`];
    /// [`DecodeError`] when the answer is neither an image nor a JSON errcode; token, transport
    /// errors.
    pub async fn get_wxacode_unlimit(&self, request: &WxaCodeRequest) -> Result<WxaCodeImage> {
        request.validate()?;
        let body = Bytes::from(serde_json::to_vec(request).map_err(|e| DecodeError::json(&e))?);
        self.with_token(|token| {
            let body = body.clone();
            async move {
                let url = self.url(
                    "/wxa/getwxacodeunlimit",
                    &[("access_token", token.expose_secret())],
                )?;
                let response = self
                    .inner
                    .http
                    .send(Idempotency::Idempotent, || post_json(&url, body.clone()))
                    .await?;
                decode_wxacode(&response)
            }
        })
        .await
    }
}

/// WeChat answers an image on success and a JSON errcode on failure, both with HTTP 200, so the
/// Content-Type decides.
pub(super) fn decode_wxacode(response: &RawResponse) -> Result<WxaCodeImage> {
    let content_type = response.content_type().unwrap_or_default();
    if content_type.starts_with("image/") && response.status.is_success() {
        if response.body.is_empty() {
            return Err(DecodeError::invalid("body", "empty image").into());
        }
        return Ok(WxaCodeImage {
            content_type,
            bytes: response.body.clone(),
        });
    }
    check_answer(response)?;
    Err(DecodeError::invalid(
        "Content-Type",
        format!("expected an image or a JSON errcode, got {content_type:?}"),
    )
    .into())
}
