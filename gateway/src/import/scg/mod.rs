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
    let (props, profiles) = if is_properties {
        (source::parse_properties(&text), Vec::new())
    } else {
        source::parse_yaml(&text).map_err(|e| format!("{}: not valid YAML: {e}", path.display()))?
    };
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let (out, mut notes) = convert::convert(&props, &name);
    for (line, profile) in profiles {
        notes.push(Note::new(
            line,
            format!("profile {profile}"),
            "a profile's document is not converted (only the default ones are); put that profile's settings in a file of their own and convert it",
        ));
    }
    notes.sort_by_key(|n| n.line);
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{convert, emit, source};

    /// Lines made of SCG-like fragments: the readers and the converter never panic.
    fn fragment() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "spring.cloud.gateway.routes[0].uri=lb://a",
            "spring.cloud.gateway.routes[0].uri=http://[::1",
            "spring.cloud.gateway.routes[1].predicates[0]=Path=/a/{x}/**,/b/*.c",
            "spring.cloud.gateway.routes[1].predicates[1]=Weight=g,",
            "spring.cloud.gateway.routes[0].predicates[0]=Weight=g,3",
            "spring.cloud.gateway.routes[0].filters[0]=StripPrefix=9",
            "spring.cloud.gateway.routes[0].filters[1]=RewritePath=(,",
            "spring.cloud.gateway.routes[0].filters[2]=SetPath={",
            "spring.cloud.gateway.routes[0].filters[3].name=Retry",
            "spring.cloud.gateway.routes[0].filters[3].args.retries=x",
            "spring.cloud.gateway.routes[0].metadata[a]=1",
            "spring.cloud.gateway.default-filters[0]=PrefixPath=",
            "a\\",
            "\\u12",
            "=",
            ": x",
        ])
        .prop_map(str::to_string)
    }

    proptest! {
        #[test]
        fn properties_never_panic(lines in prop::collection::vec(fragment(), 0..12)) {
            let props = source::parse_properties(&lines.join("\n"));
            let (out, _) = convert::convert(&props, "x.properties");
            let _ = emit::render(&out);
        }

        #[test]
        fn yaml_never_panics(text in "[a-z:\\- \\[\\]{}\n=/*.,]{0,80}") {
            if let Ok((props, _)) = source::parse_yaml(&text) {
                let (out, _) = convert::convert(&props, "x.yml");
                let _ = emit::render(&out);
            }
        }
    }
}
