//! Fulfilment: how orders are delivered, their parcels, and the one upload of their shipping
//! information to WeChat (小程序发货信息管理服务).
//!
//! An upload is written as an intent (`shipping_uploads`, `pending`) before anything is sent,
//! in the transaction that completes the shipping (the last parcel) or by the job (virtual and
//! pickup orders, after payment). Each call is counted before it is sent
//! ([`Store::start_upload_attempt`]), so that whoever finds a pending upload with attempts knows
//! that WeChat may have it already and must ask before sending again.

use serde::{Deserialize, Serialize};

use super::orders::{EventKind, Order, OrderRow, insert_event, order_columns, order_of};
use super::outbox::{NewOutboxEvent, OutboxEventType};
use super::{Store, StoreError, now_ms};

/// How an order (or a product) is delivered: WeChat's `logistics_type`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Parcels sent by an express company (logistics_type 1).
    #[default]
    Express,
    /// Same-city delivery (logistics_type 2).
    SameCity,
    /// Virtual goods, nothing to send (logistics_type 3).
    Virtual,
    /// Collected by the buyer (logistics_type 4).
    Pickup,
}

impl Delivery {
    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Express => "express",
            Delivery::SameCity => "same_city",
            Delivery::Virtual => "virtual",
            Delivery::Pickup => "pickup",
        }
    }

    /// The delivery of a stored name.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for any other text.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "express" => Delivery::Express,
            "same_city" => Delivery::SameCity,
            "virtual" => Delivery::Virtual,
            "pickup" => Delivery::Pickup,
            other => return Err(StoreError::Corrupt(format!("delivery {other:?}"))),
        })
    }

    /// Whether the merchant ships it in parcels (`POST /admin/orders/{no}/shipments`); the
    /// others are uploaded by the job after payment.
    #[must_use]
    pub fn ships_parcels(self) -> bool {
        matches!(self, Delivery::Express | Delivery::SameCity)
    }

    /// WeChat's `logistics_type`.
    #[must_use]
    pub fn logistics_type(self) -> i64 {
        match self {
            Delivery::Express => 1,
            Delivery::SameCity => 2,
            Delivery::Virtual => 3,
            Delivery::Pickup => 4,
        }
    }

    /// The delivery of an order of products delivered as `lines`: express if any is, else
    /// same-city if any is, else pickup if any is, else virtual (what needs the most of the
    /// merchant decides; an order with nothing in it is express).
    #[must_use]
    pub fn of_lines(lines: impl IntoIterator<Item = Delivery>) -> Self {
        let mut all: Vec<Delivery> = lines.into_iter().collect();
        if all.is_empty() {
            return Delivery::Express;
        }
        all.sort_by_key(|d| match d {
            Delivery::Express => 0,
            Delivery::SameCity => 1,
            Delivery::Pickup => 2,
            Delivery::Virtual => 3,
        });
        all[0]
    }
}

/// Where an order's fulfilment is (`None` on the order until it is paid).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShippingState {
    /// Paid, nothing shipped.
    AwaitingShipment,
    /// Some parcels shipped, not the last.
    PartiallyShipped,
    /// Everything shipped (the last parcel, or a virtual or pickup order uploaded).
    Shipped,
    /// The buyer (or WeChat after its delay) confirmed receipt (WeChat's message push).
    Received,
    /// WeChat settled the payment (WeChat's message push).
    Settled,
}

impl ShippingState {
    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ShippingState::AwaitingShipment => "awaiting_shipment",
            ShippingState::PartiallyShipped => "partially_shipped",
            ShippingState::Shipped => "shipped",
            ShippingState::Received => "received",
            ShippingState::Settled => "settled",
        }
    }

    /// The state of a stored name.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for any other text.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "awaiting_shipment" => ShippingState::AwaitingShipment,
            "partially_shipped" => ShippingState::PartiallyShipped,
            "shipped" => ShippingState::Shipped,
            "received" => ShippingState::Received,
            "settled" => ShippingState::Settled,
            other => return Err(StoreError::Corrupt(format!("shipping_state {other:?}"))),
        })
    }
}

/// Lines of the order in a parcel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipmentItem {
    /// The product (a line of the order).
    pub sku: String,
    /// How many of the line are in this parcel.
    pub quantity: u32,
}

