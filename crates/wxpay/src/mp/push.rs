//! Mini-program message push (消息推送): the callbacks WeChat sends to the URL configured in the
//! mini program's admin console, as pure functions.
//!
//! - [`verify_url`]: the `GET` handshake when the URL is saved (`signature`, `timestamp`,
//!   `nonce`, `echostr`); answer the returned `echostr` as is.
//! - [`open_push`]: a `POST` event in plaintext, compatible or safe mode, JSON or XML: the
//!   signature (`signature` in plaintext mode, `msg_signature` over the `Encrypt` field otherwise)
//!   is checked in constant time, the AES-256-CBC payload decrypted and its AppID checked, and the
//!   event typed ([`PushEvent`]).
//! - [`seal_push`], [`encrypt`], [`encrypted_reply`]: the other side (what WeChat, or the
//!   simulator, sends), used by tests and the simulator.
//!
//! Safe mode (安全模式): `AESKey = base64(EncodingAESKey + "=")` (32 bytes), `IV = AESKey[..16]`,
//! plaintext `random(16) ‖ len(msg) as u32 BE ‖ msg ‖ appid`, PKCS#7 padding to **32**-byte
//! blocks, no cipher-level padding, standard base64.

use aws_lc_rs::cipher::{
    AES_256, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::{DecodePaddingMode, general_purpose};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq as _;

use crate::v2::xml;

/// The largest push body accepted (64 KiB; WeChat's events are a few hundred bytes).
pub const MAX_PUSH_BYTES: usize = 64 * 1024;

/// The block size of the PKCS#7 padding of safe mode (WeChat pads to 32 bytes, not AES's 16).
pub const PAD_BLOCK: usize = 32;

/// Why a push (or its handshake) was refused. Nothing in a refused push should be believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// A query parameter is missing or empty.
    #[error("push query parameter {0} is missing")]
    MissingParam(&'static str),
    /// `signature` does not match `SHA1(sort(token, timestamp, nonce))`.
    #[error("push signature does not match")]
    BadSignature,
    /// `msg_signature` does not match `SHA1(sort(token, timestamp, nonce, Encrypt))`.
    #[error("push msg_signature does not match")]
    BadMsgSignature,
    /// The EncodingAESKey is not 43 base64 characters.
    #[error("EncodingAESKey must be 43 base64 characters")]
    InvalidEncodingAesKey,
    /// An encrypted push arrived but no EncodingAESKey is configured.
    #[error("an encrypted push arrived but no EncodingAESKey is configured")]
    NoAesKey,
    /// A plaintext push arrived but the configuration requires safe mode.
    #[error("a plaintext push arrived but safe mode is required")]
    PlaintextRefused,
    /// `Encrypt` is not standard base64.
    #[error("Encrypt is not base64")]
    Base64,
    /// The ciphertext is not a whole number of AES blocks, or too short.
    #[error("ciphertext of {0} bytes is not a whole number of blocks of at least 32 bytes")]
    CipherLength(usize),
    /// The PKCS#7 padding (to 32-byte blocks) is wrong: a wrong key, or tampered data.
    #[error("invalid padding after decryption (wrong EncodingAESKey or tampered data)")]
    Padding,
    /// The message length prefix points past the end of the plaintext.
    #[error("invalid message length in the decrypted payload")]
    Length,
    /// The AppID at the end of the plaintext is not ours.
    #[error("the encrypted push names another AppID")]
    AppIdMismatch,
    /// The body (or the decrypted message) is larger than [`MAX_PUSH_BYTES`].
    #[error("push body of {0} bytes is over the 64 KiB limit")]
    TooLarge(usize),
    /// The body (or the decrypted message) is not the expected JSON or XML.
    #[error("push body is malformed: {0}")]
    Body(String),
    /// A field has the wrong type (e.g. `CreateTime` not a number).
    #[error("push field {0} is missing or has the wrong type")]
    Field(&'static str),
    /// Encryption failed (a message too large to be written).
    #[error("encryption failed")]
    Encrypt,
}

/// The body format chosen in the admin console (数据格式).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PushFormat {
    /// `application/json` bodies.
    Json,
    /// `<xml>` bodies.
    Xml,
}

/// The encryption mode chosen in the admin console (消息加解密方式).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PushMode {
    /// 明文模式: the event as is, signed with `signature`.
    Plaintext,
    /// 兼容模式: the plaintext fields and `Encrypt` in the same body.
    Compatible,
    /// 安全模式: only `ToUserName` and `Encrypt`.
    Safe,
}

