//! The host agent's settings: flags, file and defaults.

use super::*;

#[test]
fn the_forward_address_is_advertised_else_bound_else_loopback() {
    let ip = |s: &str| s.parse::<std::net::IpAddr>().ok();
    assert_eq!(forward_addr(ip("10.0.0.7"), Some("0.0.0.0")), "10.0.0.7");
    assert_eq!(forward_addr(None, Some("192.168.1.5")), "192.168.1.5");
    assert_eq!(forward_addr(None, Some("0.0.0.0")), "127.0.0.1");
    assert_eq!(forward_addr(None, Some("::")), "127.0.0.1");
    assert_eq!(forward_addr(None, Some("localhost")), "127.0.0.1");
    assert_eq!(forward_addr(None, None), "127.0.0.1");
    let cfg = Config::load(&Args::parse_from([
        "cloudhostd",
        "--forward-bind",
        "127.0.0.1",
        "--advertise-addr",
        "127.0.0.9",
    ]))
    .unwrap();
    assert_eq!(cfg.forward_addr, "127.0.0.9");
    Args::try_parse_from(["cloudhostd", "--advertise-addr", "a host"]).unwrap_err();
}

#[test]
fn guests_reach_the_master_through_the_boot_proxy_wherever_it_is() {
    assert_eq!(
        guest_master_for("http://127.0.0.1:8107").unwrap(),
        "10.0.2.2:8107"
    );
    assert_eq!(
        guest_master_for("http://localhost:9000/").unwrap(),
        "10.0.2.2:9000"
    );
    assert_eq!(
        guest_master_for("http://[::1]:8107").unwrap(),
        "10.0.2.2:8107"
    );
    assert_eq!(
        guest_master_for("http://10.1.2.3:8107").unwrap(),
        "10.0.2.2:8107"
    );
    assert_eq!(
        guest_master_for("https://master.example").unwrap(),
        "10.0.2.2:443"
    );
    guest_master_for("not a url").unwrap_err();
}

#[test]
fn the_join_token_comes_from_a_file_never_from_argv() {
    let err = Config::load(&Args::parse_from(["cloudhostd", "--join-token", "cmj_x"]))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("visible to every user in ps"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("join.token");
    std::fs::write(&f, "cmj_secret\n").unwrap();
    let cfg = Config::load(&Args::parse_from([
        "cloudhostd",
        "--join-token-file",
        f.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(cfg.join_token().unwrap(), "cmj_secret");
    let toml = dir.path().join("host.toml");
    std::fs::write(&toml, "join_token = \"cmj_x\"\n").unwrap();
    let err = Config::load(&Args::parse_from([
        "cloudhostd",
        "--config",
        toml.to_str().unwrap(),
    ]))
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("join_token_file"), "{err}");
}

#[test]
fn a_restricted_guest_network_takes_only_the_proxy_as_guest_master() {
    use GuestNetwork::*;
    check_guest_master("10.0.2.2:8107", Restricted).unwrap();
    assert!(check_guest_master("10.1.2.3:8107", Restricted).is_err());
    check_guest_master("10.1.2.3:8107", Nat).unwrap();
    assert!(check_guest_master("10.1.2.3", Nat).is_err());
    assert!(check_guest_master("10.1.2.3:0", Nat).is_err());
    assert_eq!("nat".parse::<GuestNetwork>(), Ok(Nat));
    "open".parse::<GuestNetwork>().unwrap_err();
}

#[test]
fn volumes_live_in_the_data_dir_unless_told_otherwise() {
    let cfg = Config::load(&Args::parse_from(["cloudhostd", "--data-dir", "/srv/h"])).unwrap();
    assert_eq!(cfg.volumes_dir, PathBuf::from("/srv/h/volumes"));
    let cfg = Config::load(&Args::parse_from([
        "cloudhostd",
        "--data-dir",
        "/srv/h",
        "--volumes-dir",
        "/big/vols",
    ]))
    .unwrap();
    assert_eq!(cfg.volumes_dir, PathBuf::from("/big/vols"));
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("host.toml");
    std::fs::write(&toml, "volumes_dir = \"/big/v2\"\n").unwrap();
    let cfg = Config::load(&Args::parse_from([
        "cloudhostd",
        "--config",
        toml.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(cfg.volumes_dir, PathBuf::from("/big/v2"));
}

#[test]
fn sizes_take_binary_units() {
    assert_eq!(parse_size("4M"), Ok(4 << 20));
    assert_eq!(parse_size("512K"), Ok(512 << 10));
    assert_eq!(parse_size("512KiB"), Ok(512 << 10));
    assert_eq!(parse_size("1g"), Ok(1 << 30));
    assert_eq!(parse_size("70000"), Ok(70000));
    parse_size("4X").unwrap_err();
    parse_size("M").unwrap_err();
    parse_size("-1M").unwrap_err();
    parse_size("99999999999999G").unwrap_err();
}

#[test]
fn backups_live_where_told_and_their_ssh_files_must_be_there() {
    let cfg = Config::load(&Args::parse_from(["cloudhostd", "--data-dir", "/srv/h"])).unwrap();
    assert_eq!(cfg.backups_dir, PathBuf::from("/srv/h/backups"));
    assert_eq!(
        cfg.backup_ssh,
        crate::backup::mirror::SshSettings::default()
    );
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id");
    std::fs::write(&key, "not read here").unwrap();
    let toml = dir.path().join("host.toml");
    std::fs::write(
        &toml,
        format!(
            "backups_dir = \"/big/b\"\nbackup_ssh_key = \"{}\"\n",
            key.display()
        ),
    )
    .unwrap();
    let cfg = Config::load(&Args::parse_from([
        "cloudhostd",
        "--config",
        toml.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(cfg.backups_dir, PathBuf::from("/big/b"));
    assert_eq!(cfg.backup_ssh.key, Some(key.clone()));
    assert_eq!(cfg.backup_ssh.known_hosts, None);
    // A file that is not there stops the agent at its start, saying which.
    let err = Config::load(&Args::parse_from([
        "cloudhostd",
        "--backup-known-hosts",
        "/nonexistent/known_hosts",
    ]))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("--backup-known-hosts /nonexistent/known_hosts"),
        "{err}"
    );
}
