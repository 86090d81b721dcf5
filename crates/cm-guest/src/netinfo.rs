//! The guest's address for `update_cache`: the address it uses to reach
//! the master, else the IPv4 address of the interface that holds the
//! default route.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};

/// The local address the kernel picks to reach `host:port` (a UDP socket
/// connected there; no packet is sent). A guest on a restricted network
/// (docs/host.md) has no default route but reaches the master on its link.
/// None for loopback: that says nothing about the guest's network.
pub fn address_towards(host: &str, port: u16) -> Option<String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let target: IpAddr = host.parse().ok()?;
    let any: IpAddr = match target {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let sock = UdpSocket::bind((any, 0)).ok()?;
    sock.connect((target, port)).ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then(|| ip.to_string())
}

/// The interface of the default route, from `/proc/net/route`.
pub fn default_interface(route_table: &str) -> Option<String> {
    route_table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[1] == "00000000").then(|| f[0].to_string())
    })
}

/// IPv4 address of `iface` (SIOCGIFADDR).
pub fn ipv4_of(iface: &str) -> Option<Ipv4Addr> {
    if iface.is_empty() || iface.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: a plain datagram socket, closed below; the ifreq is zeroed,
    // its name is NUL-terminated (shorter than IFNAMSIZ), and the kernel
    // writes a sockaddr_in into it for SIOCGIFADDR.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return None;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in iface.bytes().enumerate() {
            req.ifr_name[i] = libc::c_char::from_ne_bytes([b]);
        }
        let rc = libc::ioctl(fd, libc::SIOCGIFADDR as _, &mut req);
        libc::close(fd);
        if rc < 0 {
            return None;
        }
        let sin = &*(&req.ifr_ifru.ifru_addr as *const libc::sockaddr).cast::<libc::sockaddr_in>();
        Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
    }
}

/// This guest's address, if it has a default route.
pub fn my_address() -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    let iface = default_interface(&table)?;
    ipv4_of(&iface).map(|a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_route_names_its_interface() {
        let t = "Iface\tDestination\tGateway \tFlags\n\
                 eth0\t0002000A\t00000000\t0001\n\
                 eth0\t00000000\t0202000A\t0003\n";
        assert_eq!(default_interface(t).as_deref(), Some("eth0"));
        assert_eq!(default_interface("Iface\tDestination\n"), None);
    }

    #[test]
    fn the_way_to_a_loopback_master_says_nothing() {
        assert_eq!(address_towards("127.0.0.1", 8107), None);
        assert_eq!(address_towards("[::1]", 8107), None);
        assert_eq!(address_towards("not an address", 8107), None);
    }

    #[test]
    fn loopback_has_an_address() {
        assert_eq!(ipv4_of("lo"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(ipv4_of("no-such-if0"), None);
        assert_eq!(ipv4_of(&"x".repeat(40)), None);
    }
}
