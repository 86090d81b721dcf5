//! Who may speak for a record (docs/security.md, issue 9 point 12):
//! - the trust key `update_cache` carries is the guest's own random value;
//!   on a record tied to an instance (made for it, or a dynamic record it
//!   holds) it is set or replaced only with the re-key credential of the
//!   instance's current launch, which only that VM's fw_cfg holds, so a mere
//!   holder of the record's secret can never take the record over;
//! - the NoCloud credential in a cloud-init guest's SMBIOS serial reads
//!   `/nocloud` only, for its launch only, and is spent once cloud-init has
//!   fetched (or a few minutes after its first use in a boot).

use super::{Error, Result};
use crate::bootcfg::{salted_hash, same, Keyring};
use crate::state::App;
use crate::store::now_ms;
use cm_api::words::EventKind;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// How long a boot's NoCloud window stays open after its first use, when
/// cloud-init does not finish (vendor-data, its last file) before.
pub const NOCLOUD_WINDOW_MS: i64 = 5 * 60 * 1000;

/// Whether `update_cache` may speak with `trust_key` (and `rekey`).
pub async fn check_trust(
    app: &App,
    uuid: Uuid,
    trust_key: &str,
    rekey: Option<&str>,
) -> Result<()> {
    let (stored, owner) = app
        .db(move |s| Ok((s.config_trust(uuid)?, s.config_owner(uuid)?)))
        .await?;
    let matches = |(salt, hash): &(Vec<u8>, Vec<u8>)| -> bool {
        salted_hash(salt, trust_key).ct_eq(hash).into()
    };
    if stored.as_ref().map(matches).unwrap_or(false) {
        return Ok(());
    }
    let new = Keyring::hash_for_store(trust_key, 0);
    let (salt, hash) = (new.salt.clone(), new.hash.clone());
    match owner {
        Some(o) => {
            // Tied to an instance: only this launch's re-key credential sets it.
            let want = app.keys.rekey_secret(o.instance.uuid(), o.boot_gen);
            let given = rekey.unwrap_or_default();
            if !same(given, &want) {
                let why = if stored.is_some() {
                    "the trust key is not the record's, and no valid re-key credential of this boot came with it"
                } else {
                    "a record of an instance takes its first trust key only with the re-key credential of its boot"
                };
                return Err(Error::Forbidden(why.into()).field("trust_key"));
            }
            app.db(move |s| s.replace_config_trust(uuid, &salt, &hash))
                .await?;
            if stored.is_some() {
                app.event(
                    EventKind::ConfigTrust,
                    &uuid.to_string(),
                    &format!(
                        "trust key replaced with the re-key credential of boot {}",
                        o.boot_gen
                    ),
                )
                .await;
            }
            Ok(())
        }
        // Not tied to an instance (pre_register, federated): the first update's key.
        None if stored.is_none() => {
            if app
                .db(move |s| s.set_config_trust(uuid, &salt, &hash))
                .await?
            {
                return Ok(());
            }
            // Another first update won the race: check against it.
            match app.db(move |s| s.config_trust(uuid)).await? {
                Some(t) if matches(&t) => Ok(()),
                _ => Err(not_first()),
            }
        }
        None => Err(not_first()),
    }
}

fn not_first() -> Error {
    Error::Forbidden("the trust key is not the one given on the first update".into())
        .field("trust_key")
}

/// What a `/nocloud` caller may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NocloudAccess {
    /// With the record's secret: everything, always.
    Record,
    /// With the NoCloud credential of the instance's current launch; the
    /// window of this boot (`BOOT_GEN.REBOOT_GEN`) decides about user-data.
    Launch { boot_gen: u64, reboot_gen: u64 },
}

/// The Basic credentials (`user`, `secret`) of a `/nocloud/{uuid}/...` request.
pub async fn nocloud_access(
    app: &App,
    (user, secret): (String, String),
    path_uuid: &str,
) -> Result<(Uuid, NocloudAccess)> {
    let denied = || Error::Forbidden("unknown config or wrong secret".into());
    let uuid = Uuid::parse_str(path_uuid).ok();
    let (stored, owner) = match uuid {
        Some(u) => {
            app.db(move |s| Ok((s.config_secret(u)?, s.config_owner(u)?)))
                .await?
        }
        None => (None, None),
    };
    // The same work whether the record exists or not.
    let record_ok = app.keys.verify(stored.as_ref(), &secret);
    let launch = owner.map(|o| (o.boot_gen, o.reboot_gen));
    let want = app
        .keys
        .nocloud_secret(uuid.unwrap_or_default(), launch.map(|l| l.0).unwrap_or(0));
    let launch_ok = same(&secret, &want) && launch.is_some();
    let Some(u) = uuid.filter(|_| user == path_uuid) else {
        return Err(denied());
    };
    match (record_ok, launch) {
        (true, _) => Ok((u, NocloudAccess::Record)),
        (false, Some((boot_gen, reboot_gen))) if launch_ok => Ok((
            u,
            NocloudAccess::Launch {
                boot_gen,
                reboot_gen,
            },
        )),
        _ => Err(denied()),
    }
}

/// With a launch credential: whether this boot's window is open (its first
/// use opens it; `spend` closes it after this use).
pub async fn nocloud_window(
    app: &App,
    uuid: Uuid,
    access: NocloudAccess,
    spend: bool,
) -> Result<bool> {
    match access {
        NocloudAccess::Record => Ok(true),
        NocloudAccess::Launch {
            boot_gen,
            reboot_gen,
        } => {
            let boot = format!("{boot_gen}.{reboot_gen}");
            Ok(app
                .db(move |s| s.nocloud_use(uuid, &boot, now_ms(), NOCLOUD_WINDOW_MS, spend))
                .await?)
        }
    }
}