/// A parcel of an express or same-city order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Shipment {
    /// Increasing id.
    pub id: i64,
    /// The order.
    pub out_trade_no: String,
    /// WeChat's `delivery_id` of the express company (e.g. `SF`, `ZTO`, `YTO`).
    pub express_company: String,
    /// The tracking number.
    pub tracking_no: String,
    /// The order's lines in it (empty: not said).
    pub items: Vec<ShipmentItem>,
    /// What WeChat shows the buyer of this parcel (`item_desc`).
    pub item_desc: String,
    /// The masked phone number of the receiver (SF Express only), e.g. `189****1234`.
    pub receiver_contact: Option<String>,
    /// Whether it was the last parcel.
    pub is_last: bool,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// A parcel to record.
#[derive(Clone, Debug)]
pub struct NewShipment {
    /// The order.
    pub out_trade_no: String,
    /// The express company's `delivery_id`.
    pub express_company: String,
    /// The tracking number.
    pub tracking_no: String,
    /// The lines in it.
    pub items: Vec<ShipmentItem>,
    /// `item_desc`.
    pub item_desc: String,
    /// SF Express: the receiver's masked phone number.
    pub receiver_contact: Option<String>,
    /// Whether it is the last parcel.
    pub last: bool,
}

/// The state of an order's upload of shipping information.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UploadStatus {
    /// Not known to be at WeChat yet: the job (re)tries, asking WeChat first after an attempt.
    Pending,
    /// WeChat has it.
    Uploaded,
    /// WeChat refused it for good (see `last_error`); a person must look.
    Failed,
    /// Not needed: WeChat said (`is_trade_managed`) that the order's mini program is not under
    /// trade management, so it holds none of its payments and takes no shipping information.
    NotManaged,
}

impl UploadStatus {
    fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "pending" => UploadStatus::Pending,
            "uploaded" => UploadStatus::Uploaded,
            "failed" => UploadStatus::Failed,
            "not_managed" => UploadStatus::NotManaged,
            other => return Err(StoreError::Corrupt(format!("upload status {other:?}"))),
        })
    }
}

/// The upload of an order's shipping information.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ShippingUpload {
    /// The order.
    pub out_trade_no: String,
    /// WeChat's `logistics_type` (1 express, 2 same-city, 3 virtual, 4 pickup).
    pub logistics_type: i64,
    /// Where it is.
    pub status: UploadStatus,
    /// Upload calls started.
    pub attempts: i64,
    /// The last error met.
    pub last_error: Option<String>,
    /// When the job tries next (while pending).
    pub next_attempt_at: i64,
    /// When WeChat was found to have it.
    pub uploaded_at: Option<i64>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

const UPLOAD_COLUMNS: &str = "out_trade_no, logistics_type, status, attempts, last_error, \
     next_attempt_at, uploaded_at, created_at, updated_at";

type UploadRow = (
    String,
    i64,
    String,
    i64,
    Option<String>,
    i64,
    Option<i64>,
    i64,
    i64,
);

fn upload_of(r: UploadRow) -> Result<ShippingUpload, StoreError> {
    Ok(ShippingUpload {
        out_trade_no: r.0,
        logistics_type: r.1,
        status: UploadStatus::parse(&r.2)?,
        attempts: r.3,
        last_error: r.4,
        next_attempt_at: r.5,
        uploaded_at: r.6,
        created_at: r.7,
        updated_at: r.8,
    })
}

const SHIPMENT_COLUMNS: &str = "id, out_trade_no, express_company, tracking_no, items, item_desc, \
     receiver_contact, is_last, created_at";

type ShipmentRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    i64,
);

fn shipment_of(r: ShipmentRow) -> Result<Shipment, StoreError> {
    Ok(Shipment {
        id: r.0,
        out_trade_no: r.1,
        express_company: r.2,
        tracking_no: r.3,
        items: serde_json::from_str(&r.4)
            .map_err(|e| StoreError::Corrupt(format!("shipments.items: {e}")))?,
        item_desc: r.5,
        receiver_contact: r.6,
        is_last: r.7 != 0,
        created_at: r.8,
    })
}

