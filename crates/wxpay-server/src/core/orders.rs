//! Orders: one path for the mini program's orders (priced from the catalog) and the back
//! office's (priced by the merchant): committed first, then a prepay from WeChat, then the
//! signed `wx.requestPayment` object. A crash or a failed call between the steps leaves an
//! order that [`payment`] completes later. Closing goes to WeChat first, then here.

use std::collections::HashSet;

use serde_json::json;
use wxpay::RequestPayment;

use super::payments::sync_with_wechat;
use crate::store::{
    Delivery, EventKind, NewOrder, Order, OrderItem, OrderStatus, Store, StoreError, Transition,
    now_ms,
};
use crate::wechat::{PREPAY_RENEW_AFTER_MS, WeChat};

/// Most lines in one order.
pub const MAX_ORDER_LINES: usize = 20;
/// Most of one item in one order.
pub const MAX_QUANTITY: u64 = 99;
/// The largest order total (WeChat's own limits are far below; this keeps sums exact).
pub const MAX_ORDER_FEN: u64 = 10_000_000_000;

/// Why an order could not be placed, paid or closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    /// The lines or amounts are not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// A line names no active product.
    #[error("no product with sku {0:?}")]
    UnknownSku(String),
    /// No such order (of this buyer).
    #[error("no such order")]
    NotFound,
    /// The order is not `NOTPAY`.
    #[error("order {out_trade_no} is {status} and cannot be paid")]
    NotPayable {
        /// The order.
        out_trade_no: String,
        /// Its state.
        status: OrderStatus,
    },
    /// The order is too close to its expiry for WeChat.
    #[error("order {0} has expired: make a new one")]
    Expired(String),
    /// The order is paid (`meanwhile`: found out while closing it).
    #[error("order {out_trade_no} {} paid", if *.meanwhile { "was" } else { "is" })]
    Paid {
        /// The order.
        out_trade_no: String,
        /// Whether it was paid while it was being closed.
        meanwhile: bool,
    },
    /// WeChat refused or failed the prepay; asking for the payment again retries.
    #[error(
        "prepay of order {out_trade_no} failed; POST /api/orders/{out_trade_no}/payment retries: {source}"
    )]
    Prepay {
        /// The order.
        out_trade_no: String,
        /// WeChat's error.
        source: wxpay::Error,
    },
    /// WeChat failed to close the order.
    #[error("closing order {out_trade_no} at WeChat failed: {source}")]
    Close {
        /// The order.
        out_trade_no: String,
        /// WeChat's error.
        source: wxpay::Error,
    },
    /// Signing `wx.requestPayment` failed.
    #[error("signing wx.requestPayment: {0}")]
    Signing(wxpay::Error),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A line as the buyer asks for it.
#[derive(Clone, Debug)]
pub struct Line {
    /// The product.
    pub sku: String,
    /// How many.
    pub quantity: u64,
}

/// What is ordered: lines priced from the catalog, or an amount the merchant set.
#[derive(Clone, Debug)]
pub enum Priced {
    /// The mini program's order.
    Catalog(Vec<Line>),
    /// The back office's order: its amount and the description WeChat shows.
    Merchant {
        /// In fen.
        amount_fen: u64,
        /// 1 to 127 characters.
        description: String,
        /// How it is delivered.
        delivery: Delivery,
    },
}

/// An order to place.
#[derive(Clone, Debug)]
pub struct OrderRequest {
    /// The buyer.
    pub openid: String,
    /// What is ordered.
    pub priced: Priced,
    /// The payer's IP, sent to WeChat.
    pub client_ip: String,
    /// How long it can be paid.
    pub ttl_secs: u64,
}

/// An order that can be paid: the order and the object for `wx.requestPayment`.
#[derive(Clone, Debug)]
pub struct PayableOrder {
    /// The order as stored.
    pub order: Order,
    /// Exactly what the mini program passes to `wx.requestPayment`.
    pub payment: RequestPayment,
}

/// A new order number: `WX`, the time and 12 random letters and digits.
#[must_use]
pub fn new_out_trade_no() -> String {
    super::new_merchant_number("WX")
}

