//! `[[sync]]` in cm-guest's config (docs/guest.md): what to keep copied
//! where, and the checks that make it safe to hand to `rsync --delete`.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The shortest and longest debounce a sync may ask for.
pub const DELAY_MS: std::ops::RangeInclusive<u64> = 50..=60_000;
/// At most this many exclude patterns, each at most `MAX_PATTERN` bytes.
pub const MAX_EXCLUDES: usize = 64;
const MAX_PATTERN: usize = 1024;
const MAX_PATH: usize = 1024;
/// At most this many syncs (each is a thread and a line of every heartbeat).
pub const MAX_SYNCS: usize = 16;

/// One `[[sync]]`: keep `target` a copy of `source`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSpec {
    /// An absolute directory, watched recursively.
    pub source: String,
    /// An absolute directory (usually where a volume is mounted).
    pub target: String,
    /// Milliseconds without a change before rsync runs.
    #[serde(default = "default_delay")]
    pub delay_ms: u64,
    /// rsync patterns (`--exclude=P`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Remove from `target` what is gone from `source` (`--delete`).
    #[serde(default = "yes")]
    pub delete: bool,
}

fn default_delay() -> u64 {
    500
}

fn yes() -> bool {
    true
}

impl SyncSpec {
    /// Its name in the heartbeats' service list.
    pub fn service_name(&self) -> String {
        format!("sync:{}", self.source)
    }
}

