//! The mini-program server API of `api.weixin.qq.com`, acting as WeChat does for one app.
//!
//! Paths and answers follow WeChat: JSON errors `{"errcode","errmsg":"…, rid: …"}` with HTTP 200,
//! success without `errcode` for `jscode2session` and the token endpoints. Decisions where WeChat
//! is not documented (each one a rule of this simulator):
//!
//! * openids: generated ones are `o` + 27 base64url characters (28 in all, like WeChat's). An
//!   explicitly given openid must be 1 to 128 characters of `[0-9A-Za-z_-]` (the alphabet of real
//!   openids, and the length WeChat Pay allows), so that it is safe in URLs, JSON and logs.
//! * `wx.login` codes: single use, 5 minutes. A used code answers `40163 code been used` (as
//!   WeChat does), an unknown or expired one `40029 invalid code`. A refused call never consumes
//!   a code.
//! * `/cgi-bin/token`: a wrong secret answers `40001` (WeChat's documented meaning there);
//!   `/sns/jscode2session` and `/cgi-bin/stable_token` answer `40125 invalid appsecret`.
//!   A missing `grant_type` is accepted by `jscode2session`, a wrong one refused with `40002`.
//! * `/cgi-bin/stable_token` with `force_refresh`: at most one refresh every 30 s (a forced
//!   call sooner gets the current token, as WeChat does) and 20 in 24 hours (`45009`); the
//!   previous stable token stops working at once.
//! * Access tokens: unknown or superseded ones answer `40001`, malformed ones (not 16 to 512
//!   characters of `[0-9A-Za-z_-]`) `40014`, expired ones `42001`, an absent one `41001`.
//! * `getwxacodeunlimit`: the page must be a path of segments of `[0-9A-Za-z_.-]`, at most 128
//!   characters, with no leading `/`, query or fragment (else `41030`). With `check_path` true
//!   (the default) the page must also be released: having no app package, the simulator treats
//!   every page under `pages/` as released, so subpackage pages need `check_path: false`. A scene
//!   containing `scancode_time` answers `85096`. The image is a real QR code of
//!   `PAGE?scene=SCENE` (WeChat draws a round "sun code"), exactly `width` pixels square, lines
//!   in `line_color` (black under `auto_color`): a JPEG (`image/jpeg`, as WeChat answers), or a
//!   PNG with a transparent background under `is_hyaline` (JPEG has no transparency).
//! * Phone numbers: `mint_phone_code` takes `13800138000` (country code 86) or `+CC NUMBER` /
//!   `+CC-NUMBER`; `phoneNumber` is the bare number for 86 and `+CC NUMBER` otherwise;
//!   `countryCode` is sent as a string, as the field table says. An `openid` that is not the
//!   code's user answers `40003 invalid openid`.
//!
//! Nothing here logs a token, a secret, a code or a query string.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::header::CONTENT_TYPE;
use serde_json::{Map, Value, json};
use wxpay::nonce::{Clock, random_string};

use crate::journal::{Entry, Journal, UserLine};

/// How long a `wx.login` or phone-number code stays valid, in seconds.
pub const CODE_TTL_SECS: i64 = 300;
/// `expires_in` of every access token.
pub const TOKEN_TTL_SECS: i64 = 7200;
/// How long a `/cgi-bin/token` token keeps working after a newer one was issued.
pub const TOKEN_OVERLAP_SECS: i64 = 300;
/// A stable token is renewed when less than this remains.
pub const STABLE_RENEW_BEFORE_SECS: i64 = 300;

const JSON_CONTENT_TYPE: &str = "application/json; encoding=utf-8";
const HOME_PAGE: &str = "pages/index/index";
const SCENE_PUNCTUATION: &str = "!#$&'()*+,/:;=?@-._~";
const FORCE_REFRESH_MIN_INTERVAL_SECS: i64 = 30;
const FORCE_REFRESHES_PER_DAY: usize = 20;
const DAY_SECS: i64 = 86_400;

/// One simulated mini program: its users, their one-time codes and the access tokens issued for
/// it, served on the real paths of `api.weixin.qq.com`.
pub struct MiniProgram {
    appid: String,
    app_secret: String,
    clock: Arc<dyn Clock>,
    state: Mutex<MpState>,
    tokens_issued: AtomicU64,
    stable_tokens_issued: AtomicU64,
    stable_token_requests: AtomicU64,
    requests_served: AtomicU64,
    journal: Option<Arc<Journal>>,
    /// The simulator's first mini program (its users' journal lines name no appid).
    primary: bool,
}

impl std::fmt::Debug for MiniProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniProgram")
            .field("appid", &self.appid)
            .field("app_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct MpState {
    users: HashMap<String, User>,
    login_codes: HashMap<String, OneTimeCode>,
    phone_codes: HashMap<String, PhoneCode>,
    tokens: HashMap<String, IssuedToken>,
    current_token: Option<String>,
    current_stable_token: Option<String>,
    force_refreshes: Vec<i64>,
    open_platform_bound: bool,
}

