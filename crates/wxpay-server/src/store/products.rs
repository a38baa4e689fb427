//! The catalog: orders are priced from it, never from the client.

use serde::{Deserialize, Serialize};

use super::fulfilment::Delivery;
use super::orders::fen_from_db;
use super::{Store, StoreError, now_ms};

/// A product.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Product {
    /// Stock-keeping unit, the product's id.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Longer text.
    pub description: String,
    /// Unit price in fen.
    pub price_fen: u64,
    /// Whether it can be ordered.
    pub active: bool,
    /// How it is delivered (WeChat's logistics type of the orders it is in).
    pub delivery: Delivery,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// A product as written by the merchant (`PUT /admin/products/{sku}`) or the sandbox seed.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct NewProduct {
    /// Display name (1–64 characters).
    pub name: String,
    /// Longer text.
    #[serde(default)]
    pub description: String,
    /// Unit price in fen (≥ 1).
    pub price_fen: u64,
    /// Whether it can be ordered (default true).
    #[serde(default = "yes")]
    pub active: bool,
    /// How it is delivered: `express` (default), `same_city`, `virtual` or `pickup`.
    #[serde(default)]
    pub delivery: Delivery,
}

fn yes() -> bool {
    true
}

type ProductRow = (String, String, String, i64, i64, i64, i64, String);

fn product_of(r: ProductRow) -> Result<Product, StoreError> {
    Ok(Product {
        price_fen: fen_from_db("price_fen", r.3)?,
        sku: r.0,
        name: r.1,
        description: r.2,
        active: r.4 != 0,
        created_at: r.5,
        updated_at: r.6,
        delivery: Delivery::parse(&r.7)?,
    })
}

impl Store {
    /// Every product, by sku.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn products(&self, active_only: bool) -> Result<Vec<Product>, StoreError> {
        let rows: Vec<ProductRow> = sqlx::query_as(
            "SELECT sku, name, description, price_fen, active, created_at, updated_at, delivery FROM products \
             WHERE active = 1 OR $1 = 0 ORDER BY sku",
        )
        .bind(i64::from(active_only))
        .fetch_all(&mut *self.reader().await?)
        .await?;
        rows.into_iter().map(product_of).collect()
    }

    /// One product.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`].
    pub async fn product(&self, sku: &str) -> Result<Option<Product>, StoreError> {
        let row: Option<ProductRow> = sqlx::query_as(
            "SELECT sku, name, description, price_fen, active, created_at, updated_at, delivery FROM products \
             WHERE sku = $1",
        )
        .bind(sku)
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        row.map(product_of).transpose()
    }

    /// Creates or replaces a product; returns it.
    ///
    /// # Errors
    /// [`StoreError::Database`] (a CHECK violation for an empty name or a zero price).
    pub async fn upsert_product(&self, sku: &str, p: &NewProduct) -> Result<Product, StoreError> {
        let now = now_ms();
        let row: ProductRow = sqlx::query_as(
            "INSERT INTO products (sku, name, description, price_fen, active, created_at, updated_at, delivery) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7) \
             ON CONFLICT (sku) DO UPDATE SET name = excluded.name, description = excluded.description, \
             price_fen = excluded.price_fen, active = excluded.active, updated_at = excluded.updated_at, \
             delivery = excluded.delivery \
             RETURNING sku, name, description, price_fen, active, created_at, updated_at, delivery",
        )
        .bind(sku)
        .bind(&p.name)
        .bind(&p.description)
        .bind(super::orders::fen_to_db(p.price_fen)?)
        .bind(i64::from(p.active))
        .bind(now)
        .bind(p.delivery.as_str())
        .fetch_one(&mut *self.reader().await?)
        .await?;
        product_of(row)
    }

    /// Creates a product unless its sku exists (the sandbox seed: a merchant's edits survive a
    /// restart). Returns whether it was created.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn insert_product_if_absent(
        &self,
        sku: &str,
        p: &NewProduct,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO products (sku, name, description, price_fen, active, created_at, updated_at, delivery) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7) ON CONFLICT (sku) DO NOTHING",
        )
        .bind(sku)
        .bind(&p.name)
        .bind(&p.description)
        .bind(super::orders::fen_to_db(p.price_fen)?)
        .bind(i64::from(p.active))
        .bind(now)
        .bind(p.delivery.as_str())
        .execute(&mut *self.reader().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
