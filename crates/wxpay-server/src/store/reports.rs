//! The back office's reads: pages of orders, payments per hour, the day's payments and refunds
//! for reconciliation, and the stored reconciliation reports.

use base64::Engine as _;
use serde::Serialize;

use super::orders::{Order, OrderRow, OrderStatus, fen_from_db, order_columns};
use super::refund_state::{Refund, RefundRow, refund_columns};
use super::{ApiVersion, Store, StoreError, now_ms};

/// A position in the list of orders (newest first): the last order of a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderCursor {
    /// Its creation time.
    pub created_at: i64,
    /// Its number.
    pub out_trade_no: String,
}

impl OrderCursor {
    /// The opaque text handed to clients.
    #[must_use]
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}:{}", self.created_at, self.out_trade_no))
    }

    /// Reads a cursor made by [`OrderCursor::encode`]; `None` for anything else.
    #[must_use]
    pub fn decode(text: &str) -> Option<Self> {
        if text.len() > 128 {
            return None;
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (at, no) = text.split_once(':')?;
        let created_at = at.parse().ok()?;
        let valid_no = (1..=32).contains(&no.len())
            && no
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b));
        valid_no.then(|| OrderCursor {
            created_at,
            out_trade_no: no.to_owned(),
        })
    }
}

/// One page of orders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderPage {
    /// The orders, newest first.
    pub orders: Vec<Order>,
    /// Where the next page starts, when there is one.
    pub next: Option<OrderCursor>,
}

/// Payments of one hour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HourlyPayments {
    /// The start of the hour (Unix ms).
    pub hour_start: i64,
    /// Orders paid in it.
    pub payments: u64,
    /// Their total in fen.
    pub amount_fen: u64,
}

/// A stored reconciliation of one day's bill.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Reconciliation {
    /// The merchant whose bill it is.
    pub mchid: String,
    /// `yyyy-mm-dd` (GMT+8).
    pub bill_date: String,
    /// The API the bill was downloaded with.
    pub api_version: ApiVersion,
    /// `complete` (the bill was compared) or `no_bill` (WeChat has no bill for the day).
    pub status: String,
    /// Data lines of the bill.
    pub bill_rows: u64,
    /// Lines that match the database.
    pub matched: u64,
    /// Lines or orders that do not.
    pub mismatched: u64,
    /// The report (JSON object with its `items`).
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
    /// When it was first made (Unix ms).
    pub created_at: i64,
    /// When it was last made.
    pub updated_at: i64,
}