struct User {
    unionid: String,
    session_key: Option<String>,
    /// SHA-256 of the user's key; `None` for users journalled before keys existed.
    key_digest: Option<[u8; 32]>,
}

/// A freshly made user: what `POST /sim/users` answers.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The openid.
    pub openid: String,
    /// A first `wx.login` code.
    pub code: String,
    /// The user's key (43 base64url characters, 32 random bytes): only its digest is kept, and
    /// [`MiniProgram::mint_code_with_key`] requires it.
    pub user_key: String,
}

/// Why [`MiniProgram::mint_code_with_key`] made no code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MintRefusal {
    /// No such user.
    UnknownUser,
    /// The key is absent or not this user's.
    WrongKey,
}

fn key_digest(key: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

struct OneTimeCode {
    openid: String,
    issued_at: i64,
    used: bool,
}

struct PhoneCode {
    code: OneTimeCode,
    phone: Phone,
}

#[derive(Clone)]
struct Phone {
    country_code: String,
    pure: String,
}

struct IssuedToken {
    expires_at: i64,
    /// From this instant on, the token is refused with 40001.
    revoked_at: Option<i64>,
}

/// A WeChat error answer, before it is rendered.
#[derive(Debug)]
struct WeChatError {
    code: i64,
    message: &'static str,
}

const fn wechat_error(code: i64, message: &'static str) -> WeChatError {
    WeChatError { code, message }
}

const INVALID_CREDENTIAL: WeChatError = wechat_error(
    40001,
    "invalid credential, access_token is invalid or not latest",
);
const INVALID_GRANT_TYPE: WeChatError = wechat_error(40002, "invalid grant_type");
const INVALID_OPENID: WeChatError = wechat_error(40003, "invalid openid");
const INVALID_APPID: WeChatError = wechat_error(40013, "invalid appid");
const INVALID_ACCESS_TOKEN: WeChatError = wechat_error(40014, "invalid access_token");
const INVALID_CODE: WeChatError = wechat_error(40029, "invalid code");
const INVALID_ARGS: WeChatError = wechat_error(40097, "invalid args");
const INVALID_APPSECRET: WeChatError = wechat_error(40125, "invalid appsecret");
const INVALID_SCENE: WeChatError = wechat_error(40129, "invalid scene");
const CODE_USED: WeChatError = wechat_error(40163, "code been used");
const INVALID_SCENE_LENGTH: WeChatError = wechat_error(
    40169,
    "invalid length for scene, or the data is not json string",
);
const ACCESS_TOKEN_MISSING: WeChatError = wechat_error(41001, "access_token missing");
const APPID_MISSING: WeChatError = wechat_error(41002, "appid missing");
const APPSECRET_MISSING: WeChatError = wechat_error(41004, "appsecret missing");
const CODE_MISSING: WeChatError = wechat_error(41008, "missing code");
const INVALID_PAGE: WeChatError = wechat_error(41030, "invalid page");
const ACCESS_TOKEN_EXPIRED: WeChatError = wechat_error(42001, "access_token expired");
const REQUIRE_POST: WeChatError = wechat_error(43002, "require POST method");
const DAILY_QUOTA: WeChatError = wechat_error(45009, "reach max api daily quota limit");
const DATA_FORMAT_ERROR: WeChatError = wechat_error(47001, "data format error");
const SCANCODE_TIME: WeChatError = wechat_error(85096, "not allow include scancode_time field");
const SYSTEM_ERROR: WeChatError = wechat_error(-1, "system error");

impl IntoResponse for WeChatError {
    fn into_response(self) -> Response {
        let rid = format!(
            "{:08x}-{:08x}-{:08x}",
            rand::random::<u32>(),
            rand::random::<u32>(),
            rand::random::<u32>()
        );
        tracing::debug!(errcode = self.code, "mini-program API error answer");
        json_answer(&json!({
            "errcode": self.code,
            // WeChat writes a comma before `rid:` ("invalid code, rid: ...").
            "errmsg": format!("{}, rid: {rid}", self.message),
        }))
    }
}

fn json_answer(value: &Value) -> Response {
    ([(CONTENT_TYPE, JSON_CONTENT_TYPE)], value.to_string()).into_response()
}

type Answer = Result<Response, WeChatError>;

impl MiniProgram {
    /// A mini program with its AppID and AppSecret; code lifetimes and token expiry follow
    /// `clock`.
    #[must_use]
    pub fn new(appid: String, app_secret: String, clock: Arc<dyn Clock>) -> Self {
        MiniProgram {
            appid,
            app_secret,
            clock,
            state: Mutex::new(MpState::default()),
            tokens_issued: AtomicU64::new(0),
            stable_tokens_issued: AtomicU64::new(0),
            stable_token_requests: AtomicU64::new(0),
            requests_served: AtomicU64::new(0),
            journal: None,
            primary: true,
        }
    }

    /// A mini program added at run time (not the simulator's first one), in memory.
    #[must_use]
    pub fn secondary(appid: String, app_secret: String, clock: Arc<dyn Clock>) -> Self {
        let mut mp = Self::new(appid, app_secret, clock);
        mp.primary = false;
        mp
    }

    /// A mini program with the users of `entries` (a journal read at start), which records every
    /// new user in `journal`. Codes and tokens are not kept: a restarted WeChat would not know
    /// them either, and clients fetch new ones.
    #[must_use]
    pub fn persistent(
        appid: String,
        app_secret: String,
        clock: Arc<dyn Clock>,
        journal: Arc<Journal>,
        entries: &[Entry],
    ) -> Self {
        Self::persistent_app(appid, app_secret, clock, journal, entries, true)
    }

    /// As [`MiniProgram::persistent`]; `primary` says whether this is the simulator's first
    /// mini program (whose users' lines name no appid) or one added at run time.
    #[must_use]
    pub fn persistent_app(
        appid: String,
        app_secret: String,
        clock: Arc<dyn Clock>,
        journal: Arc<Journal>,
        entries: &[Entry],
        primary: bool,
    ) -> Self {
        let mut mp = Self::new(appid, app_secret, clock);
        mp.primary = primary;
        {
            let mut state = mp.lock();
            for entry in entries {
                if let Entry::User(user) = entry
                    && user.appid.as_deref().map_or(primary, |a| a == mp.appid)
                {
                    state.users.insert(
                        user.openid.clone(),
                        User {
                            unionid: user.unionid.clone(),
                            session_key: None,
                            key_digest: user
                                .user_key_sha256
                                .as_deref()
                                .and_then(|h| hex::decode(h).ok())
                                .and_then(|d| <[u8; 32]>::try_from(d).ok()),
                        },
                    );
                }
            }
        }
        mp.journal = Some(journal);
        mp
    }

    /// The AppID.
    #[must_use]
    pub fn appid(&self) -> &str {
        &self.appid
    }

    /// The AppSecret.
    #[must_use]
    pub fn app_secret(&self) -> &str {
        &self.app_secret
    }

    /// Whether this mini program issued the access token `token` (current or not).
    #[must_use]
    pub fn knows_token(&self, token: &str) -> bool {
        self.lock().tokens.contains_key(token)
    }

    /// Creates a user and a first `wx.login` code for them: `(openid, code)`. Without `openid`,
    /// one is generated (`o` + 27 base64url characters). The user's key is dropped: see
    /// [`MiniProgram::new_user`].
    ///
    /// # Errors
    /// When the given openid is not 1 to 128 characters of `[0-9A-Za-z_-]`, or already exists.
    pub fn create_user(&self, openid: Option<String>) -> Result<(String, String), String> {
        self.new_user(openid).map(|u| (u.openid, u.code))
    }

    /// Creates a user, a first `wx.login` code and the user's key. Without `openid`, one is
    /// generated (`o` + 27 base64url characters).
    ///
    /// # Errors
    /// When the given openid is not 1 to 128 characters of `[0-9A-Za-z_-]`, or already exists.
    pub fn new_user(&self, openid: Option<String>) -> Result<NewUser, String> {
        let mut state = self.lock();
        let openid = match openid {
            Some(openid) => {
                if openid.is_empty()
                    || openid.len() > 128
                    || !openid
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err("openid must be 1 to 128 characters of [0-9A-Za-z_-]".to_owned());
                }
                if state.users.contains_key(&openid) {
                    return Err(format!("user {openid} already exists"));
                }
                openid
            }
            None => loop {
                let candidate = generated_openid();
                if !state.users.contains_key(&candidate) {
                    break candidate;
                }
            },
        };
        let unionid = generated_openid();
        let user_key = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let digest = key_digest(&user_key);
        if let Some(journal) = &self.journal {
            journal.append(&Entry::User(UserLine {
                openid: openid.clone(),
                unionid: unionid.clone(),
                user_key_sha256: Some(hex::encode(digest)),
                appid: (!self.primary).then(|| self.appid.clone()),
            }));
        }
        state.users.insert(
            openid.clone(),
            User {
                unionid,
                session_key: None,
                key_digest: Some(digest),
            },
        );
        let code = self.insert_login_code(&mut state, &openid);
        Ok(NewUser {
            openid,
            code,
            user_key,
        })
    }

    /// A new `wx.login` code for an existing user who proves to be them with their key (what
    /// `POST /sim/users/{openid}/code` does without the control token).
    ///
    /// # Errors
    /// [`MintRefusal::WrongKey`] when `user_key` is absent or not the user's (a user journalled
    /// before keys existed has none), [`MintRefusal::UnknownUser`] for an unknown user.
    pub fn mint_code_with_key(
        &self,
        openid: &str,
        user_key: Option<&str>,
    ) -> Result<String, MintRefusal> {
        let mut state = self.lock();
        let Some(user) = state.users.get(openid) else {
            return Err(MintRefusal::UnknownUser);
        };
        let matches = match (user.key_digest, user_key) {
            (Some(expected), Some(given)) => {
                #[allow(deprecated)]
                let same = aws_lc_rs::constant_time::verify_slices_are_equal(
                    &expected,
                    &key_digest(given),
                )
                .is_ok();
                same
            }
            _ => false,
        };
        if !matches {
            return Err(MintRefusal::WrongKey);
        }
        Ok(self.insert_login_code(&mut state, openid))
    }

    /// Whether the user exists.
    #[must_use]
    pub fn has_user(&self, openid: &str) -> bool {
        self.lock().users.contains_key(openid)
    }

    /// A new `wx.login` code for an existing user (single use, 5 minutes); `None` for an
    /// unknown user.
    #[must_use]
    pub fn mint_code(&self, openid: &str) -> Option<String> {
        let mut state = self.lock();
        if !state.users.contains_key(openid) {
            return None;
        }
        Some(self.insert_login_code(&mut state, openid))
    }

    /// A new `getPhoneNumber` code for an existing user and the phone number they agree to
    /// share (single use, 5 minutes). `phone` is `13800138000` (country code 86) or
    /// `+CC NUMBER` / `+CC-NUMBER`. `None` for an unknown user or a malformed number.
    #[must_use]
    pub fn mint_phone_code(&self, openid: &str, phone: &str) -> Option<String> {
        let phone = parse_phone(phone)?;
        let mut state = self.lock();
        if !state.users.contains_key(openid) {
            return None;
        }
        let now = self.clock.now();
        state
            .phone_codes
            .retain(|_, c| c.code.issued_at + CODE_TTL_SECS > now);
        let code = hex::encode(rand::random::<[u8; 32]>());
        state.phone_codes.insert(
            code.clone(),
            PhoneCode {
                code: OneTimeCode {
                    openid: openid.to_owned(),
                    issued_at: now,
                    used: false,
                },
                phone,
            },
        );
        Some(code)
    }

    /// Binds the app to an Open Platform account (or not): `jscode2session` answers `unionid`
    /// only when bound. Unbound by default.
    pub fn set_open_platform_bound(&self, bound: bool) {
        self.lock().open_platform_bound = bound;
    }

    /// How many tokens `/cgi-bin/token` has issued.
    #[must_use]
    pub fn tokens_issued(&self) -> u64 {
        self.tokens_issued.load(Ordering::SeqCst)
    }

    /// How many distinct tokens `/cgi-bin/stable_token` has issued.
    #[must_use]
    pub fn stable_tokens_issued(&self) -> u64 {
        self.stable_tokens_issued.load(Ordering::SeqCst)
    }

    /// How many requests reached `/cgi-bin/stable_token` (it returns the same token to most).
    #[must_use]
    pub fn stable_token_requests(&self) -> u64 {
        self.stable_token_requests.load(Ordering::SeqCst)
    }

    /// How many requests reached any path of this router.
    #[must_use]
    pub fn requests_served(&self) -> u64 {
        self.requests_served.load(Ordering::SeqCst)
    }

    /// The routes of `api.weixin.qq.com`, with this mini program as their state.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/sns/jscode2session", get(jscode2session))
            .route("/cgi-bin/token", get(token))
            .route(
                "/cgi-bin/stable_token",
                post(stable_token).fallback(require_post),
            )
            .route(
                "/wxa/getwxacodeunlimit",
                post(getwxacodeunlimit).fallback(require_post),
            )
            .route(
                "/wxa/business/getuserphonenumber",
                post(getuserphonenumber).fallback(require_post),
            )
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                count_request,
            ))
            .with_state(self)
    }

    fn lock(&self) -> MutexGuard<'_, MpState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert_login_code(&self, state: &mut MpState, openid: &str) -> String {
        let now = self.clock.now();
        // Expired codes answer 40029 whether kept or not; dropping them bounds the memory.
        state
            .login_codes
            .retain(|_, c| c.issued_at + CODE_TTL_SECS > now);
        let code = random_string(32);
        state.login_codes.insert(
            code.clone(),
            OneTimeCode {
                openid: openid.to_owned(),
                issued_at: now,
                used: false,
            },
        );
        code
    }

    fn check_app(&self, appid: Option<&str>) -> Result<(), WeChatError> {
        match appid {
            None | Some("") => Err(APPID_MISSING),
            Some(appid) if appid != self.appid => Err(INVALID_APPID),
            Some(_) => Ok(()),
        }
    }

    fn check_secret(&self, secret: Option<&str>, wrong: WeChatError) -> Result<(), WeChatError> {
        match secret {
            None | Some("") => Err(APPSECRET_MISSING),
            Some(secret) if !constant_time_eq(secret.as_bytes(), self.app_secret.as_bytes()) => {
                Err(wrong)
            }
            Some(_) => Ok(()),
        }
    }

    fn issue_token(&self, state: &mut MpState, now: i64) -> String {
        state.tokens.retain(|_, t| t.expires_at + DAY_SECS > now);
        let token = format!("sim_{}", random_string(136));
        state.tokens.insert(
            token.clone(),
            IssuedToken {
                expires_at: now + TOKEN_TTL_SECS,
                revoked_at: None,
            },
        );
        token
    }

    /// The token check of every call that carries `access_token`.
    fn check_token(&self, query: &HashMap<String, String>) -> Result<(), WeChatError> {
        let token = match query.get("access_token") {
            None => return Err(ACCESS_TOKEN_MISSING),
            Some(token) if token.is_empty() => return Err(ACCESS_TOKEN_MISSING),
            Some(token) => token,
        };
        if !(16..=512).contains(&token.len())
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(INVALID_ACCESS_TOKEN);
        }
        let now = self.clock.now();
        let state = self.lock();
        let issued = state.tokens.get(token).ok_or(INVALID_CREDENTIAL)?;
        if issued.revoked_at.is_some_and(|at| now >= at) {
            return Err(INVALID_CREDENTIAL);
        }
        if now >= issued.expires_at {
            return Err(ACCESS_TOKEN_EXPIRED);
        }
        Ok(())
    }
}