/// `p` as `/a/b`: absolute, no `.` or `..`, no empty part, not `/` itself.
fn clean(what: &str, p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("{what} {p:?} must be an absolute path"));
    }
    if p.len() > MAX_PATH || p.chars().any(char::is_control) {
        return Err(format!(
            "{what} {p:?} is too long or holds a control character"
        ));
    }
    let mut parts = Vec::new();
    for part in p.split('/').filter(|s| !s.is_empty()) {
        if part == "." || part == ".." {
            return Err(format!("{what} {p:?}: `.` and `..` are not allowed"));
        }
        parts.push(part);
    }
    if parts.is_empty() {
        return Err(format!("{what} cannot be / itself"));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Whether `a` and `b` are the same directory or one is inside the other.
fn overlap(a: &str, b: &str) -> bool {
    let inside = |x: &str, y: &str| x == y || x.starts_with(&format!("{y}/"));
    inside(a, b) || inside(b, a)
}

/// Check every sync and write its paths in their clean form. Two syncs may
/// not share a source, and no target may overlap another sync's source or
/// any other target (they would copy into, or delete, each other).
pub fn check(syncs: &mut [SyncSpec]) -> Result<(), String> {
    if syncs.len() > MAX_SYNCS {
        return Err(format!("at most {MAX_SYNCS} syncs"));
    }
    for s in syncs.iter_mut() {
        let at = format!("sync {}", s.source);
        s.source = clean("sync: source", &s.source)?;
        s.target = clean(&format!("{at}: target"), &s.target)?;
        if overlap(&s.source, &s.target) {
            return Err(format!(
                "{at}: source and target {} must not be the same or inside each other",
                s.target
            ));
        }
        if !DELAY_MS.contains(&s.delay_ms) {
            return Err(format!(
                "{at}: delay_ms must be {} to {}",
                DELAY_MS.start(),
                DELAY_MS.end()
            ));
        }
        if s.exclude.len() > MAX_EXCLUDES {
            return Err(format!("{at}: at most {MAX_EXCLUDES} exclude patterns"));
        }
        for p in &s.exclude {
            if p.is_empty() || p.len() > MAX_PATTERN || p.chars().any(char::is_control) {
                return Err(format!("{at}: exclude {p:?} is not a pattern"));
            }
        }
    }
    for (i, a) in syncs.iter().enumerate() {
        for b in &syncs[i + 1..] {
            if a.source == b.source {
                return Err(format!("sync {}: two syncs have this source", a.source));
            }
            for (x, y) in [(a, b), (b, a)] {
                if overlap(&x.target, &y.source) || overlap(&x.target, &y.target) {
                    return Err(format!(
                        "sync {}: target {} overlaps sync {}",
                        x.source, x.target, y.source
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `p` (absolute, clean) under `root`.
pub fn under(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim_start_matches('/'))
}

/// When a config is applied (after its files and commands): every source
/// must be a directory (not a symbolic link), and a target that exists must
/// be one too (rsync makes a missing last part).
pub fn check_paths(root: &Path, syncs: &[SyncSpec]) -> Result<(), String> {
    for s in syncs {
        let at = format!("sync {}", s.source);
        match std::fs::symlink_metadata(under(root, &s.source)) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "{at}: the source is a symbolic link; give the real directory"
                ))
            }
            Ok(_) => return Err(format!("{at}: the source is not a directory")),
            Err(e) => return Err(format!("{at}: the source: {e}")),
        }
        match std::fs::symlink_metadata(under(root, &s.target)) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "{at}: target {} is not a directory (a symbolic link is not followed)",
                    s.target
                ))
            }
            Err(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(source: &str, target: &str) -> SyncSpec {
        SyncSpec {
            source: source.into(),
            target: target.into(),
            delay_ms: 500,
            exclude: vec![],
            delete: true,
        }
    }

    #[test]
    fn paths_are_cleaned_and_defaults_apply() {
        let mut v = vec![spec("/srv//data/", "/mnt/copy")];
        check(&mut v).unwrap();
        assert_eq!(
            (v[0].source.as_str(), v[0].target.as_str()),
            ("/srv/data", "/mnt/copy")
        );
        assert_eq!(v[0].service_name(), "sync:/srv/data");
        let parsed: SyncSpec = toml::from_str("source = \"/a\"\ntarget = \"/b\"\n").unwrap();
        assert_eq!(parsed, spec("/a", "/b"));
    }

    #[test]
    fn bad_syncs_are_refused_with_a_reason() {
        let with = |f: fn(&mut SyncSpec)| {
            let mut s = spec("/srv", "/mnt/v");
            f(&mut s);
            s
        };
        for (bad, says) in [
            (vec![spec("srv", "/mnt")], "absolute"),
            (vec![spec("/srv", "mnt")], "absolute"),
            (vec![spec("/srv/../etc", "/mnt")], "`..`"),
            (vec![spec("/srv", "/mnt/./x")], "`..`"),
            (vec![spec("/", "/mnt")], "cannot be /"),
            (vec![spec("/srv", "///")], "cannot be /"),
            (vec![spec("/srv", "/srv")], "inside each other"),
            (vec![spec("/srv", "/srv/copy")], "inside each other"),
            (vec![spec("/mnt/v/x", "/mnt/v")], "inside each other"),
            (vec![spec("/srv", "/mnt/a\nb")], "control"),
            (vec![with(|s| s.delay_ms = 10)], "delay_ms"),
            (vec![with(|s| s.delay_ms = 60_001)], "delay_ms"),
            (vec![with(|s| s.exclude = vec![String::new()])], "exclude"),
            (vec![with(|s| s.exclude = vec!["a\0".into()])], "exclude"),
            (vec![with(|s| s.exclude = vec!["x".into(); 65])], "at most"),
            (vec![spec("/a", "/x"), spec("/a", "/y")], "two syncs"),
            (
                vec![spec(&format!("/{}", "a".repeat(1024)), "/x")],
                "too long",
            ),
            (
                (0..17)
                    .map(|i| spec(&format!("/s{i}"), &format!("/t{i}")))
                    .collect(),
                "at most 16 syncs",
            ),
            (vec![spec("/a", "/x"), spec("/b", "/x")], "overlaps"),
            (vec![spec("/a", "/x"), spec("/b", "/x/y")], "overlaps"),
            (vec![spec("/a", "/b/copy"), spec("/b", "/y")], "overlaps"),
        ] {
            let mut v = bad.clone();
            let e = check(&mut v).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        let mut fine = vec![spec("/a", "/x/a"), spec("/b", "/x/b")];
        check(&mut fine).unwrap();
    }

    #[test]
    fn sources_must_be_real_directories_when_applied() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("srv/data")).unwrap();
        std::fs::write(r.join("file"), "x").unwrap();
        std::os::unix::fs::symlink(r.join("srv/data"), r.join("link")).unwrap();
        check_paths(r, &[spec("/srv/data", "/mnt/copy")]).unwrap();
        for (s, says) in [
            (spec("/missing", "/mnt"), "No such file"),
            (spec("/file", "/mnt"), "not a directory"),
            (spec("/link", "/mnt"), "symbolic link"),
            (spec("/srv/data", "/file"), "not a directory"),
            (spec("/srv/data", "/link"), "symbolic link is not followed"),
        ] {
            let e = check_paths(r, std::slice::from_ref(&s)).unwrap_err();
            assert!(e.contains(says), "{s:?}: {e}");
        }
    }
}
