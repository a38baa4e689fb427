//! `wxpay::v2::client::V2Client` against the in-process simulator over HTTP (and TLS with the
//! merchant certificate for refunds): every call, its rejections, the payment and refund
//! notifications, and the bills.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use time::macros::format_description;
use tokio::sync::mpsc;
use wxpay::bill::{TradeBillKind, parse_trade_bill};
use wxpay::http::{BaseUrls, ClientIdentity, HttpConfig, RetryPolicy};
use wxpay::v2::client::{V2Client, V2Config, is_no_bill};
use wxpay::v2::models::{
    BillType, CloseOrderRequest, DownloadBillRequest, OrderId, OrderQueryRequest, RefundFields,
    RefundQueryId, RefundQueryRequest, RefundRequest, RefundStatus, TradeState, UnifiedOrderFields,
    UnifiedOrderRequest,
};
use wxpay::v2::notify::{
    PayNotification, RefundNotification, ack_success, parse_pay_notification,
    parse_refund_notification,
};
use wxpay::v2::{ErrCode, SignType, XmlMap, sign, xml};
use wxpay::{ApiError, DecodeError, Error, Fen, SignatureError};
use wxpay_sim::{RunningSimulator, SimConfig, Simulator};

/// A validated identifier (the tests use valid ones).
fn id<T>(text: &str) -> T
where
    T: TryFrom<String>,
    T::Error: std::fmt::Debug,
{
    T::try_from(text.to_owned()).unwrap()
}

const WAIT: Duration = Duration::from_secs(10);

/// A merchant server that parses every notification with the library and acknowledges it.
struct Receiver {
    base: String,
    pay: mpsc::UnboundedReceiver<PayNotification>,
    refund: mpsc::UnboundedReceiver<RefundNotification>,
}

#[derive(Clone)]
struct ReceiverState {
    key: String,
    pay: mpsc::UnboundedSender<PayNotification>,
    refund: mpsc::UnboundedSender<RefundNotification>,
}

async fn receive_pay(State(s): State<ReceiverState>, body: Bytes) -> String {
    match parse_pay_notification(&body, &s.key) {
        Ok(n) => {
            let _ = s.pay.send(n);
            ack_success().to_owned()
        }
        Err(e) => wxpay::v2::notify::ack_fail(&e.to_string()),
    }
}

async fn receive_refund(State(s): State<ReceiverState>, body: Bytes) -> String {
    match parse_refund_notification(&body, &s.key) {
        Ok(n) => {
            let _ = s.refund.send(n);
            ack_success().to_owned()
        }
        Err(e) => wxpay::v2::notify::ack_fail(&e.to_string()),
    }
}

