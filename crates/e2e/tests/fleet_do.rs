//! Issue 4, points 3, 5 and 9: `cm do` across real sshd nodes on loopback.

use std::path::Path;
use test_infra::sshd::{cm_as, Run, SshFleet, NODE_DIR};

fn fleet() -> (SshFleet, std::path::PathBuf) {
    let f = SshFleet::start(&["A", "B", "C", "D", "E"]).expect("sshd fleet");
    for n in &f.nodes {
        std::fs::write(n.root.join("name"), &n.name).unwrap();
        let kind = if ["A", "C", "E"].contains(&n.name.as_str()) {
            "odd"
        } else {
            "even"
        };
        std::fs::write(n.root.join("kind"), kind).unwrap();
    }
    let ini = f.dir.path().join("cloudManager.ini");
    std::fs::write(&ini, f.ini(|_| 80, "")).unwrap();
    (f, ini)
}

fn cm(f: &SshFleet, ini: &Path, args: &[&str]) -> Run {
    let (i, c) = (
        ini.display().to_string(),
        f.ssh_config.display().to_string(),
    );
    let mut a = vec!["--inventory", i.as_str(), "--ssh-config", c.as_str()];
    a.splice(0..0, args[..1].iter().copied());
    a.extend(&args[1..]);
    cm_as("cm", &a, &[], None)
}

#[test]
fn do_runs_everywhere_in_parallel_with_whole_prefixed_lines() {
    let (f, ini) = fleet();
    let script = format!("n=$(cat {NODE_DIR}/name); i=0; while [ $i -lt 300 ]; do echo \"line $i of $n\"; i=$((i+1)); done");
    let r = cm(&f, &ini, &["do", "all", "--", &script]);
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 5 * 300, "{}", r.stderr);
    for l in &lines {
        // "B: line 17 of B": a whole line, and its prefix is the node it came from.
        let (node, rest) = l
            .split_once(": ")
            .unwrap_or_else(|| panic!("no prefix: {l}"));
        assert!(
            rest.starts_with("line ") && rest.ends_with(&format!(" of {node}")),
            "mixed line: {l}"
        );
    }
    // The old name, in the old order (no --).
    let (i, c) = (
        ini.display().to_string(),
        f.ssh_config.display().to_string(),
    );
    let r = cm_as(
        "cmdo",
        &[
            "--inventory",
            &i,
            "--ssh-config",
            &c,
            "B,D",
            "cat",
            &format!("{NODE_DIR}/name"),
        ],
        &[],
        None,
    );
    assert_eq!(r.code, 0, "{r:?}");
    // Live output comes in the order it arrives, as with pdsh.
    let mut got: Vec<&str> = r.stdout.lines().collect();
    got.sort_unstable();
    assert_eq!(got, ["B: B", "D: D"]);
}

#[test]
fn gather_json_and_exit_codes_tell_failures_apart() {
    let (mut f, ini) = fleet();
    let r = cm(
        &f,
        &ini,
        &[
            "do",
            "all",
            "-b",
            "--",
            &format!("cat {NODE_DIR}/kind; echo"),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("A,C,E (3)\n") && r.stdout.contains("B,D (2)\n"),
        "{}",
        r.stdout
    );
    assert_eq!(r.stdout.matches("odd\n").count(), 1, "{}", r.stdout);

    // A remote failure: exit 1, and the node's own rc in JSON.
    let r = cm(
        &f,
        &ini,
        &[
            "do",
            "all",
            "--json",
            "--",
            &format!("[ $(cat {NODE_DIR}/name) = D ] && {{ echo bad >&2; exit 3; }}; echo ok"),
        ],
    );
    assert_eq!(r.code, 1, "{r:?}");
    let v = r.json_lines();
    assert_eq!(v.len(), 5);
    for o in &v {
        for k in [
            "node",
            "rc",
            "stdout",
            "stderr",
            "duration",
            "unreachable",
            "timed_out",
        ] {
            assert!(o.get(k).is_some(), "{k} missing in {o}");
        }
    }
    let d = v.iter().find(|o| o["node"] == "D").unwrap();
    assert_eq!(
        (d["rc"].as_i64(), d["stderr"].as_str()),
        (Some(3), Some("bad\n"))
    );
    assert!(v
        .iter()
        .filter(|o| o["node"] != "D")
        .all(|o| o["rc"] == 0 && o["stdout"] == "ok\n"));

    // One hung node is cut at --timeout and holds up nobody: exit 4.
    let r = cm(
        &f,
        &ini,
        &[
            "do",
            "all",
            "-t",
            "3",
            "--json",
            "--",
            &format!("[ $(cat {NODE_DIR}/name) = C ] && sleep 120; echo done"),
        ],
    );
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.elapsed.as_secs() < 60, "took {:?}", r.elapsed);
    let v = r.json_lines();
    let c = v.iter().find(|o| o["node"] == "C").unwrap();
    assert_eq!(
        (c["timed_out"].as_bool(), c["rc"].is_null()),
        (Some(true), true),
        "{c}"
    );
    assert!(v
        .iter()
        .filter(|o| o["node"] != "C")
        .all(|o| o["stdout"] == "done\n" && o["duration"].as_f64().unwrap() < 3.0));

    // An unreachable node: exit 3, told apart from a failure.
    f.node_mut("E").stop();
    let r = cm(&f, &ini, &["do", "all", "--json", "--", "true"]);
    assert_eq!(r.code, 3, "{r:?}");
    let v = r.json_lines();
    let e = v.iter().find(|o| o["node"] == "E").unwrap();
    assert_eq!(e["unreachable"], true, "{e}");
    assert!(v
        .iter()
        .filter(|o| o["node"] != "E")
        .all(|o| o["rc"] == 0 && o["unreachable"] == false));
    let r = cm(&f, &ini, &["do", "all", "--", "true"]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("cm: E: unreachable"), "{}", r.stderr);
}