/// The 32-byte AES key of safe mode, from the 43-character EncodingAESKey.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodingAesKey([u8; 32]);

impl std::fmt::Debug for EncodingAesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncodingAesKey(<redacted>)")
    }
}

/// Standard base64 that ignores the 2 bits a 43-character key carries beyond 256 (WeChat's Java
/// and Python code decode it leniently; `base64`'s `STANDARD` refuses 3 keys in 4).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl EncodingAesKey {
    /// Parses the 43-character EncodingAESKey of the admin console.
    ///
    /// # Errors
    /// [`PushError::InvalidEncodingAesKey`] unless it is 43 base64 characters.
    pub fn parse(encoding_aes_key: &str) -> Result<Self, PushError> {
        if encoding_aes_key.len() != 43
            || !encoding_aes_key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        {
            return Err(PushError::InvalidEncodingAesKey);
        }
        let bytes = LENIENT
            .decode(format!("{encoding_aes_key}="))
            .map_err(|_| PushError::InvalidEncodingAesKey)?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| PushError::InvalidEncodingAesKey)?;
        Ok(EncodingAesKey(key))
    }

    /// The key of these 32 bytes.
    #[must_use]
    pub fn from_bytes(key: [u8; 32]) -> Self {
        EncodingAesKey(key)
    }

    /// The 43-character EncodingAESKey of this key (canonical: the trailing bits are zero).
    #[must_use]
    pub fn to_encoding(&self) -> String {
        general_purpose::STANDARD_NO_PAD.encode(self.0)
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.0[..16]);
        iv
    }
}

/// What a receiver of pushes is configured with: the Token, the EncodingAESKey (needed for
/// compatible and safe mode) and the AppID the encrypted payloads must name (the mini program's,
/// or the component AppID for a third-party platform).
#[derive(Clone, Debug)]
pub struct PushConfig {
    /// The Token of 消息推送配置.
    pub token: secrecy::SecretString,
    /// The EncodingAESKey, when encryption is configured.
    pub aes_key: Option<EncodingAesKey>,
    /// The AppID checked at the end of every decrypted payload.
    pub appid: String,
    /// Refuse plaintext pushes (the console is set to safe mode: a plaintext push is forged).
    pub require_encryption: bool,
}

impl PushConfig {
    /// A plaintext-mode configuration.
    pub fn plaintext(token: impl Into<String>, appid: impl Into<String>) -> Self {
        PushConfig {
            token: secrecy::SecretString::from(token.into()),
            aes_key: None,
            appid: appid.into(),
            require_encryption: false,
        }
    }

    /// A configuration with an EncodingAESKey (compatible or safe mode); plaintext pushes are
    /// refused.
    ///
    /// # Errors
    /// [`PushError::InvalidEncodingAesKey`].
    pub fn encrypted(
        token: impl Into<String>,
        encoding_aes_key: &str,
        appid: impl Into<String>,
    ) -> Result<Self, PushError> {
        Ok(PushConfig {
            token: secrecy::SecretString::from(token.into()),
            aes_key: Some(EncodingAesKey::parse(encoding_aes_key)?),
            appid: appid.into(),
            require_encryption: true,
        })
    }

    fn token(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.token)
    }
}

/// `hex(SHA1(concat(sort_bytewise(parts))))`: the signature of the handshake and of plaintext
/// pushes (`[token, timestamp, nonce]`) and the `msg_signature` of encrypted ones (with
/// `Encrypt` as fourth part).
#[must_use]
pub fn sha1_signature(parts: &[&str]) -> String {
    let mut sorted: Vec<&str> = parts.to_vec();
    sorted.sort_unstable();
    let joined = sorted.concat();
    crate::bill::sha1_hex(joined.as_bytes())
}

