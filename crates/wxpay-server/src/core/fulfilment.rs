//! Fulfilment (小程序发货信息管理服务): WeChat holds a managed mini program's payment until
//! the shipping information of the payment is uploaded (`/wxa/sec/order/upload_shipping_info`)
//! and the buyer confirms receipt.
//!
//! - Express and same-city orders ship in parcels, recorded by the back office ([`ship`]). The
//!   last parcel (the only one of a same-city order) marks the order fully shipped and writes
//!   the upload's intent in the same transaction; the upload is then tried at once.
//! - Virtual and pickup orders are uploaded by the job after payment (intent written by
//!   [`crate::store::Store::enqueue_automatic_uploads`]), never in the payment path.
//! - One upload per order, exactly once: each call is counted before it is sent, and an upload
//!   with a call behind it asks WeChat (`get_order`) before sending again, since WeChat allows
//!   one re-upload only and an answer may have been lost after WeChat applied it.
//!
//! - An express parcel names an express company of WeChat's list for the order's mini program
//!   (`get_delivery_list`, cached: [`crate::core::mp_facts`]); the items of the parcels, summed,
//!   never exceed the order, and a last parcel that lists items covers the rest of the order.
//! - Before an upload, WeChat is asked (cached) whether the mini program is under trade
//!   management: when it is not, nothing is uploaded and the upload is `not_managed`.
//!
//! What is sent: `order_key` by `transaction_id` (a paid order has one; else `mchid` +
//! `out_trade_no`), `logistics_type` from the order's delivery, `delivery_mode` unified for one
//! parcel and split (`is_all_delivered: true`) for several, one `shipping_list` item per parcel
//! (its `item_desc` from the parcel's lines, or the order's description), the payer's openid and
//! the time of the call.

use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;
use wxpay::mp::ErrCode;
use wxpay::mp::shipping::{
    LogisticsType, OrderKey, OrderRef, OrderState, Shipment as WxShipment, ShippingItem,
    TradeOrder, UploadShippingInfo,
};

use crate::registry::{Registry, RouteError};
use crate::store::{
    Delivery, NewShipment, Order, ShipRefusal, Shipment, ShipmentItem, ShipmentRecorded,
    ShippingUpload, Store, StoreError, now_ms,
};

/// The most parcels of one order (WeChat's `shipping_list` limit).
pub const MAX_PARCELS: i64 = wxpay::mp::shipping::MAX_SHIPPING_ITEMS as i64;

/// WeChat's deadline to ship ordinary goods: 48 hours after payment (SHIPPING_AND_PUSH.md 1.1;
/// `trade_manage_remind_shipping` is pushed after it).
pub const SHIPPING_DEADLINE_HOURS: u32 = 48;

/// How long the caller that records the last parcel holds the upload before the job may take
/// it (when the caller's attempt never finishes).
pub const FIRST_ATTEMPT_LEASE: Duration = Duration::from_secs(60);

/// A fulfilment operation's failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FulfilmentError {
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// No such order.
    #[error("no such order")]
    OrderNotFound,
    /// The order's state does not allow it.
    #[error("{0}")]
    WrongState(String),
    /// The order's merchant is not served here.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// WeChat could not be asked something the request needs (and no earlier answer is kept).
    #[error("{0}")]
    Unavailable(String),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A parcel as the back office sends it.
#[derive(Clone, Debug)]
pub struct ShipRequest {
    /// The order.
    pub out_trade_no: String,
    /// WeChat's `delivery_id` of the express company.
    pub express_company: String,
    /// The tracking number.
    pub tracking_no: String,
    /// The order's lines in it.
    pub items: Vec<ShipmentItem>,
    /// Whether it is the last parcel.
    pub last: bool,
    /// SF Express: the receiver's masked phone number.
    pub receiver_contact: Option<String>,
}

/// What [`ship`] did.
#[derive(Clone, Debug)]
pub enum Shipped {
    /// A new parcel (and, when it completed the shipping, the upload as it is after the first
    /// attempt).
    New {
        /// The parcel.
        shipment: Shipment,
        /// The order after it (and after the upload, when it was made).
        order: Order,
        /// The upload, when the order is fully shipped.
        upload: Option<ShippingUpload>,
    },
    /// The same parcel was recorded before; nothing changed.
    Repeated {
        /// The parcel.
        shipment: Shipment,
        /// The order.
        order: Order,
    },
}

/// What one upload attempt did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadOutcome {
    /// WeChat has the shipping information now (uploaded, or found there).
    Uploaded,
    /// It failed and is tried again later.
    Retrying(String),
    /// WeChat refused it for good.
    Failed(String),
    /// Nothing done: not pending any more, or the lease was lost.
    Skipped,
    /// Not needed: the mini program is not under trade management (the upload is
    /// `not_managed`).
    NotManaged,
}

