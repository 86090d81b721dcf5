//! `cloudhostd --guestfwd-relay SOCKET`: what QEMU runs for each TCP
//! connection a guest opens to the master's address (slirp's
//! `guestfwd=tcp:10.0.2.2:PORT-cmd:...`; QEMU 7.2 has no per-connection
//! forward to a unix socket). Its stdin and stdout are the guest's
//! connection; it joins them to the VM's boot proxy (vm/bootproxy.rs) and
//! exits when the proxy closes. It prints nothing: its stderr is the guest's
//! connection too. It holds no state and no limits: the proxy does.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// QEMU copies a guestfwd rule into a 1024-byte buffer.
const MAX_RULE: usize = 1023;

/// Join stdin/stdout to the unix socket at `sock`; the exit code.
pub fn run(sock: &Path) -> i32 {
    let (Ok(down_in), Ok(down_out)) = (
        io::stdin().as_fd().try_clone_to_owned().map(File::from),
        io::stdout().as_fd().try_clone_to_owned().map(File::from),
    ) else {
        return 1;
    };
    join(down_in, down_out, sock)
}

fn join(mut down_in: File, mut down_out: File, sock: &Path) -> i32 {
    let Ok(mut up) = UnixStream::connect(sock) else {
        return 1;
    };
    let Ok(mut up_w) = up.try_clone() else {
        return 1;
    };
    std::thread::spawn(move || {
        // The guest's request(s), until it closes its side.
        let _ = io::copy(&mut down_in, &mut up_w);
        let _ = up_w.shutdown(std::net::Shutdown::Write);
    });
    // The answers, until the proxy closes: then the connection is over.
    let _ = io::copy(&mut up, &mut down_out);
    let _ = down_out.flush();
    0
}

/// Quote one word for GLib's `g_shell_parse_argv`, which slirp uses to
/// split the command (POSIX shell rules, without running a shell).
fn shell_quote(w: &str) -> String {
    format!("'{}'", w.replace('\'', r"'\''"))
}

/// The command line QEMU runs for each connection to the master's port.
pub fn command(exe: &Path, sock: &Path, port: u16) -> Result<String, String> {
    let (exe, sock) = (exe.to_string_lossy(), sock.to_string_lossy());
    if exe.chars().chain(sock.chars()).any(char::is_control) {
        return Err("the agent's path or data dir holds a control character".into());
    }
    let cmd = format!(
        "{} {} {}",
        shell_quote(&exe),
        shell_quote("--guestfwd-relay"),
        shell_quote(&sock)
    );
    // The rule as QEMU sees it, commas doubled.
    let rule = format!("tcp:{}:{port}-cmd:{cmd}", crate::vm::guestnet::PROXY_ADDR);
    if rule.len() + rule.matches(',').count() > MAX_RULE {
        return Err(format!(
            "the guestfwd rule is longer than QEMU's {MAX_RULE} bytes (a shorter agent path or data dir helps)"
        ));
    }
    Ok(cmd)
}

/// This agent's own binary, to be run by QEMU as the relay. A binary
/// replaced while the agent runs shows as `PATH (deleted)`: the path is
/// what counts.
pub fn own_exe() -> std::io::Result<std::path::PathBuf> {
    let p = std::env::current_exe()?;
    let s = p.to_string_lossy();
    Ok(match s.strip_suffix(" (deleted)") {
        Some(t) => std::path::PathBuf::from(t),
        None => p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::OwnedFd;

    #[test]
    fn words_are_quoted_for_glib() {
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let c = command(
            Path::new("/usr/bin/cloudhostd"),
            Path::new("/d/x/boot.sock"),
            8107,
        );
        assert_eq!(
            c.unwrap(),
            "'/usr/bin/cloudhostd' '--guestfwd-relay' '/d/x/boot.sock'"
        );
        command(Path::new("/bin/x\n"), Path::new("/s"), 1).unwrap_err();
        let long = "/d".repeat(600);
        command(Path::new("/bin/x"), Path::new(&long), 1).unwrap_err();
    }

    /// The relay as QEMU runs it: one socket as both stdin and stdout.
    #[test]
    fn the_relay_joins_its_stdio_to_the_socket_both_ways() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("boot.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let proxy = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut req = String::new();
            c.read_to_string(&mut req).unwrap();
            c.write_all(format!("got {req}").as_bytes()).unwrap();
        });
        let (mut guest, qemu_end) = UnixStream::pair().unwrap();
        let out = File::from(OwnedFd::from(qemu_end.try_clone().unwrap()));
        let input = File::from(OwnedFd::from(qemu_end));
        let relay = std::thread::spawn(move || join(input, out, &sock));
        guest.write_all(b"hello").unwrap();
        guest.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        guest.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "got hello");
        assert_eq!(relay.join().unwrap(), 0);
        proxy.join().unwrap();
    }
}
