//! Words of the API as types: operation kinds, event kinds, config statuses.
//!
//! Each is serialised as the string the API has always sent (and the store
//! keeps), so the JSON is unchanged; in the code a new word is a new
//! variant, and every `match` that does not handle it fails to compile.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An enum of fixed words: `as_str`, `parse`, `Display` and serde as the word.
macro_rules! words {
    (
        $(#[$m:meta])*
        pub enum $name:ident {
            $( $(#[$vm:meta])* $v:ident = $s:literal, )+
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vm])* #[serde(rename = $s)] $v, )+
        }

        impl $name {
            /// Every word, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            /// The word on the wire and in the store.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$v => $s, )+
                }
            }

            /// The variant of a word; `None` for a word this version does not know.
            pub fn parse(s: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|w| w.as_str() == s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// In the OpenAPI document: a string, one of the words.
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some($name::ALL.iter().map(|w| w.as_str())))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

words! {
    /// What an operation (`202 Accepted`) does.
    pub enum OperationKind {
        InstanceCreate = "instance.create",
        InstanceStart = "instance.start",
        InstanceStop = "instance.stop",
        InstanceReboot = "instance.reboot",
        InstanceDelete = "instance.delete",
        /// An instance rebuilt on another host by `cm host evacuate`.
        InstanceEvacuate = "instance.evacuate",
        VolumeCreate = "volume.create",
        VolumeResize = "volume.resize",
        VolumeAttach = "volume.attach",
        VolumeDetach = "volume.detach",
        VolumeDelete = "volume.delete",
        /// `cm volume move`: its target is the volume; the operation's
        /// progress ends with how long the copy took.
        VolumeMove = "volume.move",
        /// `cm image create --from-instance`: its target is the new image
        /// (`target_id` its id from the start).
        ImageCreate = "image.create",
        SnapshotCreate = "snapshot.create",
        SnapshotRestore = "snapshot.restore",
        SnapshotDelete = "snapshot.delete",
        /// `cm backup create`: its target is the backup.
        BackupCreate = "backup.create",
        /// `cm backup restore`: its target is the new volume.
        BackupRestore = "backup.restore",
        BackupDelete = "backup.delete",
    }
}

words! {
    /// The type of an event of the log (`GET /v1/events`, field `type`).
    pub enum EventKind {
        InstanceCreated = "instance.created",
        /// A start asked for (`requested`); the operation tells how it ended.
        InstanceStart = "instance.start",
        InstanceStop = "instance.stop",
        InstanceReboot = "instance.reboot",
        InstanceDelete = "instance.delete",
        InstanceDeleted = "instance.deleted",
        InstanceState = "instance.state",
        InstanceRestart = "instance.restart",
        InstanceEvacuated = "instance.evacuated",
        HostRegistered = "host.registered",
        HostState = "host.state",
        HostDeleted = "host.deleted",
        HostEvacuated = "host.evacuated",
        HostOrphan = "host.orphan",
        HostJoinToken = "host.join_token",
        ImageAdded = "image.added",
        ImageDeleted = "image.deleted",
        FlavorCreated = "flavor.created",
        FlavorDeleted = "flavor.deleted",
        UploadFetched = "upload.fetched",
        UploadFailed = "upload.failed",
        UploadExpired = "upload.expired",
        TokenRotated = "token.rotated",
        ConfigRegistered = "config.registered",
        ConfigChanged = "config.changed",
        ConfigRemoved = "config.removed",
        ConfigAssigned = "config.assigned",
        ConfigStatus = "config.status",
        ConfigTrust = "config.trust",
        ConfigDomain = "config.domain",
        /// A deployable's spec was applied (a new generation), or rolled back.
        DeployableApplied = "deployable.applied",
        /// A deployable's or a slot's state changed.
        DeployableState = "deployable.state",
        /// The engine saw something: a crash, a late or missing heartbeat,
        /// a failed check, a host gone silent.
        DeployableObserved = "deployable.observed",
        /// The engine acted (the event's `action` says how).
        DeployableAction = "deployable.action",
        /// Destructive actions held, or let go again.
        DeployableFrozen = "deployable.frozen",
        DeployableThawed = "deployable.thawed",
        /// A rollout's step, its stop, or a rollback.
        DeployableRollout = "deployable.rollout",
        /// The CPE restarted a deployable's engine (a DPE that died).
        DeployableEngine = "deployable.engine",
        DeployableDeleted = "deployable.deleted",
        /// A balancer pool member added, drained, removed.
        PoolMember = "pool.member",
        /// A volume was made on its host (or could not be: `volume.error`).
        VolumeCreated = "volume.created",
        VolumeResized = "volume.resized",
        /// Its host reports it attached to an instance (`target` the volume,
        /// the message names the instance).
        VolumeAttached = "volume.attached",
        VolumeDetached = "volume.detached",
        /// Its host removed its file.
        VolumeDeleted = "volume.deleted",
        /// It now lives on another host (the message says from where, how
        /// many bytes, how long).
        VolumeMoved = "volume.moved",
        /// Its host could not do what was asked (the message says why).
        VolumeError = "volume.error",
        /// Its host took it (the message says how consistent it is).
        SnapshotCreated = "snapshot.created",
        /// Its disk was reverted to it.
        SnapshotRestored = "snapshot.restored",
        SnapshotDeleted = "snapshot.deleted",
        /// Its host could not take, revert to or remove it.
        SnapshotError = "snapshot.error",
        /// Its host made it (the message says full or incremental, why
        /// full, how consistent, how big, how long).
        BackupCreated = "backup.created",
        /// A volume was restored from it (the message names the volume).
        BackupRestored = "backup.restored",
        /// Its host removed its file (by hand or past a schedule's `keep`).
        BackupDeleted = "backup.deleted",
        /// Its host could not make or remove it.
        BackupError = "backup.error",
        /// A schedule was made or removed.
        BackupSchedule = "backup.schedule",
    }
}

words! {
    /// The config statuses the master and cm-guest set (docs/boot-protocol.md).
    pub enum KnownConfigStatus {
        /// Registered, waiting for its guest.
        Registered = "registered",
        /// A dynamic record given to a guest (or an instance).
        Assigned = "assigned",
        /// Its guest fetched the body.
        Fetched = "fetched",
        /// The guest applied it.
        Configured = "configured",
        /// The guest could not apply it (with a reason).
        Failed = "failed",
    }
}

/// A word of an open set: one of the known words of `$known`, or any other
/// string (a guest's own word, free text, a word of a newer version). The
/// JSON is the string either way, so nothing on the wire changes; in the
/// code a `match` handles every known word and the rest once.
macro_rules! open_words {
    (
        $(#[$m:meta])*
        pub enum $name:ident {
            Known($known:ident),
            $(#[$om:meta])* $other:ident(String),
        }
        schema = $desc:literal;
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            Known($known),
            $(#[$om])* $other(String),
        }

        impl $name {
            /// The word on the wire and in the store.
            pub fn as_str(&self) -> &str {
                match self {
                    $name::Known(k) => k.as_str(),
                    $name::$other(s) => s,
                }
            }

            /// The known word, if it is one.
            pub fn known(&self) -> Option<$known> {
                match self {
                    $name::Known(k) => Some(*k),
                    $name::$other(_) => None,
                }
            }
        }

        impl From<$known> for $name {
            fn from(k: $known) -> Self {
                $name::Known(k)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                match $known::parse(&s) {
                    Some(k) => $name::Known(k),
                    None => $name::$other(s),
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name::from(s.to_string())
            }
        }

        impl PartialEq<$known> for $name {
            fn eq(&self, k: &$known) -> bool {
                self.known() == Some(*k)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map($name::from)
            }
        }

        /// In the OpenAPI document: a string, one of the known words or another.
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                let known: Vec<&str> = $known::ALL.iter().map(|k| k.as_str()).collect();
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some(format!("One of {}{}", known.join(", "), $desc)))
                    .examples(known)
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

open_words! {
    /// A config record's status. The boot protocol lets a guest report any
    /// word (docs/boot-protocol.md), so besides the known ones a status may be
    /// one the guest chose; the JSON is the word either way.
    pub enum ConfigStatus {
        Known(KnownConfigStatus),
        /// A word the guest reported that is none of the known ones.
        Reported(String),
    }
    schema = " (set by the master and cm-guest), or a word the guest reported";
}

impl ConfigStatus {
    /// True while no guest has fetched the record yet (`registered` or `assigned`).
    pub fn is_unfetched(&self) -> bool {
        match self {
            ConfigStatus::Known(k) => match k {
                KnownConfigStatus::Registered | KnownConfigStatus::Assigned => true,
                KnownConfigStatus::Fetched
                | KnownConfigStatus::Configured
                | KnownConfigStatus::Failed => false,
            },
            ConfigStatus::Reported(_) => false,
        }
    }
}

open_words! {
    /// An event's type as read back from the log: one this version writes,
    /// or the word of a newer master that shared the store (an older binary
    /// on a newer store still reads every event).
    pub enum EventType {
        Known(EventKind),
        /// A type this version does not know.
        Unknown(String),
    }
    schema = ", or a type a newer master wrote";
}

mod deploy;
mod guest;
mod host;
pub use deploy::{DeployableState, EngineAction, GuestLiveness, SlotState};
pub use guest::{KnownServiceStatus, ServiceStatus};
pub use host::{KnownStopReason, ResolvedAccel, StopReason};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_serialise_as_before() {
        for k in OperationKind::ALL {
            let j = serde_json::to_string(k).unwrap();
            assert_eq!(j, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<OperationKind>(&j).unwrap(), *k);
            assert_eq!(OperationKind::parse(k.as_str()), Some(*k));
        }
        for k in EventKind::ALL {
            let j = serde_json::to_string(k).unwrap();
            assert_eq!(j, format!("\"{}\"", k.as_str()));
            assert_eq!(EventKind::parse(k.as_str()), Some(*k));
        }
        assert_eq!(
            serde_json::to_string(&OperationKind::InstanceCreate).unwrap(),
            "\"instance.create\""
        );
        assert_eq!(EventKind::HostJoinToken.as_str(), "host.join_token");
        assert_eq!(OperationKind::parse("instance.frobnicate"), None);
    }

    #[test]
    fn a_config_status_keeps_a_reported_word() {
        let s: ConfigStatus = serde_json::from_str("\"configured\"").unwrap();
        assert_eq!(s, ConfigStatus::Known(KnownConfigStatus::Configured));
        let s: ConfigStatus = serde_json::from_str("\"half-done\"").unwrap();
        assert_eq!(s, ConfigStatus::Reported("half-done".into()));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"half-done\"");
        assert!(ConfigStatus::from("assigned").is_unfetched());
        assert!(!ConfigStatus::from("half-done").is_unfetched());
    }

    #[test]
    fn an_event_type_this_version_does_not_know_stays_readable() {
        for k in EventKind::ALL {
            let t: EventType = serde_json::from_str(&serde_json::to_string(k).unwrap()).unwrap();
            assert_eq!(t, EventType::Known(*k));
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{k}\""));
        }
        let t: EventType = serde_json::from_str("\"bucket.emptied\"").unwrap();
        assert_eq!(t, EventType::Unknown("bucket.emptied".into()));
        assert_eq!(t.to_string(), "bucket.emptied");
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"bucket.emptied\"");
    }
}