#[test]
fn bad_targets_are_errors_and_nothing_runs() {
    let (f, ini) = fleet();
    let marker = format!("{NODE_DIR}/ran");
    let r = cm(&f, &ini, &["do", "A,Z", "--", &format!("touch {marker}")]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("unknown node 'Z'"), "{}", r.stderr);
    assert!(f.nodes.iter().all(|n| !n.root.join("ran").exists()));
    let r = cm(&f, &ini, &["do", "all", "-f", "0", "--", "true"]);
    assert_eq!(r.code, 2);
    let r = cm(&f, &ini, &["do", "web[1-", "--", "true"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("unbalanced brackets") || r.stderr.contains("missing ]"),
        "{}",
        r.stderr
    );
}

#[test]
fn host_keys_are_strict_unless_accepting_new_ones_is_asked_for() {
    let (f, ini) = fleet();
    // A known_hosts that knows nobody.
    let empty_kh = f.dir.path().join("kh-empty");
    std::fs::write(&empty_kh, "").unwrap();
    let cfg = f.dir.path().join("ssh_config-new");
    let text = std::fs::read_to_string(&f.ssh_config).unwrap().replace(
        &f.known_hosts.display().to_string(),
        &empty_kh.display().to_string(),
    );
    std::fs::write(&cfg, text).unwrap();
    let (i, c) = (ini.display().to_string(), cfg.display().to_string());
    let run = |flags: &[&str]| {
        let mut a = vec!["do", "A,B", "--inventory", &i, "--ssh-config", &c];
        a.extend(flags);
        a.extend(["--", "true"]);
        cm_as("cm", &a, &[], None)
    };
    let r = run(&["--no-reuse"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.contains("Host key verification failed"),
        "{}",
        r.stderr
    );
    let r = run(&["--no-reuse", "--accept-new-host-keys"]);
    assert_eq!(r.code, 0, "{r:?}");
    let learned = std::fs::read_to_string(&empty_kh).unwrap();
    assert_eq!(learned.lines().count(), 2, "{learned}");
    // Now known: strict checking passes.
    let r = run(&[]);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn per_node_ssh_settings_come_from_a_toml_inventory_and_connections_are_reused() {
    let f = SshFleet::start(&["web01", "web02", "db1"]).expect("sshd fleet");
    let kh = f.known_hosts.display().to_string();
    let mut toml = format!(
        "[ssh]\nuser = \"root\"\nidentity = \"{}\"\noptions = [\"UserKnownHostsFile={kh}\", \"GlobalKnownHostsFile=/dev/null\", \"IdentitiesOnly=yes\"]\n\n",
        f.key.display()
    );
    for n in &f.nodes {
        let group = if n.name.starts_with("web") {
            "web"
        } else {
            "db"
        };
        toml.push_str(&format!(
            "[nodes.{}]\nhost = \"{}\"\ngroups = [\"{group}\"]\nssh = {{ port = {} }}\n\n",
            n.name, n.addr, f.port
        ));
    }
    let inv = f.dir.path().join("fleet.toml");
    std::fs::write(&inv, toml).unwrap();
    let i = inv.display().to_string();
    // No --ssh-config: everything comes from the inventory.
    let r = cm_as(
        "cm",
        &[
            "do",
            "web[01-02]",
            "--inventory",
            &i,
            "--",
            "echo $SSH_CONNECTION",
        ],
        &[],
        None,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("web01: ") && l.ends_with(&format!("127.77.0.10 {}", f.port))),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .lines()
            .all(|l| l.ends_with(&format!(" {}", f.port))),
        "{}",
        r.stdout
    );
    // CM_INVENTORY finds it too; @group selects.
    let r = cm_as(
        "cm",
        &["do", "@db", "--", "hostname >/dev/null && echo db"],
        &[("CM_INVENTORY", &i)],
        None,
    );
    assert_eq!((r.code, r.stdout.as_str()), (0, "db1: db\n"), "{r:?}");
    // The connection is reused: a control socket exists for the run's user.
    // SAFETY: getuid has no preconditions and cannot fail.
    let dir = format!("/tmp/cm-ssh-{}", unsafe { libc::getuid() });
    assert!(
        std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0) > 0,
        "no control sockets in {dir}"
    );
}

/// Issue 9, point 6: with the control masters open, cm runs commands by
/// talking to them itself, starting no `ssh` at all (here there is none
/// on its PATH), with the same environment a fresh ssh would pass
/// (`SendEnv`), and a timeout that ends the node's output at once.
#[test]
fn a_warm_run_talks_to_the_masters_without_starting_ssh() {
    let (f, ini) = fleet();
    let cfg = f.dir.path().join("sendenv.cfg");
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&f.ssh_config).unwrap() + "  SendEnv CM_TEST_SENT\n",
    )
    .unwrap();
    let (i, c) = (ini.display().to_string(), cfg.display().to_string());
    let env = [("CM_TEST_SENT", "sent"), ("CM_TEST_KEPT", "kept")];
    let run = |path: &str, args: &[&str]| {
        let mut a = vec!["do", "all", "--inventory", &i, "--ssh-config", &c];
        a.extend(args);
        let mut env = env.to_vec();
        env.push(("PATH", path));
        cm_as("cm", &a, &env, None)
    };
    let show = "echo \"${CM_TEST_SENT:-none} ${CM_TEST_KEPT:-none}\"";
    let path = std::env::var("PATH").unwrap_or_default();
    // Cold: ssh starts, and leaves a master per node.
    let cold = run(&path, &["--json", "--", show]);
    assert_eq!(cold.code, 0, "{cold:?}");
    // Warm, with no ssh to be found.
    let warm = run("/nonexistent", &["--json", "--", show]);
    assert_eq!(warm.code, 0, "{warm:?}");
    for r in [&cold, &warm] {
        let v = r.json_lines();
        assert_eq!(v.len(), 5);
        assert!(
            v.iter()
                .all(|o| o["stdout"] == "sent none\n" && o["rc"] == 0),
            "{}",
            r.stdout
        );
    }
    // Exit codes and stderr come through the master as they would through ssh.
    let r = run(
        "/nonexistent",
        &[
            "--json",
            "--",
            &format!("[ $(cat {NODE_DIR}/name) = B ] && {{ echo no >&2; exit 7; }}; echo yes"),
        ],
    );
    assert_eq!(r.code, 1, "{r:?}");
    let b = r
        .json_lines()
        .into_iter()
        .find(|o| o["node"] == "B")
        .unwrap();
    assert_eq!(
        (b["rc"].as_i64(), b["stderr"].as_str()),
        (Some(7), Some("no\n"))
    );
    // A node past --timeout: its output ends at the timeout, the others are whole.
    let r = run(
        "/nonexistent",
        &[
            "-t",
            "3",
            "--json",
            "--",
            &format!("echo before; [ $(cat {NODE_DIR}/name) = D ] && sleep 120; echo after"),
        ],
    );
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.elapsed.as_secs() < 30, "took {:?}", r.elapsed);
    for o in r.json_lines() {
        if o["node"] == "D" {
            assert_eq!(
                (o["timed_out"].as_bool(), o["stdout"].as_str()),
                (Some(true), Some("before\n")),
                "{o}"
            );
        } else {
            assert_eq!(o["stdout"], "before\nafter\n", "{o}");
        }
    }
}
