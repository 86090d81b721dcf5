//! Where the boot string is (docs/boot-protocol.md): the fw_cfg file
//! cloudhostd gives QEMU (with the boot's re-key credential), then, for
//! guests made elsewhere, the kernel command line, SMBIOS type 11 OEM
//! strings and the SMBIOS type 1 serial.

use cm_api::boot::{BootString, BOOT_KEY, FW_CFG_NAME, REKEY_KEY};
use std::io::Read;
use std::path::Path;

/// Where a boot string was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    FwCfg,
    KernelCommandLine,
    SmbiosOemString,
    SmbiosSerial,
}

/// A boot string, where it was, and the boot's re-key credential (fw_cfg only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub boot: BootString,
    pub source: Source,
    pub rekey: Option<String>,
}

/// The most read of any source (they hold one line or a few).
const MAX_SOURCE: u64 = 64 * 1024;

fn read_bounded(path: &Path) -> Option<Vec<u8>> {
    let f = std::fs::File::open(path).ok()?;
    let mut out = Vec::new();
    f.take(MAX_SOURCE).read_to_end(&mut out).ok()?;
    Some(out)
}

impl Source {
    pub fn describe(self) -> &'static str {
        match self {
            Source::FwCfg => "fw_cfg file",
            Source::KernelCommandLine => "kernel command line",
            Source::SmbiosOemString => "SMBIOS OEM string",
            Source::SmbiosSerial => "SMBIOS serial",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error(
        "no boot string (cm.boot=) in fw_cfg, on the kernel command line, in SMBIOS OEM strings or the serial"
    )]
    None,
    #[error("{0} has a bad boot string: {1}")]
    Bad(&'static str, String),
}

fn from_cmdline(text: &str) -> Option<&str> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(BOOT_KEY))
}