/// Why a parcel was not recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShipRefusal {
    /// The order is not paid.
    NotPaid,
    /// Everything paid was refunded.
    FullyRefunded,
    /// The order is not delivered in parcels (virtual goods, pickup).
    NotParcels(Delivery),
    /// The order is fully shipped already (or further).
    AlreadyShipped(ShippingState),
    /// The order has the most parcels WeChat takes.
    TooManyParcels,
    /// The parcels would hold more of a product than the order has (the text says which).
    MoreThanOrdered(String),
    /// The last parcel lists its items and leaves some of the order unshipped (the text says
    /// which).
    ItemsLeftOver(String),
}

/// Checks the items of a new parcel against the order, summed over its parcels: never more of
/// a product than ordered, and a last parcel that lists items covers the rest of the order
/// (when no parcel lists items there is nothing to sum).
fn check_items(
    order: &Order,
    before: &[Vec<ShipmentItem>],
    new: &[ShipmentItem],
    last: bool,
) -> Option<ShipRefusal> {
    let mut shipped: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for item in before.iter().flatten().chain(new) {
        *shipped.entry(item.sku.as_str()).or_default() += u64::from(item.quantity);
    }
    let ordered = |sku: &str| -> u64 {
        order
            .items
            .iter()
            .filter(|l| l.sku == sku)
            .map(|l| u64::from(l.quantity))
            .sum()
    };
    for item in new {
        let (all, max) = (shipped[item.sku.as_str()], ordered(&item.sku));
        if all > max {
            return Some(ShipRefusal::MoreThanOrdered(format!(
                "items: {all} of {:?} in the parcels of order {}, which has {max}",
                item.sku, order.out_trade_no
            )));
        }
    }
    if last && !new.is_empty() {
        let mut missing: Vec<String> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for line in &order.items {
            if !seen.insert(line.sku.as_str()) {
                continue;
            }
            let left = ordered(&line.sku) - shipped.get(line.sku.as_str()).copied().unwrap_or(0);
            if left > 0 {
                missing.push(format!("{} x{left}", line.sku));
            }
        }
        if !missing.is_empty() {
            return Some(ShipRefusal::ItemsLeftOver(format!(
                "items: the last parcel of order {} leaves unshipped {} (list them in a parcel,                  or send the last parcel without items)",
                order.out_trade_no,
                missing.join(", ")
            )));
        }
    }
    None
}

/// What [`Store::record_shipment`] did.
#[derive(Clone, Debug)]
pub enum ShipmentRecorded {
    /// The parcel was recorded. `upload` is the pending upload (leased to the caller) when this
    /// parcel completed the shipping.
    Recorded {
        /// The parcel.
        shipment: Shipment,
        /// The order after it.
        order: Order,
        /// The upload to make now, when the order is fully shipped.
        upload: Option<ShippingUpload>,
    },
    /// The same parcel (express company and tracking number) was recorded before: nothing
    /// changed.
    Repeated {
        /// The parcel as recorded then.
        shipment: Shipment,
        /// The order.
        order: Order,
    },
    /// The order's state does not allow it: nothing changed.
    Refused(Order, ShipRefusal),
    /// No such order.
    NotFound,
}

/// The states in which parcels may still be added (`NULL`: an order paid before fulfilment
/// was recorded).
const SHIPPABLE_STATES: &str =
    "(shipping_state IS NULL OR shipping_state IN ('awaiting_shipment', 'partially_shipped'))";

