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