/// The `signature` of a handshake or plaintext push.
#[must_use]
pub fn signature(token: &str, timestamp: &str, nonce: &str) -> String {
    sha1_signature(&[token, timestamp, nonce])
}

/// The `msg_signature` of an encrypted push or reply.
#[must_use]
pub fn msg_signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    sha1_signature(&[token, timestamp, nonce, encrypt])
}

fn same(expected: &str, given: &str) -> bool {
    // Hex is case-insensitive; WeChat sends lower case.
    let given = given.to_ascii_lowercase();
    bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// The query of a push or of the handshake (`?signature=…&timestamp=…&nonce=…`, plus `echostr`
/// for the handshake and `openid`, `encrypt_type`, `msg_signature` for events).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushQuery {
    /// `signature`.
    pub signature: Option<String>,
    /// `timestamp`.
    pub timestamp: Option<String>,
    /// `nonce`.
    pub nonce: Option<String>,
    /// `echostr` (handshake only).
    pub echostr: Option<String>,
    /// `openid` (events).
    pub openid: Option<String>,
    /// `encrypt_type` (`aes` for encrypted events).
    pub encrypt_type: Option<String>,
    /// `msg_signature` (encrypted events).
    pub msg_signature: Option<String>,
}

impl PushQuery {
    /// Parses a URL query string (without the `?`). Unknown parameters are ignored; for a
    /// parameter given twice the first wins.
    #[must_use]
    pub fn parse(query: &str) -> Self {
        let mut out = PushQuery::default();
        let url = reqwest::Url::parse("http://push.invalid/").map(|mut u| {
            u.set_query(Some(query));
            u
        });
        let Ok(url) = url else { return out };
        for (name, value) in url.query_pairs() {
            let slot = match name.as_ref() {
                "signature" => &mut out.signature,
                "timestamp" => &mut out.timestamp,
                "nonce" => &mut out.nonce,
                "echostr" => &mut out.echostr,
                "openid" => &mut out.openid,
                "encrypt_type" => &mut out.encrypt_type,
                "msg_signature" => &mut out.msg_signature,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        out
    }

    /// The query string of these parameters (in a fixed order), URL-encoded.
    #[must_use]
    pub fn to_query(&self) -> String {
        let mut url = reqwest::Url::parse("http://push.invalid/").expect("a valid URL");
        {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in [
                ("signature", &self.signature),
                ("timestamp", &self.timestamp),
                ("nonce", &self.nonce),
                ("echostr", &self.echostr),
                ("openid", &self.openid),
                ("encrypt_type", &self.encrypt_type),
                ("msg_signature", &self.msg_signature),
            ] {
                if let Some(value) = value {
                    pairs.append_pair(name, value);
                }
            }
        }
        url.query().unwrap_or_default().to_owned()
    }
}

fn required<'a>(value: &'a Option<String>, name: &'static str) -> Result<&'a str, PushError> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(PushError::MissingParam(name)),
    }
}

/// Checks `signature` over the token, `timestamp` and `nonce` (constant time).
///
/// # Errors
/// [`PushError::MissingParam`], [`PushError::BadSignature`].
pub fn verify_signature(token: &str, query: &PushQuery) -> Result<(), PushError> {
    let given = required(&query.signature, "signature")?;
    let timestamp = required(&query.timestamp, "timestamp")?;
    let nonce = required(&query.nonce, "nonce")?;
    if same(&signature(token, timestamp, nonce), given) {
        Ok(())
    } else {
        Err(PushError::BadSignature)
    }
}

/// The URL-verification handshake (`GET` when the URL is saved): checks the signature and
/// returns the `echostr` to answer, as is, with status 200.
///
/// # Errors
/// [`PushError::MissingParam`] (including an empty `echostr`), [`PushError::BadSignature`].
pub fn verify_url<'q>(token: &str, query: &'q PushQuery) -> Result<&'q str, PushError> {
    verify_signature(token, query)?;
    required(&query.echostr, "echostr")
}

