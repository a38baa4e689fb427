use super::*;
use crate::Error;
use crate::error::DecodeError;
use crate::money::Fen;
use crate::v2::SignType;
use crate::v2::XmlMap;
use crate::v2::client::V2Config;
use time::macros::{date, datetime};

fn cfg() -> V2Config {
    V2Config::new(
        "wxd930ea5d5a258f4f",
        "10000100",
        "192006250b4c09247ec02edce69f6a2d",
    )
    .with_sign_type(SignType::HmacSha256)
}

fn map(pairs: &[(&str, &str)]) -> XmlMap {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn order() -> UnifiedOrderRequest {
    UnifiedOrderRequest::jsapi(UnifiedOrderFields {
        body: "腾讯充值中心-QQ会员充值".into(),
        out_trade_no: "20150806125346".parse().unwrap(),
        total_fee: Fen::new(88),
        spbill_create_ip: "123.12.12.123".into(),
        notify_url: "https://example.com/wxpay/notify".into(),
        openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".parse().unwrap(),
    })
}

#[test]
fn unified_order_params_carry_identity_and_fields() {
    let mut req = order();
    req.attach = Some("深圳分店".into());
    req.time_start = Some(datetime!(2024-01-02 03:04:05 UTC));
    req.time_expire = Some(datetime!(2024-01-02 13:04:05 +08:00));
    req.profit_sharing = Some(false);
    let p = req.to_params(&cfg()).unwrap();
    assert_eq!(p["appid"], "wxd930ea5d5a258f4f");
    assert_eq!(p["mch_id"], "10000100");
    assert_eq!(p["sign_type"], "HMAC-SHA256");
    assert_eq!(p["nonce_str"].len(), 32);
    assert_eq!(p["trade_type"], "JSAPI");
    assert_eq!(p["total_fee"], "88");
    assert_eq!(p["time_start"], "20240102110405", "UTC is written as GMT+8");
    assert_eq!(p["time_expire"], "20240102130405");
    assert_eq!(p["profit_sharing"], "N");
    assert_eq!(p["attach"], "深圳分店");
    assert!(!p.contains_key("sign"));
    assert!(!p.contains_key("detail"));
    assert_ne!(req.to_params(&cfg()).unwrap()["nonce_str"], p["nonce_str"]);
}

#[test]
fn unified_order_validation_refuses_bad_input() {
    type Mutation = Box<dyn Fn(&mut UnifiedOrderRequest)>;
    // The order number and the openid are refused when they are made (see `ids`).
    for (bad, expected) in [
        ("12345".to_owned(), "out_trade_no must have 6 to 32"),
        ("x".repeat(33), "out_trade_no must have 6 to 32"),
        ("order#123".to_owned(), "out_trade_no may contain only"),
    ] {
        match OutTradeNo::try_from(bad).map_err(Error::from) {
            Err(Error::InvalidRequest(msg)) => assert!(msg.contains(expected), "{msg}"),
            other => panic!("{expected}: {other:?}"),
        }
    }
    assert!(OpenId::try_from("").is_err());
    let cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|r| r.total_fee = Fen::ZERO),
            "total_fee must be at least 1 fen",
        ),
        (
            Box::new(|r| r.notify_url = "https://a.com/n?x=1".into()),
            "query string",
        ),
        (Box::new(|r| r.notify_url = "/notify".into()), "absolute"),
        (
            Box::new(|r| r.notify_url = "ftp://a.com/n".into()),
            "absolute",
        ),
        (Box::new(|r| r.notify_url = "https:///n".into()), "host"),
        (
            Box::new(|r| r.spbill_create_ip = "localhost".into()),
            "spbill_create_ip",
        ),
        (
            Box::new(|r| r.body = String::new()),
            "body must have 1 to 128",
        ),
        (Box::new(|r| r.attach = Some("a".repeat(128))), "attach"),
        (Box::new(|r| r.body = "a\u{0}b".into()), "control"),
        (
            Box::new(|r| {
                r.time_start = Some(datetime!(2024-01-02 03:04:05 UTC));
                r.time_expire = Some(datetime!(2024-01-02 03:04:05 UTC));
            }),
            "time_expire",
        ),
    ];
    for (mutate, expected) in cases {
        let mut req = order();
        mutate(&mut req);
        match req.to_params(&cfg()) {
            Err(Error::InvalidRequest(msg)) => {
                assert!(msg.contains(expected), "{msg} / {expected}")
            }
            other => panic!("{expected}: {other:?}"),
        }
    }
    let mut ok = order();
    ok.out_trade_no = "A-b_c|d*9".parse().unwrap();
    ok.spbill_create_ip = "::1".into();
    ok.notify_url = "http://127.0.0.1:8080/notify/v2".into();
    assert!(ok.validate().is_ok());
}

