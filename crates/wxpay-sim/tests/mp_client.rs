//! `wxpay::mp::MpClient` against the simulated `api.weixin.qq.com`, over HTTP on 127.0.0.1.

use std::sync::Arc;

use wxpay::http::{BaseUrls, HttpConfig, RetryPolicy};
use wxpay::mp::{
    ErrCode, ExposeSecret as _, MpClient, MpConfig, TokenSource, WxaCodeRequest,
    client::WXACODE_MIN_WIDTH,
};
use wxpay::nonce::{Clock, FixedClock};
use wxpay::{ApiError, Error};
use wxpay_sim::mp::MiniProgram;

const APPID: &str = "wx8888888888888888";
const SECRET: &str = "0123456789abcdef0123456789abcdef";
const START: i64 = 1_700_000_000;

struct Harness {
    mp: Arc<MiniProgram>,
    clock: FixedClock,
    base: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Harness {
    async fn start() -> Self {
        let clock = FixedClock::at(START);
        let mp = Arc::new(MiniProgram::new(
            APPID.into(),
            SECRET.into(),
            Arc::new(clock.clone()),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = mp.clone().router();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Harness {
            mp,
            clock,
            base,
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }

    /// Stops the server and waits until every connection is closed.
    async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }

    fn client(&self, source: TokenSource) -> MpClient {
        self.client_with(
            MpConfig::new(APPID, SECRET).token_source(source),
            Arc::new(self.clock.clone()),
        )
    }

    fn client_with(&self, config: MpConfig, clock: Arc<dyn Clock>) -> MpClient {
        MpClient::with_clock(config, &http_config(), &BaseUrls::single(&self.base), clock).unwrap()
    }

    fn advance(&self, seconds: i64) {
        self.clock.set(self.clock.now() + seconds);
    }

    /// Issues a `/cgi-bin/token` token as another server of the same app would.
    async fn fetch_token_elsewhere(&self) {
        let answer: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/cgi-bin/token", self.base))
            .query(&[
                ("grant_type", "client_credential"),
                ("appid", APPID),
                ("secret", SECRET),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(answer["access_token"].is_string(), "{answer}");
    }

    async fn post_stable_token(&self, body: &str, content_type: &str) -> serde_json::Value {
        reqwest::Client::new()
            .post(format!("{}/cgi-bin/stable_token", self.base))
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn http_config() -> HttpConfig {
    HttpConfig {
        retry: RetryPolicy::none(),
        ..HttpConfig::default()
    }
}

fn errcode(result: Result<impl std::fmt::Debug, Error>) -> ErrCode {
    match result {
        Err(Error::Api(ApiError::MiniProgram { errcode, .. })) => errcode,
        other => panic!("expected a mini-program errcode, got {other:?}"),
    }
}

#[tokio::test]
async fn code2session_answers_openid_and_session_key_and_codes_are_single_use() {
    let h = Harness::start().await;
    let client = h.client(TokenSource::Token);
    let (openid, code) = h.mp.create_user(None).unwrap();
    let session = client.code2session(&code).await.unwrap();
    assert_eq!(session.openid, openid);
    assert_eq!(
        session.unionid, None,
        "unionid only when bound to an Open Platform account"
    );
    let key = session.session_key.expose_secret();
    assert_eq!(key.len(), 24, "base64 of 16 bytes");
    assert!(
        !format!("{session:?}").contains(key),
        "Debug hides the session key"
    );

    assert_eq!(errcode(client.code2session(&code).await), ErrCode::CodeUsed);
    assert_eq!(
        errcode(
            client
                .code2session("neverIssued0000000000000000000000")
                .await
        ),
        ErrCode::InvalidCode
    );

    let second = client
        .code2session(&h.mp.mint_code(&openid).unwrap())
        .await
        .unwrap();
    assert_eq!(second.openid, openid);
    assert_ne!(
        second.session_key.expose_secret(),
        key,
        "each login gets a new session key"
    );
}

#[tokio::test]
async fn code2session_includes_unionid_when_bound() {
    let h = Harness::start().await;
    h.mp.set_open_platform_bound(true);
    let (openid, code) =
        h.mp.create_user(Some("oExplicitOpenid_-123".into()))
            .unwrap();
    let session = h
        .client(TokenSource::Token)
        .code2session(&code)
        .await
        .unwrap();
    assert_eq!(session.openid, openid);
    let unionid = session.unionid.unwrap();
    assert_eq!(unionid.len(), 28);
    assert_ne!(unionid, openid);
}

#[tokio::test]
async fn login_codes_expire_after_five_minutes() {
    let h = Harness::start().await;
    let client = h.client(TokenSource::Token);
    let (openid, stale) = h.mp.create_user(None).unwrap();
    h.advance(299);
    let fresh = h.mp.mint_code(&openid).unwrap();
    h.advance(1);
    assert_eq!(
        errcode(client.code2session(&stale).await),
        ErrCode::InvalidCode
    );
    client.code2session(&fresh).await.unwrap();
}

#[tokio::test]
async fn a_refused_login_does_not_consume_the_code() {
    let h = Harness::start().await;
    let (_, code) = h.mp.create_user(None).unwrap();
    let wrong_secret = h.client_with(
        MpConfig::new(APPID, "ffffffffffffffffffffffffffffffff"),
        Arc::new(h.clock.clone()),
    );
    let err = wrong_secret.code2session(&code).await.unwrap_err();
    assert!(matches!(
        &err,
        Error::Api(ApiError::MiniProgram {
            errcode: ErrCode::InvalidAppSecret,
            ..
        })
    ));
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains("ffffffff") && !text.contains(&code),
        "{text}"
    );

    let wrong_app = h.client_with(
        MpConfig::new("wx0000000000000000", SECRET),
        Arc::new(h.clock.clone()),
    );
    assert_eq!(
        errcode(wrong_app.code2session(&code).await),
        ErrCode::InvalidAppId
    );

    h.client(TokenSource::Token)
        .code2session(&code)
        .await
        .unwrap();
}

#[tokio::test]
async fn malformed_codes_are_refused_before_sending() {
    let h = Harness::start().await;
    let client = h.client(TokenSource::Token);
    for bad in ["", "a b", "code\n", "\u{7f}"] {
        let err = client.code2session(bad).await.unwrap_err();
        assert!(matches!(err, Error::InvalidRequest(_)), "{bad:?}: {err:?}");
        let err = client.get_user_phone_number(bad, None).await.unwrap_err();
        assert!(matches!(err, Error::InvalidRequest(_)), "{bad:?}: {err:?}");
    }
    assert_eq!(h.mp.requests_served(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_callers_cause_one_token_fetch() {
    let h = Harness::start().await;
    for source in [TokenSource::Token, TokenSource::StableToken] {
        let client = h.client(source);
        let callers: Vec<_> = (0..50)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.access_token().await.unwrap() })
            })
            .collect();
        let mut tokens = Vec::new();
        for caller in callers {
            tokens.push(caller.await.unwrap());
        }
        assert!(
            tokens.iter().all(|t| *t == tokens[0]),
            "{source:?}: everyone got the one token"
        );
    }
    assert_eq!(h.mp.tokens_issued(), 1);
    assert_eq!(h.mp.stable_token_requests(), 1);
    assert_eq!(h.mp.stable_tokens_issued(), 1);
}

#[tokio::test]
async fn the_token_is_refreshed_when_less_than_five_minutes_remain() {
    let h = Harness::start().await;
    let client = h.client(TokenSource::Token);
    let first = client.access_token().await.unwrap();
    assert_eq!(first.expires_at(), START + 7200);
    h.advance(7200 - 301);
    assert_eq!(client.access_token().await.unwrap(), first);
    assert_eq!(h.mp.tokens_issued(), 1);
    h.advance(1);
    let second = client.access_token().await.unwrap();
    assert_ne!(second, first);
    assert_eq!(h.mp.tokens_issued(), 2);

    let short_margin = h.client_with(
        MpConfig::new(APPID, SECRET)
            .token_source(TokenSource::Token)
            .refresh_before(std::time::Duration::from_secs(60)),
        Arc::new(h.clock.clone()),
    );
    let token = short_margin.access_token().await.unwrap();
    h.advance(7200 - 61);
    assert_eq!(short_margin.access_token().await.unwrap(), token);
    h.advance(1);
    assert_ne!(short_margin.access_token().await.unwrap(), token);
}

#[tokio::test]
async fn a_superseded_token_is_invalidated_and_the_call_retried_once() {
    let h = Harness::start().await;
    let client = h.client(TokenSource::Token);
    let request = WxaCodeRequest::new("id=1");
    client.get_wxacode_unlimit(&request).await.unwrap();
    let first = client.access_token().await.unwrap();

    // Another server takes a new token: ours keeps working for the 5-minute overlap...
    h.fetch_token_elsewhere().await;
    h.advance(299);
    client.get_wxacode_unlimit(&request).await.unwrap();
    assert_eq!(h.mp.tokens_issued(), 2);

    // ...and is refused with 40001 after it; the client fetches a new one and retries.
    h.advance(1);
    let before = h.mp.requests_served();
    client.get_wxacode_unlimit(&request).await.unwrap();
    assert_eq!(
        h.mp.requests_served() - before,
        3,
        "refused call, token fetch, retried call"
    );
    assert_eq!(h.mp.tokens_issued(), 3);
    assert_ne!(client.access_token().await.unwrap(), first);
}

#[tokio::test]
async fn an_expired_token_is_replaced_even_when_the_local_clock_lags() {
    let h = Harness::start().await;
    // The client's clock is an hour behind WeChat's, so it believes its token is fresh.
    let lagging = FixedClock::at(START);
    let client = h.client_with(
        MpConfig::new(APPID, SECRET).token_source(TokenSource::Token),
        Arc::new(lagging),
    );
    let (openid, _) = h.mp.create_user(None).unwrap();
    let stale = client.access_token().await.unwrap();
    h.advance(7200);
    let code = h.mp.mint_phone_code(&openid, "13800138000").unwrap();
    let info = client.get_user_phone_number(&code, None).await.unwrap();
    assert_eq!(info.pure_phone_number, "13800138000");
    assert_eq!(h.mp.tokens_issued(), 2);
    assert_ne!(client.access_token().await.unwrap(), stale);
}

#[tokio::test]
async fn a_failed_refresh_falls_back_to_the_unexpired_token() {
    let mut h = Harness::start().await;
    let client = h.client(TokenSource::Token);
    let token = client.access_token().await.unwrap();
    h.advance(7200 - 300);
    h.stop().await;
    assert_eq!(
        client.access_token().await.unwrap(),
        token,
        "still valid for 5 minutes"
    );
    h.advance(299);
    assert_eq!(client.access_token().await.unwrap(), token);
    h.advance(1);
    let err = client.access_token().await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
}

#[tokio::test]
async fn invalidate_only_drops_the_token_the_caller_saw() {
    let h = Harness::start().await;
    let client = h.client(TokenSource::Token);
    let first = client.access_token().await.unwrap();
    client.invalidate(&first);
    let second = client.access_token().await.unwrap();
    assert_ne!(second, first);
    // A late caller that was refused with the old token must not drop the new one.
    client.invalidate(&first);
    assert_eq!(client.access_token().await.unwrap(), second);
    assert_eq!(h.mp.tokens_issued(), 2);
}

#[tokio::test]
async fn a_wrong_secret_fails_the_token_fetch_without_leaking_it() {
    let h = Harness::start().await;
    let secret = "fedcba9876543210fedcba9876543210";
    for source in [TokenSource::Token, TokenSource::StableToken] {
        let client = h.client_with(
            MpConfig::new(APPID, secret).token_source(source),
            Arc::new(h.clock.clone()),
        );
        let err = client
            .get_wxacode_unlimit(&WxaCodeRequest::new("x"))
            .await
            .unwrap_err();
        let expected = match source {
            TokenSource::Token => ErrCode::InvalidCredential,
            TokenSource::StableToken => ErrCode::InvalidAppSecret,
        };
        let text = format!("{err} {err:?}");
        assert_eq!(errcode(Err::<(), _>(err)), expected, "{source:?}");
        assert!(!text.contains(secret), "{text}");
    }
    assert_eq!(h.mp.tokens_issued(), 0);
}

#[tokio::test]
async fn transport_errors_do_not_carry_the_secret_or_the_url() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = MpClient::new(
        MpConfig::new(APPID, SECRET).token_source(TokenSource::Token),
        &http_config(),
        &BaseUrls::single(&base),
    )
    .unwrap();
    let err = client.access_token().await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    let text = format!("{err} {err:?} {client:?}");
    assert!(
        !text.contains(SECRET) && !text.contains("cgi-bin"),
        "{text}"
    );
}

#[tokio::test]
async fn stable_tokens_are_shared_isolated_and_force_refresh_revokes() {
    let h = Harness::start().await;
    let a = h.client(TokenSource::StableToken);
    let b = h.client(TokenSource::StableToken);
    let token = a.access_token().await.unwrap();
    assert_eq!(
        b.access_token().await.unwrap(),
        token,
        "the same token for every server"
    );
    assert_eq!(h.mp.stable_tokens_issued(), 1);

    // /cgi-bin/token does not touch the stable token.
    h.fetch_token_elsewhere().await;
    h.advance(600);
    a.get_wxacode_unlimit(&WxaCodeRequest::new("s=1"))
        .await
        .unwrap();
    assert_eq!(h.mp.stable_tokens_issued(), 1);

    // Another server forces a refresh: ours is refused at once, then replaced and retried.
    let forced = h
        .post_stable_token(
            &serde_json::json!({"grant_type": "client_credential", "appid": APPID, "secret": SECRET, "force_refresh": true})
                .to_string(),
            "application/json",
        )
        .await;
    assert_eq!(forced["expires_in"], 7200, "{forced}");
    assert_eq!(h.mp.stable_tokens_issued(), 2);
    a.get_wxacode_unlimit(&WxaCodeRequest::new("s=2"))
        .await
        .unwrap();
    let replaced = a.access_token().await.unwrap();
    assert_ne!(replaced, token);
    assert_eq!(
        replaced.expose_secret(),
        forced["access_token"].as_str().unwrap()
    );

    // A second forced refresh within 30 s neither refreshes nor fails: the current token.
    let again = h
        .post_stable_token(
            &serde_json::json!({"grant_type": "client_credential", "appid": APPID, "secret": SECRET, "force_refresh": true})
                .to_string(),
            "application/json",
        )
        .await;
    assert_eq!(again["access_token"], forced["access_token"], "{again}");
    assert_eq!(h.mp.stable_tokens_issued(), 2);
}

#[tokio::test]
async fn the_stable_token_endpoint_is_post_json_only() {
    let h = Harness::start().await;
    let form = h
        .post_stable_token(
            &format!("grant_type=client_credential&appid={APPID}&secret={SECRET}"),
            "application/x-www-form-urlencoded",
        )
        .await;
    assert_eq!(form["errcode"], 47001, "{form}");
    let get: serde_json::Value = reqwest::get(format!("{}/cgi-bin/stable_token", h.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(get["errcode"], 43002, "{get}");
    assert_eq!(h.mp.stable_tokens_issued(), 0);
}

#[tokio::test]
async fn a_stable_token_is_renewed_in_its_last_five_minutes() {
    let h = Harness::start().await;
    let client = h.client(TokenSource::StableToken);
    let first = client.access_token().await.unwrap();
    h.advance(7200 - 300);
    let second = client.access_token().await.unwrap();
    assert_ne!(second, first);
    assert_eq!(second.expires_at(), h.clock.now() + 7200);
    assert_eq!(h.mp.stable_tokens_issued(), 2);
}

#[tokio::test]
async fn the_mini_program_code_is_a_jpeg_of_the_requested_width() {
    let h = Harness::start().await;
    let client = h.client(TokenSource::StableToken);
    let request = WxaCodeRequest::new("id=42&from=poster")
        .page("pages/order/detail")
        .width(430);
    let image = client.get_wxacode_unlimit(&request).await.unwrap();
    // WeChat answers image/jpeg (issue 14, deviation 6).
    assert_eq!(image.content_type, "image/jpeg");
    assert_eq!(&image.bytes[..3], b"\xff\xd8\xff");
    let decoded = image::load_from_memory_with_format(&image.bytes, image::ImageFormat::Jpeg)
        .unwrap()
        .to_rgb8();
    assert_eq!(decoded.dimensions(), (430, 430));
    // JPEG is lossy: near black and near white.
    assert!(
        decoded.pixels().any(|p| p.0.iter().all(|c| *c < 16)),
        "black modules"
    );
    assert!(
        decoded.pixels().any(|p| p.0.iter().all(|c| *c > 240)),
        "white background"
    );

    let smallest = client
        .get_wxacode_unlimit(&WxaCodeRequest::new("x").width(WXACODE_MIN_WIDTH))
        .await
        .unwrap();
    let decoded = image::load_from_memory(&smallest.bytes).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (280, 280));
}

#[tokio::test]
async fn invalid_codes_requests_never_reach_wechat() {
    let h = Harness::start().await;
    let client = h.client(TokenSource::StableToken);
    let bad = [
        WxaCodeRequest::new("a".repeat(33)),
        WxaCodeRequest::new(""),
        WxaCodeRequest::new("100%"),
        WxaCodeRequest::new("订单"),
        WxaCodeRequest::new("ok").page("/pages/index/index"),
        WxaCodeRequest::new("ok").page("pages/index/index?a=1"),
        WxaCodeRequest::new("ok").width(279),
        WxaCodeRequest::new("ok").width(1281),
    ];
    for request in &bad {
        let err = client.get_wxacode_unlimit(request).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidRequest(_)),
            "{request:?}: {err:?}"
        );
    }
    assert_eq!(h.mp.requests_served(), 0);
}

#[tokio::test]
async fn wechat_side_errors_of_the_code_are_typed_and_not_retried() {
    let h = Harness::start().await;
    let client = h.client(TokenSource::StableToken);
    client.access_token().await.unwrap();
    let before = h.mp.requests_served();
    // Well-formed but not a released page: only WeChat can tell.
    let unreleased = WxaCodeRequest::new("x").page("packageA/pages/detail");
    assert_eq!(
        errcode(client.get_wxacode_unlimit(&unreleased).await),
        ErrCode::InvalidPage
    );
    assert_eq!(h.mp.requests_served() - before, 1);
    let mut unchecked = unreleased;
    unchecked.check_path = false;
    client.get_wxacode_unlimit(&unchecked).await.unwrap();
    let reserved = WxaCodeRequest::new("scancode_time=1");
    assert_eq!(
        errcode(client.get_wxacode_unlimit(&reserved).await),
        ErrCode::ScancodeTimeNotAllowed
    );
}

#[tokio::test]
async fn phone_numbers_are_returned_once_per_code() {
    let h = Harness::start().await;
    let client = h.client(TokenSource::StableToken);
    let (openid, _) = h.mp.create_user(None).unwrap();
    let (other, _) = h.mp.create_user(None).unwrap();
    let code = h.mp.mint_phone_code(&openid, "13800138000").unwrap();

    // The wrong user is refused without consuming the code.
    assert_eq!(
        errcode(client.get_user_phone_number(&code, Some(&other)).await),
        ErrCode::InvalidOpenId
    );

    let info = client
        .get_user_phone_number(&code, Some(&openid))
        .await
        .unwrap();
    assert_eq!(info.phone_number, "13800138000");
    assert_eq!(info.pure_phone_number, "13800138000");
    assert_eq!(info.country_code, "86");
    assert_eq!(info.watermark.appid, APPID);
    assert_eq!(info.watermark.timestamp, START);

    assert_eq!(
        errcode(client.get_user_phone_number(&code, None).await),
        ErrCode::InvalidCode
    );

    let foreign = h.mp.mint_phone_code(&openid, "+1 4155552671").unwrap();
    let info = client.get_user_phone_number(&foreign, None).await.unwrap();
    assert_eq!(
        (
            info.phone_number.as_str(),
            info.pure_phone_number.as_str(),
            info.country_code.as_str()
        ),
        ("+1 4155552671", "4155552671", "1")
    );

    let expiring = h.mp.mint_phone_code(&openid, "13900139000").unwrap();
    h.advance(300);
    assert_eq!(
        errcode(client.get_user_phone_number(&expiring, None).await),
        ErrCode::InvalidCode
    );
    assert!(h.mp.mint_phone_code("nobody", "13800138000").is_none());
}

#[tokio::test]
async fn the_full_simulator_serves_the_mini_program_api() {
    let sim = wxpay_sim::Simulator::start(wxpay_sim::SimConfig::default())
        .await
        .unwrap();
    let merchant = sim.merchant();
    let client = MpClient::new(
        MpConfig::new(merchant.appid.clone(), merchant.app_secret.clone()),
        &http_config(),
        &BaseUrls::single(&sim.base_url()),
    )
    .unwrap();
    let mp = sim.state().mp.clone();
    let (openid, code) = mp.create_user(None).unwrap();
    assert_eq!(client.code2session(&code).await.unwrap().openid, openid);
    let image = client
        .get_wxacode_unlimit(&WxaCodeRequest::new("o=1"))
        .await
        .unwrap();
    assert_eq!(image::load_from_memory(&image.bytes).unwrap().width(), 430);
    let phone_code = mp.mint_phone_code(&openid, "13800138000").unwrap();
    let info = client
        .get_user_phone_number(&phone_code, Some(&openid))
        .await
        .unwrap();
    assert_eq!(info.watermark.appid, merchant.appid);
    sim.shutdown().await;
}
