//! QEMU processes: the command line, launching daemonised with a pidfile
//! (so a VM outlives the agent), and telling whether one is alive.

use super::guestnet::GuestNet;
use cm_api::agent::DesiredInstance;
use cm_api::image::ImageKind;
use cm_api::words::ResolvedAccel;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use uuid::Uuid;

/// The files of one VM inside its directory.
#[derive(Debug, Clone)]
pub struct VmPaths {
    pub dir: PathBuf,
}

impl VmPaths {
    pub fn new(dir: PathBuf) -> VmPaths {
        VmPaths { dir }
    }
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
    pub fn qmp(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    pub fn console_sock(&self) -> PathBuf {
        self.dir.join("console.sock")
    }
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    /// The boot proxy's socket (vm/bootproxy.rs).
    pub fn boot_sock(&self) -> PathBuf {
        self.dir.join("boot.sock")
    }
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn stderr(&self) -> PathBuf {
        self.dir.join("qemu.err")
    }
    /// The host end of the guest agent's virtio-serial port.
    pub fn agent_sock(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }
    /// The fw_cfg file with the boot string (0600; only while QEMU starts).
    pub fn boot_file(&self) -> PathBuf {
        self.dir.join("boot.fwcfg")
    }
    /// The SMBIOS type 1 with the NoCloud seed (0600; only while QEMU starts).
    pub fn smbios_file(&self) -> PathBuf {
        self.dir.join("smbios-type1.bin")
    }
}

/// Everything the command line needs besides the desired spec.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    pub qemu: &'a Path,
    pub spec: &'a DesiredInstance,
    pub paths: &'a VmPaths,
    /// `kvm` or `tcg`.
    pub accel: ResolvedAccel,
    /// Where port forwards listen (`0.0.0.0`, `127.0.0.1`).
    pub forward_bind: &'a str,
    /// Kernel and initrd, for kernel images.
    pub kernel: Option<(&'a Path, &'a Path)>,
    /// The root drive's file when it is not the VM's overlay: its root
    /// volume (docs/storage.md, "Persistent roots").
    pub root: Option<&'a Path>,
    /// The fw_cfg file holding the boot string (vm/bootdata.rs): secrets go
    /// to QEMU in files, never on its command line.
    pub boot_file: Option<&'a Path>,
    /// The SMBIOS type 1 file whose serial is the NoCloud seed.
    pub smbios_file: Option<&'a Path>,
    /// What the guest's network reaches (vm/guestnet.rs).
    pub net: &'a GuestNet,
    /// The volumes to attach, in order, with their files (those that exist).
    pub volumes: &'a [(Uuid, PathBuf)],
}

/// QEMU's option syntax doubles commas inside a value.
pub fn opt_escape(v: &str) -> String {
    v.replace(',', ",,")
}

/// The name QEMU runs under; it is how a pid is known to be this VM's.
pub fn vm_tag(id: Uuid) -> String {
    format!("cm-{id}")
}