impl MiniProgram {
    /// Checks the `access_token` of a call served by another module (trade management): `Err`
    /// is WeChat's error answer.
    pub(crate) fn authorize(&self, query: &HashMap<String, String>) -> Result<(), Box<Response>> {
        self.check_token(query)
            .map_err(|e| Box::new(e.into_response()))
    }
}

pub(crate) fn generated_openid() -> String {
    // 20 random bytes are 27 base64url characters: `o` + 27 = 28, WeChat's openid length.
    let mut openid = String::with_capacity(28);
    openid.push('o');
    openid.push_str(&URL_SAFE_NO_PAD.encode(rand::random::<[u8; 20]>()));
    openid
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_phone(phone: &str) -> Option<Phone> {
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = phone.strip_prefix('+') {
        let (country, number) = rest.split_once([' ', '-'])?;
        if all_digits(country)
            && country.len() <= 3
            && all_digits(number)
            && (4..=14).contains(&number.len())
        {
            return Some(Phone {
                country_code: country.to_owned(),
                pure: number.to_owned(),
            });
        }
        return None;
    }
    (all_digits(phone) && (5..=15).contains(&phone.len())).then(|| Phone {
        country_code: "86".to_owned(),
        pure: phone.to_owned(),
    })
}

async fn count_request(
    State(mp): State<Arc<MiniProgram>>,
    request: Request,
    next: Next,
) -> Response {
    mp.requests_served.fetch_add(1, Ordering::SeqCst);
    // The path only: the query holds secrets, tokens and codes.
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::debug!(
        path,
        status = response.status().as_u16(),
        "mini-program API request"
    );
    response
}

async fn require_post() -> WeChatError {
    REQUIRE_POST
}

fn query_map(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, WeChatError> {
    query.map(|Query(map)| map).map_err(|_| INVALID_ARGS)
}

fn json_object(body: &[u8]) -> Result<Map<String, Value>, WeChatError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(DATA_FORMAT_ERROR),
    }
}