/// Safe-mode encryption of `msg` for `appid` with the given 16 random bytes; the base64
/// `Encrypt` value.
///
/// # Errors
/// [`PushError::Encrypt`] for a message over 4 GiB or a cipher failure.
pub fn encrypt(
    key: &EncodingAesKey,
    appid: &str,
    random: [u8; 16],
    msg: &[u8],
) -> Result<String, PushError> {
    let len = u32::try_from(msg.len()).map_err(|_| PushError::Encrypt)?;
    let mut plain = Vec::with_capacity(16 + 4 + msg.len() + appid.len() + PAD_BLOCK);
    plain.extend_from_slice(&random);
    plain.extend_from_slice(&len.to_be_bytes());
    plain.extend_from_slice(msg);
    plain.extend_from_slice(appid.as_bytes());
    let pad = PAD_BLOCK - plain.len() % PAD_BLOCK;
    let pad_byte = u8::try_from(pad).map_err(|_| PushError::Encrypt)?;
    plain.resize(plain.len() + pad, pad_byte);
    let unbound = UnboundCipherKey::new(&AES_256, &key.0).map_err(|_| PushError::Encrypt)?;
    let cipher = EncryptingKey::cbc(unbound).map_err(|_| PushError::Encrypt)?;
    cipher
        .less_safe_encrypt(&mut plain, EncryptionContext::Iv128(key.iv().into()))
        .map_err(|_| PushError::Encrypt)?;
    Ok(STANDARD.encode(&plain))
}

/// [`encrypt`] with 16 fresh random bytes.
///
/// # Errors
/// As [`encrypt`].
pub fn encrypt_random(key: &EncodingAesKey, appid: &str, msg: &[u8]) -> Result<String, PushError> {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut random = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| PushError::Encrypt)?;
    encrypt(key, appid, random, msg)
}

/// A decrypted safe-mode payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decrypted {
    /// The 16 random bytes of the prefix.
    pub random: [u8; 16],
    /// The message (JSON or XML).
    pub msg: Vec<u8>,
}

/// Safe-mode decryption of an `Encrypt` value; the AppID at its end must be `appid`.
///
/// # Errors
/// [`PushError::Base64`], [`PushError::CipherLength`], [`PushError::Padding`],
/// [`PushError::Length`], [`PushError::AppIdMismatch`], [`PushError::TooLarge`].
pub fn decrypt(key: &EncodingAesKey, appid: &str, encrypt: &str) -> Result<Decrypted, PushError> {
    if encrypt.len() > MAX_PUSH_BYTES * 2 {
        return Err(PushError::TooLarge(encrypt.len()));
    }
    let mut data = STANDARD.decode(encrypt).map_err(|_| PushError::Base64)?;
    if data.len() < PAD_BLOCK || data.len() % 16 != 0 {
        return Err(PushError::CipherLength(data.len()));
    }
    let unbound = UnboundCipherKey::new(&AES_256, &key.0).map_err(|_| PushError::Padding)?;
    let cipher = DecryptingKey::cbc(unbound).map_err(|_| PushError::Padding)?;
    let plain = cipher
        .decrypt(&mut data, DecryptionContext::Iv128(key.iv().into()))
        .map_err(|_| PushError::Padding)?;
    let pad = usize::from(*plain.last().ok_or(PushError::Padding)?);
    if pad == 0 || pad > PAD_BLOCK || pad > plain.len() {
        return Err(PushError::Padding);
    }
    let body_len = plain.len() - pad;
    let pad_ok = plain[body_len..]
        .iter()
        .fold(0u8, |acc, b| acc | (b ^ plain[plain.len() - 1]));
    if pad_ok != 0 {
        return Err(PushError::Padding);
    }
    let body = &plain[..body_len];
    if body.len() < 20 {
        return Err(PushError::Length);
    }
    let mut random = [0u8; 16];
    random.copy_from_slice(&body[..16]);
    let len = u32::from_be_bytes([body[16], body[17], body[18], body[19]]);
    let len = usize::try_from(len).map_err(|_| PushError::Length)?;
    let rest = &body[20..];
    if len > rest.len() {
        return Err(PushError::Length);
    }
    let (msg, their_appid) = rest.split_at(len);
    if their_appid != appid.as_bytes() {
        return Err(PushError::AppIdMismatch);
    }
    Ok(Decrypted {
        random,
        msg: msg.to_vec(),
    })
}

