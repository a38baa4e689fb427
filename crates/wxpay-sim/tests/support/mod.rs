//! What the simulator tests share: a merchant that signs with the library's primitives and
//! verifies answers with the library's verifiers, against an in-process simulator.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use serde_json::{Value, json};
use wxpay::keys::{RsaPrivateKey, RsaPublicKey, X509Certificate};
use wxpay::v3::auth::Authorization;
use wxpay::v3::verifier::{
    CertificateStore, CombinedVerifier, PublicKeyVerifier, SignedHeaders, Verifier, verify_signed,
};
use wxpay::{RequestPayment, SignatureError};
use wxpay_sim::{KeyMode, RunningSimulator, SimConfig, Simulator};

/// A v3 answer as received.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// The merchant side of a test, with its own simulator.
pub struct Merchant {
    pub sim: RunningSimulator,
    pub key: RsaPrivateKey,
    pub http: reqwest::Client,
    pub base: String,
    pub mode: KeyMode,
}

impl Merchant {
    pub async fn start(mode: KeyMode) -> Self {
        Self::start_with(SimConfig {
            key_mode: mode,
            time_scale: 2000.0,
            ..SimConfig::default()
        })
        .await
    }

    pub async fn start_with(config: SimConfig) -> Self {
        let mode = config.key_mode;
        let sim = Simulator::start(config).await.expect("simulator starts");
        let key = RsaPrivateKey::from_pem(&sim.merchant().merchant_private_key_pem).unwrap();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let base = sim.base_url();
        Self {
            sim,
            key,
            http,
            base,
            mode,
        }
    }

    pub fn mchid(&self) -> String {
        self.sim.merchant().mchid.clone()
    }

    pub fn appid(&self) -> String {
        self.sim.merchant().appid.clone()
    }

    pub fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    /// The Authorization header for a request, signed now.
    pub fn authorization(&self, method: &str, target: &str, body: &[u8]) -> String {
        self.authorization_at(
            method,
            target,
            body,
            Self::now(),
            &self.sim.merchant().merchant_serial,
            &self.key,
        )
    }

    pub fn authorization_at(
        &self,
        method: &str,
        target: &str,
        body: &[u8],
        timestamp: i64,
        serial: &str,
        key: &RsaPrivateKey,
    ) -> String {
        Authorization::sign(
            key,
            &self.mchid(),
            serial,
            method,
            target,
            timestamp,
            &wxpay::nonce::nonce(),
            body,
        )
        .unwrap()
        .to_header_value()
    }

    /// Sends a signed v3 request.
    pub async fn v3(&self, method: &str, target: &str, body: Option<&Value>) -> Answer {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let auth = self.authorization(method, target, &bytes);
        self.send(method, target, bytes, Some(auth), None).await
    }

    /// Sends a raw request with the given Authorization and `Wechatpay-Serial`.
    pub async fn send(
        &self,
        method: &str,
        target: &str,
        body: Vec<u8>,
        authorization: Option<String>,
        wechatpay_serial: Option<&str>,
    ) -> Answer {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{}", self.base, target))
            .header("accept", "application/json")
            .header("user-agent", "wxpay-sim-tests");
        if !body.is_empty() {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        if let Some(s) = wechatpay_serial {
            request = request.header("wechatpay-serial", s);
        }
        let response = request.send().await.unwrap();
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.unwrap(),
        }
    }

    pub fn public_key_verifier(&self) -> PublicKeyVerifier {
        let m = self.sim.merchant();
        PublicKeyVerifier::new(
            m.wechatpay_public_key_id.clone(),
            RsaPublicKey::from_pem(&m.wechatpay_public_key_pem).unwrap(),
        )
    }

    pub fn certificate_store(&self) -> Arc<CertificateStore> {
        Arc::new(CertificateStore::with(vec![
            X509Certificate::from_pem(&self.sim.merchant().platform_cert_pem).unwrap(),
        ]))
    }

    /// The verifier a merchant configures for its key mode.
    pub fn verifier(&self) -> Box<dyn Verifier> {
        match self.mode {
            KeyMode::PublicKey => Box::new(self.public_key_verifier()),
            KeyMode::Certificate => Box::new(self.certificate_store()),
            KeyMode::Migrating => Box::new(CombinedVerifier::new(
                self.public_key_verifier(),
                self.certificate_store(),
            )),
        }
    }

