//! Persistent roots (docs/storage.md, "Persistent roots"): which volume
//! may be an instance's root disk.

use super::volume::VolumeRow;

/// Why a volume cannot be an instance's root now (None: it can).
pub fn unbootable(v: &VolumeRow) -> Option<String> {
    if v.deleted {
        return Some(format!("volume '{}' is being deleted", v.name));
    }
    if let Some((_, name)) = v.user().or(v.facts.holder.as_ref()) {
        return Some(format!("volume '{}' is in use by {name}", v.name));
    }
    if v.image.is_none() {
        return Some(format!(
            "volume '{}' was made empty: only a volume made from an image (--persistent, or a \
             clone of one) boots",
            v.name
        ));
    }
    if v.facts.size_bytes.is_none() || v.facts.error.is_some() {
        return Some(format!("volume '{}' is not available", v.name));
    }
    None
}