/// An optional boolean field: absent is `default`, anything but a boolean a format error.
fn bool_field(body: &Map<String, Value>, name: &str, default: bool) -> Result<bool, WeChatError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(value)) => Ok(*value),
        Some(_) => Err(DATA_FORMAT_ERROR),
    }
}

async fn jscode2session(
    State(mp): State<Arc<MiniProgram>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Answer {
    let query = query_map(query)?;
    mp.check_app(query.get("appid").map(String::as_str))?;
    mp.check_secret(query.get("secret").map(String::as_str), INVALID_APPSECRET)?;
    let code = match query.get("js_code") {
        None => return Err(CODE_MISSING),
        Some(code) if code.is_empty() => return Err(CODE_MISSING),
        Some(code) => code,
    };
    if query
        .get("grant_type")
        .is_some_and(|g| g != "authorization_code")
    {
        return Err(INVALID_GRANT_TYPE);
    }
    let now = mp.clock.now();
    let mut state = mp.lock();
    let entry = state
        .login_codes
        .get_mut(code.as_str())
        .ok_or(INVALID_CODE)?;
    if entry.issued_at + CODE_TTL_SECS <= now {
        return Err(INVALID_CODE);
    }
    if entry.used {
        return Err(CODE_USED);
    }
    entry.used = true;
    let openid = entry.openid.clone();
    let bound = state.open_platform_bound;
    let user = state.users.get_mut(&openid).ok_or(SYSTEM_ERROR)?;
    let session_key = STANDARD.encode(rand::random::<[u8; 16]>());
    user.session_key = Some(session_key.clone());
    let mut answer = json!({"session_key": session_key, "openid": openid});
    if bound {
        answer["unionid"] = Value::String(user.unionid.clone());
    }
    Ok(json_answer(&answer))
}

async fn token(
    State(mp): State<Arc<MiniProgram>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Answer {
    let query = query_map(query)?;
    if query.get("grant_type").map(String::as_str) != Some("client_credential") {
        return Err(INVALID_GRANT_TYPE);
    }
    mp.check_app(query.get("appid").map(String::as_str))?;
    mp.check_secret(query.get("secret").map(String::as_str), INVALID_CREDENTIAL)?;
    let now = mp.clock.now();
    let mut state = mp.lock();
    let token = mp.issue_token(&mut state, now);
    if let Some(previous) = state.current_token.replace(token.clone())
        && let Some(previous) = state.tokens.get_mut(&previous)
    {
        let overlap_end = now + TOKEN_OVERLAP_SECS;
        previous.revoked_at = Some(
            previous
                .revoked_at
                .map_or(overlap_end, |at| at.min(overlap_end)),
        );
    }
    mp.tokens_issued.fetch_add(1, Ordering::SeqCst);
    Ok(json_answer(
        &json!({"access_token": token, "expires_in": TOKEN_TTL_SECS}),
    ))
}

async fn stable_token(State(mp): State<Arc<MiniProgram>>, body: Bytes) -> Answer {
    mp.stable_token_requests.fetch_add(1, Ordering::SeqCst);
    let body = json_object(&body)?;
    let text = |name: &str| -> Result<Option<&str>, WeChatError> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(value)) => Ok(Some(value.as_str())),
            Some(_) => Err(DATA_FORMAT_ERROR),
        }
    };
    if text("grant_type")? != Some("client_credential") {
        return Err(INVALID_GRANT_TYPE);
    }
    mp.check_app(text("appid")?)?;
    mp.check_secret(text("secret")?, INVALID_APPSECRET)?;
    let force_refresh = bool_field(&body, "force_refresh", false)?;
    let now = mp.clock.now();
    let mut state = mp.lock();
    state.force_refreshes.retain(|at| at + DAY_SECS > now);
    // Within 30 s of the last forced refresh WeChat neither refreshes nor fails: the current
    // token comes back (the stable_token doc).
    let too_soon = state
        .force_refreshes
        .last()
        .is_some_and(|last| now - last < FORCE_REFRESH_MIN_INTERVAL_SECS);
    if force_refresh && !too_soon {
        if state.force_refreshes.len() >= FORCE_REFRESHES_PER_DAY {
            return Err(DAILY_QUOTA);
        }
        state.force_refreshes.push(now);
        if let Some(previous) = state.current_stable_token.take()
            && let Some(previous) = state.tokens.get_mut(&previous)
        {
            previous.revoked_at = Some(now);
        }
    }
    let current = state.current_stable_token.as_ref().and_then(|token| {
        let issued = state.tokens.get(token)?;
        let usable = issued.revoked_at.is_none_or(|at| at > now);
        (usable && issued.expires_at - now > STABLE_RENEW_BEFORE_SECS)
            .then(|| (token.clone(), issued.expires_at))
    });
    let (token, expires_at) = match current {
        Some(current) => current,
        None => {
            let token = mp.issue_token(&mut state, now);
            state.current_stable_token = Some(token.clone());
            mp.stable_tokens_issued.fetch_add(1, Ordering::SeqCst);
            (token, now + TOKEN_TTL_SECS)
        }
    };
    Ok(json_answer(
        &json!({"access_token": token, "expires_in": expires_at - now}),
    ))
}