    /// Verifies a signed answer with the library's verifier.
    pub fn verify(&self, answer: &Answer) -> Result<(), SignatureError> {
        let headers = SignedHeaders::from_headers(&answer.headers)?;
        verify_signed(
            self.verifier().as_ref(),
            &headers,
            &answer.body,
            Self::now(),
            300,
        )
    }

    pub async fn control(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.control_with(method, path, body, &[]).await
    }

    /// A control call with these extra headers.
    pub async fn control_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{}", self.base, path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let value = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, value)
    }

    pub async fn new_user(&self) -> String {
        let (status, v) = self.control("POST", "/sim/users", Some(json!({}))).await;
        assert_eq!(status, 200, "{v}");
        v["openid"].as_str().unwrap().to_owned()
    }

    pub fn order_body(
        &self,
        out_trade_no: &str,
        total: u64,
        openid: &str,
        notify_url: &str,
    ) -> Value {
        json!({
            "appid": self.appid(),
            "mchid": self.mchid(),
            "description": "Image形象店-深圳腾大-QQ公仔",
            "out_trade_no": out_trade_no,
            "notify_url": notify_url,
            "amount": {"total": total, "currency": "CNY"},
            "payer": {"openid": openid},
        })
    }

    /// Places a v3 JSAPI order and returns its prepay_id.
    pub async fn prepay(
        &self,
        out_trade_no: &str,
        total: u64,
        openid: &str,
        notify_url: &str,
    ) -> String {
        let answer = self
            .v3(
                "POST",
                "/v3/pay/transactions/jsapi",
                Some(&self.order_body(out_trade_no, total, openid, notify_url)),
            )
            .await;
        assert_eq!(answer.status, 200, "{:?}", answer.json());
        answer.json()["prepay_id"].as_str().unwrap().to_owned()
    }

    /// The `wx.requestPayment` object the merchant server would return.
    pub fn request_payment(&self, prepay_id: &str) -> RequestPayment {
        wxpay::pay_params::v3(
            &self.key,
            &self.appid(),
            prepay_id,
            Self::now(),
            &wxpay::nonce::nonce(),
        )
        .unwrap()
    }

    /// Pays as the WeChat client, with `result` SUCCESS.
    pub async fn pay(&self, prepay_id: &str, openid: &str) -> (u16, Value) {
        let mut body = serde_json::to_value(self.request_payment(prepay_id)).unwrap();
        body["openid"] = json!(openid);
        self.control("POST", "/sim/pay", Some(body)).await
    }
}

/// A notification receiver: records every request and answers with the configured status.
pub mod receiver {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;

    #[derive(Clone, Debug)]
    pub struct Received {
        pub headers: HeaderMap,
        pub body: Bytes,
        pub path: String,
    }

    #[derive(Clone, Default)]
    pub struct Receiver {
        pub received: Arc<Mutex<Vec<Received>>>,
        /// Answer 500 to this many requests first.
        pub fail_first: Arc<Mutex<usize>>,
        /// v2 style: answer with the XML ack.
        pub xml_ack: bool,
    }

    impl Receiver {
        pub fn received(&self) -> Vec<Received> {
            self.received.lock().unwrap().clone()
        }
    }

    async fn handle(
        State(r): State<Receiver>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> (StatusCode, String) {
        r.received.lock().unwrap().push(Received {
            headers,
            body,
            path: uri.path().to_owned(),
        });
        {
            let mut left = r.fail_first.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    r#"{"code":"FAIL","message":"失败"}"#.into(),
                );
            }
        }
        if r.xml_ack {
            (
                StatusCode::OK,
                "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>".into(),
            )
        } else {
            (StatusCode::NO_CONTENT, String::new())
        }
    }

    /// Starts a receiver; returns it and its base URL.
    pub async fn start(receiver: Receiver) -> (Receiver, String) {
        let app = Router::new()
            .route("/notify/{*rest}", post(handle))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (receiver, format!("http://{addr}"))
    }
}
