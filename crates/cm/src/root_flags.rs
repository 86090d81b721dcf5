//! `cm instance create`'s root disk flags (docs/storage.md, "Persistent
//! roots"): `--image` is needed unless `--root-volume` names the volume to
//! boot; `--persistent` and `--root-volume` exclude each other.

use crate::cli::{Cli, Command, InstanceCmd};
use clap::Parser;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    let mut a = vec!["cm", "instance", "create", "db"];
    a.extend_from_slice(args);
    Cli::try_parse_from(a)
}

#[test]
fn image_is_needed_unless_a_root_volume_is_given() {
    let cli = parse(&["--root-volume", "db-root", "--memory", "64"]).expect("parses");
    match cli.command {
        Command::Instance(InstanceCmd::Create { image, place, .. }) => {
            assert_eq!(image, None);
            assert_eq!(place.root_volume.as_deref(), Some("db-root"));
            assert!(!place.persistent);
        }
        other => panic!("parsed as {other:?}"),
    }
    let e = parse(&["--memory", "64"]).unwrap_err();
    assert!(e.to_string().contains("--image"), "{e}");
    let cli = parse(&["--image", "disk", "--persistent"]).expect("parses");
    match cli.command {
        Command::Instance(InstanceCmd::Create { image, place, .. }) => {
            assert_eq!((image.as_deref(), place.persistent), (Some("disk"), true));
        }
        other => panic!("parsed as {other:?}"),
    }
    let e = parse(&["--persistent", "--root-volume", "v"]).unwrap_err();
    assert!(e.to_string().contains("cannot be used with"), "{e}");
}