/// Places an order: priced, committed (`NOTPAY`), then prepaid at WeChat and signed.
///
/// # Errors
/// [`OrderError`]; after the commit, a failed prepay leaves the order for [`payment`].
pub async fn place(
    store: &Store,
    wechat: &WeChat,
    request: OrderRequest,
) -> Result<PayableOrder, OrderError> {
    let (source, description, items, amount_fen, delivery) = match request.priced {
        Priced::Catalog(lines) => {
            let (items, total, delivery) = price(store, &lines).await?;
            ("api", describe(&items), items, total, delivery)
        }
        Priced::Merchant {
            amount_fen,
            description,
            delivery,
        } => {
            if !(1..=MAX_ORDER_FEN).contains(&amount_fen) {
                return Err(OrderError::Invalid(format!(
                    "amount_fen must be between 1 and {MAX_ORDER_FEN}"
                )));
            }
            ("admin", description, Vec::new(), amount_fen, delivery)
        }
    };
    let ttl_ms = i64::try_from(request.ttl_secs).unwrap_or(3600) * 1000;
    let order = store
        .insert_order_delivered(
            &NewOrder {
                out_trade_no: new_out_trade_no(),
                openid: request.openid,
                appid: wechat.appid.clone(),
                mchid: wechat.mchid.clone(),
                sub_mchid: wechat.partner.as_ref().map(|p| p.sub_mchid.clone()),
                api_version: wechat.api_version,
                source,
                description,
                items,
                amount_fen,
                client_ip: request.client_ip,
                expires_at: now_ms() + ttl_ms,
            },
            delivery,
        )
        .await?;
    payment(store, wechat, &order).await
}

/// The catalog's prices of the lines, their total, and how the order is delivered
/// ([`Delivery::of_lines`] of the products).
async fn price(
    store: &Store,
    lines: &[Line],
) -> Result<(Vec<OrderItem>, u64, Delivery), OrderError> {
    if lines.is_empty() || lines.len() > MAX_ORDER_LINES {
        return Err(OrderError::Invalid(format!(
            "items must hold 1 to {MAX_ORDER_LINES} lines"
        )));
    }
    let mut seen = HashSet::new();
    let mut items = Vec::with_capacity(lines.len());
    let mut total: u64 = 0;
    let mut deliveries = Vec::with_capacity(lines.len());
    for line in lines {
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            return Err(OrderError::Invalid(format!(
                "quantity of {:?} must be 1 to {MAX_QUANTITY}",
                line.sku
            )));
        }
        if !seen.insert(line.sku.as_str()) {
            return Err(OrderError::Invalid(format!(
                "sku {:?} is listed twice",
                line.sku
            )));
        }
        let product = match store.product(&line.sku).await? {
            Some(p) if p.active => p,
            _ => return Err(OrderError::UnknownSku(line.sku.clone())),
        };
        let line_total = product
            .price_fen
            .checked_mul(line.quantity)
            .ok_or_else(|| OrderError::Invalid("order total overflows".into()))?;
        total = total
            .checked_add(line_total)
            .filter(|t| *t <= MAX_ORDER_FEN)
            .ok_or_else(|| OrderError::Invalid("order total is too large".into()))?;
        deliveries.push(product.delivery);
        items.push(OrderItem {
            sku: product.sku,
            name: product.name,
            quantity: u32::try_from(line.quantity)
                .map_err(|_| OrderError::Invalid("quantity too large".into()))?,
            unit_price_fen: product.price_fen,
        });
    }
    Ok((items, total, Delivery::of_lines(deliveries)))
}

