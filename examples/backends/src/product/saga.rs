//! Product's side of the saga, consuming `order-events`: `order-created` reserves stock
//! (publishing `stock-reserved` or `stock-rejected`), `order-cancelled` releases a
//! reservation. Each event is applied once: the inbox row, the stock change and the
//! outgoing event are one SQLite transaction.

use rusqlite::{params, OptionalExtension, Transaction};

use crate::db::Db;
use crate::events::consume::{inbox_mark, inbox_seen, Handled, Handler, HandlerError};
use crate::events::{outbox, Envelope, SagaEvent, StockRejected, StockReserved, ORDER_EVENTS};

/// Applies order events to the stock.
pub struct StockHandler {
    pub db: Db,
}

impl Handler for StockHandler {
    fn handle(&self, event: &Envelope) -> Result<Handled, HandlerError> {
        let saga = event.saga_event()?;
        self.db.with(|c| {
            let tx = c.transaction()?;
            if inbox_seen(&tx, &event.id)? {
                return Ok(Handled::Duplicate);
            }
            match saga {
                SagaEvent::OrderCreated(e) => reserve(&tx, &e.order_id, e.product_id, e.quantity)?,
                SagaEvent::OrderCancelled(e) => release(&tx, &e.order_id)?,
                other => {
                    return Err(HandlerError(format!(
                        "{} does not belong on {ORDER_EVENTS}",
                        other.kind()
                    )))
                }
            }
            inbox_mark(&tx, event, ORDER_EVENTS)?;
            tx.commit()?;
            Ok(Handled::Applied)
        })
    }
}

fn reserve(
    tx: &Transaction<'_>,
    order_id: &str,
    product_id: i64,
    quantity: i64,
) -> Result<(), HandlerError> {
    let existing: Option<String> = tx
        .query_row(
            "SELECT status FROM reservations WHERE order_id = ?1",
            params![order_id],
            |r| r.get(0),
        )
        .optional()?;
    if existing.is_some() {
        // A second order-created for one order (a new event id): already handled.
        return Ok(());
    }
    let stock: Option<i64> = tx
        .query_row(
            "SELECT stock FROM products WHERE id = ?1",
            params![product_id],
            |r| r.get(0),
        )
        .optional()?;
    let reason = match stock {
        None => Some("unknown_product"),
        Some(_) if quantity <= 0 => Some("invalid_quantity"),
        Some(s) if s < quantity => Some("insufficient_stock"),
        Some(_) => None,
    };
    let event = match reason {
        Some(reason) => SagaEvent::StockRejected(StockRejected {
            order_id: order_id.to_string(),
            product_id,
            reason: reason.to_string(),
        }),
        None => {
            tx.execute(
                "UPDATE products SET stock = stock - ?1 WHERE id = ?2",
                params![quantity, product_id],
            )?;
            tx.execute(
                "INSERT INTO reservations (order_id, product_id, quantity, status)
                 VALUES (?1, ?2, ?3, 'RESERVED')",
                params![order_id, product_id, quantity],
            )?;
            SagaEvent::StockReserved(StockReserved {
                order_id: order_id.to_string(),
                product_id,
                quantity,
            })
        }
    };
    outbox::enqueue(tx, &event)?;
    Ok(())
}

fn release(tx: &Transaction<'_>, order_id: &str) -> Result<(), HandlerError> {
    let held: Option<(i64, i64)> = tx
        .query_row(
            "SELECT product_id, quantity FROM reservations
             WHERE order_id = ?1 AND status = 'RESERVED'",
            params![order_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((product_id, quantity)) = held {
        tx.execute(
            "UPDATE products SET stock = stock + ?1 WHERE id = ?2",
            params![quantity, product_id],
        )?;
        tx.execute(
            "UPDATE reservations SET status = 'RELEASED' WHERE order_id = ?1",
            params![order_id],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{OrderCancelled, OrderCreated};

    fn handler() -> (tempfile::TempDir, StockHandler) {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::open(&dir.path().join("product.db")).unwrap();
        (dir, StockHandler { db })
    }

    fn stock(h: &StockHandler, id: i64) -> i64 {
        h.db.with(|c| super::super::get_product(c, id).unwrap().unwrap().stock)
    }

    fn outbox_kinds(h: &StockHandler) -> Vec<String> {
        h.db.with(|c| {
            let mut s = c.prepare("SELECT body FROM outbox ORDER BY seq").unwrap();
            let rows = s.query_map([], |r| r.get::<_, String>(0)).unwrap();
            rows.map(|b| Envelope::from_json(b.unwrap().as_bytes()).unwrap().kind)
                .collect()
        })
    }

    fn created(order: &str, product: i64, qty: i64) -> Envelope {
        Envelope::new(&SagaEvent::OrderCreated(OrderCreated {
            order_id: order.into(),
            user_id: "u".into(),
            product_id: product,
            quantity: qty,
        }))
    }

    #[test]
    fn reserve_reject_release_and_dedupe() {
        let (_dir, h) = handler();
        let before = stock(&h, 3);
        let ok = created("o-1", 3, 2);
        assert_eq!(h.handle(&ok).unwrap(), Handled::Applied);
        assert_eq!(stock(&h, 3), before - 2);
        // The same event again changes nothing.
        assert_eq!(h.handle(&ok).unwrap(), Handled::Duplicate);
        assert_eq!(stock(&h, 3), before - 2);
        // More than what is left: rejected, stock untouched.
        assert_eq!(h.handle(&created("o-2", 3, 99)).unwrap(), Handled::Applied);
        assert_eq!(stock(&h, 3), before - 2);
        assert_eq!(h.handle(&created("o-3", 42, 1)).unwrap(), Handled::Applied);
        assert_eq!(
            outbox_kinds(&h),
            vec!["stock-reserved", "stock-rejected", "stock-rejected"]
        );
        let cancel = Envelope::new(&SagaEvent::OrderCancelled(OrderCancelled {
            order_id: "o-1".into(),
            product_id: 3,
            quantity: 2,
        }));
        assert_eq!(h.handle(&cancel).unwrap(), Handled::Applied);
        assert_eq!(stock(&h, 3), before);
        assert_eq!(h.handle(&cancel).unwrap(), Handled::Duplicate);
        assert_eq!(stock(&h, 3), before);
        // A cancel under a new event id releases nothing twice either.
        let again = Envelope::new(&cancel.saga_event().unwrap());
        assert_eq!(h.handle(&again).unwrap(), Handled::Applied);
        assert_eq!(stock(&h, 3), before);
    }

    #[test]
    fn malformed_events_fail() {
        let (_dir, h) = handler();
        let bad = Envelope::raw("order-created", "o", serde_json::json!({"orderId": 1}));
        assert!(h.handle(&bad).is_err());
    }
}
