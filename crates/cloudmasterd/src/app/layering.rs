//! The layering rule, checked on the source: nothing outside `src/api/`
//! reaches into the HTTP layer. `main.rs` (which assembles the layers) and
//! test code (which may drive the real router) are the only exceptions.
//! Nor does anything but `api/` and `app/error.rs` (the one translation
//! between the app's errors and the wire's) name the HTTP answer
//! `cm_api::ApiError`: the scheduler, the image import, the fetches and
//! the store return their own errors.

use std::path::{Path, PathBuf};

/// The path prefix looked for, spelt in pieces so that this file does not
/// trip its own check.
const API: &str = concat!("api", "::");

/// The wire's error document, spelt in pieces likewise.
const API_ERROR: &str = concat!("Api", "Error");

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn is_test_file(rel: &Path) -> bool {
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs"
        || name.starts_with("tests_")
        || rel.components().any(|c| c.as_os_str() == "tests")
}

/// Lines that name the `api` module: `crate::api`, `super::api`, or a path
/// starting with `api::` (but not `cm_api::` and the like).
fn names_api(line: &str) -> bool {
    let code = line.split("//").next().unwrap_or("");
    code.match_indices(API).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// Lines that name the wire's error document as a word of their own
/// (not `ApiErrorBody` or `MyApiError`).
fn names_api_error(line: &str) -> bool {
    let code = line.split("//").next().unwrap_or("");
    code.match_indices(API_ERROR).any(|(i, m)| {
        let word = |c: char| c.is_alphanumeric() || c == '_';
        !code[..i].chars().next_back().is_some_and(word)
            && !code[i + m.len()..].chars().next().is_some_and(word)
    })
}

/// The offending `file:line: text` of every file under `src` but `api/`.
fn offenders(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut found = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap_or(&f).to_path_buf();
        if rel.starts_with("api") || rel == Path::new("main.rs") || is_test_file(&rel) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            let translates = rel == Path::new("app").join("error.rs");
            if names_api(line) || (!translates && names_api_error(line)) {
                found.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn nothing_outside_api_uses_api() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    assert!(src.join("api").is_dir() && src.join("app").is_dir());
    let found = offenders(&src);
    assert!(
        found.is_empty(),
        "modules outside src/api/ must use the app layer, not api:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_an_api_path() {
    let api = API;
    assert!(names_api(&format!("use crate::{api}error::ApiErr;")));
    assert!(names_api(&format!(
        "    if let Err(e) = {api}configs::remove_stale_now(&app).await {{"
    )));
    assert!(!names_api(&format!("use cm_{api}ErrorCode;")));
    assert!(!names_api(&format!("// see {api}router")));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let f = dir.path().join("reconciler.rs");
    std::fs::write(&f, format!("use crate::{api}configs;\n")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(offenders(dir.path()).len(), 1);
}

#[test]
fn the_check_sees_the_wire_error_outside_api() {
    let e = API_ERROR;
    assert!(names_api_error(&format!(
        "pub fn place() -> Result<HostId, {e}> {{"
    )));
    assert!(names_api_error(&format!("use cm_api::{{{e}, ErrorCode}};")));
    assert!(!names_api_error(&format!("struct {e}Body;")));
    assert!(!names_api_error(&format!("// not a {e}")));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    std::fs::create_dir_all(dir.path().join("app")).unwrap_or_else(|e| panic!("{e}"));
    let line = format!("fn f() -> cm_api::{e} {{}}\n");
    for f in ["scheduler.rs", "app/error.rs"] {
        std::fs::write(dir.path().join(f), &line).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        offenders(dir.path()),
        [format!("scheduler.rs:1: {}", line.trim())]
    );
}
