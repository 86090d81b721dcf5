//! Specs from YAML, TOML and JSON (serde, with the path of a bad field kept
//! by `serde_path_to_error`) and from pacemaker-cloud's XML (`xml.rs`).

use super::{check, xml, DeployableSpec, SpecErrors, SpecFormat};

/// A spec longer than this is refused before it is read.
pub const MAX_SPEC_BYTES: usize = 256 * 1024;

/// Read a spec. Only its shape is checked here; [`check`] checks its rules.
pub fn parse(format: SpecFormat, text: &str) -> Result<DeployableSpec, SpecErrors> {
    if text.len() > MAX_SPEC_BYTES {
        return Err(SpecErrors::one(
            "spec",
            format!(
                "{} bytes is too long (at most {MAX_SPEC_BYTES})",
                text.len()
            ),
        ));
    }
    match format {
        SpecFormat::Json => json(text),
        SpecFormat::Yaml => yaml(text),
        SpecFormat::Toml => toml(text),
        SpecFormat::Xml => xml::parse(text).map(|(spec, _)| spec),
    }
}

/// Read and check a spec: every problem, with its path (and, for XML, the
/// line and column of the element it is about).
pub fn load(format: SpecFormat, text: &str) -> Result<DeployableSpec, SpecErrors> {
    if format == SpecFormat::Xml && text.len() <= MAX_SPEC_BYTES {
        let (spec, lines) = xml::parse(text)?;
        return match check(&spec) {
            Ok(()) => Ok(spec),
            Err(mut errs) => {
                for e in &mut errs.0 {
                    if let Some(at) = lines.near(&e.path) {
                        e.message = format!("{} {at}", e.message);
                    }
                }
                Err(errs)
            }
        };
    }
    let spec = parse(format, text)?;
    check(&spec)?;
    Ok(spec)
}

/// serde's words for an untagged enum that matched nothing, said plainly.
fn plain(message: String) -> String {
    if message.contains("untagged enum Limit") {
        "not a count or \"unlimited\"".into()
    } else if message.contains("untagged enum EnvValue") {
        "not text or {ref: assembly.parameter}".into()
    } else {
        message
    }
}

/// The path as the user sees it; a missing field's path names the field.
fn path_of(path: &serde_path_to_error::Path, message: &str) -> String {
    let base = if path.iter().next().is_none() {
        String::new()
    } else {
        path.to_string()
    };
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|m| m.split_once('`'))
        .map(|(f, _)| f);
    match (base.is_empty(), missing) {
        (true, Some(f)) => f.to_string(),
        (false, Some(f)) => format!("{base}.{f}"),
        (true, None) => "spec".to_string(),
        (false, None) => base,
    }
}

fn json(text: &str) -> Result<DeployableSpec, SpecErrors> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner();
        let msg = inner.to_string();
        // serde_json ends its messages with " at line L column C".
        let msg = plain(match msg.rfind(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        });
        let at = format!("(line {}:{})", inner.line(), inner.column());
        SpecErrors::one(path_of(e.path(), &msg), format!("{msg} {at}"))
    })
}

fn yaml(text: &str) -> Result<DeployableSpec, SpecErrors> {
    let de = yaml_serde::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner();
        let mut msg = inner.to_string();
        let at = inner.location().map(|l| {
            if let Some(i) = msg.rfind(" at line ") {
                msg.truncate(i);
            }
            format!(" (line {}:{})", l.line(), l.column())
        });
        // yaml_serde puts its own path first: the one kept here is used.
        if let Some((head, rest)) = msg.split_once(": ") {
            if !head.is_empty() && !head.contains(char::is_whitespace) {
                msg = rest.to_string();
            }
        }
        let msg = plain(msg);
        SpecErrors::one(
            path_of(e.path(), &msg),
            format!("{msg}{}", at.unwrap_or_default()),
        )
    })
}

fn toml(text: &str) -> Result<DeployableSpec, SpecErrors> {
    let at = |span: Option<std::ops::Range<usize>>| {
        span.map(|s| {
            let (l, c) = line_col(text, s.start);
            format!(" (line {l}:{c})")
        })
        .unwrap_or_default()
    };
    let de = ::toml::Deserializer::parse(text)
        .map_err(|e| SpecErrors::one("spec", format!("{}{}", e.message().trim(), at(e.span()))))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner();
        let msg = plain(inner.message().trim().to_string());
        SpecErrors::one(
            path_of(e.path(), &msg),
            format!("{msg}{}", at(inner.span())),
        )
    })
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let upto = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = upto.matches('\n').count() + 1;
    let col = upto
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}
