//! Fuzz harness for the config parser and compiler (stable toolchain, proptest).
//!
//! For arbitrary text and for structured mutations of a valid config (keys deleted,
//! renamed or added, values replaced by arbitrary JSON/YAML values, arrays grown):
//! - `parse` and `compile` never panic;
//! - every error names where it is: a key path, or a line/column for syntax errors;
//! - a reload with a config that is refused keeps the old config serving (same
//!   version, same routes), and one that compiles is swapped in whole.
//!
//! `FUZZ_CASES` sets the case count per property (default 500; docs/fuzzing.md).

use std::sync::{Arc, OnceLock};

use gateway::config::{self, CompileInput, Compiled, ConfigError};
use gateway::reload::{reload, ReloadOutcome};
use gateway::runtime::{RuntimeConfig, Shared};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use serde_json::{json, Value};

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// A valid config touching most sections (no network at compile: static instances,
/// inline HMAC key, no Redis).
fn base() -> Value {
    json!({
        "server": {"threads": 1, "trusted_proxies": ["10.0.0.0/8"], "headers_with_underscores": "drop"},
        "listeners": [{"address": "127.0.0.1:18080"}],
        "services": {
            "a": {"instances": ["127.0.0.1:18081"]},
            "b": {"instances": ["127.0.0.1:18082", "127.0.0.1:18083"], "load_balancer": {"algorithm": "round_robin"}},
        },
        "auth": {
            "issuers": [{"name": "dev", "issuer": "dev", "algorithms": ["HS256"],
                         "secret": "fuzz-secret-0123456789abcdef0123"}],
            "identity": {"headers": {"X-User-Id": "{sub}", "Authenticated-User": "{email}"}},
        },
        "routes": [
            {"id": "pub", "match": {"prefix": "/pub/"}, "service": "a",
             "request_headers": {"set": {"x-a": "1"}, "add": {"x-b": "2"}, "remove": ["x-c"]}},
            {"id": "api", "match": {"path": "/api/**", "methods": ["GET", "POST"], "headers": {"x-v": "1"}},
             "service": "b", "auth": {"jwt": {}}, "strip_prefix": "/api"},
        ],
    })
}

/// Every error is located: a key path, or (syntax, empty file) a position or reason.
fn located(e: &ConfigError, text: &str) -> bool {
    !e.path.is_empty()
        || e.message.contains("line ")
        || e.message.contains("empty")
        || text.trim().is_empty()
}

fn check_errors(errors: &[ConfigError], text: &str) -> Result<(), TestCaseError> {
    prop_assert!(!errors.is_empty(), "refused without a reason");
    for e in errors {
        prop_assert!(
            located(e, text),
            "error without a key path: {e:?}\nconfig: {text}"
        );
        prop_assert!(!e.message.is_empty(), "error without a message: {e:?}");
    }
    Ok(())
}

