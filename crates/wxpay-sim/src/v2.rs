//! API v2 as `api.mch.weixin.qq.com` serves it (§A): XML in and out, every merchant signature
//! verified in the `sign_type` the request declares, every successful answer signed the same way
//! with a fresh `nonce_str`, protocol failures as unsigned `return_code=FAIL`, business failures
//! as signed `result_code=FAIL` with an `err_code`. `/secapi/pay/refund` requires the merchant's
//! TLS client certificate. `downloadbill` answers the bill as text or gzip, unsigned.
//!
//! The refund notification of v2 refunds (encrypted `req_info`) is registered with the state by
//! [`router`]; the payment notification is sent by the core (`crate::notify`).

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use time::{Date, OffsetDateTime};
use wxpay::Fen;
use wxpay::v2::models::{RefundAccount, validate_notify_url, validate_out_refund_no, validate_out_trade_no};
use wxpay::v2::notify::{RefundNotification, build_refund_notification};
use wxpay::v2::sign::{constant_time_eq_ignore_case, sign_map};
use wxpay::v2::xml::{self, XmlError};
use wxpay::v2::{ErrCode, SignType, XmlMap};

use crate::app::AppState;
use crate::bills::{self, TradeBillType};
use crate::notify::{DeliveryKind, DeliverySigning, NewDelivery};
use crate::server::{ClientCertificate, Tls};
use crate::state::{
    ApiVersion, CST, NewOrder, NewRefund, Order, OrderError, OrderRef, Refund, RefundStatus, TradeType, cst_date,
    dashed_time, parse_v2_time, v2_time,
};

/// How far back `downloadbill` serves bills, in days (3 months).
pub const BILL_HISTORY_DAYS: i64 = 92;
/// At most this many refunds in one `refundquery` answer; `offset` pages through the rest.
pub const REFUNDS_PER_PAGE: usize = 20;
/// Where a v2 refund sends the money, as `refund_recv_accout` says.
pub const REFUND_RECEIVER: &str = "支付用户零钱";

const XML_CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// The v2 router (state applied). Also registers the v2 refund notification builder.
pub fn router(state: Arc<AppState>) -> Router {
    state.set_v2_refund_notifier(Arc::new(refund_notification));
    Router::new()
        .route("/pay/unifiedorder", endpoint(post(unified_order)))
        .route("/pay/orderquery", endpoint(post(order_query)))
        .route("/pay/closeorder", endpoint(post(close_order)))
        .route("/secapi/pay/refund", endpoint(post(refund)))
        .route("/pay/refundquery", endpoint(post(refund_query)))
        .route("/pay/downloadbill", endpoint(post(download_bill)))
        .with_state(state)
}

fn endpoint(route: MethodRouter<Arc<AppState>>) -> MethodRouter<Arc<AppState>> {
    route.fallback(|| async { return_fail("请使用post方法") })
}

// ---------------------------------------------------------------------------------------------
// Answers

fn xml_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, XML_CONTENT_TYPE)], body).into_response()
}

/// A protocol failure: `return_code=FAIL` and the message, unsigned (§A.2).
fn return_fail(msg: &str) -> Response {
    let mut map = XmlMap::new();
    map.insert("return_code".into(), "FAIL".into());
    map.insert("return_msg".into(), msg.into());
    xml_response(xml::encode(&map).unwrap_or_default())
}

/// A `downloadbill` failure: `return_code=FAIL`, the message and, when known, the `error_code`.
fn bill_fail(msg: &str, error_code: Option<&str>) -> Response {
    let mut map = XmlMap::new();
    map.insert("return_code".into(), "FAIL".into());
    map.insert("return_msg".into(), msg.into());
    if let Some(code) = error_code {
        map.insert("error_code".into(), code.into());
    }
    xml_response(xml::encode(&map).unwrap_or_default())
}

/// A verified request: its parameters and the `sign_type` it declared (answers use it too).
struct Call {
    params: XmlMap,
    sign_type: SignType,
}

impl Call {
    fn get(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn require(&self, key: &str) -> Result<&str, Response> {
        self.get(key)
            .ok_or_else(|| self.business_error(&ErrCode::LackParams, &format!("缺少参数{key}")))
    }

    /// A signed answer with `result_code=SUCCESS` and `fields`.
    fn success(&self, state: &AppState, fields: XmlMap) -> Response {
        self.signed(state, "SUCCESS", fields)
    }

    /// A signed answer with `result_code=FAIL`, `err_code` and `err_code_des`.
    fn business_error(&self, err_code: &ErrCode, des: &str) -> Response {
        let mut fields = XmlMap::new();
        fields.insert("err_code".into(), err_code.as_str().to_owned());
        fields.insert("err_code_des".into(), des.to_owned());
        fields.insert("__fail".into(), String::new());
        // Marker removed in `signed`; the state is needed for the key, so business errors are
        // finished by `respond`.
        xml_response(String::new());
        let _ = fields;
        unreachable_business_error()
    }

    fn signed(&self, state: &AppState, result_code: &str, mut fields: XmlMap) -> Response {
        let m = &state.merchant;
        fields.insert("return_code".into(), "SUCCESS".into());
        fields.insert("return_msg".into(), "OK".into());
        fields.insert("appid".into(), self.get("appid").unwrap_or(&m.appid).to_owned());
        fields.insert("mch_id".into(), m.mchid.clone());
        fields.insert("nonce_str".into(), wxpay::nonce::nonce());
        fields.insert("result_code".into(), result_code.into());
        if self.sign_type == SignType::HmacSha256 {
            fields.insert("sign_type".into(), self.sign_type.as_str().into());
        }
        let sign = sign_map(&fields, &m.api_v2_key, self.sign_type);
        fields.insert("sign".into(), sign);
        match xml::encode(&fields) {
            Ok(body) => xml_response(body),
            Err(_) => return_fail("系统错误"),
        }
    }
}