impl Store {
    /// A page of orders, newest first, optionally of one status and one merchant, after
    /// `cursor`.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn orders_page(
        &self,
        status: Option<OrderStatus>,
        mchid: Option<&str>,
        limit: u32,
        cursor: Option<&OrderCursor>,
    ) -> Result<OrderPage, StoreError> {
        let mut conditions = Vec::new();
        let mut n = 0;
        let mut param = || {
            n += 1;
            format!("${n}")
        };
        if status.is_some() {
            conditions.push(format!("status = {}", param()));
        }
        if mchid.is_some() {
            conditions.push(format!("mchid = {}", param()));
        }
        if cursor.is_some() {
            let (a, b, c) = (param(), param(), param());
            conditions.push(format!(
                "(created_at < {a} OR (created_at = {b} AND out_trade_no < {c}))"
            ));
        }
        let limit_param = param();
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {} FROM orders{filter} ORDER BY created_at DESC, out_trade_no DESC LIMIT {limit_param}",
            order_columns!()
        );
        let mut query = sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(sql));
        if let Some(s) = status {
            query = query.bind(s.as_str());
        }
        if let Some(m) = mchid {
            query = query.bind(m.to_owned());
        }
        if let Some(c) = cursor {
            query = query
                .bind(c.created_at)
                .bind(c.created_at)
                .bind(c.out_trade_no.clone());
        }
        // One more than asked tells whether a next page exists.
        let rows = query
            .bind(i64::from(limit) + 1)
            .fetch_all(&mut *self.reader().await?)
            .await?;
        let mut orders = rows
            .into_iter()
            .map(Order::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let more = orders.len() > limit as usize;
        orders.truncate(limit as usize);
        let next = if more {
            orders.last().map(|o| OrderCursor {
                created_at: o.created_at,
                out_trade_no: o.out_trade_no.clone(),
            })
        } else {
            None
        };
        Ok(OrderPage { orders, next })
    }

    /// Payments per hour over the `hours` hours up to now, oldest first, empty hours included.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn hourly_payments(&self, hours: u32) -> Result<Vec<HourlyPayments>, StoreError> {
        const HOUR: i64 = 3_600_000;
        let current = now_ms().div_euclid(HOUR);
        let first = current - i64::from(hours.max(1)) + 1;
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT paid_at / 3600000, COUNT(*), CAST(SUM(amount_fen) AS BIGINT) FROM orders \
             WHERE paid_at IS NOT NULL AND paid_at >= $1 GROUP BY paid_at / 3600000",
        )
        .bind(first * HOUR)
        .fetch_all(&mut *self.reader().await?)
        .await?;
        let mut out: Vec<HourlyPayments> = (first..=current)
            .map(|h| HourlyPayments {
                hour_start: h * HOUR,
                payments: 0,
                amount_fen: 0,
            })
            .collect();
        for (hour, count, sum) in rows {
            if let Some(slot) = usize::try_from(hour - first)
                .ok()
                .and_then(|i| out.get_mut(i))
            {
                slot.payments = fen_from_db("count", count)?;
                slot.amount_fen = fen_from_db("amount", sum)?;
            }
        }
        Ok(out)
    }

    /// Orders whose payment time falls in `[from, to)` (Unix ms), by number.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn orders_paid_between(
        &self,
        mchid: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<Order>, StoreError> {
        let rows: Vec<OrderRow> = sqlx::query_as(concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders WHERE mchid = $3 AND paid_at >= $1 AND paid_at < $2 ORDER BY out_trade_no"
        ))
        .bind(from)
        .bind(to)
        .bind(mchid)
        .fetch_all(&mut *self.reader().await?)
        .await?;
        rows.into_iter().map(Order::try_from).collect()
    }

    /// Orders by number (at most a bill's worth at a time is asked for).
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn orders_by_numbers(&self, numbers: &[String]) -> Result<Vec<Order>, StoreError> {
        let mut out = Vec::with_capacity(numbers.len());
        for chunk in numbers.chunks(200) {
            let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT {} FROM orders WHERE out_trade_no IN ({})",
                order_columns!(),
                params.join(", ")
            );
            let mut query = sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(sql));
            for no in chunk {
                query = query.bind(no.clone());
            }
            for row in query.fetch_all(&mut *self.reader().await?).await? {
                out.push(Order::try_from(row)?);
            }
        }
        Ok(out)
    }

    /// Refunds whose success time falls in `[from, to)`, or that are named in `numbers`.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn refunds_for_reconciliation(
        &self,
        mchid: &str,
        from: i64,
        to: i64,
        numbers: &[String],
    ) -> Result<Vec<Refund>, StoreError> {
        let rows: Vec<RefundRow> = sqlx::query_as(concat!(
            "SELECT ",
            refund_columns!(),
            " FROM refunds WHERE success_at >= $1 AND success_at < $2 \
             AND out_trade_no IN (SELECT out_trade_no FROM orders WHERE mchid = $3)"
        ))
        .bind(from)
        .bind(to)
        .bind(mchid)
        .fetch_all(&mut *self.reader().await?)
        .await?;
        let mut out = rows
            .into_iter()
            .map(Refund::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        for no in numbers {
            if !out.iter().any(|r| &r.out_refund_no == no)
                && let Some(r) = self.refund(no).await?
            {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Stores (or replaces) the reconciliation of a day.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn save_reconciliation(&self, r: &Reconciliation) -> Result<(), StoreError> {
        let to_db =
            |v: u64| i64::try_from(v).map_err(|_| StoreError::Corrupt("count out of range".into()));
        sqlx::query(
            "INSERT INTO bill_reconciliations (bill_date, api_version, status, bill_rows, matched, mismatched, \
             report, created_at, updated_at, mchid) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) \
             ON CONFLICT (mchid, bill_date) DO UPDATE SET api_version = excluded.api_version, status = excluded.status, \
             bill_rows = excluded.bill_rows, matched = excluded.matched, mismatched = excluded.mismatched, \
             report = excluded.report, updated_at = excluded.updated_at",
        )
        .bind(&r.bill_date)
        .bind(r.api_version.as_str())
        .bind(&r.status)
        .bind(to_db(r.bill_rows)?)
        .bind(to_db(r.matched)?)
        .bind(to_db(r.mismatched)?)
        .bind(r.report.to_string())
        .bind(now_ms())
        .bind(&r.mchid)
        .execute(&mut *self.reader().await?)
        .await?;
        Ok(())
    }

    /// The stored reconciliation of a merchant's day.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn reconciliation(
        &self,
        mchid: &str,
        bill_date: &str,
    ) -> Result<Option<Reconciliation>, StoreError> {
        type Row = (
            String,
            String,
            String,
            i64,
            i64,
            i64,
            String,
            i64,
            i64,
            String,
        );
        let row: Option<Row> = sqlx::query_as(
            "SELECT bill_date, api_version, status, bill_rows, matched, mismatched, report, created_at, updated_at, mchid \
             FROM bill_reconciliations WHERE mchid = $2 AND bill_date = $1",
        )
        .bind(bill_date)
        .bind(mchid)
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        row.map(|r| {
            Ok(Reconciliation {
                bill_date: r.0,
                api_version: ApiVersion::parse(&r.1)?,
                status: r.2,
                bill_rows: fen_from_db("bill_rows", r.3)?,
                matched: fen_from_db("matched", r.4)?,
                mismatched: fen_from_db("mismatched", r.5)?,
                report: serde_json::from_str(&r.6).map_err(|e| {
                    StoreError::Corrupt(format!("bill_reconciliations.report: {e}"))
                })?,
                created_at: r.7,
                updated_at: r.8,
                mchid: r.9,
            })
        })
        .transpose()
    }

    /// Gives the reconciliations made before they belonged to a merchant (`mchid` '') to
    /// `mchid`, the first merchant's (whose bills they were). Returns how many.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn adopt_reconciliations(&self, mchid: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE bill_reconciliations SET mchid = $1 WHERE mchid = '' \
             AND bill_date NOT IN (SELECT bill_date FROM bill_reconciliations WHERE mchid = $1)",
        )
        .bind(mchid)
        .execute(&mut *self.reader().await?)
        .await?
        .rows_affected())
    }
}
