//! The order service: the caller's orders (identity from the gateway headers) and its
//! part of the saga: a new order is PENDING and publishes `order-created`; product's
//! answer makes it CONFIRMED or REJECTED; cancelling publishes `order-cancelled`.

mod saga;

use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::db::{now_unix, Db, DbError};
use crate::error::{ApiError, JsonBody};
use crate::events::{outbox, OrderCancelled, OrderCreated, SagaEvent};
use crate::identity::{GatewayTrust, Identity};

pub use saga::OrderHandler;

pub const DEFAULT_PORT: u16 = 8083;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    product_id INTEGER NOT NULL,
    quantity   INTEGER NOT NULL,
    status     TEXT NOT NULL,
    reason     TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, created_at);
";

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: String,
    pub user_id: String,
    pub product_id: i64,
    pub quantity: i64,
    /// PENDING, CONFIRMED, REJECTED or CANCELLED.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const SELECT: &str =
    "SELECT id, user_id, product_id, quantity, status, reason, created_at, updated_at FROM orders";

fn order_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Order> {
    Ok(Order {
        id: r.get(0)?,
        user_id: r.get(1)?,
        product_id: r.get(2)?,
        quantity: r.get(3)?,
        status: r.get(4)?,
        reason: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
    })
}

/// One order of `user_id` (others' orders do not exist for the caller).
pub fn find(c: &Connection, user_id: &str, id: &str) -> rusqlite::Result<Option<Order>> {
    c.query_row(
        &format!("{SELECT} WHERE id = ?1 AND user_id = ?2"),
        params![id, user_id],
        order_from_row,
    )
    .optional()
}

#[derive(Clone)]
pub struct OrderState {
    pub db: Db,
    pub trust: GatewayTrust,
    /// Woken after a write queued events, so they are published at once.
    pub outbox: std::sync::Arc<tokio::sync::Notify>,
}

impl FromRef<OrderState> for GatewayTrust {
    fn from_ref(s: &OrderState) -> GatewayTrust {
        s.trust.clone()
    }
}

/// The order routes (all need an authenticated caller).
pub fn router(state: OrderState) -> Router {
    Router::new()
        .route("/order/orders", post(create).get(list))
        .route("/order/orders/{id}", get(show))
        .route("/order/orders/{id}/cancel", post(cancel))
        .with_state(state)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewOrder {
    product_id: i64,
    quantity: i64,
}

async fn create(
    State(s): State<OrderState>,
    who: Identity,
    JsonBody(body): JsonBody<NewOrder>,
) -> Result<impl IntoResponse, ApiError> {
    if !(1..=1000).contains(&body.quantity) {
        return Err(ApiError::bad_request("quantity must be 1 to 1000"));
    }
    let now = now_unix();
    let order = Order {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: who.user_id,
        product_id: body.product_id,
        quantity: body.quantity,
        status: "PENDING".into(),
        reason: None,
        created_at: now,
        updated_at: now,
    };
    let row = order.clone();
    s.db.call(move |c| {
        let tx = c.transaction()?;
        tx.execute(
            "INSERT INTO orders (id, user_id, product_id, quantity, status, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'PENDING', ?5, ?5)",
            params![
                row.id,
                row.user_id,
                row.product_id,
                row.quantity,
                row.created_at
            ],
        )?;
        outbox::enqueue(
            &tx,
            &SagaEvent::OrderCreated(OrderCreated {
                order_id: row.id.clone(),
                user_id: row.user_id.clone(),
                product_id: row.product_id,
                quantity: row.quantity,
            }),
        )?;
        tx.commit()?;
        Ok::<_, DbError>(())
    })
    .await?;
    s.outbox.notify_one();
    Ok((StatusCode::ACCEPTED, Json(order)))
}

async fn list(State(s): State<OrderState>, who: Identity) -> Result<impl IntoResponse, ApiError> {
    let orders =
        s.db.call(move |c| {
            let mut stmt = c.prepare(&format!(
                "{SELECT} WHERE user_id = ?1 ORDER BY created_at DESC, id DESC LIMIT 100"
            ))?;
            let rows = stmt.query_map(params![who.user_id], order_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await?;
    Ok(Json(orders))
}

async fn show(
    State(s): State<OrderState>,
    who: Identity,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    s.db.call(move |c| Ok(find(c, &who.user_id, &id)?))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no such order"))
}

async fn cancel(
    State(s): State<OrderState>,
    who: Identity,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let result =
        s.db.call(move |c| {
            let tx = c.transaction()?;
            let Some(mut order) = find(&tx, &who.user_id, &id)? else {
                return Ok(Err(ApiError::not_found("no such order")));
            };
            if order.status != "PENDING" && order.status != "CONFIRMED" {
                return Ok(Err(ApiError::conflict(
                    "not_cancellable",
                    format!("an order in status {} cannot be cancelled", order.status),
                )));
            }
            let now = now_unix();
            tx.execute(
                "UPDATE orders SET status = 'CANCELLED', updated_at = ?1 WHERE id = ?2",
                params![now, order.id],
            )?;
            outbox::enqueue(
                &tx,
                &SagaEvent::OrderCancelled(OrderCancelled {
                    order_id: order.id.clone(),
                    product_id: order.product_id,
                    quantity: order.quantity,
                }),
            )?;
            tx.commit()?;
            order.status = "CANCELLED".into();
            order.updated_at = now;
            Ok::<_, DbError>(Ok(order))
        })
        .await??;
    s.outbox.notify_one();
    Ok(Json(result))
}
