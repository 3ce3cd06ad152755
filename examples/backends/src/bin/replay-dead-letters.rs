//! Replay a dead-letter topic into its source topic once the cause is fixed:
//!
//! ```text
//! replay-dead-letters <topic> [--group NAME] [--idle DURATION]
//! ```
//!
//! `<topic>` is the source topic (`order-events` replays `order-events.dlt`). The event
//! log comes from the same variables as the services': `EVENT_LOG` (`redis` | `kafka`),
//! `KAFKA_BROKERS`, `REDIS_URL`. See `backends::events::replay`.

use std::time::Duration;

use backends::config::EventLogKind;
use backends::events::{self, EventLog};
use backends::serve;

const USAGE: &str = "usage: replay-dead-letters <topic> [--group NAME] [--idle DURATION]
  <topic>         the source topic, e.g. order-events (reads order-events.dlt)
  --group NAME    consumer group of the replay (default <topic>.dlt-replay): letters it
                  acknowledged are not replayed again; a new name replays them all
  --idle DURATION stop after this long without a letter (default 10s)
  env: EVENT_LOG=redis|kafka, KAFKA_BROKERS, REDIS_URL";

struct Args {
    topic: String,
    group: String,
    idle: Duration,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut topic = None;
    let mut group = None;
    let mut idle = Duration::from_secs(10);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--group" => group = Some(args.next().ok_or("--group needs a value")?),
            "--idle" => {
                let v = args.next().ok_or("--idle needs a value")?;
                idle = humantime::parse_duration(&v).map_err(|e| format!("--idle {v:?}: {e}"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            other if other.starts_with('-') => return Err(format!("unknown option {other:?}")),
            other if topic.is_none() => topic = Some(other.to_string()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let topic = topic.ok_or("missing <topic>")?;
    Ok(Args {
        group: group.unwrap_or_else(|| format!("{topic}.dlt-replay")),
        topic,
        idle,
    })
}

async fn connect() -> Result<Box<dyn EventLog>, String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let kind = match var("EVENT_LOG").as_deref() {
        None | Some("redis") => EventLogKind::Redis,
        Some("kafka") => EventLogKind::Kafka {
            brokers: var("KAFKA_BROKERS").unwrap_or_else(|| "127.0.0.1:9092".into()),
        },
        Some(other) => return Err(format!("EVENT_LOG: unknown event log {other:?}")),
    };
    match kind {
        EventLogKind::Redis => {
            let url = var("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into());
            let log = events::redis_streams::RedisStreams::connect(&url).await;
            Ok(Box::new(log.map_err(|e| e.to_string())?))
        }
        #[cfg(feature = "kafka")]
        EventLogKind::Kafka { brokers } => Ok(Box::new(
            events::kafka::KafkaLog::connect(&brokers).map_err(|e| e.to_string())?,
        )),
        #[cfg(not(feature = "kafka"))]
        EventLogKind::Kafka { .. } => {
            Err("EVENT_LOG=kafka needs the samples built with `--features kafka`".into())
        }
    }
}

#[tokio::main]
async fn main() {
    serve::init_tracing();
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return;
        }
        Err(e) => serve::fail(&e, USAGE),
    };
    let log = connect()
        .await
        .unwrap_or_else(|e| serve::fail("event log", e));
    let report = events::replay_dead_letters(&*log, &args.topic, &args.group, args.idle)
        .await
        .unwrap_or_else(|e| serve::fail("replay stopped", e));
    println!("replayed {} event(s) to {}", report.replayed, args.topic);
    for s in &report.skipped {
        println!("skipped {s}");
    }
}