/// The common fields of every pushed message, the typed event, and all the fields as sent.
#[derive(Clone, Debug, PartialEq)]
pub struct PushMessage {
    /// `ToUserName`: the mini program's original ID (`gh_…`).
    pub to_user_name: String,
    /// `FromUserName`: an OpenID (a system account for trade-management events).
    pub from_user_name: String,
    /// `CreateTime`, Unix seconds.
    pub create_time: i64,
    /// `MsgType` (`event` for events).
    pub msg_type: String,
    /// The typed event.
    pub event: PushEvent,
    /// Every field of the message as sent (JSON values; XML values are strings).
    pub raw: Map<String, Value>,
}

/// The order of a trade-management event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushOrder {
    /// `transaction_id` (微信支付单号).
    pub transaction_id: String,
    /// `merchant_id` (商户号).
    pub merchant_id: String,
    /// `sub_merchant_id` (服务商模式的子商户号), when any.
    pub sub_merchant_id: Option<String>,
    /// `merchant_trade_no` (out_trade_no).
    pub merchant_trade_no: String,
    /// `pay_time`, Unix seconds.
    pub pay_time: i64,
}

/// How receipt was confirmed (`confirm_receive_method`). Users report the documented mapping
/// reversed in practice, so the number is kept as sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfirmReceiveMethod(pub i64);

/// The typed events of message push.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum PushEvent {
    /// `trade_manage_remind_access_api`: the mini program should start using the
    /// shipping-information API.
    TradeManageRemindAccessApi {
        /// `msg`.
        msg: Option<String>,
    },
    /// `trade_manage_remind_shipping`: an order has not been shipped 48 hours after payment.
    TradeManageRemindShipping {
        /// The order.
        order: PushOrder,
        /// `msg`.
        msg: Option<String>,
    },
    /// `trade_manage_order_settlement`: an order was shipped (with `estimated_settlement_time`)
    /// or settled (with `confirm_receive_*` and `settlement_time`).
    TradeManageOrderSettlement {
        /// The order.
        order: PushOrder,
        /// `shipped_time`, Unix seconds.
        shipped_time: Option<i64>,
        /// `estimated_settlement_time` (shipping-time push only).
        estimated_settlement_time: Option<i64>,
        /// `confirm_receive_method` (settlement-time push only).
        confirm_receive_method: Option<ConfirmReceiveMethod>,
        /// `confirm_receive_time` (settlement-time push only).
        confirm_receive_time: Option<i64>,
        /// `settlement_time` (settlement-time push only).
        settlement_time: Option<i64>,
    },
    /// `wxa_trade_controlled`: payments of the mini program are restricted (undocumented; only
    /// `msg` is read).
    WxaTradeControlled {
        /// `msg`.
        msg: Option<String>,
    },
    /// Any other event (or a non-event message); its fields are in [`PushMessage::raw`].
    Unknown {
        /// `Event`, or empty when absent.
        event: String,
    },
}

fn str_field(raw: &Map<String, Value>, name: &'static str) -> Result<Option<String>, PushError> {
    match raw.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(PushError::Field(name)),
    }
}

fn int_field(raw: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, PushError> {
    match raw.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(PushError::Field(name)),
        // XML bodies carry every value as text; an empty element is an absent value.
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| PushError::Field(name)),
        Some(_) => Err(PushError::Field(name)),
    }
}

fn order_of(raw: &Map<String, Value>) -> Result<PushOrder, PushError> {
    Ok(PushOrder {
        transaction_id: str_field(raw, "transaction_id")?.unwrap_or_default(),
        merchant_id: str_field(raw, "merchant_id")?.unwrap_or_default(),
        sub_merchant_id: str_field(raw, "sub_merchant_id")?.filter(|s| !s.is_empty()),
        merchant_trade_no: str_field(raw, "merchant_trade_no")?.unwrap_or_default(),
        pay_time: int_field(raw, "pay_time")?.unwrap_or_default(),
    })
}