impl Receiver {
    async fn start(key: &str) -> Self {
        let (pay_tx, pay) = mpsc::unbounded_channel();
        let (refund_tx, refund) = mpsc::unbounded_channel();
        let app = axum::Router::new()
            .route("/notify/pay", post(receive_pay))
            .route("/notify/refund", post(receive_refund))
            .with_state(ReceiverState {
                key: key.to_owned(),
                pay: pay_tx,
                refund: refund_tx,
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { base, pay, refund }
    }
}

struct Harness {
    sim: RunningSimulator,
    client: V2Client,
    tls_client: V2Client,
    receiver: Receiver,
    key: String,
    http: HttpConfig,
}

fn http_config(ca_pem: &str) -> HttpConfig {
    HttpConfig {
        retry: RetryPolicy::none(),
        extra_roots_pem: vec![ca_pem.to_owned()],
        ..HttpConfig::default()
    }
}

impl Harness {
    async fn start(sign_type: SignType) -> Self {
        let sim = Simulator::start(SimConfig {
            time_scale: 1000.0,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let m = sim.merchant().clone();
        let http = http_config(&m.ca_cert_pem);
        let config = V2Config::new(&m.appid, &m.mchid, &m.api_v2_key).with_sign_type(sign_type);
        let client =
            V2Client::new(config.clone(), &http, &BaseUrls::single(&sim.base_url())).unwrap();
        let identity = ClientIdentity::from_pkcs12(&m.merchant_cert_p12, &m.mchid).unwrap();
        let tls_client = V2Client::new(
            config.with_client_identity(identity),
            &http,
            &BaseUrls::single(&sim.tls_base_url()),
        )
        .unwrap();
        let receiver = Receiver::start(&m.api_v2_key).await;
        Harness {
            sim,
            client,
            tls_client,
            receiver,
            key: m.api_v2_key,
            http,
        }
    }

    fn user(&self) -> String {
        self.sim.state().mp.create_user(None).unwrap().0
    }

    fn order(&self, out_trade_no: &str, total: u64, openid: &str) -> UnifiedOrderRequest {
        let mut order = UnifiedOrderRequest::jsapi(UnifiedOrderFields {
            body: "模拟商品-测试".into(),
            out_trade_no: id(out_trade_no),
            total_fee: Fen::new(total),
            spbill_create_ip: "203.0.113.7".into(),
            notify_url: format!("{}/notify/pay", self.receiver.base),
            openid: id(openid),
        });
        order.attach = Some("store=7".into());
        order
    }

    /// Orders, pays through `/sim/pay` as the WeChat client would, and returns the payment
    /// notification the merchant server received.
    async fn order_and_pay(&mut self, out_trade_no: &str, total: u64) -> PayNotification {
        let openid = self.user();
        let prepay = self
            .client
            .unified_order(&self.order(out_trade_no, total, &openid))
            .await
            .unwrap();
        let payment = self.client.request_payment(&prepay.prepay_id, unix_now());
        let mut body = serde_json::to_value(&payment).unwrap();
        body["openid"] = serde_json::Value::String(openid);
        let answer = reqwest::Client::new()
            .post(format!("{}/sim/pay", self.sim.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let text = answer.text().await.unwrap();
        assert!(
            status.is_success() && text.contains("requestPayment:ok"),
            "{status} {text}"
        );
        tokio::time::timeout(WAIT, self.receiver.pay.recv())
            .await
            .unwrap()
            .unwrap()
    }

    fn refund(
        &self,
        out_trade_no: &str,
        out_refund_no: &str,
        total: u64,
        amount: u64,
    ) -> RefundRequest {
        let mut r = RefundRequest::new(RefundFields {
            id: OrderId::OutTradeNo(id(out_trade_no)),
            out_refund_no: id(out_refund_no),
            total_fee: Fen::new(total),
            refund_fee: Fen::new(amount),
        });
        r.refund_desc = Some("商品已售完".into());
        r.notify_url = Some(format!("{}/notify/refund", self.receiver.base));
        r
    }

    /// A signed request sent as raw bytes, for what the client never sends.
    async fn raw(&self, path: &str, body: impl Into<reqwest::Body>) -> XmlMap {
        let text = reqwest::Client::new()
            .post(format!("{}{path}", self.sim.base_url()))
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        xml::decode(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    fn signed_xml(&self, pairs: &[(&str, &str)]) -> String {
        let m = self.sim.merchant();
        let mut map: XmlMap = [
            ("appid", m.appid.as_str()),
            ("mch_id", m.mchid.as_str()),
            ("nonce_str", "n0nce"),
        ]
        .iter()
        .chain(pairs)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let s = sign::sign_map(&map, &self.key, SignType::Md5);
        map.insert("sign".into(), s);
        xml::encode(&map).unwrap()
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn business(err: &Error) -> Option<&ErrCode> {
    match err {
        Error::Api(ApiError::V2Business { err_code, .. }) => Some(err_code),
        _ => None,
    }
}

#[tokio::test]
async fn an_order_is_made_paid_notified_and_queried_with_md5_and_hmac() {
    for sign_type in [SignType::Md5, SignType::HmacSha256] {
        let mut h = Harness::start(sign_type).await;
        let openid = h.user();
        let prepay = h
            .client
            .unified_order(&h.order("ORDER-0001", 88, &openid))
            .await
            .unwrap();
        assert_eq!(prepay.trade_type, "JSAPI");
        assert!(prepay.prepay_id.starts_with("wx"));

        let unpaid = h
            .client
            .order_query(&OrderQueryRequest::by_out_trade_no(id("ORDER-0001")))
            .await
            .unwrap();
        assert_eq!(unpaid.trade_state, TradeState::NotPay);
        assert_eq!(unpaid.attach.as_deref(), Some("store=7"));
        assert_eq!(unpaid.transaction_id, None);

        let note = h.order_and_pay("ORDER-0002", 1234).await;
        assert_eq!(note.out_trade_no, "ORDER-0002");
        assert_eq!(note.total_fee, Fen::new(1234));
        assert_eq!(note.cash_fee, Fen::new(1234));
        assert_eq!(
            note.sign_type, sign_type,
            "the notification is signed in the order's sign type"
        );
        assert_eq!(note.attach.as_deref(), Some("store=7"));
        assert!(
            note.ensure_merchant(&h.client.config().appid, &h.client.config().mch_id)
                .is_ok()
        );

        let paid = h
            .client
            .order_query(&OrderQueryRequest::by_transaction_id(&note.transaction_id))
            .await
            .unwrap();
        assert_eq!(paid.trade_state, TradeState::Success);
        assert_eq!(paid.total_fee, Some(Fen::new(1234)));
        assert_eq!(
            paid.transaction_id.as_deref(),
            Some(note.transaction_id.as_str())
        );
        assert_eq!(paid.time_end, Some(note.time_end));
        assert!(paid.openid.is_some());
        h.sim.shutdown().await;
    }
}

#[tokio::test]
async fn a_reused_out_trade_no_gives_the_same_prepay_or_out_trade_no_used() {
    let h = Harness::start(SignType::Md5).await;
    let openid = h.user();
    let first = h
        .client
        .unified_order(&h.order("ORDER-0003", 100, &openid))
        .await
        .unwrap();
    let again = h
        .client
        .unified_order(&h.order("ORDER-0003", 100, &openid))
        .await
        .unwrap();
    assert_eq!(first.prepay_id, again.prepay_id);
    let err = h
        .client
        .unified_order(&h.order("ORDER-0003", 101, &openid))
        .await
        .unwrap_err();
    // Real v2 answers: INVALID_REQUEST `201 商户订单号重复` (issue 14, deviation 2).
    assert_eq!(business(&err), Some(&ErrCode::InvalidRequest), "{err:?}");
    assert!(err.to_string().contains("201 商户订单号重复"), "{err}");

    let stranger = h
        .client
        .unified_order(&h.order("ORDER-0004", 100, "o-unknown-user"))
        .await
        .unwrap_err();
    assert_eq!(
        business(&stranger),
        Some(&ErrCode::ParamError),
        "{stranger:?}"
    );
    let missing = h
        .client
        .order_query(&OrderQueryRequest::by_out_trade_no(id("ORDER-9999")))
        .await
        .unwrap_err();
    assert_eq!(business(&missing), Some(&ErrCode::OrderNotExist));
    h.sim.shutdown().await;
}

#[tokio::test]
async fn orders_close_once_and_paid_orders_do_not_close() {
    let mut h = Harness::start(SignType::HmacSha256).await;
    let openid = h.user();
    h.client
        .unified_order(&h.order("ORDER-0005", 100, &openid))
        .await
        .unwrap();
    h.client
        .close_order(&CloseOrderRequest::new(id("ORDER-0005")))
        .await
        .unwrap();
    let closed = h
        .client
        .order_query(&OrderQueryRequest::by_out_trade_no(id("ORDER-0005")))
        .await
        .unwrap();
    assert_eq!(closed.trade_state, TradeState::Closed);
    let twice = h
        .client
        .close_order(&CloseOrderRequest::new(id("ORDER-0005")))
        .await
        .unwrap_err();
    assert_eq!(business(&twice), Some(&ErrCode::OrderClosed));
    let reorder = h
        .client
        .unified_order(&h.order("ORDER-0005", 100, &openid))
        .await
        .unwrap_err();
    assert_eq!(business(&reorder), Some(&ErrCode::InvalidRequest));

    h.order_and_pay("ORDER-0006", 100).await;
    let paid = h
        .client
        .close_order(&CloseOrderRequest::new(id("ORDER-0006")))
        .await
        .unwrap_err();
    assert_eq!(business(&paid), Some(&ErrCode::OrderPaid));
    let none = h
        .client
        .close_order(&CloseOrderRequest::new(id("ORDER-0007")))
        .await
        .unwrap_err();
    assert_eq!(business(&none), Some(&ErrCode::OrderNotExist));
    h.sim.shutdown().await;
}

#[tokio::test]
async fn refunds_over_mutual_tls_are_idempotent_capped_notified_and_queryable() {
    let mut h = Harness::start(SignType::Md5).await;
    let paid = h.order_and_pay("ORDER-0010", 100).await;

    let r1 = h
        .tls_client
        .refund(&h.refund("ORDER-0010", "REFUND-1", 100, 30))
        .await
        .unwrap();
    assert_eq!(r1.refund_fee, Fen::new(30));
    assert_eq!(r1.transaction_id, paid.transaction_id);
    // The same out_refund_no is the same refund, not a second one.
    let again = h
        .tls_client
        .refund(&h.refund("ORDER-0010", "REFUND-1", 100, 30))
        .await
        .unwrap();
    assert_eq!(again.refund_id, r1.refund_id);
    let changed = h
        .tls_client
        .refund(&h.refund("ORDER-0010", "REFUND-1", 100, 31))
        .await
        .unwrap_err();
    assert_eq!(
        business(&changed),
        Some(&ErrCode::InvalidRequest),
        "{changed:?}"
    );
    // 80 more than the 70 left.
    let over = h
        .tls_client
        .refund(&h.refund("ORDER-0010", "REFUND-2", 100, 80))
        .await
        .unwrap_err();
    assert_eq!(business(&over), Some(&ErrCode::Error), "{over:?}");
    let wrong_total = h
        .tls_client
        .refund(&h.refund("ORDER-0010", "REFUND-3", 99, 1))
        .await
        .unwrap_err();
    assert_eq!(
        business(&wrong_total),
        Some(&ErrCode::ParamError),
        "{wrong_total:?}"
    );

    // Processing finishes on the (scaled) clock and the merchant gets the decrypted result.
    let note = tokio::time::timeout(WAIT, h.receiver.refund.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(note.out_refund_no, "REFUND-1");
    assert_eq!(note.refund_id, r1.refund_id);
    assert_eq!(note.refund_fee, Fen::new(30));
    assert_eq!(note.settlement_refund_fee, Fen::new(30));
    assert_eq!(note.refund_status, RefundStatus::Success);
    assert!(note.success_time.is_some());
    assert!(
        note.ensure_merchant(&h.client.config().appid, &h.client.config().mch_id)
            .is_ok()
    );

    let r2 = h
        .tls_client
        .refund(&h.refund("ORDER-0010", "REFUND-4", 100, 70))
        .await
        .unwrap();
    let by_order = h
        .client
        .refund_query(&RefundQueryRequest::new(RefundQueryId::OutTradeNo(id(
            "ORDER-0010",
        ))))
        .await
        .unwrap();
    assert_eq!(by_order.refund_count, 2);
    assert_eq!(by_order.total_fee, Fen::new(100));
    let nos: Vec<&str> = by_order
        .refunds
        .iter()
        .map(|r| r.out_refund_no.as_str())
        .collect();
    assert_eq!(nos, ["REFUND-1", "REFUND-4"]);
    assert_eq!(by_order.refunds[0].refund_status, RefundStatus::Success);
    assert!(by_order.refunds[0].refund_success_time.is_some());
    assert_eq!(
        by_order.refunds[0].refund_recv_accout.as_deref(),
        Some("支付用户零钱")
    );

    let one = h
        .client
        .refund_query(&RefundQueryRequest::new(RefundQueryId::RefundId(
            r2.refund_id.clone(),
        )))
        .await
        .unwrap();
    assert_eq!(one.refunds.len(), 1);
    assert_eq!(one.refunds[0].refund_fee, Fen::new(70));
    let mut paged =
        RefundQueryRequest::new(RefundQueryId::TransactionId(paid.transaction_id.clone()));
    paged.offset = Some(1);
    let page = h.client.refund_query(&paged).await.unwrap();
    assert_eq!((page.total_refund_count, page.refund_count), (Some(2), 1));
    assert_eq!(page.refunds[0].out_refund_no, "REFUND-4");

    let order = h
        .client
        .order_query(&OrderQueryRequest::by_out_trade_no(id("ORDER-0010")))
        .await
        .unwrap();
    assert_eq!(order.trade_state, TradeState::Refund);
    let missing = h
        .client
        .refund_query(&RefundQueryRequest::new(RefundQueryId::OutRefundNo(id(
            "REFUND-404",
        ))))
        .await
        .unwrap_err();
    assert_eq!(business(&missing), Some(&ErrCode::RefundNotExist));
    h.sim.shutdown().await;
}

#[tokio::test]
async fn a_refund_without_the_merchant_certificate_is_refused() {
    let mut h = Harness::start(SignType::Md5).await;
    h.order_and_pay("ORDER-0020", 100).await;
    let request = h.refund("ORDER-0020", "REFUND-20", 100, 10);

    // The client refuses before sending when it has no certificate.
    assert!(matches!(
        h.client.refund(&request).await,
        Err(Error::InvalidRequest(_))
    ));

    // Over plain HTTP no certificate can be presented: the simulator says so.
    let m = h.sim.merchant().clone();
    let identity = ClientIdentity::from_pkcs12(&m.merchant_cert_p12, &m.mchid).unwrap();
    let plain = V2Client::new(
        V2Config::new(&m.appid, &m.mchid, &m.api_v2_key).with_client_identity(identity),
        &h.http,
        &BaseUrls::single(&h.sim.base_url()),
    )
    .unwrap();
    match plain.refund(&request).await {
        Err(Error::Api(ApiError::V2Return { return_msg })) => {
            assert!(return_msg.contains("证书"), "{return_msg}")
        }
        other => panic!("{other:?}"),
    }

    // Over TLS without a client certificate, too.
    let body = h.signed_xml(&[
        ("out_trade_no", "ORDER-0020"),
        ("out_refund_no", "REFUND-21"),
        ("total_fee", "100"),
        ("refund_fee", "10"),
    ]);
    let tls = reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(m.ca_cert_pem.as_bytes()).unwrap())
        .no_proxy()
        .build()
        .unwrap();
    let answer = tls
        .post(format!("{}/secapi/pay/refund", h.sim.tls_base_url()))
        .body(body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let map = xml::decode(answer.as_bytes()).unwrap();
    assert_eq!(map["return_code"], "FAIL");
    assert!(map["return_msg"].contains("证书"));
    assert!(!map.contains_key("sign"));

    // Nothing was refunded by the refused attempts.
    let query = h
        .client
        .refund_query(&RefundQueryRequest::new(RefundQueryId::OutTradeNo(id(
            "ORDER-0020",
        ))))
        .await
        .unwrap_err();
    assert_eq!(business(&query), Some(&ErrCode::RefundNotExist));
    h.sim.shutdown().await;
}

/// Rewrites an answer, given the merchant's key.
type Rewrite = fn(&str, &str) -> String;

/// A proxy in front of the simulator that rewrites every answer.
async fn tampering_proxy(target: String, rewrite: Rewrite, key: String) -> String {
    #[derive(Clone)]
    struct Proxy {
        target: String,
        rewrite: Rewrite,
        key: String,
    }
    async fn forward(State(p): State<Arc<Proxy>>, uri: axum::http::Uri, body: Bytes) -> String {
        let answer = reqwest::Client::new()
            .post(format!("{}{}", p.target, uri.path()))
            .header("content-type", "text/xml; charset=utf-8")
            .body(body)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        (p.rewrite)(&answer, &p.key)
    }
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(Arc::new(Proxy {
            target,
            rewrite,
            key,
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn resign(answer: &str, key: &str, change: impl FnOnce(&mut XmlMap)) -> String {
    let mut map = xml::decode(answer.as_bytes()).unwrap();
    change(&mut map);
    let s = sign::sign_map(
        &map,
        key,
        SignType::from_signature_len(map["sign"].len()).unwrap(),
    );
    map.insert("sign".into(), s);
    xml::encode(&map).unwrap()
}

fn strip_sign(answer: &str) -> String {
    let mut map = xml::decode(answer.as_bytes()).unwrap();
    map.remove("sign");
    xml::encode(&map).unwrap()
}

#[tokio::test]
async fn tampered_wrongly_signed_and_foreign_answers_are_refused() {
    let h = Harness::start(SignType::HmacSha256).await;
    let openid = h.user();
    let cases: [(Rewrite, &str); 4] = [
        (
            |a, _| a.replacen("<prepay_id><![CDATA[wx", "<prepay_id><![CDATA[wy", 1),
            "tampered",
        ),
        (
            |a, _| resign(a, &"k".repeat(32), |_| {}),
            "signed with another key",
        ),
        (|a, _| strip_sign(a), "unsigned"),
        (
            |a, k| {
                resign(a, k, |m| {
                    m.insert("mch_id".into(), "1900000001".into());
                })
            },
            "another merchant",
        ),
    ];
    for (i, (rewrite, what)) in cases.into_iter().enumerate() {
        let proxy = tampering_proxy(h.sim.base_url(), rewrite, h.key.clone()).await;
        let client = V2Client::new(
            h.client.config().clone(),
            &h.http,
            &BaseUrls::single(&proxy),
        )
        .unwrap();
        let err = client
            .unified_order(&h.order(&format!("ORDER-01{i:02}"), 100, &openid))
            .await
            .unwrap_err();
        match (what, &err) {
            ("another merchant", Error::Decode(DecodeError::InvalidField { field, .. })) => {
                assert_eq!(field, "mch_id")
            }
            ("unsigned", Error::Signature(SignatureError::Missing(_))) => {}
            (_, Error::Signature(SignatureError::Mismatch))
                if what != "another merchant" && what != "unsigned" => {}
            _ => panic!("{what}: {err:?}"),
        }
    }

    // A client with the wrong key is refused by the simulator: 签名错误, unsigned.
    let m = h.sim.merchant();
    let wrong = V2Client::new(
        V2Config::new(&m.appid, &m.mchid, "0123456789abcdef0123456789abcdef"),
        &h.http,
        &BaseUrls::single(&h.sim.base_url()),
    )
    .unwrap();
    match wrong
        .order_query(&OrderQueryRequest::by_out_trade_no(id("ORDER-0100")))
        .await
    {
        Err(Error::Api(ApiError::V2Return { return_msg })) => assert_eq!(return_msg, "签名错误"),
        other => panic!("{other:?}"),
    }
    h.sim.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_get_the_real_services_answers() {
    let h = Harness::start(SignType::Md5).await;
    let xxe = r#"<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><appid>&x;</appid></xml>"#;
    let map = h.raw("/pay/orderquery", xxe).await;
    assert_eq!(
        (map["return_code"].as_str(), map["return_msg"].as_str()),
        ("FAIL", "XML格式错误")
    );
    let map = h.raw("/pay/orderquery", "").await;
    assert_eq!(map["return_code"], "FAIL");
    let map = h
        .raw("/pay/orderquery", "<xml><appid>wx</appid></xml>")
        .await;
    assert!(map["return_msg"].starts_with("缺少参数"), "{map:?}");

    // Signed, but without the business parameters: LACK_PARAMS, signed.
    let map = h
        .raw("/pay/unifiedorder", h.signed_xml(&[("body", "x")]))
        .await;
    assert_eq!(map["return_code"], "SUCCESS");
    assert_eq!(
        (map["result_code"].as_str(), map["err_code"].as_str()),
        ("FAIL", "LACK_PARAMS")
    );
    assert!(
        sign::verify_map(&map, &h.key).is_ok(),
        "business errors are signed"
    );

    // A signature of the other type than the declared one is wrong.
    let mut tampered =
        xml::decode(h.signed_xml(&[("out_trade_no", "ORDER-0200")]).as_bytes()).unwrap();
    tampered.insert("sign_type".into(), "HMAC-SHA256".into());
    let map = h
        .raw("/pay/orderquery", xml::encode(&tampered).unwrap())
        .await;
    assert_eq!(
        (map["return_code"].as_str(), map["return_msg"].as_str()),
        ("FAIL", "签名错误")
    );

    let get = reqwest::get(format!("{}/pay/orderquery", h.sim.base_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(get.contains("post"), "{get}");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn bills_come_as_text_or_gzip_and_parse() {
    let mut h = Harness::start(SignType::Md5).await;
    let paid = h.order_and_pay("ORDER-0300", 250).await;
    let second = h.order_and_pay("ORDER-0301", 100).await;
    h.tls_client
        .refund(&h.refund("ORDER-0301", "REFUND-300", 100, 40))
        .await
        .unwrap();
    tokio::time::timeout(WAIT, h.receiver.refund.recv())
        .await
        .unwrap()
        .unwrap();
    let day = paid.time_end.date();

    let today = DownloadBillRequest {
        bill_date: day,
        bill_type: BillType::All,
        gzip: false,
    };
    match h.client.download_bill(&today).await {
        Err(Error::Api(ApiError::V2Return { return_msg })) => {
            assert_eq!(return_msg, "Bill Creating")
        }
        other => panic!("{other:?}"),
    }
    // Two days on, the bill exists whatever the hour (it appears at 10:00 the next day).
    h.sim.state().clock.advance(172_800);

    let text = h.client.download_bill(&today).await.unwrap();
    assert!(text.starts_with("\u{feff}交易时间,公众账号ID,"));
    assert!(text.contains("\r\n"));
    let bill = parse_trade_bill(&text).unwrap();
    assert_eq!(bill.kind, TradeBillKind::All);
    assert_eq!(bill.rows.len(), 3);
    let sale = bill
        .rows
        .iter()
        .find(|r| r.out_trade_no == "ORDER-0300")
        .unwrap();
    assert_eq!(sale.transaction_id, paid.transaction_id);
    assert_eq!(sale.settlement_total_fee, Fen::new(250));
    let refund_row = bill
        .rows
        .iter()
        .find(|r| r.trade_state == "REFUND")
        .unwrap();
    assert_eq!(refund_row.transaction_id, second.transaction_id);
    assert_eq!(refund_row.refund_fee, Some(Fen::new(40)));
    assert_eq!(bill.summary.total_count, 3);
    assert_eq!(bill.summary.settlement_total_fee, Fen::new(350));
    assert_eq!(bill.summary.refund_fee, Fen::new(40));
    assert_eq!(
        format!("\u{feff}{}", bill.to_text().unwrap()),
        text,
        "the simulator writes bills with the library's writer, after the BOM of real bills"
    );

    let gz = h
        .client
        .download_trade_bill(&DownloadBillRequest {
            gzip: true,
            ..today.clone()
        })
        .await
        .unwrap();
    assert_eq!(gz, bill);
    let success = h
        .client
        .download_trade_bill(&DownloadBillRequest {
            bill_type: BillType::Success,
            ..today.clone()
        })
        .await
        .unwrap();
    assert_eq!(success.kind, TradeBillKind::Success);
    assert_eq!(success.rows.len(), 2);
    let refunds = h
        .client
        .download_trade_bill(&DownloadBillRequest {
            bill_type: BillType::Refund,
            ..today.clone()
        })
        .await
        .unwrap();
    assert_eq!(refunds.kind, TradeBillKind::Refund);
    assert_eq!(refunds.rows.len(), 1);
    assert!(refunds.rows[0].refund_success_time.is_some());

    let empty_day = day.previous_day().unwrap();
    let err = h
        .client
        .download_bill(&DownloadBillRequest {
            bill_date: empty_day,
            ..today.clone()
        })
        .await
        .unwrap_err();
    assert!(is_no_bill(&err), "{err:?}");

    // The raw error body is the documented unsigned XML with error_code 20002.
    let format = format_description!("[year][month][day]");
    let date = empty_day.format(&format).unwrap();
    let map = h
        .raw(
            "/pay/downloadbill",
            h.signed_xml(&[("bill_date", &date), ("bill_type", "ALL")]),
        )
        .await;
    assert_eq!(map["return_msg"], "No Bill Exist");
    assert_eq!(map["error_code"], "20002");
    assert!(!map.contains_key("sign"));
    let map = h
        .raw(
            "/pay/downloadbill",
            h.signed_xml(&[("bill_date", &date), ("bill_type", "NOPE")]),
        )
        .await;
    assert_eq!(map["return_msg"], "invalid bill_type");
    h.sim.shutdown().await;
}
