use http::{HeaderMap, HeaderValue, StatusCode};

use super::wxacode::decode_wxacode;
use super::*;

fn answer(content_type: &str, body: &[u8]) -> RawResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap(),
    );
    RawResponse {
        status: StatusCode::OK,
        headers,
        body: Bytes::copy_from_slice(body),
    }
}

#[test]
fn wxacode_request_serializes_as_documented() {
    let request = WxaCodeRequest::new("id=42").page("pages/order/detail");
    let json: serde_json::Value = serde_json::to_value(&request).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "scene": "id=42",
            "page": "pages/order/detail",
            "check_path": true,
            "env_version": "release",
            "width": 430,
            "auto_color": false,
            "line_color": {"r": 0, "g": 0, "b": 0},
            "is_hyaline": false,
        })
    );
    let home = serde_json::to_value(WxaCodeRequest::new("x")).unwrap();
    assert!(
        home.get("page").is_none(),
        "page is left out for the home page"
    );
}

#[test]
fn wxacode_request_validation() {
    WxaCodeRequest::new("a").width(280).validate().unwrap();
    WxaCodeRequest::new("a").width(1280).validate().unwrap();
    for width in [0, 279, 1281] {
        let err = WxaCodeRequest::new("a")
            .width(width)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("width"), "{err}");
    }
    let err = WxaCodeRequest::new("a")
        .page("/pages/index/index")
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("'/'"), "{err}");
    let err = WxaCodeRequest::new("a b").validate().unwrap_err();
    assert!(err.to_string().contains("scene"), "{err}");
}

#[test]
fn phone_info_accepts_country_code_as_string_or_number() {
    for country in [r#""86""#, "86"] {
        let body = format!(
            r#"{{"errcode":0,"errmsg":"ok","phone_info":{{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":{country},"watermark":{{"timestamp":1637744274,"appid":"wxabc"}}}}}}"#
        );
        #[derive(Deserialize)]
        struct Answer {
            phone_info: PhoneInfo,
        }
        let answer: Answer = decode_answer(&answer("application/json", body.as_bytes())).unwrap();
        assert_eq!(
            answer.phone_info,
            PhoneInfo {
                phone_number: "13800138000".into(),
                pure_phone_number: "13800138000".into(),
                country_code: "86".into(),
                watermark: PhoneWatermark {
                    timestamp: 1_637_744_274,
                    appid: "wxabc".into()
                },
            }
        );
    }
}

#[test]
fn errcode_answers_become_typed_api_errors() {
    let response = answer(
        "application/json; encoding=utf-8",
        br#"{"errcode":40029,"errmsg":"invalid code, rid: 1-2-3"}"#,
    );
    let err = decode_answer::<serde_json::Value>(&response).unwrap_err();
    match err {
        Error::Api(ApiError::MiniProgram { errcode, errmsg }) => {
            assert_eq!(errcode, ErrCode::InvalidCode);
            assert_eq!(errmsg, "invalid code, rid: 1-2-3");
        }
        other => panic!("{other:?}"),
    }
    // errcode 0 is success, and a missing errcode too (jscode2session, token).
    let ok = answer("application/json", br#"{"errcode":0,"errmsg":"ok","x":1}"#);
    assert_eq!(decode_answer::<serde_json::Value>(&ok).unwrap()["x"], 1);
}

#[test]
fn wxacode_answer_branches_on_content_type() {
    let png = answer("image/png", b"\x89PNG\r\n\x1a\nrest");
    assert_eq!(decode_wxacode(&png).unwrap().content_type, "image/png");
    let jpeg = answer("image/jpeg", b"\xff\xd8\xff");
    assert_eq!(
        decode_wxacode(&jpeg).unwrap().bytes.as_ref(),
        b"\xff\xd8\xff"
    );
    let error = answer(
        "application/json; encoding=utf-8",
        br#"{"errcode":41030,"errmsg":"invalid page"}"#,
    );
    assert!(matches!(
        decode_wxacode(&error),
        Err(Error::Api(ApiError::MiniProgram {
            errcode: ErrCode::InvalidPage,
            ..
        }))
    ));
    let html = answer("text/html", b"<html></html>");
    assert!(matches!(decode_wxacode(&html), Err(Error::Decode(_))));
    let empty = answer("image/jpeg", b"");
    assert!(matches!(decode_wxacode(&empty), Err(Error::Decode(_))));
}

#[test]
fn secret_answers_do_not_quote_values_in_errors() {
    let response = answer(
        "application/json",
        br#"{"access_token":"SECRET-TOKEN","expires_in":"SECRET-TOKEN"}"#,
    );
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Answer {
        access_token: String,
        expires_in: i64,
    }
    let err = decode_secret_answer::<Answer>(&response, "access token").unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("SECRET-TOKEN"), "{text}");
}

#[test]
fn debug_output_hides_secrets() {
    let config = MpConfig::new("wx1234", "app-secret-value");
    assert!(!format!("{config:?}").contains("app-secret-value"));
    let token = AccessToken::new("token-value", 10);
    assert!(!format!("{token:?}").contains("token-value"));
    let session = Session {
        openid: "o1".into(),
        session_key: SecretString::from("session-key-value"),
        unionid: None,
    };
    assert!(!format!("{session:?}").contains("session-key-value"));
}

#[test]
fn config_is_checked() {
    let urls = BaseUrls::single("http://127.0.0.1:9");
    let http = HttpConfig::default();
    assert!(MpClient::new(MpConfig::new("", "s"), &http, &urls).is_err());
    assert!(MpClient::new(MpConfig::new("wx 1", "s"), &http, &urls).is_err());
    assert!(MpClient::new(MpConfig::new("wx1", ""), &http, &urls).is_err());
    let long_margin = MpConfig::new("wx1", "s").refresh_before(Duration::from_secs(3600));
    assert!(MpClient::new(long_margin, &http, &urls).is_err());
    assert!(
        MpClient::new(
            MpConfig::new("wx1", "s"),
            &http,
            &BaseUrls::single("not a url")
        )
        .is_err()
    );
    MpClient::new(MpConfig::new("wx1", "s"), &http, &urls).unwrap();
}