impl PushMessage {
    /// Types a message from its fields.
    ///
    /// # Errors
    /// [`PushError::Field`] when a common field is missing or a known field has the wrong type.
    pub fn from_fields(raw: Map<String, Value>) -> Result<Self, PushError> {
        let to_user_name = str_field(&raw, "ToUserName")?.ok_or(PushError::Field("ToUserName"))?;
        let from_user_name = str_field(&raw, "FromUserName")?.unwrap_or_default();
        let create_time = int_field(&raw, "CreateTime")?.ok_or(PushError::Field("CreateTime"))?;
        let msg_type = str_field(&raw, "MsgType")?.unwrap_or_default();
        let event_name = str_field(&raw, "Event")?.unwrap_or_default();
        let msg = str_field(&raw, "msg")?;
        let event = match event_name.as_str() {
            "trade_manage_remind_access_api" => PushEvent::TradeManageRemindAccessApi { msg },
            "trade_manage_remind_shipping" => PushEvent::TradeManageRemindShipping {
                order: order_of(&raw)?,
                msg,
            },
            "trade_manage_order_settlement" => PushEvent::TradeManageOrderSettlement {
                order: order_of(&raw)?,
                shipped_time: int_field(&raw, "shipped_time")?,
                estimated_settlement_time: int_field(&raw, "estimated_settlement_time")?,
                confirm_receive_method: int_field(&raw, "confirm_receive_method")?
                    .map(ConfirmReceiveMethod),
                confirm_receive_time: int_field(&raw, "confirm_receive_time")?,
                settlement_time: int_field(&raw, "settlement_time")?,
            },
            "wxa_trade_controlled" => PushEvent::WxaTradeControlled { msg },
            _ => PushEvent::Unknown { event: event_name },
        };
        Ok(PushMessage {
            to_user_name,
            from_user_name,
            create_time,
            msg_type,
            event,
            raw,
        })
    }
}

/// The fields of a body in `format` (a flat JSON object or a flat `<xml>` document).
///
/// # Errors
/// [`PushError::TooLarge`], [`PushError::Body`].
pub fn parse_fields(format: PushFormat, body: &[u8]) -> Result<Map<String, Value>, PushError> {
    if body.len() > MAX_PUSH_BYTES {
        return Err(PushError::TooLarge(body.len()));
    }
    match format {
        PushFormat::Json => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(PushError::Body("not a JSON object".into())),
            Err(e) => Err(PushError::Body(format!(
                "not JSON ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ))),
        },
        PushFormat::Xml => {
            let map = xml::decode(body).map_err(|e| PushError::Body(e.to_string()))?;
            Ok(map
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect())
        }
    }
}

/// Verifies, decrypts and types a pushed `POST`.
///
/// With `encrypt_type=aes` in the query (compatible and safe mode), `msg_signature` is checked
/// over the body's `Encrypt` and the decrypted message is used (the plaintext copy of compatible
/// mode is ignored). Otherwise `signature` is checked and the body used as is, unless the
/// configuration requires encryption.
///
/// # Errors
/// Every [`PushError`]; nothing of a refused push should be acted on.
pub fn open_push(
    config: &PushConfig,
    query: &PushQuery,
    format: PushFormat,
    body: &[u8],
) -> Result<PushMessage, PushError> {
    let encrypted = query.encrypt_type.as_deref() == Some("aes");
    let fields = parse_fields(format, body)?;
    if !encrypted {
        if config.require_encryption {
            return Err(PushError::PlaintextRefused);
        }
        verify_signature(config.token(), query)?;
        return PushMessage::from_fields(fields);
    }
    let given = required(&query.msg_signature, "msg_signature")?;
    let timestamp = required(&query.timestamp, "timestamp")?;
    let nonce = required(&query.nonce, "nonce")?;
    let Some(Value::String(encrypt)) = fields.get("Encrypt") else {
        return Err(PushError::Field("Encrypt"));
    };
    if !same(
        &msg_signature(config.token(), timestamp, nonce, encrypt),
        given,
    ) {
        return Err(PushError::BadMsgSignature);
    }
    let key = config.aes_key.as_ref().ok_or(PushError::NoAesKey)?;
    let decrypted = decrypt(key, &config.appid, encrypt)?;
    PushMessage::from_fields(parse_fields(format, &decrypted.msg)?)
}

/// Writes fields as a body in `format`.
///
/// # Errors
/// [`PushError::Body`] when a value cannot be written (XML: a nested value or a control
/// character).
pub fn write_fields(format: PushFormat, fields: &Map<String, Value>) -> Result<Vec<u8>, PushError> {
    match format {
        PushFormat::Json => serde_json::to_vec(fields).map_err(|e| PushError::Body(e.to_string())),
        PushFormat::Xml => {
            let mut flat: Vec<(String, String)> = Vec::with_capacity(fields.len());
            for (k, v) in fields {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return Err(PushError::Body(format!("field {k} is not a scalar"))),
                };
                flat.push((k.clone(), text));
            }
            xml::encode(flat.iter().map(|(k, v)| (k, v)))
                .map(String::into_bytes)
                .map_err(|e| PushError::Body(e.to_string()))
        }
    }
}

/// A push as WeChat sends it: the query string and the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedPush {
    /// The query (without `?`).
    pub query: String,
    /// The body.
    pub body: Vec<u8>,
}