/// QEMU's arguments (without the program).
pub fn args(l: &Launch<'_>) -> Vec<String> {
    let s = l.spec;
    let p = l.paths;
    let path = |p: PathBuf| p.display().to_string();
    let mut a: Vec<String> = vec![
        "-name".into(),
        format!("{},process={}", vm_tag(s.id), vm_tag(s.id)),
        "-machine".into(),
        "pc".into(),
        "-accel".into(),
        l.accel.as_str().into(),
        "-cpu".into(),
        if l.accel == ResolvedAccel::Kvm {
            "host".into()
        } else {
            "max".into()
        },
        "-m".into(),
        format!("{}M", s.memory_mib),
        "-smp".into(),
        s.vcpus.to_string(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        // A guest poweroff leaves QEMU waiting, so it is told apart from a crash.
        "-no-shutdown".into(),
        "-chardev".into(),
        format!(
            "socket,id=con0,path={},server=on,wait=off,logfile={},logappend=on",
            path(p.console_sock()),
            path(p.console_log())
        ),
        "-serial".into(),
        "chardev:con0".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", path(p.qmp())),
        "-device".into(),
        "virtio-rng-pci".into(),
        // SMBIOS system UUID = the instance's id.
        "-uuid".into(),
        s.id.to_string(),
        // The guest agent's heartbeats (cm_api::boot::AGENT_PORT).
        "-device".into(),
        "virtio-serial-pci,id=vser0".into(),
        "-chardev".into(),
        format!(
            "socket,id=agent0,path={},server=on,wait=off",
            path(p.agent_sock())
        ),
        "-device".into(),
        format!(
            "virtserialport,bus=vser0.0,chardev=agent0,name={}",
            cm_api::boot::AGENT_PORT
        ),
        "-pidfile".into(),
        path(p.pidfile()),
        "-daemonize".into(),
    ];
    if let Some(f) = l.boot_file {
        a.extend([
            "-fw_cfg".into(),
            format!(
                "name={},file={}",
                cm_api::boot::FW_CFG_NAME,
                opt_escape(&f.display().to_string())
            ),
        ]);
    }
    if let Some(f) = l.smbios_file {
        a.extend([
            "-smbios".into(),
            format!("file={}", opt_escape(&f.display().to_string())),
        ]);
    }
    a.extend([
        "-netdev".into(),
        l.net.netdev(l.forward_bind, &s.ports),
        "-device".into(),
        "virtio-net-pci,netdev=net0".into(),
    ]);
    match (s.image.kind, l.kernel) {
        (ImageKind::Kernel, Some((kernel, initrd))) => {
            let mut cmdline = s.image.cmdline.clone().unwrap_or_default();
            if !cmdline.contains("console=") {
                cmdline = format!("console=ttyS0 {cmdline}");
            }
            // Under TCG on a busy host the kernel's IO-APIC timer check can
            // miss its ticks and panic ("IO-APIC + timer doesn't work!");
            // virtual machines skip it, as cloud images' own command lines do.
            if l.accel == ResolvedAccel::Tcg && !cmdline.contains("no_timer_check") {
                cmdline = format!("{} no_timer_check", cmdline.trim_end());
            }
            a.extend([
                "-kernel".into(),
                kernel.display().to_string(),
                "-initrd".into(),
                initrd.display().to_string(),
                "-append".into(),
                cmdline.trim().to_string(),
            ]);
        }
        _ => {
            a.extend([
                "-drive".into(),
                format!(
                    "file={},if=virtio,format=qcow2,cache=writeback,discard=unmap",
                    opt_escape(
                        &l.root
                            .map(Path::to_path_buf)
                            .unwrap_or_else(|| p.disk())
                            .display()
                            .to_string()
                    )
                ),
            ]);
        }
    }
    // Volumes after the root disk, in the desired order (vm/hotplug.rs).
    for (id, file) in l.volumes {
        a.extend([
            "-blockdev".into(),
            super::hotplug::blockdev(*id, file).to_string(),
            "-device".into(),
            super::hotplug::device(*id),
        ]);
    }
    a
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot run {0}: {1}")]
    Spawn(String, std::io::Error),
    #[error("QEMU failed to start: {0}")]
    Failed(String),
    #[error("QEMU started but wrote no pid: {0}")]
    NoPid(String),
    #[error("cannot write the boot files: {0}")]
    Files(String),
}

/// Start QEMU daemonised; returns its pid once the pidfile is written.
pub fn launch(l: &Launch<'_>) -> Result<u32, LaunchError> {
    let _ = std::fs::remove_file(l.paths.pidfile());
    let _ = std::fs::remove_file(l.paths.qmp());
    let _ = std::fs::remove_file(l.paths.console_sock());
    let out = Command::new(l.qemu)
        .args(args(l))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| LaunchError::Spawn(l.qemu.display().to_string(), e))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let _ = std::fs::write(l.paths.stderr(), &err);
        return Err(LaunchError::Failed(if err.is_empty() {
            format!("exit {}", out.status)
        } else {
            err
        }));
    }
    // -daemonize returns after the pidfile is written; read it.
    read_pid(&l.paths.pidfile())
        .ok_or_else(|| LaunchError::NoPid(l.paths.pidfile().display().to_string()))
}

pub fn read_pid(pidfile: &Path) -> Option<u32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live QEMU of this VM (not a recycled pid).
pub fn is_ours(pid: u32, id: Uuid) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let tag = vm_tag(id);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // A zombie has exited; it is not running any more.
    let zombie = stat
        .rsplit(')')
        .next()
        .map(|r| r.trim_start().starts_with('Z'))
        .unwrap_or(false);
    !zombie
        && cmdline
            .split(|b| *b == 0)
            .any(|arg| String::from_utf8_lossy(arg).starts_with(&tag))
}

