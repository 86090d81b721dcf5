//! The trust key sent with every `update_cache`: HMAC-SHA256 keyed with the
//! record's secret over the machine's SMBIOS system UUID (QEMU sets it to
//! the instance id). Stable across reboots of one VM, different per VM; a
//! machine without a system UUID keeps a random key in its state directory.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Read;
use std::path::Path;

pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        // No urandom: the clock is enough for jitter.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.subsec_nanos() as u64 ^ t.as_secs();
    }
    u64::from_le_bytes(b)
}

fn hmac_hex(key: &[u8], msg: &[u8]) -> String {
    // HMAC takes keys of every length (RFC 2104): this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC-SHA256 takes any key length");
    mac.update(msg);
    hex::encode(mac.finalize().into_bytes())
}

/// The trust key for `secret` on this machine (`root` is `/` in a guest).
pub fn key(root: &Path, state_dir: &Path, secret: &str) -> String {
    let uuid =
        std::fs::read_to_string(root.join("sys/class/dmi/id/product_uuid")).unwrap_or_default();
    let uuid = uuid.trim().to_ascii_lowercase();
    if !uuid.is_empty() {
        return hmac_hex(secret.as_bytes(), uuid.as_bytes());
    }
    let path = state_dir.join("trust-seed");
    let seed = match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => s.trim().to_string(),
        _ => {
            let s = format!(
                "{:016x}{:016x}{:016x}{:016x}",
                random_u64(),
                random_u64(),
                random_u64(),
                random_u64()
            );
            let _ = std::fs::create_dir_all(state_dir);
            let _ = std::fs::write(&path, &s);
            s
        }
    };
    hmac_hex(secret.as_bytes(), seed.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_stable_per_machine_and_secret() {
        let a = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(a.path().join("sys/class/dmi/id")).unwrap();
        std::fs::write(a.path().join("sys/class/dmi/id/product_uuid"), "AAAA-1\n").unwrap();
        let state = a.path().join("state");
        let k1 = key(a.path(), &state, "s1");
        assert_eq!(k1, key(a.path(), &state, "s1"));
        assert_ne!(k1, key(a.path(), &state, "s2"));
        assert_eq!(k1.len(), 64);
        std::fs::write(a.path().join("sys/class/dmi/id/product_uuid"), "BBBB-2\n").unwrap();
        assert_ne!(
            k1,
            key(a.path(), &state, "s1"),
            "another machine, another key"
        );
        // Without a system UUID: a random seed, kept.
        let b = tempfile::tempdir().unwrap();
        let k2 = key(b.path(), &b.path().join("state"), "s1");
        assert_eq!(k2, key(b.path(), &b.path().join("state"), "s1"));
        assert!(!k2.contains("s1"));
    }
}