#[test]
fn query_close_and_bill_params() {
    let p = OrderQueryRequest::by_transaction_id("4200000000000000000000000000")
        .to_params(&cfg())
        .unwrap();
    assert_eq!(p["transaction_id"], "4200000000000000000000000000");
    assert!(!p.contains_key("out_trade_no"));
    assert!(
        OrderQueryRequest::by_transaction_id("42-00")
            .to_params(&cfg())
            .is_err()
    );
    let p = CloseOrderRequest::new("20150806125346".parse().unwrap())
        .to_params(&cfg())
        .unwrap();
    assert_eq!(p["out_trade_no"], "20150806125346");
    let p = DownloadBillRequest {
        bill_date: date!(2024 - 03 - 05),
        bill_type: BillType::Success,
        gzip: true,
    }
    .to_params(&cfg())
    .unwrap();
    assert_eq!(
        (
            p["bill_date"].as_str(),
            p["bill_type"].as_str(),
            p["tar_type"].as_str()
        ),
        ("20240305", "SUCCESS", "GZIP")
    );
    let mut q = RefundQueryRequest::new(RefundQueryId::OutRefundNo("R@1".parse().unwrap()));
    q.offset = Some(20);
    let p = q.to_params(&cfg()).unwrap();
    assert_eq!(
        (p["out_refund_no"].as_str(), p["offset"].as_str()),
        ("R@1", "20")
    );
}

#[test]
fn refund_validation() {
    let id = OrderId::OutTradeNo("20150806125346".parse().unwrap());
    let refund = |no: &str, total: u64, refund: u64| {
        RefundRequest::new(RefundFields {
            id: id.clone(),
            out_refund_no: no.parse().unwrap(),
            total_fee: Fen::new(total),
            refund_fee: Fen::new(refund),
        })
    };
    let ok = refund("R1217752501", 100, 100);
    let p = ok.to_params(&cfg()).unwrap();
    assert_eq!(
        (p["total_fee"].as_str(), p["refund_fee"].as_str()),
        ("100", "100")
    );
    let over = refund("R1", 100, 101);
    assert!(matches!(over.validate(), Err(Error::InvalidRequest(m)) if m.contains("exceed")));
    let zero = refund("R1", 100, 0);
    assert!(zero.validate().is_err());
    assert!(OutRefundNo::try_from("R 1").is_err());
    let mut bad_url = refund("R1", 100, 1);
    bad_url.notify_url = Some("https://a.com/?q".into());
    assert!(bad_url.validate().is_err());
}

