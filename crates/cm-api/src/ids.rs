//! Ids as types: a host's id cannot be passed where an instance's is asked
//! for. Each is a UUID on the wire and in the store, serialised exactly as
//! the bare `Uuid` (serde transparent), so the JSON does not change.
//! With the `sqlite` feature each is also a SQLite TEXT value.

use std::fmt;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new_v4() -> $name {
                $name(Uuid::new_v4())
            }
            pub fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<$name, uuid::Error> {
                Uuid::parse_str(s).map($name)
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> $name {
                $name(u)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }

        impl PartialEq<Uuid> for $name {
            fn eq(&self, other: &Uuid) -> bool {
                self.0 == *other
            }
        }

        #[cfg(feature = "sqlite")]
        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.0.to_string()))
            }
        }

        #[cfg(feature = "sqlite")]
        impl rusqlite::types::FromSql for $name {
            fn column_result(
                v: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<$name> {
                let text = v.as_str()?;
                Uuid::parse_str(text)
                    .map($name)
                    .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

id_type!(
    /// A host (`cloudhostd`), as registered.
    HostId
);
id_type!(
    /// An instance (a VM the master placed).
    InstanceId
);
id_type!(
    /// An image (kernel + initrd, or a disk).
    ImageId
);
id_type!(
    /// An operation (what a long request returns).
    OperationId
);
id_type!(
    /// A boot-time config record.
    ConfigId
);
id_type!(
    /// An upload of an image file.
    UploadId
);
id_type!(
    /// A deployable (issue 11).
    DeployableId
);
id_type!(
    /// A volume (issue 12): a qcow2 file on one host.
    VolumeId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_its_uuid_on_the_wire() {
        let u = Uuid::parse_str("6f1c2a4e-0000-4000-8000-000000000001").unwrap();
        let id = HostId(u);
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            serde_json::to_string(&u).unwrap()
        );
        let back: HostId =
            serde_json::from_str("\"6f1c2a4e-0000-4000-8000-000000000001\"").unwrap();
        assert_eq!(back, id);
        assert_eq!(id.to_string(), u.to_string());
        assert_eq!(
            "6f1c2a4e-0000-4000-8000-000000000001"
                .parse::<HostId>()
                .unwrap(),
            id
        );
    }
}
