//! The host end of each guest agent's virtio-serial port: read its
//! heartbeats (one JSON line each) and keep the last one for the report.

use super::VmContext;
use cm_api::boot::Heartbeat;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixStream;
use uuid::Uuid;

/// The longest heartbeat line accepted; anything longer is a broken guest.
const MAX_LINE: usize = 64 * 1024;

/// Read heartbeats for as long as the VM's directory exists; reconnect
/// whenever QEMU restarts (its socket is new) or the guest goes quiet.
pub async fn relay(ctx: Arc<VmContext>, id: Uuid, sock: PathBuf) {
    loop {
        if !sock.parent().map(|d| d.exists()).unwrap_or(false) {
            return;
        }
        if let Ok(stream) = UnixStream::connect(&sock).await {
            let mut lines = BufReader::new(stream);
            let mut line = String::new();
            loop {
                line.clear();
                match lines.read_line(&mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) if n > MAX_LINE => break,
                    Ok(_) => match serde_json::from_str::<Heartbeat>(line.trim()) {
                        Ok(hb) => ctx.beat(id, hb),
                        Err(e) => tracing::debug!("{id}: not a heartbeat: {e}"),
                    },
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
