//! Launching a VM: its image and disks made ready (prepare), then QEMU
//! started with the desired volumes on its command line (start).

use super::super::attachments;
use super::super::bootdata;
use super::super::guestnet::GuestNet;
use super::super::qemu::{self, Launch};
use super::Vm;
use cm_api::agent::{DesiredInstance, ObservedState};
use cm_api::image::{FileRole, ImageKind};
use cm_api::instance::Accel;
use cm_api::words::ResolvedAccel;

impl Vm {
    async fn prepare(&self, spec: &DesiredInstance) -> Result<(), String> {
        if spec.root_volume.is_none() {
            // A root volume is made on its image by the volume passes.
            self.ctx
                .images
                .ensure(&self.ctx.master, &spec.image)
                .await?;
        }
        // A volume made in the same desired state as this start: make it
        // now (a pass of volumes/), so that it is on the command line rather
        // than hot-plugged into a booting guest a moment later.
        let files = attachments::desired_files(&self.ctx, spec);
        if files.len() < spec.volumes.len() {
            let ctx = self.ctx.clone();
            tokio::task::spawn_blocking(move || ctx.volumes.converge(&ctx.qemus()))
                .await
                .map_err(|e| e.to_string())?;
        }
        if spec.root_volume.is_none()
            && spec.image.kind == ImageKind::Disk
            && !self.paths.disk().exists()
        {
            let file = spec
                .image
                .file(FileRole::Disk)
                .ok_or("disk image without a disk file")?;
            let base = self.ctx.images.path(spec.image.id, FileRole::Disk);
            let format = file.format.clone().unwrap_or_else(|| "qcow2".into());
            let min = spec
                .disk_gib
                .saturating_mul(1 << 30)
                .max(file.virtual_size.unwrap_or(0));
            let disk = self.paths.disk();
            tokio::task::spawn_blocking(move || {
                super::super::disk::create_overlay(&base, &format, &disk, min)
            })
            .await
            .map_err(|e| e.to_string())??;
        }
        Ok(())
    }

    pub(super) async fn start(&mut self, spec: &DesiredInstance) {
        self.stop_deadline = None;
        self.set(ObservedState::Preparing);
        if let Some(v) = spec.root_volume {
            // Its root volume is made (from its image, or a transfer) by
            // the volume passes: until its file is there the VM waits,
            // preparing; the actor looks again at its next step.
            if !self.ctx.volumes.path(v).exists() {
                return;
            }
            // A restore asked before this start: the pass reverts it first
            // (it never reverts a disk a running QEMU holds).
            if self.ctx.volumes.revert_pending(v) {
                self.ctx.volumes.wake.notify_one();
                return;
            }
        }
        if let Err(e) = self.prepare(spec).await {
            self.failed(spec, e);
            return;
        }
        // An offline backup of one of its disks finishes first (it holds
        // the disk's lock); none starts until QEMU holds the disks.
        let Some(_hold) = crate::volumes::backups::LaunchHold::take(&self.ctx.volumes, spec) else {
            tracing::debug!("{}: waiting for a backup of its disks", self.name());
            return;
        };
        let accel = match spec.accel {
            Accel::Kvm => ResolvedAccel::Kvm,
            Accel::Tcg => ResolvedAccel::Tcg,
            Accel::Auto => self.ctx.accel_auto,
        };
        self.set(ObservedState::Starting);
        let net = match GuestNet::new(
            &self.ctx.guest,
            &self.ctx.guest_master,
            &self.paths.boot_sock(),
        ) {
            Ok(n) => n,
            Err(e) => {
                self.failed(spec, e);
                return;
            }
        };
        let ctx = self.ctx.clone();
        let (paths, s, a) = (self.paths.clone(), spec.clone(), accel);
        // A disk another QEMU still holds would fail the whole launch (its
        // lock): the VM starts without it, and the volume says why.
        let held = if spec.volumes.is_empty() {
            Default::default()
        } else {
            self.ctx.volumes.holders(&self.ctx.qemus())
        };
        let mut volumes = attachments::desired_files(&self.ctx, spec);
        volumes.retain(|(v, _)| match held.get(v) {
            Some(other) if *other != self.id => {
                let e = format!(
                    "attaching to {}: instance {other} still holds it",
                    spec.name
                );
                self.ctx.volumes.set_attach_error(*v, Some(e));
                false
            }
            _ => true,
        });
        let on_line = volumes.clone();
        let root = spec.root_volume.map(|v| self.ctx.volumes.path(v));
        let launched = tokio::task::spawn_blocking(move || {
            // The boot's secrets go to QEMU in 0600 files, removed (when
            // `files` drops) once QEMU has read them (vm/bootdata.rs).
            let files =
                bootdata::BootFiles::write(s.boot.as_ref(), s.id, &ctx.guest_master, &paths)
                    .map_err(|e| qemu::LaunchError::Files(e.to_string()))?;
            let kernel = ctx.images.path(s.image.id, FileRole::Kernel);
            let initrd = ctx.images.path(s.image.id, FileRole::Initrd);
            let l = Launch {
                qemu: &ctx.qemu,
                spec: &s,
                paths: &paths,
                accel: a,
                forward_bind: &ctx.forward_bind,
                kernel: (s.image.kind == ImageKind::Kernel)
                    .then_some((kernel.as_path(), initrd.as_path())),
                root: root.as_deref(),
                boot_file: files.fw_cfg.as_deref(),
                smbios_file: files.smbios.as_deref(),
                net: &net,
                volumes: &volumes,
            };
            qemu::launch(&l)
        })
        .await;
        match launched {
            Ok(Ok(pid)) => {
                tracing::info!(
                    "{}: QEMU running (pid {pid}, {accel}, boot {})",
                    self.name(),
                    spec.boot_gen
                );
                self.pid = Some(pid);
                self.watch_pid(pid);
                self.local.boot_gen = spec.boot_gen;
                self.local.reboot_gen = spec.reboot_gen;
                self.local.running = true;
                self.local.failed = false;
                self.local.reason = None;
                self.local.accel = Some(accel);
                self.attach.on_command_line(&on_line);
                self.save();
                // -daemonize returns once QEMU is ready: confirm it now
                // rather than at the next step.
                match self.qmp("query-status").await.as_deref() {
                    Ok("running") => self.set(ObservedState::Running),
                    _ => self.publish(),
                }
            }
            Ok(Err(e)) => self.failed(spec, e.to_string()),
            Err(e) => self.failed(spec, format!("launch task: {e}")),
        }
    }
}