/// The checked body of a `getwxacodeunlimit` call.
struct CodeSpec {
    text: String,
    width: u32,
    line: [u8; 3],
    transparent: bool,
}

fn parse_code_request(body: &Map<String, Value>) -> Result<CodeSpec, WeChatError> {
    let scene = match body.get("scene") {
        Some(Value::String(scene)) => scene,
        _ => return Err(INVALID_SCENE_LENGTH),
    };
    if scene.is_empty() || scene.chars().count() > 32 {
        return Err(INVALID_SCENE_LENGTH);
    }
    if !scene
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || SCENE_PUNCTUATION.contains(c))
    {
        return Err(INVALID_SCENE);
    }
    if scene.contains("scancode_time") {
        return Err(SCANCODE_TIME);
    }
    let check_path = bool_field(body, "check_path", true)?;
    let env_version = match body.get("env_version") {
        None | Some(Value::Null) => "release",
        Some(Value::String(env)) if ["release", "trial", "develop"].contains(&env.as_str()) => {
            env.as_str()
        }
        Some(Value::String(_)) => return Err(INVALID_ARGS),
        Some(_) => return Err(DATA_FORMAT_ERROR),
    };
    let page = match body.get("page") {
        None | Some(Value::Null) => HOME_PAGE,
        Some(Value::String(page)) if page.is_empty() => HOME_PAGE,
        Some(Value::String(page)) => page.as_str(),
        Some(_) => return Err(DATA_FORMAT_ERROR),
    };
    let well_formed = page.len() <= 128
        && page.split('/').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        });
    if !well_formed || (check_path && env_version == "release" && !page.starts_with("pages/")) {
        return Err(INVALID_PAGE);
    }
    let width = match body.get("width") {
        None | Some(Value::Null) => 430,
        Some(Value::Number(width)) => width.as_u64().ok_or(INVALID_ARGS)?,
        Some(_) => return Err(DATA_FORMAT_ERROR),
    };
    let width = u32::try_from(width)
        .ok()
        .filter(|w| (280..=1280).contains(w))
        .ok_or(INVALID_ARGS)?;
    let auto_color = bool_field(body, "auto_color", false)?;
    let line = match body.get("line_color") {
        None | Some(Value::Null) => [0, 0, 0],
        Some(Value::Object(color)) => {
            let component = |name: &str| -> Result<u8, WeChatError> {
                match color.get(name) {
                    None => Ok(0),
                    Some(Value::Number(n)) => n
                        .as_u64()
                        .and_then(|n| u8::try_from(n).ok())
                        .ok_or(INVALID_ARGS),
                    Some(Value::String(s)) => s.parse::<u8>().map_err(|_| INVALID_ARGS),
                    Some(_) => Err(DATA_FORMAT_ERROR),
                }
            };
            [component("r")?, component("g")?, component("b")?]
        }
        Some(_) => return Err(DATA_FORMAT_ERROR),
    };
    let transparent = bool_field(body, "is_hyaline", false)?;
    Ok(CodeSpec {
        text: format!("{page}?scene={scene}"),
        width,
        line: if auto_color { [0, 0, 0] } else { line },
        transparent,
    })
}