fn visible_ascii(field: &str, value: &str) -> Result<(), FulfilmentError> {
    if value.is_empty() || value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(FulfilmentError::Invalid(format!(
            "{field} must be 1 to 128 visible ASCII characters"
        )));
    }
    Ok(())
}

/// `item_desc` of a parcel: its lines' names (and quantities), or the order's description; cut
/// to WeChat's 120 characters.
fn item_desc(order: &Order, items: &[ShipmentItem]) -> String {
    let text = if items.is_empty() {
        order.description.clone()
    } else {
        items
            .iter()
            .map(|i| {
                let name = order
                    .items
                    .iter()
                    .find(|l| l.sku == i.sku)
                    .map_or(i.sku.as_str(), |l| l.name.as_str());
                if i.quantity == 1 {
                    name.to_owned()
                } else {
                    format!("{name} x{}", i.quantity)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let max = wxpay::mp::shipping::ITEM_DESC_MAX_CHARS;
    if text.chars().count() <= max {
        text
    } else {
        let mut cut: String = text.chars().take(max - 3).collect();
        cut.push_str("...");
        cut
    }
}

fn order_key(order: &Order) -> OrderKey {
    match &order.transaction_id {
        Some(id) => OrderKey::transaction_id(id.clone()),
        None => OrderKey::out_trade_no(
            order
                .sub_mchid
                .clone()
                .unwrap_or_else(|| order.mchid.clone()),
            order.out_trade_no.clone(),
        ),
    }
}

fn order_ref(order: &Order) -> OrderRef {
    match &order.transaction_id {
        Some(id) => OrderRef::TransactionId(id.clone()),
        None => OrderRef::MerchantTradeNo {
            merchant_id: order.mchid.clone(),
            sub_merchant_id: order.sub_mchid.clone(),
            merchant_trade_no: order.out_trade_no.clone(),
        },
    }
}

fn logistics(delivery: Delivery) -> LogisticsType {
    match delivery {
        Delivery::Express => LogisticsType::Express,
        Delivery::SameCity => LogisticsType::SameCity,
        Delivery::Virtual => LogisticsType::Virtual,
        Delivery::Pickup => LogisticsType::SelfPickup,
    }
}

fn parcel_item(s: &Shipment) -> ShippingItem {
    let item = ShippingItem::express(
        s.express_company.clone(),
        s.tracking_no.clone(),
        s.item_desc.clone(),
    );
    match &s.receiver_contact {
        Some(c) => item.receiver_contact(c.clone()),
        None => item,
    }
}

/// The upload of an order with its parcels (none for virtual and pickup orders).
fn upload_request(order: &Order, parcels: &[Shipment]) -> UploadShippingInfo {
    let delivery = order.delivery.unwrap_or_default();
    let shipment = match parcels {
        [] => WxShipment::unified(
            logistics(delivery),
            ShippingItem::described(item_desc(order, &[])),
        ),
        [one] => WxShipment::unified(logistics(delivery), parcel_item(one)),
        several => WxShipment::split(several.iter().map(parcel_item).collect(), true),
    };
    UploadShippingInfo {
        order_key: order_key(order),
        shipment,
        upload_time: OffsetDateTime::now_utc(),
        payer_openid: order
            .payer_openid
            .clone()
            .unwrap_or_else(|| order.openid.clone()),
    }
}

/// Records a parcel of a paid express or same-city order; when it is the last, the order is
/// fully shipped and its shipping information is uploaded (first attempt now; the job retries).
///
/// # Errors
/// [`FulfilmentError`]: invalid input (nothing written), no such order, a state that does not
/// allow it (nothing written), the database.
pub async fn ship(
    store: &Store,
    registry: &Registry,
    request: ShipRequest,
    owner: &str,
) -> Result<Shipped, FulfilmentError> {
    let Some(order) = store.order(&request.out_trade_no).await? else {
        return Err(FulfilmentError::OrderNotFound);
    };
    let express_company = request.express_company.trim().to_owned();
    let tracking_no = request.tracking_no.trim().to_owned();
    visible_ascii("express_company", &express_company)?;
    visible_ascii("tracking_no", &tracking_no)?;
    if order.delivery.unwrap_or_default() == Delivery::Express {
        check_express_company(registry, &order, &express_company).await?;
    }
    let mut seen = std::collections::HashSet::new();
    for item in &request.items {
        let Some(line) = order.items.iter().find(|l| l.sku == item.sku) else {
            return Err(FulfilmentError::Invalid(format!(
                "sku {:?} is not a line of order {}",
                item.sku, order.out_trade_no
            )));
        };
        if !seen.insert(item.sku.as_str()) {
            return Err(FulfilmentError::Invalid(format!(
                "sku {:?} is listed twice",
                item.sku
            )));
        }
        if !(1..=line.quantity).contains(&item.quantity) {
            return Err(FulfilmentError::Invalid(format!(
                "quantity of {:?} must be 1 to {}",
                item.sku, line.quantity
            )));
        }
    }
    let new = NewShipment {
        out_trade_no: order.out_trade_no.clone(),
        item_desc: item_desc(&order, &request.items),
        express_company,
        tracking_no,
        items: request.items,
        receiver_contact: request
            .receiver_contact
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty()),
        last: request.last,
    };
    // WeChat's own checks of a parcel (lengths, SF Express's contact), before anything is
    // written.
    let probe = Shipment {
        id: 0,
        out_trade_no: new.out_trade_no.clone(),
        express_company: new.express_company.clone(),
        tracking_no: new.tracking_no.clone(),
        items: Vec::new(),
        item_desc: new.item_desc.clone(),
        receiver_contact: new.receiver_contact.clone(),
        is_last: true,
        created_at: 0,
    };
    let mut check = upload_request(&order, std::slice::from_ref(&probe));
    check.shipment.logistics_type = LogisticsType::Express;
    check.order_key = OrderKey::out_trade_no("1", order.out_trade_no.clone());
    check.payer_openid = "o".into();
    if let Err(e) = check.validate() {
        return Err(FulfilmentError::Invalid(match e {
            wxpay::Error::InvalidRequest(m) => m.replace("shipping_list[0].", ""),
            other => other.to_string(),
        }));
    }
    let lease = i64::try_from(FIRST_ATTEMPT_LEASE.as_millis()).unwrap_or(60_000);
    match store
        .record_shipment(&new, owner, lease, MAX_PARCELS)
        .await?
    {
        ShipmentRecorded::NotFound => Err(FulfilmentError::OrderNotFound),
        ShipmentRecorded::Repeated { shipment, order } => Ok(Shipped::Repeated { shipment, order }),
        ShipmentRecorded::Refused(
            _,
            ShipRefusal::MoreThanOrdered(m) | ShipRefusal::ItemsLeftOver(m),
        ) => Err(FulfilmentError::Invalid(m)),
        ShipmentRecorded::Refused(order, refusal) => {
            Err(FulfilmentError::WrongState(refusal_text(&order, refusal)))
        }
        ShipmentRecorded::Recorded {
            shipment,
            order,
            upload: None,
        } => Ok(Shipped::New {
            shipment,
            order,
            upload: None,
        }),
        ShipmentRecorded::Recorded {
            shipment,
            upload: Some(upload),
            ..
        } => {
            let outcome = attempt_upload(store, registry, &upload, owner, UPLOAD_RETRY).await;
            if let Err(e) = &outcome {
                tracing::warn!(out_trade_no = %upload.out_trade_no, error = %e, "first shipping upload failed; the job retries");
            }
            let order = store
                .order(&upload.out_trade_no)
                .await?
                .ok_or(FulfilmentError::OrderNotFound)?;
            let upload = store.shipping_upload(&upload.out_trade_no).await?;
            Ok(Shipped::New {
                shipment,
                order,
                upload,
            })
        }
    }
}

/// The express companies WeChat takes from the mini program of `order` (cached).
///
/// # Errors
/// [`FulfilmentError::Route`], or [`FulfilmentError::Unavailable`] when WeChat cannot be asked
/// and no list is kept.
pub async fn delivery_companies(
    registry: &Registry,
    order: &Order,
) -> Result<std::sync::Arc<Vec<wxpay::mp::shipping::DeliveryCompany>>, FulfilmentError> {
    let wechat = registry.for_order(order)?;
    companies_of(registry, &wechat.mp).await
}

/// The express companies WeChat takes from the mini program of `mp` (cached).
///
/// # Errors
/// [`FulfilmentError::Unavailable`] when WeChat cannot be asked and no list is kept.
pub async fn companies_of(
    registry: &Registry,
    mp: &wxpay::mp::MpClient,
) -> Result<std::sync::Arc<Vec<wxpay::mp::shipping::DeliveryCompany>>, FulfilmentError> {
    registry.facts().delivery_companies(mp).await.map_err(|e| {
        tracing::warn!(appid = %mp.appid(), error = %e, "express company list not available");
        FulfilmentError::Unavailable(format!(
            "the express companies of mini program {} could not be had from WeChat; try again later",
            mp.appid()
        ))
    })
}

async fn check_express_company(
    registry: &Registry,
    order: &Order,
    express_company: &str,
) -> Result<(), FulfilmentError> {
    let companies = delivery_companies(registry, order).await?;
    if companies.iter().any(|c| c.delivery_id == express_company) {
        Ok(())
    } else {
        Err(FulfilmentError::Invalid(format!(
            "express_company: {express_company:?} is not one of WeChat's express companies for \
             mini program {} (GET /admin/apps/{}/delivery-companies lists them)",
            order.appid, order.appid
        )))
    }
}

fn refusal_text(order: &Order, refusal: ShipRefusal) -> String {
    let no = &order.out_trade_no;
    match refusal {
        ShipRefusal::NotPaid => format!("order {no} is not paid (status {})", order.status),
        ShipRefusal::FullyRefunded => format!("order {no} is fully refunded"),
        ShipRefusal::NotParcels(d) => format!(
            "order {no} is delivered as {}: its shipping information is uploaded automatically after payment",
            d.as_str()
        ),
        ShipRefusal::AlreadyShipped(s) => {
            format!("order {no} is already {}", s.as_str())
        }
        ShipRefusal::TooManyParcels => {
            format!("order {no} has {MAX_PARCELS} parcels, the most WeChat takes")
        }
        ShipRefusal::MoreThanOrdered(m) | ShipRefusal::ItemsLeftOver(m) => m,
    }
}

/// The first retry delay of an upload; doubled per attempt up to an hour.
pub const UPLOAD_RETRY: Duration = Duration::from_secs(30);

fn retry_at(base: Duration, attempts: i64) -> i64 {
    let base = i64::try_from(base.as_millis()).unwrap_or(30_000);
    let shift = u32::try_from(attempts.clamp(1, 8) - 1).unwrap_or(0);
    now_ms().saturating_add(base.saturating_mul(1 << shift).min(3_600_000))
}

/// Whether WeChat's record shows the shipping information of the order.
fn has_shipping(t: &TradeOrder) -> bool {
    t.shipping.finish_shipping
        || matches!(
            t.order_state,
            OrderState::Shipped
                | OrderState::ReceiptConfirmed
                | OrderState::Completed
                | OrderState::AwaitingSettlement
        )
}

/// How an upload's failure is handled.
enum Failure {
    /// WeChat has the shipping already (an identical re-upload, or fully shipped).
    AlreadyThere,
    /// Sending the same again will be refused again.
    Definitive,
    /// Try later.
    Retry,
}

/// After this many calls answered "no such payment" (10060001), the payment is taken as one
/// WeChat does not manage (a mini program outside trade management is found first, by
/// `is_trade_managed`; this is for the rest, e.g. a payment WeChat never indexed): the upload
/// is left `failed` for a person instead of retried for ever. With the backoff (30 s doubling
/// to an hour) that is about 8 hours after the first call.
pub const MAX_NOT_FOUND_ATTEMPTS: i64 = 14;

/// How long the job keeps asking WeChat (`get_order`) about an upload whose questions all fail
/// before leaving it `failed` for a person: a day.
pub const GIVE_UP_QUESTIONS_AFTER_MS: i64 = 24 * 3600 * 1000;

fn classify(err: &wxpay::Error, attempts: i64) -> Failure {
    match err {
        wxpay::Error::InvalidRequest(_) => Failure::Definitive,
        wxpay::Error::Api(wxpay::ApiError::MiniProgram { errcode, .. }) => match errcode {
            ErrCode::ShippingUnchanged | ErrCode::PaymentFullyShipped => Failure::AlreadyThere,
            ErrCode::PaymentNotFound if attempts >= MAX_NOT_FOUND_ATTEMPTS => Failure::Definitive,
            // Not indexed yet (a minute after payment), busy, quotas, tokens, unknown codes.
            ErrCode::PaymentNotFound | ErrCode::Other(_) => Failure::Retry,
            c if c.is_busy() || c.is_rate_limited() => Failure::Retry,
            ErrCode::AccessTokenExpired | ErrCode::InvalidCredential => Failure::Retry,
            _ => Failure::Definitive,
        },
        _ => Failure::Retry,
    }
}

/// One attempt at a leased pending upload: asks WeChat first when an earlier call may have
/// reached it, then uploads, and records the outcome (`uploaded` with the `order.shipped`
/// webhook, a retry, or `failed`).
///
/// # Errors
/// [`FulfilmentError::Store`]; WeChat's failures are recorded on the upload, not returned.
pub async fn attempt_upload(
    store: &Store,
    registry: &Registry,
    upload: &ShippingUpload,
    owner: &str,
    retry_base: Duration,
) -> Result<UploadOutcome, FulfilmentError> {
    let no = &upload.out_trade_no;
    let Some(order) = store.order(no).await? else {
        return Ok(UploadOutcome::Skipped);
    };
    let wechat = match registry.for_order(&order) {
        Ok(w) => w,
        Err(e) => {
            let error = e.to_string();
            store
                .upload_attempt_failed(
                    no,
                    owner,
                    &error,
                    Some(retry_at(retry_base, upload.attempts + 1)),
                )
                .await?;
            return Ok(UploadOutcome::Retrying(error));
        }
    };
    // A mini program outside trade management takes no shipping information: nothing to do.
    // When WeChat cannot say, the upload goes on (and fails or not as before).
    match registry.facts().is_trade_managed(&wechat.mp).await {
        Ok(false) => {
            let detail = json!({
                "via": "is_trade_managed",
                "appid": wechat.mp.appid(),
                "is_trade_managed": false,
            });
            tracing::info!(out_trade_no = %no, appid = %wechat.mp.appid(), "mini program not under trade management: no shipping upload");
            return Ok(match store.mark_shipping_not_managed(no, &detail).await? {
                Some(_) => UploadOutcome::NotManaged,
                None => UploadOutcome::Skipped,
            });
        }
        Ok(true) => {}
        Err(e) => {
            tracing::warn!(out_trade_no = %no, error = %e, "is_trade_managed not answered; uploading");
        }
    }
    if upload.attempts > 0 {
        // An earlier call may have reached WeChat with its answer lost: ask before sending.
        match wechat.mp.get_order(&order_ref(&order)).await {
            Ok(t) if has_shipping(&t) => {
                let detail = json!({
                    "via": "found_at_wechat",
                    "order_state": t.order_state.code(),
                    "packages": t.shipping.shipping_list.len(),
                    "attempts": upload.attempts,
                });
                store.mark_shipping_uploaded(no, &detail).await?;
                return Ok(UploadOutcome::Uploaded);
            }
            Ok(_) => {}
            Err(wxpay::Error::Api(wxpay::ApiError::MiniProgram {
                errcode: ErrCode::PaymentNotFound,
                ..
            })) => {}
            Err(e) => {
                // The question is not an upload (attempts count uploads), so its retries back
                // off with the upload's age: half of it, between `retry_base` and an hour; after
                // a day of unanswered questions the upload is left `failed` for a person.
                let error = format!("get_order: {e}");
                let age = now_ms().saturating_sub(upload.created_at);
                let next = (age < GIVE_UP_QUESTIONS_AFTER_MS).then(|| {
                    let base = i64::try_from(retry_base.as_millis()).unwrap_or(i64::MAX);
                    now_ms().saturating_add((age / 2).clamp(base.min(3_600_000), 3_600_000))
                });
                store.upload_attempt_failed(no, owner, &error, next).await?;
                return Ok(UploadOutcome::Retrying(error));
            }
        }
    }
    let parcels = store.shipments_of_order(no).await?;
    let request = upload_request(&order, &parcels);
    let Some(started) = store.start_upload_attempt(no, owner).await? else {
        return Ok(UploadOutcome::Skipped);
    };
    let detail = |via: &str| {
        json!({
            "via": via,
            "logistics_type": request.shipment.logistics_type.code(),
            "delivery_mode": request.shipment.delivery_mode.code(),
            "packages": request.shipment.shipping_list.len(),
            "attempt": started.attempts,
        })
    };
    match wechat.mp.upload_shipping_info(&request).await {
        Ok(()) => {
            store.mark_shipping_uploaded(no, &detail("upload")).await?;
            Ok(UploadOutcome::Uploaded)
        }
        Err(e) => match classify(&e, started.attempts) {
            Failure::AlreadyThere => {
                let mut d = detail("already_at_wechat");
                d["answer"] = e.to_string().into();
                store.mark_shipping_uploaded(no, &d).await?;
                Ok(UploadOutcome::Uploaded)
            }
            Failure::Definitive => {
                let error = e.to_string();
                tracing::error!(out_trade_no = %no, error = %error, "WeChat refused the shipping information");
                store.upload_attempt_failed(no, owner, &error, None).await?;
                Ok(UploadOutcome::Failed(error))
            }
            Failure::Retry => {
                let error = e.to_string();
                store
                    .upload_attempt_failed(
                        no,
                        owner,
                        &error,
                        Some(retry_at(retry_base, started.attempts)),
                    )
                    .await?;
                Ok(UploadOutcome::Retrying(error))
            }
        },
    }
}
