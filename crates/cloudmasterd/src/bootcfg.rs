//! Secrets of the boot-config service (seed 003, issue 3 point 6).
//!
//! A record's secret is derived: HMAC-SHA256 under the master's boot key
//! (`DATA/boot.key`, 0600) of the record's uuid and epoch. So the master can
//! hand the secret to a VM at every boot without keeping it anywhere; the
//! store holds only a salted hash (HMAC-SHA256 keyed with a random salt), and
//! a presented secret is checked against that hash in constant time. An
//! unknown uuid is checked against a dummy hash, so it costs the same time
//! and gets the same 403 as a wrong secret.

use crate::store::SecretHash;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::path::Path;
use subtle::ConstantTimeEq;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

pub struct Keyring {
    key: [u8; 32],
    /// Compared against when a uuid or domain is unknown.
    dummy: SecretHash,
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of every length (RFC 2104): this cannot fail.
    #[allow(clippy::expect_used)]
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC-SHA256 takes any key length");
    for p in parts {
        mac.update(&(p.len() as u64).to_be_bytes());
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

pub fn salted_hash(salt: &[u8], secret: &str) -> Vec<u8> {
    hmac(salt, &[secret.as_bytes()]).to_vec()
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

impl Keyring {
    /// Load the boot key, or make one on first start.
    pub fn open(path: &Path) -> std::io::Result<Keyring> {
        let key = match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim()).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: {e}", path.display()),
                    )
                })?;
                <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: not 32 bytes", path.display()),
                    )
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = random::<32>();
                crate::files::write_secret(path, &hex::encode(key))?;
                key
            }
            Err(e) => return Err(e),
        };
        Ok(Keyring::from_key(key))
    }

    pub fn from_key(key: [u8; 32]) -> Keyring {
        let salt = random::<16>().to_vec();
        let hash = salted_hash(&salt, &hex::encode(random::<32>()));
        Keyring {
            key,
            dummy: SecretHash {
                salt,
                hash,
                epoch: 0,
            },
        }
    }

    /// The secret of record `uuid` at `epoch` (hex, 64 characters).
    pub fn record_secret(&self, uuid: Uuid, epoch: u64) -> String {
        hex::encode(hmac(
            &self.key,
            &[b"record", uuid.as_bytes(), &epoch.to_be_bytes()],
        ))
    }

    /// The credential of dynamic instance `instance` of `domain` for its
    /// launch `boot_gen` (`@DOMAIN/INSTANCE` boot strings): `assign_dynamic`
    /// with it gives that instance the record it held before.
    pub fn instance_secret(&self, domain: &str, instance: Uuid, boot_gen: u64) -> String {
        hex::encode(hmac(
            &self.key,
            &[
                b"dynamic-instance",
                domain.as_bytes(),
                instance.as_bytes(),
                &boot_gen.to_be_bytes(),
            ],
        ))
    }

    /// The re-key credential of `instance`'s launch `boot_gen`: with it the
    /// guest may set a new trust key on the record tied to the instance.
    pub fn rekey_secret(&self, instance: Uuid, boot_gen: u64) -> String {
        hex::encode(hmac(
            &self.key,
            &[b"rekey", instance.as_bytes(), &boot_gen.to_be_bytes()],
        ))
    }

    /// The NoCloud credential of record `uuid` for its instance's launch
    /// `boot_gen`: read-only, for `/nocloud` alone.
    pub fn nocloud_secret(&self, uuid: Uuid, boot_gen: u64) -> String {
        hex::encode(hmac(
            &self.key,
            &[b"nocloud", uuid.as_bytes(), &boot_gen.to_be_bytes()],
        ))
    }

    pub fn domain_secret(&self, domain: &str, epoch: u64) -> String {
        hex::encode(hmac(
            &self.key,
            &[b"domain", domain.as_bytes(), &epoch.to_be_bytes()],
        ))
    }

    /// What the store keeps of a secret.
    pub fn hash_for_store(secret: &str, epoch: u64) -> SecretHash {
        let salt = random::<16>().to_vec();
        SecretHash {
            hash: salted_hash(&salt, secret),
            salt,
            epoch,
        }
    }

    /// Whether `presented` matches `stored`; an unknown record (None) is
    /// checked against a dummy so that it takes the same time, and fails.
    pub fn verify(&self, stored: Option<&SecretHash>, presented: &str) -> bool {
        let (s, known) = match stored {
            Some(s) => (s, true),
            None => (&self.dummy, false),
        };
        let got = salted_hash(&s.salt, presented);
        let same: bool = got.ct_eq(&s.hash).into();
        same & known
    }
}

/// Whether two derived credentials are the same, in constant time.
pub fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Parse `Authorization: Basic base64(user:password)`.
pub fn basic_auth(headers: &axum::http::HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_derived_stable_and_distinct() {
        let k = Keyring::from_key([7; 32]);
        let u = Uuid::new_v4();
        assert_eq!(k.record_secret(u, 1), k.record_secret(u, 1));
        assert_ne!(k.record_secret(u, 1), k.record_secret(u, 2));
        assert_ne!(k.record_secret(u, 1), k.record_secret(Uuid::new_v4(), 1));
        assert_ne!(k.domain_secret("web", 1), k.domain_secret("db", 1));
        // Per launch, and each for one use: none is another.
        let per_launch = [
            k.instance_secret("web", u, 1),
            k.instance_secret("web", u, 2),
            k.instance_secret("db", u, 1),
            k.rekey_secret(u, 1),
            k.rekey_secret(u, 2),
            k.nocloud_secret(u, 1),
            k.nocloud_secret(u, 2),
            k.record_secret(u, 1),
        ];
        let distinct: std::collections::HashSet<_> = per_launch.iter().collect();
        assert_eq!(distinct.len(), per_launch.len());
        assert!(same(&k.rekey_secret(u, 3), &k.rekey_secret(u, 3)));
        assert!(!same(&k.rekey_secret(u, 3), &k.rekey_secret(u, 4)));
        assert_eq!(k.record_secret(u, 1).len(), 64);
        // Another master's key gives other secrets.
        assert_ne!(
            Keyring::from_key([8; 32]).record_secret(u, 1),
            k.record_secret(u, 1)
        );
    }

    #[test]
    fn only_salted_hashes_are_kept_and_checked() {
        let k = Keyring::from_key([7; 32]);
        let secret = k.record_secret(Uuid::new_v4(), 1);
        let a = Keyring::hash_for_store(&secret, 1);
        let b = Keyring::hash_for_store(&secret, 1);
        assert_ne!(a.hash, b.hash, "salted: the same secret hashes differently");
        assert!(!a
            .hash
            .windows(8)
            .any(|w| secret.as_bytes().windows(8).any(|s| s == w)));
        assert!(k.verify(Some(&a), &secret));
        assert!(k.verify(Some(&b), &secret));
        assert!(!k.verify(Some(&a), "wrong"));
        assert!(!k.verify(None, &secret));
    }

    #[test]
    fn the_boot_key_is_kept_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("boot.key");
        let u = Uuid::new_v4();
        let a = Keyring::open(&p).unwrap().record_secret(u, 1);
        let b = Keyring::open(&p).unwrap().record_secret(u, 1);
        assert_eq!(a, b);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn basic_auth_is_parsed() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("authorization", "Basic dXNlcjpwYTpzcw==".parse().unwrap());
        assert_eq!(basic_auth(&h), Some(("user".into(), "pa:ss".into())));
        h.insert("authorization", "Bearer x".parse().unwrap());
        assert_eq!(basic_auth(&h), None);
    }
}