async fn getwxacodeunlimit(
    State(mp): State<Arc<MiniProgram>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> Answer {
    let query = query_map(query)?;
    mp.check_token(&query)?;
    let spec = parse_code_request(&json_object(&body)?)?;
    let content_type = if spec.transparent {
        "image/png"
    } else {
        "image/jpeg"
    };
    let image = tokio::task::spawn_blocking(move || render_code(&spec))
        .await
        .map_err(|_| SYSTEM_ERROR)??;
    Ok(([(CONTENT_TYPE, content_type)], image).into_response())
}

/// A QR code of `spec.text`, `spec.width` pixels square, with the 4-module quiet zone the QR
/// specification asks for: a PNG when transparent, else a JPEG.
fn render_code(spec: &CodeSpec) -> Result<Vec<u8>, WeChatError> {
    let code =
        qrcode::QrCode::with_error_correction_level(spec.text.as_bytes(), qrcode::EcLevel::M)
            .map_err(|_| INVALID_ARGS)?;
    let modules = u32::try_from(code.width()).map_err(|_| SYSTEM_ERROR)?;
    let scale = (spec.width / (modules + 8)).max(1);
    let offset = spec.width.saturating_sub(modules * scale) / 2;
    let colors = code.to_colors();
    let [r, g, b] = spec.line;
    let background = if spec.transparent {
        image::Rgba([255, 255, 255, 0])
    } else {
        image::Rgba([255, 255, 255, 255])
    };
    let mut canvas = image::RgbaImage::from_pixel(spec.width, spec.width, background);
    for (index, color) in colors.iter().enumerate() {
        if *color != qrcode::Color::Dark {
            continue;
        }
        let index = u32::try_from(index).map_err(|_| SYSTEM_ERROR)?;
        let (mx, my) = (index % modules, index / modules);
        for dy in 0..scale {
            for dx in 0..scale {
                let (x, y) = (offset + mx * scale + dx, offset + my * scale + dy);
                if x < spec.width && y < spec.width {
                    canvas.put_pixel(x, y, image::Rgba([r, g, b, 255]));
                }
            }
        }
    }
    let mut out = Cursor::new(Vec::new());
    let written = if spec.transparent {
        image::DynamicImage::ImageRgba8(canvas).write_to(&mut out, image::ImageFormat::Png)
    } else {
        image::DynamicImage::ImageRgba8(canvas)
            .to_rgb8()
            .write_to(&mut out, image::ImageFormat::Jpeg)
    };
    written.map_err(|_| SYSTEM_ERROR)?;
    Ok(out.into_inner())
}

async fn getuserphonenumber(
    State(mp): State<Arc<MiniProgram>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> Answer {
    let query = query_map(query)?;
    mp.check_token(&query)?;
    let body = json_object(&body)?;
    let code = match body.get("code") {
        Some(Value::String(code)) if !code.is_empty() => code,
        _ => return Err(INVALID_CODE),
    };
    let openid = match body.get("openid") {
        None | Some(Value::Null) => None,
        Some(Value::String(openid)) => Some(openid.as_str()),
        Some(_) => return Err(DATA_FORMAT_ERROR),
    };
    let now = mp.clock.now();
    let mut state = mp.lock();
    let entry = state
        .phone_codes
        .get_mut(code.as_str())
        .ok_or(INVALID_CODE)?;
    if entry.code.used || entry.code.issued_at + CODE_TTL_SECS <= now {
        return Err(INVALID_CODE);
    }
    if openid.is_some_and(|openid| openid != entry.code.openid) {
        return Err(INVALID_OPENID);
    }
    entry.code.used = true;
    let phone = entry.phone.clone();
    let phone_number = if phone.country_code == "86" {
        phone.pure.clone()
    } else {
        format!("+{} {}", phone.country_code, phone.pure)
    };
    Ok(json_answer(&json!({
        "errcode": 0,
        "errmsg": "ok",
        "phone_info": {
            "phoneNumber": phone_number,
            "purePhoneNumber": phone.pure,
            "countryCode": phone.country_code,
            "watermark": {"timestamp": now, "appid": mp.appid},
        },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(body: Value) -> Result<CodeSpec, i64> {
        match body {
            Value::Object(map) => parse_code_request(&map).map_err(|e| e.code),
            _ => Err(47001),
        }
    }

    #[test]
    fn code_request_rules() {
        assert_eq!(
            spec(json!({"scene": "a=1"})).unwrap().text,
            "pages/index/index?scene=a=1"
        );
        assert_eq!(spec(json!({})).err(), Some(40169));
        assert_eq!(spec(json!({"scene": ""})).err(), Some(40169));
        assert_eq!(spec(json!({"scene": 12})).err(), Some(40169));
        assert_eq!(spec(json!({"scene": "a".repeat(33)})).err(), Some(40169));
        assert_eq!(spec(json!({"scene": "a b"})).err(), Some(40129));
        assert_eq!(spec(json!({"scene": "100%"})).err(), Some(40129));
        assert_eq!(spec(json!({"scene": "scancode_time=1"})).err(), Some(85096));
        assert_eq!(
            spec(json!({"scene": "a", "page": "/pages/a"})).err(),
            Some(41030)
        );
        assert_eq!(
            spec(json!({"scene": "a", "page": "pages/a?x=1"})).err(),
            Some(41030)
        );
        assert_eq!(
            spec(json!({"scene": "a", "page": "sub/pages/a"})).err(),
            Some(41030)
        );
        let unchecked = json!({"scene": "a", "page": "sub/pages/a", "check_path": false});
        assert_eq!(spec(unchecked).unwrap().text, "sub/pages/a?scene=a");
        assert_eq!(spec(json!({"scene": "a", "width": 279})).err(), Some(40097));
        assert_eq!(
            spec(json!({"scene": "a", "width": 1281})).err(),
            Some(40097)
        );
        assert_eq!(
            spec(json!({"scene": "a", "width": "430"})).err(),
            Some(47001)
        );
        assert_eq!(
            spec(json!({"scene": "a", "env_version": "beta"})).err(),
            Some(40097)
        );
        assert_eq!(
            spec(json!({"scene": "a", "line_color": {"r": 256}})).err(),
            Some(40097)
        );
        let colored =
            spec(json!({"scene": "a", "line_color": {"r": 255, "g": "16", "b": 1}})).unwrap();
        assert_eq!(colored.line, [255, 16, 1]);
    }

    #[test]
    fn png_is_width_square_with_the_line_colour() {
        let png = render_code(&CodeSpec {
            text: "pages/index/index?scene=x".into(),
            width: 300,
            line: [200, 0, 0],
            transparent: true,
        })
        .unwrap();
        let decoded = image::load_from_memory(&png).unwrap().to_rgba8();
        assert_eq!(decoded.dimensions(), (300, 300));
        assert_eq!(decoded.get_pixel(0, 0).0[3], 0, "transparent background");
        assert!(
            decoded.pixels().any(|p| p.0 == [200, 0, 0, 255]),
            "lines in line_color"
        );
        let jpeg = render_code(&CodeSpec {
            text: "pages/index/index?scene=x".into(),
            width: 280,
            line: [0, 0, 0],
            transparent: false,
        })
        .unwrap();
        assert!(jpeg.starts_with(&[0xff, 0xd8, 0xff]), "a JPEG file");
        let decoded = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (280, 280));
    }

    #[test]
    fn phones_parse() {
        let local = parse_phone("13800138000").unwrap();
        assert_eq!(
            (local.country_code.as_str(), local.pure.as_str()),
            ("86", "13800138000")
        );
        let us = parse_phone("+1 4155552671").unwrap();
        assert_eq!(
            (us.country_code.as_str(), us.pure.as_str()),
            ("1", "4155552671")
        );
        assert!(parse_phone("+14155552671").is_none());
        assert!(parse_phone("138-0013").is_none());
        assert!(parse_phone("").is_none());
    }

    #[test]
    fn explicit_openids_are_checked() {
        let mp = MiniProgram::new(
            "wx1".into(),
            "s".into(),
            Arc::new(wxpay::nonce::FixedClock::at(0)),
        );
        let (generated, code) = mp.create_user(None).unwrap();
        assert_eq!(generated.len(), 28);
        assert!(generated.starts_with('o'));
        assert_eq!(code.len(), 32);
        mp.create_user(Some("oExplicit_-1".into())).unwrap();
        assert!(
            mp.create_user(Some("oExplicit_-1".into())).is_err(),
            "duplicate"
        );
        assert!(mp.create_user(Some(String::new())).is_err());
        assert!(mp.create_user(Some("a b".into())).is_err());
        assert!(mp.create_user(Some("a".repeat(129))).is_err());
        assert!(mp.has_user("oExplicit_-1"));
        assert!(mp.mint_code("nobody").is_none());
        assert!(mp.mint_phone_code("oExplicit_-1", "not a phone").is_none());
    }
}