impl Store {
    /// Records a parcel of a paid express or same-city order, with a `shipment` event, in one
    /// transaction guarded by the order's state. The last parcel (`new.last`, the only parcel
    /// of a same-city order, or the `max_parcels`th) marks the order `shipped` and writes its
    /// upload intent, leased to `owner` for `lease_ms` so that the caller makes the first
    /// attempt and the job does not race it.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn record_shipment(
        &self,
        new: &NewShipment,
        owner: &str,
        lease_ms: i64,
        max_parcels: i64,
    ) -> Result<ShipmentRecorded, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let row: Option<OrderRow> = sqlx::query_as(self.backend.dialect().select_order_to_pay)
            .bind(&new.out_trade_no)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(order) = order_of(row)? else {
            tx.rollback().await?;
            return Ok(ShipmentRecorded::NotFound);
        };
        let existing: Option<ShipmentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE out_trade_no = $1 \
             AND express_company = $2 AND tracking_no = $3"
        )))
        .bind(&new.out_trade_no)
        .bind(&new.express_company)
        .bind(&new.tracking_no)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            tx.rollback().await?;
            return Ok(ShipmentRecorded::Repeated {
                shipment: shipment_of(row)?,
                order,
            });
        }
        let delivery = order.delivery.unwrap_or_default();
        let refusal = if !order.status.is_paid() {
            Some(ShipRefusal::NotPaid)
        } else if order.refunded_fen >= order.amount_fen {
            Some(ShipRefusal::FullyRefunded)
        } else if !delivery.ships_parcels() {
            Some(ShipRefusal::NotParcels(delivery))
        } else {
            match order.shipping_state {
                None
                | Some(
                    super::ShippingState::AwaitingShipment | super::ShippingState::PartiallyShipped,
                ) => None,
                Some(state) => Some(ShipRefusal::AlreadyShipped(state)),
            }
        };
        let parcels: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM shipments WHERE out_trade_no = $1")
                .bind(&new.out_trade_no)
                .fetch_one(&mut *tx)
                .await?;
        let refusal = refusal.or((parcels >= max_parcels).then_some(ShipRefusal::TooManyParcels));
        if let Some(refusal) = refusal {
            tx.rollback().await?;
            return Ok(ShipmentRecorded::Refused(order, refusal));
        }
        let last = new.last || delivery == Delivery::SameCity || parcels + 1 >= max_parcels;
        // The items summed over the parcels, under the order's lock (two parcels recorded at
        // once are counted one after the other).
        let before: Vec<String> =
            sqlx::query_scalar("SELECT items FROM shipments WHERE out_trade_no = $1")
                .bind(&new.out_trade_no)
                .fetch_all(&mut *tx)
                .await?;
        let before = before
            .iter()
            .map(|items| serde_json::from_str::<Vec<ShipmentItem>>(items))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Corrupt(format!("shipments.items: {e}")))?;
        if let Some(refusal) = check_items(&order, &before, &new.items, last) {
            tx.rollback().await?;
            return Ok(ShipmentRecorded::Refused(order, refusal));
        }
        let items = super::to_json(&new.items)?;
        let row: ShipmentRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO shipments (out_trade_no, express_company, tracking_no, items, item_desc, \
             receiver_contact, is_last, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             RETURNING {SHIPMENT_COLUMNS}"
        )))
        .bind(&new.out_trade_no)
        .bind(&new.express_company)
        .bind(&new.tracking_no)
        .bind(items)
        .bind(&new.item_desc)
        .bind(new.receiver_contact.as_deref())
        .bind(i64::from(last))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let shipment = shipment_of(row)?;
        let state = if last {
            super::ShippingState::Shipped
        } else {
            super::ShippingState::PartiallyShipped
        };
        let row: Option<OrderRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE orders SET shipping_state = $2, shipped_at = $3, updated_at = $4, \
             version = version + 1 WHERE out_trade_no = $1 AND {SHIPPABLE_STATES} RETURNING {}",
            order_columns!()
        )))
        .bind(&new.out_trade_no)
        .bind(state.as_str())
        .bind(last.then_some(now))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(order) = order_of(row)? else {
            // The lock makes this unreachable; failing rolls the parcel back.
            return Err(StoreError::Corrupt(format!(
                "order {} changed while it was locked",
                new.out_trade_no
            )));
        };
        let detail = serde_json::json!({
            "shipment_id": shipment.id,
            "express_company": shipment.express_company,
            "tracking_no": shipment.tracking_no,
            "last": last,
            "parcel": parcels + 1,
        });
        insert_event(
            &mut tx,
            &new.out_trade_no,
            EventKind::Shipment,
            &detail,
            now,
        )
        .await?;
        let upload = if last {
            let row: UploadRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "INSERT INTO shipping_uploads (out_trade_no, logistics_type, status, attempts, \
                 next_attempt_at, lease_owner, lease_until, created_at, updated_at) \
                 VALUES ($1, $2, 'pending', 0, $3, $4, $5, $3, $3) RETURNING {UPLOAD_COLUMNS}"
            )))
            .bind(&new.out_trade_no)
            .bind(delivery.logistics_type())
            .bind(now)
            .bind(owner)
            .bind(now.saturating_add(lease_ms))
            .fetch_one(&mut *tx)
            .await?;
            Some(upload_of(row)?)
        } else {
            None
        };
        tx.commit().await?;
        Ok(ShipmentRecorded::Recorded {
            shipment,
            order,
            upload,
        })
    }

    /// Writes the upload intent of up to `limit` paid virtual and pickup orders that have none
    /// (oldest payment first); returns how many.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn enqueue_automatic_uploads(&self, limit: u32) -> Result<u64, StoreError> {
        let now = now_ms();
        let done = sqlx::query(concat!(
            "INSERT INTO shipping_uploads (out_trade_no, logistics_type, status, attempts, \
             next_attempt_at, created_at, updated_at) \
             SELECT o.out_trade_no, CASE WHEN o.delivery = 'virtual' THEN 3 ELSE 4 END, 'pending', 0, $1, $1, $1 \
             FROM orders o WHERE o.shipping_state = 'awaiting_shipment' \
             AND o.delivery IN ('virtual', 'pickup') AND o.status IN (",
            order_status_sql!(Success, Refund),
            ") AND o.refunded_fen < o.amount_fen \
             AND NOT EXISTS (SELECT 1 FROM shipping_uploads u WHERE u.out_trade_no = o.out_trade_no) \
             ORDER BY o.paid_at LIMIT $2 \
             ON CONFLICT (out_trade_no) DO NOTHING"
        ))
        .bind(now)
        .bind(i64::from(limit))
        .execute(&mut *self.reader().await?)
        .await?;
        Ok(done.rows_affected())
    }

    /// Leases up to `limit` pending uploads that are due and not leased, for `lease_ms`.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn lease_shipping_uploads(
        &self,
        owner: &str,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<ShippingUpload>, StoreError> {
        let now = now_ms();
        let lock = self.backend.dialect().claim_lock;
        let condition = "status = 'pending' AND next_attempt_at <= $3 \
             AND (lease_until IS NULL OR lease_until < $3)";
        let sql = format!(
            "UPDATE shipping_uploads SET lease_owner = $1, lease_until = $2 WHERE out_trade_no IN \
             (SELECT out_trade_no FROM shipping_uploads WHERE {condition} \
             ORDER BY next_attempt_at LIMIT $4{lock}) AND {condition} RETURNING {UPLOAD_COLUMNS}"
        );
        let mut tx = self.begin_write().await?;
        let rows: Vec<UploadRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .bind(now.saturating_add(lease_ms))
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.into_iter().map(upload_of).collect()
    }

    /// Counts an upload call about to be sent, by the holder of the upload's lease. `None` when
    /// the upload is no longer pending or `owner` lost the lease (then nothing may be sent).
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn start_upload_attempt(
        &self,
        out_trade_no: &str,
        owner: &str,
    ) -> Result<Option<ShippingUpload>, StoreError> {
        let row: Option<UploadRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE shipping_uploads SET attempts = attempts + 1, updated_at = $3 \
             WHERE out_trade_no = $1 AND status = 'pending' AND lease_owner = $2 \
             RETURNING {UPLOAD_COLUMNS}"
        )))
        .bind(out_trade_no)
        .bind(owner)
        .bind(now_ms())
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        row.map(upload_of).transpose()
    }

    /// Records that WeChat has the order's shipping information: the upload `uploaded`, the
    /// order `shipped` (a virtual or pickup order ships now), a `shipping_uploaded` event and
    /// the `order.shipped` webhook, once. `None` when the upload was not pending.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn mark_shipping_uploaded(
        &self,
        out_trade_no: &str,
        detail: &serde_json::Value,
    ) -> Result<Option<Order>, StoreError> {
        self.finish_upload(out_trade_no, UploadStatus::Uploaded, detail)
            .await
    }

    /// Records that the order's shipping information is not needed (its mini program is not
    /// under trade management): the upload `not_managed`, the order `shipped` (a virtual or
    /// pickup order ships now), a `shipping_not_managed` event and the `order.shipped` webhook,
    /// once. `None` when the upload was not pending.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn mark_shipping_not_managed(
        &self,
        out_trade_no: &str,
        detail: &serde_json::Value,
    ) -> Result<Option<Order>, StoreError> {
        self.finish_upload(out_trade_no, UploadStatus::NotManaged, detail)
            .await
    }

    async fn finish_upload(
        &self,
        out_trade_no: &str,
        status: UploadStatus,
        detail: &serde_json::Value,
    ) -> Result<Option<Order>, StoreError> {
        let (status, kind) = match status {
            UploadStatus::NotManaged => ("not_managed", EventKind::ShippingNotManaged),
            _ => ("uploaded", EventKind::ShippingUploaded),
        };
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE shipping_uploads SET status = $3, \
             uploaded_at = $4, updated_at = $2, \
             last_error = NULL, lease_owner = NULL, lease_until = NULL \
             WHERE out_trade_no = $1 AND status = 'pending'",
        )
        .bind(out_trade_no)
        .bind(now)
        .bind(status)
        .bind((status == "uploaded").then_some(now))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        let row: Option<OrderRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE orders SET shipping_state = CASE WHEN {SHIPPABLE_STATES} THEN 'shipped' \
             ELSE shipping_state END, shipped_at = COALESCE(shipped_at, $2), updated_at = $2, \
             version = version + 1 WHERE out_trade_no = $1 RETURNING {}",
            order_columns!()
        )))
        .bind(out_trade_no)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(order) = order_of(row)? else {
            return Err(StoreError::Corrupt(format!(
                "the order of upload {out_trade_no} is missing"
            )));
        };
        insert_event(&mut tx, out_trade_no, kind, detail, now).await?;
        NewOutboxEvent::order(OutboxEventType::OrderShipped, &order)?
            .insert(&mut tx, now)
            .await?;
        tx.commit().await?;
        self.notices.outbox_written();
        Ok(Some(order))
    }

    /// Records a failed upload attempt (or question) of the lease holder: tried again at
    /// `retry_at`, or given up (`failed`) when `None`; a `shipping_upload_failed` event.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn upload_attempt_failed(
        &self,
        out_trade_no: &str,
        owner: &str,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE shipping_uploads SET status = $3, last_error = $4, next_attempt_at = $5, \
             lease_owner = NULL, lease_until = NULL, updated_at = $6 \
             WHERE out_trade_no = $1 AND status = 'pending' AND lease_owner = $2",
        )
        .bind(out_trade_no)
        .bind(owner)
        .bind(if retry_at.is_some() {
            "pending"
        } else {
            "failed"
        })
        .bind(error)
        .bind(retry_at.unwrap_or(now))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            let detail = serde_json::json!({
                "error": error,
                "will_retry": retry_at.is_some(),
            });
            insert_event(
                &mut tx,
                out_trade_no,
                EventKind::ShippingUploadFailed,
                &detail,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// An order's parcels, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn shipments_of_order(
        &self,
        out_trade_no: &str,
    ) -> Result<Vec<Shipment>, StoreError> {
        let rows: Vec<ShipmentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE out_trade_no = $1 ORDER BY id"
        )))
        .bind(out_trade_no)
        .fetch_all(&mut *self.reader().await?)
        .await?;
        rows.into_iter().map(shipment_of).collect()
    }

    /// An order's upload of shipping information, if one was written.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn shipping_upload(
        &self,
        out_trade_no: &str,
    ) -> Result<Option<ShippingUpload>, StoreError> {
        let row: Option<UploadRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {UPLOAD_COLUMNS} FROM shipping_uploads WHERE out_trade_no = $1"
        )))
        .bind(out_trade_no)
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        row.map(upload_of).transpose()
    }

    /// Paid express and same-city orders not fully shipped, paid at or before `paid_before`
    /// (of one merchant when `mchid` is given), oldest payment first.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn overdue_shipments(
        &self,
        paid_before: i64,
        mchid: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        let rows: Vec<OrderRow> = sqlx::query_as(concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders WHERE shipping_state IN ('awaiting_shipment', 'partially_shipped') \
             AND delivery IN ('express', 'same_city') AND status IN (",
            order_status_sql!(Success, Refund),
            ") AND refunded_fen < amount_fen AND paid_at <= $1 AND ($2 = '' OR mchid = $2) \
             ORDER BY paid_at, out_trade_no LIMIT $3"
        ))
        .bind(paid_before)
        .bind(mchid.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&mut *self.reader().await?)
        .await?;
        rows.into_iter().map(Order::try_from).collect()
    }
}
