//! Order's side of the saga, consuming `stock-events`: `stock-reserved` confirms a
//! PENDING order, `stock-rejected` rejects it (with the reason). An order cancelled in
//! the meantime stays CANCELLED (product releases its stock on `order-cancelled`).

use rusqlite::params;

use crate::db::{now_unix, Db};
use crate::events::consume::{inbox_mark, inbox_seen, Handled, Handler, HandlerError};
use crate::events::{Envelope, SagaEvent, STOCK_EVENTS};

/// Applies stock events to orders.
pub struct OrderHandler {
    pub db: Db,
}

impl Handler for OrderHandler {
    fn handle(&self, event: &Envelope) -> Result<Handled, HandlerError> {
        let saga = event.saga_event()?;
        let (order_id, status, reason) = match &saga {
            SagaEvent::StockReserved(e) => (e.order_id.as_str(), "CONFIRMED", None),
            SagaEvent::StockRejected(e) => {
                (e.order_id.as_str(), "REJECTED", Some(e.reason.as_str()))
            }
            other => {
                return Err(HandlerError(format!(
                    "{} does not belong on {STOCK_EVENTS}",
                    other.kind()
                )))
            }
        };
        self.db.with(|c| {
            let tx = c.transaction()?;
            if inbox_seen(&tx, &event.id)? {
                return Ok(Handled::Duplicate);
            }
            let changed = tx.execute(
                "UPDATE orders SET status = ?1, reason = ?2, updated_at = ?3
                 WHERE id = ?4 AND status = 'PENDING'",
                params![status, reason, now_unix(), order_id],
            )?;
            if changed == 0 {
                tracing::info!(
                    order_id,
                    status,
                    "order not pending any more; event has no effect"
                );
            }
            inbox_mark(&tx, event, STOCK_EVENTS)?;
            tx.commit()?;
            Ok(Handled::Applied)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{StockRejected, StockReserved};

    fn setup() -> (tempfile::TempDir, OrderHandler) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("order.db"), super::super::SCHEMA).unwrap();
        for (id, status) in [("o-1", "PENDING"), ("o-2", "PENDING"), ("o-3", "CANCELLED")] {
            db.with(|c| {
                c.execute(
                    "INSERT INTO orders (id, user_id, product_id, quantity, status, created_at, updated_at)
                     VALUES (?1, 'u', 1, 1, ?2, 0, 0)",
                    params![id, status],
                )
                .unwrap()
            });
        }
        (dir, OrderHandler { db })
    }

    fn status(h: &OrderHandler, id: &str) -> (String, Option<String>) {
        h.db.with(|c| {
            c.query_row(
                "SELECT status, reason FROM orders WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
        })
    }

    fn reserved(order: &str) -> Envelope {
        Envelope::new(&SagaEvent::StockReserved(StockReserved {
            order_id: order.into(),
            product_id: 1,
            quantity: 1,
        }))
    }

    #[test]
    fn answers_settle_pending_orders_once() {
        let (_dir, h) = setup();
        let ok = reserved("o-1");
        assert_eq!(h.handle(&ok).unwrap(), Handled::Applied);
        assert_eq!(status(&h, "o-1").0, "CONFIRMED");
        assert_eq!(h.handle(&ok).unwrap(), Handled::Duplicate);

        let no = Envelope::new(&SagaEvent::StockRejected(StockRejected {
            order_id: "o-2".into(),
            product_id: 1,
            reason: "insufficient_stock".into(),
        }));
        h.handle(&no).unwrap();
        assert_eq!(
            status(&h, "o-2"),
            ("REJECTED".into(), Some("insufficient_stock".into()))
        );
        // A late answer never revives a cancelled order, nor flips a settled one.
        h.handle(&reserved("o-3")).unwrap();
        assert_eq!(status(&h, "o-3").0, "CANCELLED");
        h.handle(&reserved("o-2")).unwrap();
        assert_eq!(status(&h, "o-2").0, "REJECTED");
    }

    #[test]
    fn order_events_do_not_belong_here() {
        let (_dir, h) = setup();
        let wrong = Envelope::new(&SagaEvent::OrderCancelled(crate::events::OrderCancelled {
            order_id: "o-1".into(),
            product_id: 1,
            quantity: 1,
        }));
        assert!(h.handle(&wrong).is_err());
    }
}