/// Parse and compile `text` like `gateway check` does.
fn compile(text: &str, previous: Option<&RuntimeConfig>) -> Result<Compiled, Vec<ConfigError>> {
    let file = config::parse(text)?;
    let _guard = runtime().enter();
    config::compile(CompileInput {
        file,
        version: config::version_of(text),
        previous,
        rt: runtime().handle(),
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,16}".prop_map(Value::String),
        prop_oneof![
            Just("0s"),
            Just("2x"),
            Just("-1s"),
            Just("127.0.0.1:0"),
            Just("[::1]:80"),
            Just("/"),
            Just("/**"),
            Just("{sub}"),
            Just("{nope}"),
            Just("a"),
            Just("round_robin"),
            Just("HS256"),
            Just("none"),
            Just("x_y"),
            Just("Authenticated_User"),
            Just("300.1.1.1/33"),
            Just("*"),
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Edit {
    Delete,
    Replace(Value),
    AddKey(String, Value),
    RenameKey(String),
    Duplicate,
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        2 => Just(Edit::Delete),
        4 => json_value().prop_map(Edit::Replace),
        1 => ("[a-z_]{1,12}", json_value()).prop_map(|(k, v)| Edit::AddKey(k, v)),
        1 => "[a-z_]{1,12}".prop_map(Edit::RenameKey),
        1 => Just(Edit::Duplicate),
    ]
}

/// Paths of every node, as (object key | array index) steps.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn paths(v: &Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(Step::Key(k.clone()));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                prefix.push(Step::Index(i));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn apply(root: &mut Value, at: usize, e: &Edit) {
    let mut all = Vec::new();
    paths(root, &mut Vec::new(), &mut all);
    let path = &all[at % all.len()];
    let Some((last, parent_path)) = path.split_last() else {
        if let Edit::Replace(v) = e {
            *root = v.clone();
        }
        return;
    };
    let mut parent = &mut *root;
    for s in parent_path {
        parent = match s {
            Step::Key(k) => &mut parent[k.as_str()],
            Step::Index(i) => &mut parent[*i],
        };
    }
    match (parent, last) {
        (Value::Object(m), Step::Key(k)) => match e {
            Edit::Delete => {
                m.remove(k);
            }
            Edit::Replace(v) => {
                m.insert(k.clone(), v.clone());
            }
            Edit::AddKey(nk, v) => {
                m.insert(nk.clone(), v.clone());
            }
            Edit::RenameKey(nk) => {
                if let Some(v) = m.remove(k) {
                    m.insert(nk.clone(), v);
                }
            }
            Edit::Duplicate => {
                if let Some(v) = m.get(k).cloned() {
                    m.insert(format!("{k}_"), v);
                }
            }
        },
        (Value::Array(a), Step::Index(i)) => match e {
            Edit::Delete => {
                a.remove(*i);
            }
            Edit::Replace(v) => a[*i] = v.clone(),
            Edit::AddKey(_, v) => a.push(v.clone()),
            Edit::RenameKey(_) => {}
            Edit::Duplicate => {
                let v = a[*i].clone();
                a.push(v);
            }
        },
        _ => {}
    }
}

/// The mutated config as text: JSON (a YAML subset) or YAML block style.
fn render(v: &Value, yaml_block: bool) -> String {
    if yaml_block {
        serde_saphyr::to_string(v).unwrap_or_else(|_| v.to_string())
    } else {
        v.to_string()
    }
}

fn reload_fixture() -> &'static (Shared, tempfile::TempDir) {
    static FIX: OnceLock<(Shared, tempfile::TempDir)> = OnceLock::new();
    FIX.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gateway.yaml");
        let text = base().to_string();
        std::fs::write(&path, &text).expect("write config");
        let good = compile(&text, None).expect("the base config compiles");
        let shared = Shared::new(good.runtime, good.startup, path, runtime().handle().clone());
        (shared, dir)
    })
}

#[test]
fn the_base_config_compiles() {
    let text = base().to_string();
    if let Err(e) = compile(&text, None) {
        panic!("{e:?}");
    }
}

proptest! {
    #![proptest_config(Config {
        cases: cases(),
        // A shrunk failure is saved next to this file and replayed first on every run.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    })]

    /// Arbitrary text, and text made of YAML's punctuation.
    #[test]
    fn arbitrary_text_never_panics_and_errors_are_located(
        text in prop_oneof![".{0,300}", "[a-z:{}\\[\\],&*!|>'\"#%@` \n\t-]{0,300}"],
    ) {
        match compile(&text, None) {
            Ok(_) => {}
            Err(errors) => check_errors(&errors, &text)?,
        }
    }

    /// Structured mutations of a valid config: compile, and reload over a good one.
    #[test]
    fn mutated_configs_never_panic_and_a_bad_reload_keeps_the_old_config(
        edits in prop::collection::vec((any::<usize>(), edit()), 1..4),
        yaml_block in any::<bool>(),
    ) {
        let mut v = base();
        for (at, e) in &edits {
            apply(&mut v, *at, e);
        }
        let text = render(&v, yaml_block);
        if let Err(errors) = compile(&text, None) {
            check_errors(&errors, &text)?;
        }

        let (shared, _dir) = reload_fixture();
        let before = shared.current();
        std::fs::write(&shared.config_path, &text).expect("write config");
        match reload(shared) {
            ReloadOutcome::Rejected(errors) => {
                check_errors(&errors, &text)?;
                let after = shared.current();
                prop_assert!(Arc::ptr_eq(&before, &after), "a refused reload replaced the config");
            }
            ReloadOutcome::Applied { version } => {
                prop_assert_eq!(&shared.current().version, &version);
                prop_assert_eq!(version, config::version_of(&text));
            }
            ReloadOutcome::Unchanged => prop_assert_eq!(&before.version, &config::version_of(&text)),
        }
    }
}
