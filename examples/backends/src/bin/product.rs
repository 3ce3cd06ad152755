//! The product service binary: `PORT` (default 8082), see `backends::config` for the rest.

use std::sync::Arc;

use backends::config::ServiceSettings;
use backends::events::ORDER_EVENTS;
use backends::product::{self, StockHandler};
use backends::serve::{self, Consumes};

#[tokio::main]
async fn main() {
    serve::init_tracing();
    let settings = ServiceSettings::from_env("product", product::DEFAULT_PORT)
        .unwrap_or_else(|e| serve::fail("configuration", e));
    let db = product::open(&settings.db_path())
        .unwrap_or_else(|e| serve::fail("cannot open the product database", e));
    let (saga, _outbox) = serve::start_saga(
        &settings,
        db.clone(),
        Some(Consumes {
            topic: ORDER_EVENTS,
            handler: Arc::new(StockHandler { db: db.clone() }),
        }),
    );
    if let Err(e) = serve::run(&settings, product::router(db), vec![saga]).await {
        serve::fail("product stopped", e);
    }
}
