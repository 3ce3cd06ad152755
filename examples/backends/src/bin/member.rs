//! The member service binary: `PORT` (default 8081), see `backends::config` for the rest.

use backends::config::ServiceSettings;
use backends::member::{self, MemberSettings};
use backends::serve;

#[tokio::main]
async fn main() {
    serve::init_tracing();
    let settings = ServiceSettings::from_env("member", member::DEFAULT_PORT)
        .unwrap_or_else(|e| serve::fail("configuration", e));
    let member_settings =
        MemberSettings::from_env().unwrap_or_else(|e| serve::fail("configuration", e));
    let state = member::state(&settings, &member_settings)
        .await
        .unwrap_or_else(|e| serve::fail("cannot start member", e));
    let app = member::router(state);
    if let Err(e) = serve::run(&settings, app, Vec::new()).await {
        serve::fail("member stopped", e);
    }
}