/// A pidfd: readable when the process exits (Linux ≥ 5.3), also for a
/// process that is not our child.
pub fn pidfd(pid: u32) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: fd is a fresh, valid descriptor that we own from here on.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// SIGKILL `pid` if it is still this VM's QEMU, and wait for it to go.
pub fn kill(pid: u32, id: Uuid) {
    if is_ours(pid, id) {
        // SAFETY: sending a signal to a pid we just checked is ours.
        unsafe {
            // A pid is at most PID_MAX_LIMIT (2^22): cast_signed never wraps.
            libc::kill(pid.cast_signed(), libc::SIGKILL);
        }
        for _ in 0..100 {
            if !is_ours(pid, id) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `qemu-system-x86_64 --version`, first line.
pub fn version(qemu: &Path) -> String {
    Command::new(qemu)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cm_api::agent::{ImageRef, Power};
    use cm_api::instance::{Accel, PortForward};

    fn spec(kind: ImageKind) -> DesiredInstance {
        DesiredInstance {
            health: None,
            id: Uuid::nil(),
            name: "web-1".into(),
            power: Power::Running,
            boot_gen: 1,
            reboot_gen: 0,
            stop_timeout_secs: 30,
            memory_mib: 192,
            vcpus: 2,
            accel: Accel::Auto,
            image: ImageRef {
                id: Uuid::nil(),
                name: "i".into(),
                kind,
                files: vec![],
                cmdline: Some("quiet".into()),
            },
            ports: vec![PortForward {
                guest: 80,
                host: 8080,
            }],
            disk_gib: 0,
            boot: None,
            volumes: vec![],
            force_detach: vec![],
            root_snapshots: Vec::new(),
            root_deleted_snapshots: Vec::new(),
            root_revert: None,
            root_volume: None,
        }
    }

    fn net(restricted: bool) -> GuestNet {
        GuestNet {
            restricted,
            master_port: 8107,
            relay: "'/bin/cloudhostd' '--guestfwd-relay' '/d/boot.sock'".into(),
        }
    }

    #[test]
    fn kernel_images_boot_with_the_asked_size_console_and_forwards() {
        let s = spec(ImageKind::Kernel);
        let paths = VmPaths::new(PathBuf::from("/d"));
        let (k, i) = (PathBuf::from("/k"), PathBuf::from("/i"));
        let a = args(&Launch {
            qemu: Path::new("qemu"),
            spec: &s,
            paths: &paths,
            accel: ResolvedAccel::Tcg,
            forward_bind: "127.0.0.1",
            kernel: Some((&k, &i)),
            root: None,
            boot_file: Some(Path::new("/d/boot.fwcfg")),
            smbios_file: None,
            net: &net(true),
            volumes: &[],
        })
        .join(" ");
        assert!(a.contains("-m 192M"), "{a}");
        assert!(a.contains("-smp 2"), "{a}");
        assert!(a.contains("-accel tcg -cpu max"), "{a}");
        assert!(
            a.contains("-netdev user,id=net0,host=10.0.2.1,restrict=on,")
                && a.contains(",hostfwd=tcp:127.0.0.1:8080-:80 "),
            "{a}"
        );
        assert!(
            a.contains("-append console=ttyS0 quiet no_timer_check"),
            "{a}"
        );
        assert!(a.contains("logfile=/d/console.log"), "{a}");
        assert!(
            a.contains("-no-shutdown") && a.contains("-daemonize"),
            "{a}"
        );
        assert!(!a.contains("-drive"), "{a}");
        // The boot string is in a file; nothing of it on the command line.
        assert!(
            a.ends_with("-append console=ttyS0 quiet no_timer_check"),
            "{a}"
        );
        assert!(
            a.contains("-fw_cfg name=opt/org.cloudmaster/boot,file=/d/boot.fwcfg"),
            "{a}"
        );
        assert!(!a.contains("cm.boot") && !a.contains("-smbios"), "{a}");
        assert!(
            a.contains("virtserialport,bus=vser0.0,chardev=agent0,name=org.cloudmaster.agent.0"),
            "{a}"
        );
        assert!(
            a.contains("-uuid 00000000-0000-0000-0000-000000000000"),
            "{a}"
        );
    }

    #[test]
    fn disk_images_boot_from_their_overlay() {
        let s = spec(ImageKind::Disk);
        let paths = VmPaths::new(PathBuf::from("/d"));
        let a = args(&Launch {
            qemu: Path::new("qemu"),
            spec: &s,
            paths: &paths,
            accel: ResolvedAccel::Kvm,
            forward_bind: "0.0.0.0",
            kernel: None,
            root: None,
            boot_file: Some(Path::new("/d/boot.fwcfg")),
            smbios_file: Some(Path::new("/d/smbios-type1.bin")),
            net: &net(false),
            volumes: &[],
        })
        .join(" ");
        assert!(
            a.contains("file=/d/disk.qcow2,if=virtio,format=qcow2"),
            "{a}"
        );
        assert!(a.contains("-accel kvm -cpu host"), "{a}");
        assert!(!a.contains("-kernel"), "{a}");
        assert!(a.contains("-smbios file=/d/smbios-type1.bin"), "{a}");
        assert!(!a.contains("nocloud") && !a.contains("serial="), "{a}");
        assert!(!a.contains("-append"), "{a}");
    }

    #[test]
    fn volumes_follow_the_root_disk_in_their_order() {
        let s = spec(ImageKind::Disk);
        let paths = VmPaths::new(PathBuf::from("/d"));
        let (v1, v2) = (Uuid::from_u128(0xa1), Uuid::from_u128(0xb2));
        let vols = [
            (v2, PathBuf::from("/vols/b,2.qcow2")),
            (v1, PathBuf::from("/vols/a.qcow2")),
        ];
        let a = args(&Launch {
            qemu: Path::new("qemu"),
            spec: &s,
            paths: &paths,
            accel: ResolvedAccel::Tcg,
            forward_bind: "127.0.0.1",
            kernel: None,
            root: None,
            boot_file: None,
            smbios_file: None,
            net: &net(true),
            volumes: &vols,
        });
        let at = |needle: &str| a.iter().position(|x| x.contains(needle)).unwrap();
        let root = at("file=/d/disk.qcow2");
        let (n1, n2) = (cm_api::volume::qemu_node(v1), cm_api::volume::qemu_node(v2));
        // Each volume: -blockdev (JSON) then its -device, v2 before v1.
        let b2 = at("/vols/b,2.qcow2");
        assert!(root < b2 && b2 < at("/vols/a.qcow2"), "{a:?}");
        assert_eq!(a[b2 - 1], "-blockdev");
        let node: serde_json::Value = serde_json::from_str(&a[b2]).unwrap();
        assert_eq!(node["node-name"], n2.as_str());
        assert_eq!(node["file"]["filename"], "/vols/b,2.qcow2");
        assert_eq!(a[b2 + 1], "-device");
        assert_eq!(
            a[b2 + 2],
            format!(
                "virtio-blk-pci,drive={n2},id={n2},serial={}",
                cm_api::volume::disk_serial(v2)
            )
        );
        assert!(a[at(&format!("drive={n1}"))].ends_with(&cm_api::volume::disk_serial(v1)));
        assert_eq!(a.iter().filter(|x| *x == "-blockdev").count(), 2);
    }

    #[test]
    fn a_root_volume_is_the_root_drive_with_the_overlays_options() {
        let s = spec(ImageKind::Disk);
        let paths = VmPaths::new(PathBuf::from("/d"));
        let root = PathBuf::from("/vols/r,1.qcow2");
        let a = args(&Launch {
            qemu: Path::new("qemu"),
            spec: &s,
            paths: &paths,
            accel: ResolvedAccel::Tcg,
            forward_bind: "127.0.0.1",
            kernel: None,
            root: Some(&root),
            boot_file: None,
            smbios_file: None,
            net: &net(true),
            volumes: &[],
        })
        .join(" ");
        assert!(
            a.contains(
                "file=/vols/r,,1.qcow2,if=virtio,format=qcow2,cache=writeback,discard=unmap"
            ),
            "{a}"
        );
        assert!(!a.contains("/d/disk.qcow2"), "{a}");
    }

    #[test]
    fn a_foreign_pid_is_not_ours() {
        assert!(!is_ours(std::process::id(), Uuid::new_v4()));
        assert!(!is_ours(u32::MAX - 1, Uuid::new_v4()));
    }
}
