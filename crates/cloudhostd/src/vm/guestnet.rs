//! A guest's network (docs/host.md, "What a guest can reach"): QEMU's
//! user-mode network with its gateway moved off 10.0.2.2, the master's port
//! at 10.0.2.2 handed to the VM's boot proxy (vm/bootproxy.rs) through the
//! relay (relay.rs), and by default slirp's restricted mode, which cuts the
//! guest off from everything else, the host's loopback included.

use super::qemu::opt_escape;
use super::GuestPolicy;
use cm_api::instance::PortForward;
use std::path::Path;

/// Where a guest finds the master: QEMU hands every connection to this
/// address (on the master's port) to the agent's boot proxy.
pub const PROXY_ADDR: &str = "10.0.2.2";
/// The guests' gateway, slirp's own address. QEMU's default is 10.0.2.2;
/// it is moved because slirp refuses a `guestfwd` on its own address.
pub const GATEWAY_ADDR: &str = "10.0.2.1";

#[derive(Debug, Clone)]
pub struct GuestNet {
    /// QEMU's `restrict=on`: no NAT, nothing on the host but the proxy
    /// (and the port forwards into the guest).
    pub restricted: bool,
    /// The master's port at `PROXY_ADDR`.
    pub master_port: u16,
    /// The command QEMU runs for each connection to it (relay.rs).
    pub relay: String,
}

impl GuestNet {
    /// The network of a VM whose boot proxy listens on `boot_sock`, on a
    /// host whose guests reach the master at `guest_master` (`HOST:PORT`).
    pub fn new(
        policy: &GuestPolicy,
        guest_master: &str,
        boot_sock: &Path,
    ) -> Result<GuestNet, String> {
        let master_port = guest_master
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .unwrap_or(cm_api::DEFAULT_PORT);
        Ok(GuestNet {
            restricted: policy.restricted,
            master_port,
            relay: crate::relay::command(&policy.relay_exe, boot_sock, master_port)?,
        })
    }

    /// `-netdev user,...`, with the port forwards into the guest.
    pub fn netdev(&self, forward_bind: &str, ports: &[PortForward]) -> String {
        let mut d = format!("user,id=net0,host={GATEWAY_ADDR}");
        if self.restricted {
            // slirp's restricted mode drops all TCP from the guest but the
            // guestfwd rules (and UDP but DHCP); its IPv6 side is cut too.
            d.push_str(",restrict=on,ipv6=off");
        }
        d.push_str(&format!(
            ",guestfwd=tcp:{PROXY_ADDR}:{}-cmd:{}",
            self.master_port,
            opt_escape(&self.relay)
        ));
        for f in ports {
            d.push_str(&format!(
                ",hostfwd=tcp:{forward_bind}:{}-:{}",
                f.host, f.guest
            ));
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn policy(restricted: bool) -> GuestPolicy {
        GuestPolicy {
            restricted,
            console_log_max: 1 << 20,
            relay_exe: PathBuf::from("/bin/cloudhostd"),
        }
    }

    #[test]
    fn the_masters_port_goes_to_the_proxy_and_the_rest_is_cut() {
        let n = GuestNet::new(
            &policy(true),
            "10.0.2.2:8107",
            Path::new("/d/u,1/boot.sock"),
        )
        .unwrap();
        let ports = [PortForward {
            guest: 80,
            host: 8080,
        }];
        assert_eq!(
            n.netdev("127.0.0.1", &ports),
            "user,id=net0,host=10.0.2.1,restrict=on,ipv6=off,\
             guestfwd=tcp:10.0.2.2:8107-cmd:'/bin/cloudhostd' '--guestfwd-relay' '/d/u,,1/boot.sock',\
             hostfwd=tcp:127.0.0.1:8080-:80"
        );
    }

    #[test]
    fn a_nat_network_still_sends_the_masters_port_to_the_proxy() {
        let n = GuestNet::new(&policy(false), "10.0.2.2:9000", Path::new("/s")).unwrap();
        assert_eq!(
            n.netdev("0.0.0.0", &[]),
            "user,id=net0,host=10.0.2.1,\
             guestfwd=tcp:10.0.2.2:9000-cmd:'/bin/cloudhostd' '--guestfwd-relay' '/s'"
        );
        let long = "/d".repeat(600);
        GuestNet::new(&policy(true), "10.0.2.2:1", Path::new(&long)).unwrap_err();
    }
}
