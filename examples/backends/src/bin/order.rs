//! The order service binary: `PORT` (default 8083), see `backends::config` for the rest.

use std::sync::Arc;

use backends::config::ServiceSettings;
use backends::db::Db;
use backends::events::STOCK_EVENTS;
use backends::identity::GatewayTrust;
use backends::order::{self, OrderHandler, OrderState};
use backends::serve::{self, Consumes};

#[tokio::main]
async fn main() {
    serve::init_tracing();
    let settings = ServiceSettings::from_env("order", order::DEFAULT_PORT)
        .unwrap_or_else(|e| serve::fail("configuration", e));
    let db = Db::open(&settings.db_path(), order::SCHEMA)
        .unwrap_or_else(|e| serve::fail("cannot open the order database", e));
    let (saga, outbox) = serve::start_saga(
        &settings,
        db.clone(),
        Some(Consumes {
            topic: STOCK_EVENTS,
            handler: Arc::new(OrderHandler { db: db.clone() }),
        }),
    );
    let state = OrderState {
        db,
        trust: GatewayTrust::new("order", settings.signing_secret.as_deref()),
        outbox,
    };
    if let Err(e) = serve::run(&settings, order::router(state), vec![saga]).await {
        serve::fail("order stopped", e);
    }
}
