//! The trust key sent with every `update_cache` (docs/guest.md): 32 random
//! bytes this guest makes once and keeps in its state directory, so nobody
//! can derive it, not even from the record's secret. A guest that lost it
//! (the test image keeps its state in RAM) makes a new one and sets it on
//! the master with its boot's re-key credential (bootstring.rs, fw_cfg).

use crate::safefs;
use std::io::Read;
use std::path::Path;

const KEY_FILE: &str = "trust-key";

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("no randomness for a trust key: {0}")]
    Random(std::io::Error),
}

/// The trust key, and whether it was made now (none was kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustKey {
    pub key: String,
    pub fresh: bool,
    /// Why it could not be kept, when it could not (it still works for
    /// this run; the next boot makes another and re-keys).
    pub unkept: Option<String>,
}

pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        // No urandom: the clock is enough for jitter and temporary names.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.subsec_nanos() as u64 ^ t.as_secs();
    }
    u64::from_le_bytes(b)
}

fn random_key() -> Result<String, TrustError> {
    let mut b = [0u8; 32];
    let mut filled = 0;
    while filled < b.len() {
        match rustix::rand::getrandom(&mut b[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(TrustError::Random(e.into())),
        }
    }
    Ok(hex::encode(b))
}

fn valid(text: &str) -> Option<String> {
    let t = text.trim();
    (t.len() == 64 && t.bytes().all(|c| c.is_ascii_hexdigit())).then(|| t.to_string())
}

/// This guest's trust key, kept in `state_dir` (made 0700) as `trust-key`
/// (0600, read and written without following links).
pub fn key(state_dir: &Path) -> Result<TrustKey, TrustError> {
    let kept = safefs::read(state_dir, KEY_FILE, 1024)
        .ok()
        .flatten()
        .and_then(|b| valid(&String::from_utf8_lossy(&b)));
    if let Some(key) = kept {
        return Ok(TrustKey {
            key,
            fresh: false,
            unkept: None,
        });
    }
    let key = random_key()?;
    let unkept = keep(state_dir, &key).err();
    Ok(TrustKey {
        key,
        fresh: true,
        unkept,
    })
}

fn keep(state_dir: &Path, key: &str) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|e| format!("{}: {e}", state_dir.display()))?;
    safefs::write(state_dir, KEY_FILE, format!("{key}\n").as_bytes(), 0o600)
        .map_err(|e| format!("{}/{e}", state_dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_key_is_random_kept_and_private() {
        let a = tempfile::tempdir().unwrap();
        let state = a.path().join("state");
        let k1 = key(&state).unwrap();
        assert!(k1.fresh && k1.unkept.is_none(), "{k1:?}");
        assert_eq!(k1.key.len(), 64);
        let k2 = key(&state).unwrap();
        assert_eq!((k2.key.as_str(), k2.fresh), (k1.key.as_str(), false));
        let file = state.join("trust-key");
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // Another machine (state dir), another key; a lost key is made anew.
        let b = tempfile::tempdir().unwrap();
        assert_ne!(key(b.path()).unwrap().key, k1.key);
        std::fs::remove_file(&file).unwrap();
        let k3 = key(&state).unwrap();
        assert!(k3.fresh);
        assert_ne!(k3.key, k1.key);
    }

    #[test]
    fn a_planted_link_is_neither_read_nor_written_through() {
        let a = tempfile::tempdir().unwrap();
        let state = a.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let elsewhere = a.path().join("elsewhere");
        std::fs::write(&elsewhere, "f".repeat(64)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, state.join("trust-key")).unwrap();
        let k = key(&state).unwrap();
        assert_ne!(k.key, "f".repeat(64), "a planted key was taken");
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "f".repeat(64));
        // An unwritable state dir: the key still works for this run, and says why.
        let k = key(Path::new("/proc/no-such-dir")).unwrap();
        assert!(k.fresh && k.unkept.is_some(), "{k:?}");
    }
}
