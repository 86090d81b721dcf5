//! Volumes in a running QEMU (docs/storage.md): what it holds, learnt from
//! QMP each time (never from memory, which an agent restart loses), and the
//! QMP steps that add a disk (`blockdev-add`, `device_add`), ask the guest
//! to release one (`device_del`), drop a released one (`blockdev-del`) and
//! grow one (`block_resize`). Blocking; call from `spawn_blocking`. Each
//! function holds the monitor for one short call: QEMU serves one client at
//! a time, and the agent's other steps need it too.

use super::qmp::{Qmp, QmpError};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

/// How long a call waits for the monitor and its answer.
const CALL: Duration = Duration::from_secs(5);

/// Every volume node name starts so (`cm_api::volume::qemu_node`).
const NODE_PREFIX: &str = "vol";

/// The qcow2 node of a volume over its file, as `-blockdev` and
/// `blockdev-add` take it (JSON: no comma escaping of the path).
pub fn blockdev(volume: Uuid, file: &Path) -> Value {
    json!({
        "driver": "qcow2",
        "node-name": cm_api::volume::qemu_node(volume),
        "discard": "unmap",
        "file": {
            "driver": "file",
            "filename": file.display().to_string(),
            "discard": "unmap",
        },
    })
}

/// The virtio disk of a volume: `-device`'s value (node, id and serial are
/// hex and letters: nothing to escape).
pub fn device(volume: Uuid) -> String {
    let node = cm_api::volume::qemu_node(volume);
    format!(
        "virtio-blk-pci,drive={node},id={node},serial={}",
        cm_api::volume::disk_serial(volume)
    )
}

fn device_args(volume: Uuid) -> Value {
    let node = cm_api::volume::qemu_node(volume);
    json!({
        "driver": "virtio-blk-pci",
        "drive": node,
        "id": node,
        "serial": cm_api::volume::disk_serial(volume),
    })
}

/// What a QEMU holds of volumes: disks (devices, also one whose release
/// the guest has not acknowledged yet) and block nodes (a node without its
/// device is a released disk, or an attach cut short).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    pub devices: BTreeSet<String>,
    pub nodes: BTreeSet<String>,
}

fn is_volume_node(name: &str) -> bool {
    name.starts_with(NODE_PREFIX) && name.len() == cm_api::volume::qemu_node(Uuid::nil()).len()
}

/// Read `query-block` (disks with their nodes) and
/// `query-named-block-nodes` (every node) into what is held.
pub fn parse_held(block: &Value, nodes: &Value) -> Held {
    let mut held = Held::default();
    for b in block.as_array().into_iter().flatten() {
        // A device whose id is its node's name: ours.
        if let Some(node) = b["inserted"]["node-name"].as_str() {
            let qdev = b["qdev"].as_str().unwrap_or("");
            let id = qdev
                .strip_prefix("/machine/peripheral/")
                .and_then(|rest| rest.split('/').next())
                .unwrap_or(qdev);
            if is_volume_node(node) && (id == node || b["device"] == node) {
                held.devices.insert(node.to_string());
            }
        }
    }
    for n in nodes.as_array().into_iter().flatten() {
        if let Some(name) = n["node-name"].as_str().filter(|n| is_volume_node(n)) {
            held.nodes.insert(name.to_string());
        }
    }
    held
}

/// What the QEMU at `qmp` holds now.
pub fn query(qmp: &Path) -> Result<Held, QmpError> {
    let mut q = Qmp::connect(qmp, CALL)?;
    let block = q.execute("query-block", None)?;
    let nodes = q.execute("query-named-block-nodes", Some(json!({ "flat": true })))?;
    Ok(parse_held(&block, &nodes))
}

/// Give the VM volume `volume` (file `file`): its node unless it has it
/// (`has_node`), then its disk. When the disk cannot be added, the node
/// added for it is removed again.
pub fn attach(qmp: &Path, volume: Uuid, file: &Path, has_node: bool) -> Result<(), QmpError> {
    let mut q = Qmp::connect(qmp, CALL)?;
    if !has_node {
        q.execute("blockdev-add", Some(blockdev(volume, file)))?;
    }
    if let Err(e) = q.execute("device_add", Some(device_args(volume))) {
        let node = cm_api::volume::qemu_node(volume);
        if let Err(e2) = q.execute("blockdev-del", Some(json!({ "node-name": node }))) {
            tracing::warn!("removing node {node} after a failed device_add: {e2}");
        }
        return Err(e);
    }
    Ok(())
}

/// Ask the guest to release disk `node` (`device_del`: an ACPI eject) and
/// wait up to `wait` for QEMU's `DEVICE_DELETED`; true when it came. A
/// guest slower than `wait` is seen later by `query`.
pub fn request_release(qmp: &Path, node: &str, wait: Duration) -> Result<bool, QmpError> {
    let mut q = Qmp::connect(qmp, CALL)?;
    q.execute("device_del", Some(json!({ "id": node })))?;
    q.wait_event(wait, |v| {
        v["event"] == "DEVICE_DELETED" && v["data"]["device"] == node
    })
}

/// Drop block node `node`, whose disk is gone.
pub fn drop_node(qmp: &Path, node: &str) -> Result<(), QmpError> {
    Qmp::connect(qmp, CALL)?
        .execute("blockdev-del", Some(json!({ "node-name": node })))
        .map(|_| ())
}

/// Grow volume `volume`'s node to `size` bytes while the VM runs; the guest
/// sees the new capacity at once (a virtio-blk config change).
pub fn grow(qmp: &Path, volume: Uuid, size: u64) -> Result<(), QmpError> {
    let node = cm_api::volume::qemu_node(volume);
    Qmp::connect(qmp, CALL)?
        .execute(
            "block_resize",
            Some(json!({ "node-name": node, "size": size })),
        )
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_is_a_qcow2_node_and_a_virtio_disk_with_its_serial() {
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let b = blockdev(id, Path::new("/v/a,b.qcow2"));
        assert_eq!(b["node-name"], "vol0123456789abcdef01234567");
        assert_eq!(b["driver"], "qcow2");
        assert_eq!(b["file"]["filename"], "/v/a,b.qcow2", "no escaping in JSON");
        assert_eq!(b["discard"], "unmap");
        assert_eq!(
            device(id),
            "virtio-blk-pci,drive=vol0123456789abcdef01234567,\
             id=vol0123456789abcdef01234567,serial=cm0123456789abcdef01"
        );
    }

    #[test]
    fn what_qemu_holds_is_read_from_query_block_and_the_nodes() {
        let a = cm_api::volume::qemu_node(Uuid::from_u128(1));
        let b = cm_api::volume::qemu_node(Uuid::from_u128(2));
        let block = json!([
            // The root disk (-drive if=virtio): not a volume.
            {"device": "virtio0", "qdev": "/machine/peripheral-anon/device[1]/virtio-backend",
             "inserted": {"node-name": "#block123"}},
            {"device": "", "qdev": format!("/machine/peripheral/{a}/virtio-backend"),
             "inserted": {"node-name": a}},
            // An empty drive has no "inserted".
            {"device": "cd0", "qdev": "/machine/unattached/device[5]"},
        ]);
        let nodes = json!([
            {"node-name": a}, {"node-name": "#block017"}, {"node-name": b},
            {"node-name": "volume-of-someone-else"},
        ]);
        let held = parse_held(&block, &nodes);
        assert_eq!(held.devices, BTreeSet::from([a.clone()]));
        assert_eq!(held.nodes, BTreeSet::from([a, b]));
        assert_eq!(parse_held(&json!(null), &json!({})), Held::default());
    }
}
