//! The product service: the catalogue with stock per product (public routes), and its
//! part of the saga: reserve stock for a new order, release it when the order is
//! cancelled.

mod saga;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::db::{Db, DbError};
use crate::error::ApiError;

pub use saga::StockHandler;

pub const DEFAULT_PORT: u16 = 8082;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS products (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    price_cents INTEGER NOT NULL,
    stock       INTEGER NOT NULL CHECK (stock >= 0)
);
CREATE TABLE IF NOT EXISTS reservations (
    order_id   TEXT PRIMARY KEY,
    product_id INTEGER NOT NULL,
    quantity   INTEGER NOT NULL,
    status     TEXT NOT NULL
);
";

/// The catalogue a fresh database starts with.
const SEED: [(i64, &str, i64, i64); 3] = [
    (1, "Mechanical keyboard", 8900, 10),
    (2, "USB-C cable", 900, 100),
    (3, "27-inch monitor", 24900, 3),
];

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub id: i64,
    pub name: String,
    pub price_cents: i64,
    pub stock: i64,
}

/// Open the product database, seeding the catalogue the first time.
pub fn open(path: &std::path::Path) -> Result<Db, DbError> {
    let db = Db::open(path, SCHEMA)?;
    db.with(seed)?;
    Ok(db)
}

fn seed(c: &mut Connection) -> Result<(), DbError> {
    let n: i64 = c.query_row("SELECT COUNT(*) FROM products", [], |r| r.get(0))?;
    if n == 0 {
        for (id, name, price, stock) in SEED {
            c.execute(
                "INSERT INTO products (id, name, price_cents, stock) VALUES (?1, ?2, ?3, ?4)",
                params![id, name, price, stock],
            )?;
        }
    }
    Ok(())
}

fn product_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Product> {
    Ok(Product {
        id: r.get(0)?,
        name: r.get(1)?,
        price_cents: r.get(2)?,
        stock: r.get(3)?,
    })
}

pub fn list(c: &Connection) -> rusqlite::Result<Vec<Product>> {
    let mut stmt = c.prepare("SELECT id, name, price_cents, stock FROM products ORDER BY id")?;
    let rows = stmt.query_map([], product_from_row)?;
    rows.collect()
}

pub fn get_product(c: &Connection, id: i64) -> rusqlite::Result<Option<Product>> {
    c.query_row(
        "SELECT id, name, price_cents, stock FROM products WHERE id = ?1",
        params![id],
        product_from_row,
    )
    .optional()
}

/// The product routes (public through the gateway).
pub fn router(db: Db) -> Router {
    Router::new()
        .route("/product/products", get(list_products))
        .route("/product/products/{id}", get(show_product))
        .with_state(db)
}

async fn list_products(State(db): State<Db>) -> Result<Json<Vec<Product>>, ApiError> {
    Ok(Json(db.call(|c| Ok(list(c)?)).await?))
}

async fn show_product(
    State(db): State<Db>,
    Path(id): Path<String>,
) -> Result<Json<Product>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::not_found("no such product"))?;
    db.call(move |c| Ok(get_product(c, id)?))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no such product"))
}
