//! Bearer tokens: the admin token made on first start, host tokens made at
//! registration, the join token hosts register with. Only SHA-256 hashes are
//! stored; tokens are 256-bit random, so a plain hash is enough and lookups
//! need no per-token salt.
//!
//! The running master checks requests against an in-memory copy of the
//! tokens table, reloaded whenever the table changes (`token_epoch`, bumped
//! by triggers), so a token revoked by another process (`cloudmasterd
//! --reset-admin-token`) stops working within `TOKEN_REFRESH`.

use crate::app;
use crate::state::App;
use crate::store::{HostId, Store, StoreError, TokenKind, TokenRow};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The admin token, in the data dir (mode 0600).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The join token, in the data dir (mode 0600), for hosts on this machine
/// and for `cm host join-token`; the store keeps only its hash.
pub const JOIN_TOKEN_FILE: &str = "join.token";
/// The setting holding the join token's SHA-256.
pub const JOIN_TOKEN_HASH: &str = "join_token_sha256";
/// Where masters before issue 9 kept the join token, in clear.
const LEGACY_JOIN_TOKEN: &str = "join_token";
/// How often the running master looks for tokens changed by another process.
pub const TOKEN_REFRESH: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<TokenError> for app::Error {
    fn from(e: TokenError) -> app::Error {
        match e {
            TokenError::Store(s) => s.into(),
            other => app::Error::internal(other.to_string()),
        }
    }
}

fn write_token_file(path: &Path, token: &str) -> Result<(), TokenError> {
    crate::files::write_secret(path, token).map_err(|source| TokenError::File {
        path: path.to_path_buf(),
        source,
    })
}

/// A new admin token: written to `DATA/admin.token` (0600, atomically),
/// then made the only admin token of the store, which ends the old one.
pub fn rotate_admin_token(store: &dyn Store, data_dir: &Path) -> Result<String, TokenError> {
    let token = new_token("cma");
    write_token_file(&data_dir.join(ADMIN_TOKEN_FILE), &token)?;
    store.replace_admin_token(&hash(&token))?;
    Ok(token)
}

/// A new join token: written to `DATA/join.token` (0600), its hash stored.
/// The old one stops working at once (registrations read the store).
pub fn rotate_join_token(store: &dyn Store, data_dir: &Path) -> Result<String, TokenError> {
    let token = new_token("cmj");
    write_token_file(&data_dir.join(JOIN_TOKEN_FILE), &token)?;
    store.set_setting(JOIN_TOKEN_HASH, &hash(&token))?;
    Ok(token)
}

/// At start: make a join token if there is none, and replace a join token
/// an older master kept in clear by its hash.
pub fn init_join_token(store: &dyn Store, data_dir: &Path) -> Result<(), TokenError> {
    if let Some(clear) = store.get_setting(LEGACY_JOIN_TOKEN)? {
        store.set_setting(JOIN_TOKEN_HASH, &hash(&clear))?;
        store.delete_setting(LEGACY_JOIN_TOKEN)?;
    }
    if store.get_setting(JOIN_TOKEN_HASH)?.is_none() {
        rotate_join_token(store, data_dir)?;
    }
    Ok(())
}

/// Whether `presented` is the cloud's join token (compared in constant time).
pub fn join_token_matches(store: &dyn Store, presented: &str) -> Result<bool, StoreError> {
    let Some(expected) = store.get_setting(JOIN_TOKEN_HASH)? else {
        return Ok(false);
    };
    let got = hash(presented);
    Ok(!expected.is_empty() && bool::from(got.as_bytes().ct_eq(expected.as_bytes())))
}

/// The join token from `DATA/join.token`, when that file still holds the
/// token whose hash the store keeps.
pub fn join_token_from_file(
    store: &dyn Store,
    data_dir: &Path,
) -> Result<Option<String>, TokenError> {
    let path = data_dir.join(JOIN_TOKEN_FILE);
    let mut text = String::new();
    match std::fs::File::open(&path) {
        // A token is 68 bytes; anything much longer is not one.
        Ok(f) => f
            .take(1024)
            .read_to_string(&mut text)
            .map_err(|source| TokenError::File {
                path: path.clone(),
                source,
            })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(TokenError::File { path, source }),
    };
    let token = text.trim().to_string();
    Ok(join_token_matches(store, &token)?.then_some(token))
}

/// Reload the master's token cache whenever the tokens table changes.
pub async fn watch_tokens(app: Arc<App>) {
    loop {
        tokio::time::sleep(TOKEN_REFRESH).await;
        if let Err(e) = app.refresh_tokens().await {
            tracing::warn!("token refresh: {e}");
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Host(HostId),
}

pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn principal(row: &TokenRow) -> Option<Principal> {
    match (row.kind, row.host_id) {
        (TokenKind::Admin, _) => Some(Principal::Admin),
        (TokenKind::Host, Some(h)) => Some(Principal::Host(h)),
        (TokenKind::Host, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_prefixed() {
        let a = new_token("cma");
        let b = new_token("cma");
        assert_ne!(a, b);
        assert!(a.starts_with("cma_") && a.len() == 4 + 64);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
    }
}