#[test]
fn order_query_answer_with_coupons() {
    let m = map(&[
        ("trade_state", "SUCCESS"),
        ("trade_state_desc", "支付成功"),
        ("out_trade_no", "1409811653"),
        ("transaction_id", "1004400740201409030005092168"),
        ("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
        ("is_subscribe", "N"),
        ("trade_type", "JSAPI"),
        ("bank_type", "CMC"),
        ("total_fee", "100"),
        ("cash_fee", "70"),
        ("coupon_fee", "30"),
        ("coupon_count", "2"),
        ("coupon_id_0", "C0"),
        ("coupon_fee_0", "10"),
        ("coupon_type_0", "CASH"),
        ("coupon_id_1", "C1"),
        ("coupon_fee_1", "20"),
        ("time_end", "20140903131540"),
        ("attach", ""),
    ]);
    let r = OrderQueryResponse::from_map(&m).unwrap();
    assert_eq!(r.trade_state, TradeState::Success);
    assert!(r.trade_state.is_paid());
    assert_eq!(r.total_fee, Some(Fen::new(100)));
    assert_eq!(r.is_subscribe, Some(false));
    assert_eq!(r.attach, None, "an empty value counts as absent");
    assert_eq!(r.time_end, Some(datetime!(2014-09-03 13:15:40 +08:00)));
    assert_eq!(
        r.coupons,
        vec![
            Coupon {
                coupon_type: Some("CASH".into()),
                coupon_id: "C0".into(),
                coupon_fee: Fen::new(10)
            },
            Coupon {
                coupon_type: None,
                coupon_id: "C1".into(),
                coupon_fee: Fen::new(20)
            },
        ]
    );

    let mut bad = m.clone();
    bad.insert("coupon_count".into(), "3".into());
    assert!(
        matches!(OrderQueryResponse::from_map(&bad), Err(DecodeError::InvalidField { field, .. }) if field == "coupon_count")
    );
    let mut bad = m.clone();
    bad.remove("coupon_fee_1");
    assert_eq!(
        OrderQueryResponse::from_map(&bad),
        Err(DecodeError::MissingField("coupon_fee_1".into()))
    );
    let mut bad = m.clone();
    bad.insert("total_fee".into(), "1.00".into());
    assert!(OrderQueryResponse::from_map(&bad).is_err());
    let mut bad = m;
    bad.insert("time_end".into(), "2014-09-03".into());
    assert!(OrderQueryResponse::from_map(&bad).is_err());

    let unpaid = OrderQueryResponse::from_map(&map(&[
        ("trade_state", "NOTPAY"),
        ("out_trade_no", "1409811653"),
    ]))
    .unwrap();
    assert_eq!(unpaid.trade_state, TradeState::NotPay);
    assert!(unpaid.trade_state.is_intermediate());
    assert_eq!(unpaid.total_fee, None);
    assert_eq!(
        TradeState::from_code("NEW"),
        TradeState::Unknown("NEW".into())
    );
}

#[test]
fn refund_query_answer_with_indexed_refunds() {
    let m = map(&[
        ("transaction_id", "4200000000000000000000000000"),
        ("out_trade_no", "20150806125346"),
        ("total_fee", "100"),
        ("cash_fee", "100"),
        ("refund_count", "2"),
        ("out_refund_no_0", "R0"),
        ("refund_id_0", "500000"),
        ("refund_fee_0", "30"),
        ("refund_status_0", "SUCCESS"),
        ("refund_recv_accout_0", "支付用户的零钱"),
        ("refund_success_time_0", "2024-01-02 03:04:05"),
        ("refund_account_0", "REFUND_SOURCE_UNSETTLED_FUNDS"),
        ("coupon_refund_count_0", "1"),
        ("coupon_refund_id_0_0", "CR"),
        ("coupon_refund_fee_0_0", "5"),
        ("out_refund_no_1", "R1"),
        ("refund_id_1", "500001"),
        ("refund_fee_1", "20"),
        ("refund_status_1", "PROCESSING"),
    ]);
    let r = RefundQueryResponse::from_map(&m).unwrap();
    assert_eq!(r.refund_count, 2);
    assert_eq!(r.refunds.len(), 2);
    let first = &r.refunds[0];
    assert_eq!(first.refund_status, RefundStatus::Success);
    assert_eq!(first.refund_fee, Fen::new(30));
    assert_eq!(first.refund_recv_accout.as_deref(), Some("支付用户的零钱"));
    assert_eq!(
        first.refund_success_time,
        Some(datetime!(2024-01-02 03:04:05 +08:00))
    );
    assert_eq!(first.refund_account, Some(RefundAccount::UnsettledFunds));
    assert_eq!(first.coupon_refunds.len(), 1);
    assert_eq!(first.coupon_refunds[0].coupon_refund_fee, Fen::new(5));
    assert_eq!(r.refunds[1].refund_status, RefundStatus::Processing);
    assert_eq!(r.refunds[1].refund_success_time, None);

    let mut bad = m.clone();
    bad.insert("refund_count".into(), "3".into());
    assert!(RefundQueryResponse::from_map(&bad).is_err());
    let mut bad = m;
    bad.remove("refund_id_1");
    assert_eq!(
        RefundQueryResponse::from_map(&bad),
        Err(DecodeError::MissingField("refund_id_1".into()))
    );
}

#[test]
fn refund_answer() {
    let m = map(&[
        ("transaction_id", "4200000000000000000000000000"),
        ("out_trade_no", "20150806125346"),
        ("out_refund_no", "R1"),
        ("refund_id", "500000"),
        ("refund_fee", "50"),
        ("total_fee", "100"),
        ("cash_fee", "100"),
        ("coupon_refund_id_0", "CR0"),
        ("coupon_refund_fee_0", "3"),
    ]);
    let r = RefundResponse::from_map(&m).unwrap();
    assert_eq!(r.refund_fee, Fen::new(50));
    assert_eq!(r.coupon_refunds.len(), 1);
    let mut bad = m;
    bad.remove("refund_id");
    assert_eq!(
        RefundResponse::from_map(&bad),
        Err(DecodeError::MissingField("refund_id".into()))
    );
}

// ---- service-provider (partner) mode ----------------------------------------------------

fn sub_merchant(sub_appid: Option<&str>) -> SubMerchant {
    let sub = SubMerchant::new("1900000109".parse().unwrap());
    match sub_appid {
        Some(appid) => sub.with_sub_appid(appid.parse().unwrap()),
        None => sub,
    }
}

/// The partner order of the golden vector below: the payer is a `sub_openid`.
fn partner_order() -> UnifiedOrderRequest {
    order()
        .with_sub_merchant(sub_merchant(Some("wx8888888888888888")))
        .with_sub_openid()
}

/// The signatures of [`partner_order`]'s parameters with `nonce_str` fixed to
/// `5K8264ILTKCH16CQ2502SI8ZNMTM67VS`, computed apart from this crate with Python's `hashlib`
/// and `hmac`: the non-empty parameters sorted by key, joined as `k=v` with `&`, then
/// `&key=192006250b4c09247ec02edce69f6a2d`; `hmac.new(key, s, sha256).hexdigest().upper()` with
/// `sign_type=HMAC-SHA256`, and `md5(s).hexdigest().upper()` with `sign_type=MD5`.
const PARTNER_HMAC_SIGN: &str = "5DB1D740B56311F7F3F46EC9D1629CA3F4DFCCBC7DBC525E638F2F3C9B2CC69F";
const PARTNER_MD5_SIGN: &str = "5C32522D837ECEE3761ED407C1C20C48";

#[test]
fn partner_unified_order_sends_sub_openid_instead_of_openid() {
    let mut p = partner_order().to_params(&cfg()).unwrap();
    assert_eq!(p["sub_mch_id"], "1900000109");
    assert_eq!(p["sub_appid"], "wx8888888888888888");
    assert_eq!(p["sub_openid"], "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
    assert!(!p.contains_key("openid"));
    assert_eq!(p["appid"], "wxd930ea5d5a258f4f", "the provider's appid");
    assert_eq!(p["mch_id"], "10000100", "the provider's mch_id");
    let keys: Vec<&str> = p.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "appid",
            "body",
            "mch_id",
            "nonce_str",
            "notify_url",
            "out_trade_no",
            "sign_type",
            "spbill_create_ip",
            "sub_appid",
            "sub_mch_id",
            "sub_openid",
            "total_fee",
            "trade_type",
        ]
    );
    p.insert(
        "nonce_str".into(),
        "5K8264ILTKCH16CQ2502SI8ZNMTM67VS".into(),
    );
    let key = "192006250b4c09247ec02edce69f6a2d";
    assert_eq!(
        crate::v2::sign::sign_map(&p, key, SignType::HmacSha256),
        PARTNER_HMAC_SIGN
    );
    p.insert("sign_type".into(), "MD5".into());
    assert_eq!(
        crate::v2::sign::sign_map(&p, key, SignType::Md5),
        PARTNER_MD5_SIGN
    );
}

