//! Issue 4, points 4 and 9: `cm scp` and `cm rsync` to real sshd nodes, and
//! the seed's `cmscp *.html B,D:/var/www/teste/` typed into a shell.

use std::path::{Path, PathBuf};
use test_infra::sshd::{cm_as, Run, SshFleet, NODE_DIR};

/// Five nodes and a self-contained cloudManager.ini (its [ssh] section
/// names the key and known_hosts, so the old commands need nothing else).
fn fleet() -> (SshFleet, String) {
    let f = SshFleet::start(&["A", "B", "C", "D", "E"]).expect("sshd fleet");
    let extra = format!(
        "user=root\nidentity={}\noptions=UserKnownHostsFile={},GlobalKnownHostsFile=/dev/null\n",
        f.key.display(),
        f.known_hosts.display()
    );
    let ini = f.dir.path().join("cloudManager.ini");
    std::fs::write(&ini, f.ini(|_| 80, &extra)).unwrap();
    (f, ini.display().to_string())
}

/// A site: two .html files and one that is not.
fn site() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("index.html"), "<h1>index</h1>\n").unwrap();
    std::fs::write(d.path().join("about.html"), "<h1>about</h1>\n").unwrap();
    std::fs::write(d.path().join("notes.txt"), "not for the web\n").unwrap();
    std::fs::create_dir(d.path().join("img")).unwrap();
    std::fs::write(d.path().join("img/logo.svg"), "<svg/>\n").unwrap();
    d
}

fn www(f: &SshFleet, node: &str) -> PathBuf {
    f.node(node).root.join("www")
}

fn make_www(f: &SshFleet) {
    for n in &f.nodes {
        std::fs::create_dir_all(n.root.join("www")).unwrap();
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A command line typed into sh in `cwd`, with CM_INVENTORY and the old
/// names on PATH (links to the built cm).
fn shell(line: &str, ini: &str, cwd: &Path) -> Run {
    let bin = tempfile::tempdir().unwrap();
    for name in ["cm", "cmscp", "cmrsync"] {
        std::os::unix::fs::symlink(test_infra::paths::bin("cm"), bin.path().join(name)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    cm_as(
        "/bin/sh",
        &["-c", line],
        &[("PATH", &path), ("CM_INVENTORY", ini)],
        Some(cwd),
    )
}

#[test]
fn cmscp_copies_to_the_named_nodes_only_and_to_all() {
    let (f, ini) = fleet();
    make_www(&f);
    let s = site();
    // The seed's line, as typed: the shell expands *.html.
    let r = shell(&format!("cmscp *.html B,D:{NODE_DIR}/www/"), &ini, s.path());
    assert_eq!(r.code, 0, "{r:?}");
    for n in ["B", "D"] {
        assert_eq!(listing(&www(&f, n)), ["about.html", "index.html"], "{n}");
        assert!(r.stdout.contains(&format!("{n}: ok")), "{}", r.stdout);
    }
    for n in ["A", "C", "E"] {
        assert!(listing(&www(&f, n)).is_empty(), "{n} got files");
    }
    assert_eq!(r.stdout.lines().count(), 2, "{}", r.stdout);
    // The seed's '*' (quoted), and `all`, with scp's own options.
    let r = shell(&format!("cmscp -r img '*:{NODE_DIR}/www/'"), &ini, s.path());
    assert_eq!(r.code, 0, "{r:?}");
    let r = shell(
        &format!("cm scp notes.txt all:{NODE_DIR}/www/"),
        &ini,
        s.path(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    for n in ["A", "B", "C", "D", "E"] {
        let w = www(&f, n);
        assert_eq!(
            std::fs::read_to_string(w.join("img/logo.svg")).unwrap(),
            "<svg/>\n",
            "{n}"
        );
        assert!(w.join("notes.txt").exists(), "{n}");
    }
}

#[test]
fn a_node_that_cannot_take_the_copy_fails_alone() {
    let (f, ini) = fleet();
    make_www(&f);
    // D's destination is a file, not a folder.
    std::fs::remove_dir(www(&f, "D")).unwrap();
    std::fs::write(www(&f, "D"), "in the way").unwrap();
    let s = site();
    let r = cm_as(
        "cm",
        &[
            "--json",
            "scp",
            "--inventory",
            &ini,
            "index.html",
            &format!("all:{NODE_DIR}/www/sub/"),
        ],
        &[],
        Some(s.path()),
    );
    assert_eq!(r.code, 1, "{r:?}");
    let v = r.json_lines();
    assert_eq!(v.len(), 5, "{}", r.stdout);
    for o in &v {
        let n = o["node"].as_str().unwrap();
        // www/sub/ does not exist anywhere: scp fails on every node, alone.
        assert_eq!(o["unreachable"], false, "{o}");
        assert_ne!(o["rc"], 0, "{n}: {o}");
    }
    // Now a copy that works everywhere but D.
    let r = cm_as(
        "cm",
        &[
            "scp",
            "--inventory",
            &ini,
            "index.html",
            &format!("all:{NODE_DIR}/www/index.html"),
        ],
        &[],
        Some(s.path()),
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("D: FAILED"), "{}", r.stdout);
    for n in ["A", "B", "C", "E"] {
        assert!(r.stdout.contains(&format!("{n}: ok")), "{}", r.stdout);
        assert!(www(&f, n).join("index.html").exists());
    }
    // An unreachable node is told apart (exit 3).
    let mut f = f;
    f.node_mut("E").stop();
    let r = cm_as(
        "cm",
        &[
            "scp",
            "--no-reuse",
            "--inventory",
            &ini,
            "index.html",
            &format!("A,E:{NODE_DIR}/www/"),
        ],
        &[],
        Some(s.path()),
    );
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stdout.contains("A: ok"), "{}", r.stdout);
    assert!(r.stdout.contains("E: FAILED unreachable"), "{}", r.stdout);
}

#[test]
fn rsync_takes_rsync_options_and_copies_in_parallel() {
    let (f, ini) = fleet();
    make_www(&f);
    let s = site();
    // An old file on C that --delete removes.
    std::fs::write(www(&f, "C").join("old.html"), "old").unwrap();
    let r = shell(
        &format!("cmrsync -a --delete --exclude '*.txt' ./ 'all,!A:{NODE_DIR}/www/'"),
        &ini,
        s.path(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    for n in ["B", "C", "D", "E"] {
        assert_eq!(
            listing(&www(&f, n)),
            ["about.html", "img", "index.html"],
            "{n}"
        );
    }
    assert!(listing(&www(&f, "A")).is_empty());
    // rsync -e belongs to cm.
    let r = cm_as(
        "cm",
        &[
            "rsync",
            "--inventory",
            &ini,
            "-a",
            "-e",
            "ssh -p 1",
            "./",
            &format!("A:{NODE_DIR}/www/"),
        ],
        &[],
        Some(s.path()),
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("-e: cm rsync sets"), "{}", r.stderr);
    assert!(listing(&www(&f, "A")).is_empty());
}
