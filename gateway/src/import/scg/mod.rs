//! `gateway import scg FILE`: convert a Spring Cloud Gateway `application.yml` /
//! `application.properties` into our config. The source is read into flat
//! properties with line numbers ([`source`]), its routes are read in both SCG
//! spellings ([`routes`]), converted ([`convert`], [`predicates`], [`filters`])
//! and written as YAML ([`emit`]); whatever could not be converted is a
//! [`report::Note`] with its line.

pub mod convert;
pub mod emit;
pub mod filters;
pub mod predicates;
pub mod report;
pub mod routes;
pub mod source;

use std::path::Path;

pub use report::{Located, Note};

/// The converted config text and what could not be converted.
#[derive(Debug)]
pub struct Imported {
    pub yaml: String,
    pub notes: Vec<Note>,
}

/// Convert the file at `path`. `.properties` files are read as Java properties,
/// anything else as YAML. Err: the file cannot be read or parsed.
pub fn import(path: &Path) -> Result<Imported, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let is_properties = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("properties"));
    let props = if is_properties {
        source::parse_properties(&text)
    } else {
        source::parse_yaml(&text).map_err(|e| format!("{}: not valid YAML: {e}", path.display()))?
    };
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let (out, notes) = convert::convert(&props, &name);
    if out.routes.is_empty() && notes.is_empty() {
        return Err(format!(
            "{}: no Spring Cloud Gateway routes found (spring.cloud.gateway.routes or spring.cloud.gateway.server.webflux.routes)",
            path.display()
        ));
    }
    Ok(Imported {
        yaml: emit::render(&out),
        notes,
    })
}