#[test]
fn partner_unified_order_with_the_providers_openid() {
    // The payer of the provider's mini program: `openid`, and no sub_appid is needed.
    let req = order().with_sub_merchant(sub_merchant(None));
    let p = req.to_params(&cfg()).unwrap();
    assert_eq!(p["sub_mch_id"], "1900000109");
    assert_eq!(p["openid"], "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
    assert!(!p.contains_key("sub_openid"));
    assert!(!p.contains_key("sub_appid"));
    assert_eq!(req.paying_appid("wxsp"), "wxsp");
    assert_eq!(partner_order().paying_appid("wxsp"), "wx8888888888888888");
    // An ordinary order has none of the partner parameters.
    let p = order().to_params(&cfg()).unwrap();
    assert!(
        ["sub_mch_id", "sub_appid", "sub_openid"]
            .iter()
            .all(|k| !p.contains_key(*k))
    );
    assert_eq!(order().openid_scope, OpenIdScope::App);
    assert_eq!(order().paying_appid("wxsp"), "wxsp");
}

#[test]
fn sub_openid_needs_a_sub_appid() {
    for req in [
        order().with_sub_openid(),
        order()
            .with_sub_merchant(sub_merchant(None))
            .with_sub_openid(),
    ] {
        match req.to_params(&cfg()) {
            Err(Error::InvalidRequest(msg)) => {
                assert!(msg.contains("sub_openid requires"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(partner_order().validate().is_ok());
    // The ids are checked when they are made: 1 to 32 letters or digits (sub_mch_id), and
    // letters, digits, `_` and `-` (sub_appid).
    assert!(SubMchid::try_from("").is_err());
    assert!(SubMchid::try_from("1".repeat(33)).is_err());
    assert!(SubMchid::try_from("19000-00109").is_err());
    assert!(AppId::try_from("").is_err());
    assert!(AppId::try_from("w".repeat(33)).is_err());
    match SubMchid::try_from("").map_err(Error::from) {
        Err(Error::InvalidRequest(msg)) => assert!(msg.contains("1 to 32"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn partner_query_close_refund_and_bill_params() {
    let sub = sub_merchant(Some("wx8888888888888888"));
    let check = |p: &XmlMap| {
        assert_eq!(p["sub_mch_id"], "1900000109");
        assert_eq!(p["sub_appid"], "wx8888888888888888");
        assert_eq!(p["mch_id"], "10000100");
    };
    check(
        &OrderQueryRequest::by_out_trade_no("20150806125346".parse().unwrap())
            .with_sub_merchant(sub.clone())
            .to_params(&cfg())
            .unwrap(),
    );
    check(
        &CloseOrderRequest::new("20150806125346".parse().unwrap())
            .with_sub_merchant(sub.clone())
            .to_params(&cfg())
            .unwrap(),
    );
    let refund = RefundRequest::new(RefundFields {
        id: OrderId::TransactionId("4200000000000000000000000000".into()),
        out_refund_no: "R1".parse().unwrap(),
        total_fee: Fen::new(100),
        refund_fee: Fen::new(10),
    })
    .with_sub_merchant(sub.clone());
    check(&refund.to_params(&cfg()).unwrap());
    check(
        &RefundQueryRequest::new(RefundQueryId::OutRefundNo("R1".parse().unwrap()))
            .with_sub_merchant(sub.clone())
            .to_params(&cfg())
            .unwrap(),
    );
    // Without a sub_appid only sub_mch_id is sent.
    let p = OrderQueryRequest::by_transaction_id("4200000000000000000000000000")
        .with_sub_merchant(sub_merchant(None))
        .to_params(&cfg())
        .unwrap();
    assert_eq!(p["sub_mch_id"], "1900000109");
    assert!(!p.contains_key("sub_appid"));
    // The constructors leave partner mode off.
    assert!(
        !OrderQueryRequest::by_transaction_id("4200000000000000000000000000")
            .to_params(&cfg())
            .unwrap()
            .contains_key("sub_mch_id")
    );

    let bill = DownloadBillRequest {
        bill_date: date!(2024 - 03 - 05),
        bill_type: BillType::All,
        gzip: false,
    };
    let p = bill.to_partner_params(&cfg(), &sub.sub_mch_id).unwrap();
    assert_eq!(p["sub_mch_id"], "1900000109");
    assert_eq!(p["bill_date"], "20240305");
    assert!(!p.contains_key("sub_appid"));
    assert!(!bill.to_params(&cfg()).unwrap().contains_key("sub_mch_id"));
}

#[test]
fn partner_answers_carry_the_sub_merchant() {
    let r = UnifiedOrderResponse::from_map(&map(&[
        ("prepay_id", "wx201410272009395522657a690389285100"),
        ("trade_type", "JSAPI"),
        ("sub_appid", "wx8888888888888888"),
        ("sub_mch_id", "1900000109"),
    ]))
    .unwrap();
    assert_eq!(r.sub_appid.as_deref(), Some("wx8888888888888888"));
    assert_eq!(r.sub_mch_id.as_deref(), Some("1900000109"));

    let q = OrderQueryResponse::from_map(&map(&[
        ("trade_state", "SUCCESS"),
        ("out_trade_no", "1409811653"),
        ("openid", "o_sp"),
        ("is_subscribe", "N"),
        ("sub_appid", "wx8888888888888888"),
        ("sub_mch_id", "1900000109"),
        ("sub_openid", "o_sub"),
        ("sub_is_subscribe", "Y"),
    ]))
    .unwrap();
    assert_eq!(q.openid.as_deref(), Some("o_sp"));
    assert_eq!(q.sub_openid.as_deref(), Some("o_sub"));
    assert_eq!(q.sub_is_subscribe, Some(true));
    assert_eq!(q.sub_mch_id.as_deref(), Some("1900000109"));
    assert_eq!(q.sub_appid.as_deref(), Some("wx8888888888888888"));
    assert!(matches!(OrderQueryResponse::from_map(&map(&[
            ("trade_state", "SUCCESS"),
            ("out_trade_no", "1409811653"),
            ("sub_is_subscribe", "yes"),
        ])), Err(DecodeError::InvalidField { field, .. }) if field == "sub_is_subscribe"));
    let plain = OrderQueryResponse::from_map(&map(&[
        ("trade_state", "NOTPAY"),
        ("out_trade_no", "1409811653"),
    ]))
    .unwrap();
    assert_eq!(
        (plain.sub_mch_id, plain.sub_openid, plain.sub_is_subscribe),
        (None, None, None)
    );

    let r = RefundResponse::from_map(&map(&[
        ("transaction_id", "4200000000000000000000000000"),
        ("out_trade_no", "20150806125346"),
        ("out_refund_no", "R1"),
        ("refund_id", "500000"),
        ("refund_fee", "50"),
        ("total_fee", "100"),
        ("cash_fee", "100"),
        ("sub_mch_id", "1900000109"),
    ]))
    .unwrap();
    assert_eq!(r.sub_mch_id.as_deref(), Some("1900000109"));
    assert_eq!(r.sub_appid, None);

    let r = RefundQueryResponse::from_map(&map(&[
        ("transaction_id", "4200000000000000000000000000"),
        ("out_trade_no", "20150806125346"),
        ("total_fee", "100"),
        ("cash_fee", "100"),
        ("refund_count", "0"),
        ("sub_appid", "wx8888888888888888"),
        ("sub_mch_id", "1900000109"),
    ]))
    .unwrap();
    assert_eq!(r.sub_mch_id.as_deref(), Some("1900000109"));
    assert_eq!(r.sub_appid.as_deref(), Some("wx8888888888888888"));
}