/// Builds a push of `fields` the way WeChat sends it in `mode` and `format` (used by the
/// simulator and tests). `random` is the 16-byte prefix of the encrypted payload.
///
/// # Errors
/// [`PushError::NoAesKey`] for compatible or safe mode without a key; [`PushError::Body`],
/// [`PushError::Encrypt`].
#[allow(clippy::too_many_arguments)]
pub fn seal_push(
    config: &PushConfig,
    mode: PushMode,
    format: PushFormat,
    fields: &Map<String, Value>,
    timestamp: &str,
    nonce: &str,
    openid: Option<&str>,
    random: [u8; 16],
) -> Result<SealedPush, PushError> {
    let token = config.token();
    let mut query = PushQuery {
        signature: Some(signature(token, timestamp, nonce)),
        timestamp: Some(timestamp.to_owned()),
        nonce: Some(nonce.to_owned()),
        openid: openid.map(str::to_owned),
        ..PushQuery::default()
    };
    let plain = write_fields(format, fields)?;
    let body = match mode {
        PushMode::Plaintext => plain,
        PushMode::Compatible | PushMode::Safe => {
            let key = config.aes_key.as_ref().ok_or(PushError::NoAesKey)?;
            let encrypt = encrypt(key, &config.appid, random, &plain)?;
            query.encrypt_type = Some("aes".into());
            query.msg_signature = Some(msg_signature(token, timestamp, nonce, &encrypt));
            let mut outer = if mode == PushMode::Compatible {
                fields.clone()
            } else {
                let mut outer = Map::new();
                if let Some(to) = fields.get("ToUserName") {
                    outer.insert("ToUserName".into(), to.clone());
                }
                outer
            };
            outer.insert("Encrypt".into(), Value::String(encrypt));
            write_fields(format, &outer)?
        }
    };
    Ok(SealedPush {
        query: query.to_query(),
        body,
    })
}

/// An encrypted reply (only needed to answer something other than `success`): `Encrypt`,
/// `MsgSignature`, `TimeStamp` (a number) and `Nonce`.
///
/// # Errors
/// [`PushError::NoAesKey`], [`PushError::Encrypt`], [`PushError::Body`].
pub fn encrypted_reply(
    config: &PushConfig,
    format: PushFormat,
    msg: &[u8],
    timestamp: i64,
    nonce: &str,
    random: [u8; 16],
) -> Result<Vec<u8>, PushError> {
    let key = config.aes_key.as_ref().ok_or(PushError::NoAesKey)?;
    let encrypt = encrypt(key, &config.appid, random, msg)?;
    let sig = msg_signature(config.token(), &timestamp.to_string(), nonce, &encrypt);
    let mut fields = Map::new();
    fields.insert("Encrypt".into(), Value::String(encrypt));
    fields.insert("MsgSignature".into(), Value::String(sig));
    fields.insert("TimeStamp".into(), Value::from(timestamp));
    fields.insert("Nonce".into(), Value::String(nonce.to_owned()));
    write_fields(format, &fields)
}

#[cfg(test)]
mod tests;