/// The strings of one SMBIOS structure (the formatted area is skipped; the
/// string set is NUL-terminated strings ending with an empty one).
pub fn smbios_strings(raw: &[u8]) -> Vec<String> {
    let Some(&len) = raw.get(1) else {
        return Vec::new();
    };
    let Some(strings) = raw.get(len as usize..) else {
        return Vec::new();
    };
    strings
        .split(|b| *b == 0)
        .take_while(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Look under `root` (`/` in a guest; a fixture directory in tests).
pub fn find(root: &Path) -> Result<Found, FindError> {
    let parse = |s: &str, source: Source, rekey: Option<String>| {
        s.trim()
            .parse::<BootString>()
            .map(|boot| Found {
                boot,
                source,
                rekey,
            })
            .map_err(|e| FindError::Bad(source.describe(), e))
    };
    let fw_cfg = root
        .join("sys/firmware/qemu_fw_cfg/by_name")
        .join(FW_CFG_NAME)
        .join("raw");
    if let Some(raw) = read_bounded(&fw_cfg) {
        let text = String::from_utf8_lossy(&raw);
        let line = |key: &str| text.lines().find_map(|l| l.trim().strip_prefix(key));
        if let Some(b) = line(BOOT_KEY) {
            let rekey = line(REKEY_KEY)
                .map(str::to_string)
                .filter(|r| !r.is_empty());
            return parse(b, Source::FwCfg, rekey);
        }
    }
    if let Some(cmdline) = read_bounded(&root.join("proc/cmdline")) {
        if let Some(b) = from_cmdline(&String::from_utf8_lossy(&cmdline)) {
            return parse(b, Source::KernelCommandLine, None);
        }
    }
    let entries = root.join("sys/firmware/dmi/entries");
    if let Ok(dir) = std::fs::read_dir(&entries) {
        let mut names: Vec<_> = dir
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names.iter().filter(|n| n.starts_with("11-")) {
            if let Some(raw) = read_bounded(&entries.join(n).join("raw")) {
                if let Some(s) = smbios_strings(&raw)
                    .iter()
                    .find_map(|s| s.strip_prefix(BOOT_KEY))
                {
                    return parse(s, Source::SmbiosOemString, None);
                }
            }
        }
    }
    if let Some(serial) = read_bounded(&root.join("sys/class/dmi/id/product_serial")) {
        if let Some(b) = String::from_utf8_lossy(&serial)
            .trim()
            .strip_prefix(BOOT_KEY)
        {
            return parse(b, Source::SmbiosSerial, None);
        }
    }
    Err(FindError::None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cm_api::boot::BootWho;

    const U: &str = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";

    fn oem_raw(strings: &[&str]) -> Vec<u8> {
        // Type 11, length 5, handle, count; then the strings.
        let mut raw = vec![
            11u8,
            5,
            0x00,
            0x0b,
            u8::try_from(strings.len()).unwrap_or(u8::MAX),
        ];
        for s in strings {
            raw.extend_from_slice(s.as_bytes());
            raw.push(0);
        }
        raw.push(0);
        raw
    }

    fn root() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc")).unwrap();
        std::fs::create_dir_all(d.path().join("sys/class/dmi/id")).unwrap();
        d
    }

    #[test]
    fn the_command_line_comes_first() {
        let d = root();
        std::fs::write(
            d.path().join("proc/cmdline"),
            format!("console=ttyS0 cm.boot={U}:10.0.2.2:8107:abc quiet\n"),
        )
        .unwrap();
        let e = d.path().join("sys/firmware/dmi/entries/11-0");
        std::fs::create_dir_all(&e).unwrap();
        std::fs::write(e.join("raw"), oem_raw(&["cm.boot=@d:1.2.3.4:1:x"])).unwrap();
        let f = find(d.path()).unwrap();
        let b = f.boot;
        assert_eq!((f.source, f.rekey), (Source::KernelCommandLine, None));
        assert_eq!(b.who, BootWho::Record(U.parse().unwrap()));
        assert_eq!(
            (b.host.as_str(), b.port, b.secret.as_str()),
            ("10.0.2.2", 8107, "abc")
        );
    }

    #[test]
    fn then_smbios_oem_strings_then_the_serial() {
        let d = root();
        std::fs::write(d.path().join("proc/cmdline"), "console=ttyS0\n").unwrap();
        let e = d.path().join("sys/firmware/dmi/entries/11-0");
        std::fs::create_dir_all(&e).unwrap();
        std::fs::write(
            e.join("raw"),
            oem_raw(&["something else", "cm.boot=@web:10.0.2.2:9000:dsec"]),
        )
        .unwrap();
        let f = find(d.path()).unwrap();
        assert_eq!(f.source, Source::SmbiosOemString);
        assert_eq!(f.boot.who, BootWho::Domain("web".into()));
        std::fs::remove_dir_all(&e).unwrap();
        std::fs::write(
            d.path().join("sys/class/dmi/id/product_serial"),
            format!("cm.boot={U}:h:1:s\n"),
        )
        .unwrap();
        assert_eq!(find(d.path()).unwrap().source, Source::SmbiosSerial);
        // A cloud-init seed in the serial is not ours.
        std::fs::write(
            d.path().join("sys/class/dmi/id/product_serial"),
            "ds=nocloud-net;s=http://x/\n",
        )
        .unwrap();
        assert!(matches!(find(d.path()), Err(FindError::None)));
    }

    #[test]
    fn fw_cfg_comes_before_everything_and_carries_the_rekey_credential() {
        let d = root();
        std::fs::write(
            d.path().join("proc/cmdline"),
            format!("console=ttyS0 cm.boot={U}:10.0.2.2:8107:old\n"),
        )
        .unwrap();
        let fw = d
            .path()
            .join("sys/firmware/qemu_fw_cfg/by_name/opt/org.cloudmaster/boot");
        std::fs::create_dir_all(&fw).unwrap();
        std::fs::write(
            fw.join("raw"),
            format!("cm.boot=@pool/{U}:10.0.2.2:8107:inst\ncm.rekey=r3k3y\n"),
        )
        .unwrap();
        let f = find(d.path()).unwrap();
        assert_eq!(f.source, Source::FwCfg);
        assert_eq!(f.rekey.as_deref(), Some("r3k3y"));
        assert_eq!(
            f.boot.who,
            BootWho::Instance {
                domain: "pool".into(),
                instance: U.parse().unwrap()
            }
        );
        assert_eq!(f.boot.secret, "inst");
        // Without a cm.boot= line, the next sources are looked at.
        std::fs::write(fw.join("raw"), "cm.rekey=x\n").unwrap();
        assert_eq!(find(d.path()).unwrap().source, Source::KernelCommandLine);
    }

    #[test]
    fn a_bad_boot_string_says_where_it_was() {
        let d = root();
        std::fs::write(d.path().join("proc/cmdline"), "cm.boot=nonsense\n").unwrap();
        let e = find(d.path()).unwrap_err();
        assert!(e.to_string().contains("kernel command line"), "{e}");
    }

    #[test]
    fn smbios_strings_survive_truncated_input() {
        assert!(smbios_strings(&[]).is_empty());
        assert!(smbios_strings(&[11]).is_empty());
        assert!(smbios_strings(&[11, 200, 0]).is_empty());
        assert_eq!(smbios_strings(&oem_raw(&["a", "bc"])), vec!["a", "bc"]);
    }
}