/// The description WeChat shows: the item names and quantities, cut to 127 characters.
fn describe(items: &[OrderItem]) -> String {
    let text = items
        .iter()
        .map(|i| {
            if i.quantity == 1 {
                i.name.clone()
            } else {
                format!("{} x{}", i.name, i.quantity)
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    if text.chars().count() <= 127 {
        text
    } else {
        let mut cut: String = text.chars().take(124).collect();
        cut.push_str("...");
        cut
    }
}

/// Fresh `wx.requestPayment` parameters for an unpaid order (a new prepay when there is none
/// or it is about to expire).
///
/// # Errors
/// [`OrderError`].
pub async fn payment(
    store: &Store,
    wechat: &WeChat,
    order: &Order,
) -> Result<PayableOrder, OrderError> {
    let (order, prepay_id) = ensure_prepay(store, wechat, order).await?;
    let payment = wechat
        .request_payment(&order, &prepay_id)
        .map_err(OrderError::Signing)?;
    Ok(PayableOrder { order, payment })
}

fn not_payable(order: &Order) -> OrderError {
    OrderError::NotPayable {
        out_trade_no: order.out_trade_no.clone(),
        status: order.status,
    }
}

/// A prepay_id valid for a while yet: the stored one, or a new one from WeChat (when there is
/// none, after a crash between commit and prepay or a failed call, or when it is about to
/// expire), stored before it is returned.
///
/// # Errors
/// [`OrderError`]: not payable, expired, WeChat failed, the database.
pub async fn ensure_prepay(
    store: &Store,
    wechat: &WeChat,
    order: &Order,
) -> Result<(Order, String), OrderError> {
    if order.status != OrderStatus::NotPay {
        return Err(not_payable(order));
    }
    let now = now_ms();
    if let (Some(prepay_id), Some(at)) = (&order.prepay_id, order.prepay_created_at)
        && now - at < PREPAY_RENEW_AFTER_MS
    {
        return Ok((order.clone(), prepay_id.clone()));
    }
    // WeChat needs at least a minute before time_expire.
    if order.expires_at - now < 60_000 {
        return Err(OrderError::Expired(order.out_trade_no.clone()));
    }
    let renewed = order.prepay_id.is_some();
    let prepay_id = match wechat.prepay(order).await {
        Ok(id) => id,
        Err(err) => {
            tracing::warn!(out_trade_no = %order.out_trade_no, error = %err, "prepay failed");
            let detail = json!({ "error": err.to_string(), "renewed": renewed });
            if let Err(e) = store
                .add_event(&order.out_trade_no, EventKind::PrepayFailed, &detail)
                .await
            {
                tracing::error!(error = %e, "recording a failed prepay");
            }
            return Err(OrderError::Prepay {
                out_trade_no: order.out_trade_no.clone(),
                source: err,
            });
        }
    };
    match store
        .store_prepay(&order.out_trade_no, &prepay_id, renewed)
        .await?
    {
        Transition::Applied(updated) => Ok((updated, prepay_id)),
        Transition::Unchanged(o) | Transition::Refused(o) => Err(not_payable(&o)),
        Transition::NotFound => Err(OrderError::NotFound),
    }
}

/// Closes an unpaid order at WeChat, then here (`order.closed` webhook). A closed order is
/// returned as it is. If WeChat refuses because the order was paid meanwhile, the payment is
/// applied and [`OrderError::Paid`] returned.
///
/// # Errors
/// [`OrderError`]: paid, WeChat failed, the database.
pub async fn close(
    store: &Store,
    wechat: &WeChat,
    order: &Order,
    via: &str,
) -> Result<Order, OrderError> {
    let paid = |o: &Order, meanwhile| OrderError::Paid {
        out_trade_no: o.out_trade_no.clone(),
        meanwhile,
    };
    match order.status {
        OrderStatus::Closed => return Ok(order.clone()),
        OrderStatus::Success | OrderStatus::Refund => return Err(paid(order, false)),
        OrderStatus::NotPay | OrderStatus::PayError => {}
    }
    if let Err(err) = wechat.close(order).await {
        // The usual reason is a payment that arrived meanwhile: find out, and apply it.
        let synced = sync_with_wechat(store, wechat, order).await?;
        if synced.status.is_paid() {
            return Err(paid(order, true));
        }
        if synced.status == OrderStatus::Closed {
            return Ok(synced);
        }
        tracing::warn!(out_trade_no = %order.out_trade_no, error = %err, "closing at WeChat failed");
        return Err(OrderError::Close {
            out_trade_no: order.out_trade_no.clone(),
            source: err,
        });
    }
    let detail = json!({ "via": via, "api_version": order.api_version.as_str() });
    match store.mark_closed(&order.out_trade_no, &detail).await? {
        Transition::Applied(o) | Transition::Unchanged(o) => Ok(o),
        Transition::Refused(o) if o.status.is_paid() => Err(paid(&o, true)),
        Transition::Refused(o) => Ok(o),
        Transition::NotFound => Err(OrderError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn order_numbers_are_valid_for_wechat_and_differ() {
        let no = super::new_out_trade_no();
        assert!(no.len() <= 32 && no.starts_with("WX"), "{no}");
        assert_ne!(no, super::new_out_trade_no());
    }
}
