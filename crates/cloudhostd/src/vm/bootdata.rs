//! What a guest gets at boot to find its config (docs/boot-protocol.md),
//! handed to QEMU in files only this agent can read, never on QEMU's command
//! line (which every user of the host sees in `ps`):
//! - a fw_cfg file `opt/org.cloudmaster/boot` with the boot string and the
//!   boot's re-key credential (`-fw_cfg name=...,file=...`);
//! - for cloud-init, an SMBIOS type 1 structure whose serial is the NoCloud
//!   seed URL with its credential (`-smbios file=...`); QEMU then builds no
//!   type 1 of its own, so this one also carries the system UUID.

use super::qemu::VmPaths;
use cm_api::agent::BootInfo;
use cm_api::boot::{BOOT_KEY, REKEY_KEY};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The boot files of one launch, removed when this is dropped (QEMU reads
/// them before it daemonises, so they are not needed once it has started,
/// nor left behind when writing one of them or starting QEMU fails).
#[derive(Debug, Default)]
pub struct BootFiles {
    pub fw_cfg: Option<PathBuf>,
    pub smbios: Option<PathBuf>,
}

impl BootFiles {
    /// Write what the guest of instance `id` gets at boot (nothing without
    /// `boot`); `master` is the master as the guest reaches it.
    pub fn write(
        boot: Option<&BootInfo>,
        id: Uuid,
        master: &str,
        paths: &VmPaths,
    ) -> std::io::Result<BootFiles> {
        let mut files = BootFiles::default();
        let Some(b) = boot else {
            return Ok(files);
        };
        let fw_cfg = paths.boot_file();
        files.fw_cfg = Some(fw_cfg.clone());
        write_private(&fw_cfg, fw_cfg_text(b, master).as_bytes())?;
        if let Some(url) = nocloud_url(b, master) {
            let smbios = paths.smbios_file();
            files.smbios = Some(smbios.clone());
            write_private(
                &smbios,
                &smbios_type1(id, &format!("ds=nocloud-net;s={url}")),
            )?;
        }
        Ok(files)
    }
}

impl Drop for BootFiles {
    fn drop(&mut self) {
        for p in [&self.fw_cfg, &self.smbios].into_iter().flatten() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The fw_cfg file's text: `cm.boot=...` and `cm.rekey=...` lines.
/// `master` is the master as the guest reaches it (`HOST:PORT`).
pub fn fw_cfg_text(boot: &BootInfo, master: &str) -> String {
    let mut text = format!("{BOOT_KEY}{}:{master}:{}\n", boot.who, boot.secret);
    if let Some(r) = &boot.rekey {
        text.push_str(&format!("{REKEY_KEY}{r}\n"));
    }
    text
}

/// The NoCloud seed URL for cloud-init, with the boot's NoCloud credential.
pub fn nocloud_url(boot: &BootInfo, master: &str) -> Option<String> {
    let cred = boot.nocloud.as_ref()?;
    Some(format!(
        "http://{who}:{cred}@{master}/nocloud/{who}/",
        who = boot.who
    ))
}

/// An SMBIOS type 1 (System Information) structure as QEMU would make it
/// (manufacturer `QEMU`, its `pc` product name, the system UUID encoded as
/// SMBIOS 2.6+ wants: the first three fields little-endian), with `serial`.
pub fn smbios_type1(id: Uuid, serial: &str) -> Vec<u8> {
    let strings: [&str; 3] = ["QEMU", "Standard PC (i440FX + PIIX, 1996)", serial];
    let mut t = vec![
        1u8, // type 1
        27,  // length of the formatted area
        0x00, 0x01, // handle 0x0100, where QEMU puts its own type 1
        1,    // manufacturer: string 1
        2,    // product name: string 2
        0,    // version: none
        3,    // serial number: string 3
    ];
    t.extend_from_slice(&id.to_bytes_le());
    t.extend_from_slice(&[
        6, // wake-up type: power switch
        0, // SKU: none
        0, // family: none
    ]);
    for s in strings {
        // A NUL inside a string would end it early; there is none in ours.
        t.extend(s.bytes().filter(|b| *b != 0));
        t.push(0);
    }
    t.push(0);
    t
}

/// Write `bytes` to `path`, readable by this user alone (0600 from its
/// creation, replacing any older file whole).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    durable_fs::write_atomic(path, bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn info(nocloud: Option<&str>) -> BootInfo {
        BootInfo {
            who: "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9".into(),
            secret: "SECRET".into(),
            nocloud: nocloud.map(String::from),
            rekey: Some("REKEY".into()),
        }
    }

    #[test]
    fn the_fw_cfg_file_has_the_boot_string_and_the_rekey_credential() {
        let t = fw_cfg_text(&info(None), "10.0.2.2:8107");
        assert_eq!(
            t,
            "cm.boot=0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9:10.0.2.2:8107:SECRET\ncm.rekey=REKEY\n"
        );
        assert_eq!(nocloud_url(&info(None), "h:1"), None);
        assert_eq!(
            nocloud_url(&info(Some("NC")), "10.0.2.2:8107").as_deref(),
            Some("http://0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9:NC@10.0.2.2:8107/nocloud/0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9/")
        );
    }

    #[test]
    fn the_smbios_structure_is_well_formed() {
        let id: Uuid = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9".parse().unwrap();
        let t = smbios_type1(id, "ds=nocloud-net;s=http://x/");
        assert_eq!((t[0], t[1]), (1, 27));
        // UUID: 3c2d1e0f 5a4b 7849 then the last eight bytes as they are.
        assert_eq!(
            &t[8..24],
            &[
                0x3c, 0x2d, 0x1e, 0x0f, 0x5a, 0x4b, 0x78, 0x49, 0x86, 0x95, 0xa4, 0xb3, 0xc2, 0xd1,
                0xe0, 0xf9
            ]
        );
        let strings: Vec<&[u8]> = t[27..t.len() - 2].split(|b| *b == 0).collect();
        assert_eq!(
            strings,
            vec![
                &b"QEMU"[..],
                b"Standard PC (i440FX + PIIX, 1996)",
                b"ds=nocloud-net;s=http://x/"
            ]
        );
        assert_eq!(&t[t.len() - 2..], &[0, 0]);
    }

    #[test]
    fn boot_files_are_written_then_gone() {
        let d = tempfile::tempdir().unwrap();
        let paths = VmPaths::new(d.path().to_path_buf());
        let id = Uuid::new_v4();
        let files = BootFiles::write(Some(&info(Some("NC"))), id, "h:1", &paths).unwrap();
        let (f, s) = (files.fw_cfg.clone().unwrap(), files.smbios.clone().unwrap());
        assert!(std::fs::read_to_string(&f)
            .unwrap()
            .contains("cm.rekey=REKEY"));
        assert_eq!(std::fs::read(&s).unwrap()[0], 1);
        drop(files);
        assert!(!f.exists() && !s.exists());
        // Without NoCloud: no SMBIOS file; without boot info: nothing.
        let files = BootFiles::write(Some(&info(None)), id, "h:1", &paths).unwrap();
        assert!(files.smbios.is_none() && files.fw_cfg.is_some());
        drop(files);
        let files = BootFiles::write(None, id, "h:1", &paths).unwrap();
        assert!(files.fw_cfg.is_none() && files.smbios.is_none());
        // A directory that cannot be written: an error, nothing left.
        let bad = VmPaths::new(d.path().join("missing"));
        BootFiles::write(Some(&info(Some("NC"))), id, "h:1", &bad).unwrap_err();
    }

    #[test]
    fn private_files_are_0600() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("boot.fwcfg");
        std::fs::write(&p, "old, world-readable").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&p, b"secret").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
