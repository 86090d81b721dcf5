use crate::cli::{AddImage, ImageCmd};
use crate::client::{api, CliError, Client};
use crate::output::{fields, json as print_json, opt, Tabular};
use crate::upload;
use cm_api::image::{CreateImage, FileRole, FileSource, Image, ImageFromInstance};
use cm_api::{human_time, ApiError, ErrorCode};
use std::collections::BTreeMap;
use std::path::Path;

/// `--sha256 [ROLE=]HEX` values by role; a bare HEX is the disk's.
fn sha256_by_role(
    values: &[String],
    roles: &[FileRole],
) -> Result<BTreeMap<FileRole, String>, CliError> {
    let mut out = BTreeMap::new();
    for v in values {
        let (role, hex) = match v.split_once('=') {
            Some((r, h)) => (
                FileRole::parse(r)
                    .filter(|r| roles.contains(r))
                    .ok_or_else(|| {
                        CliError::Local(format!(
                            "--sha256 {v}: this image has no {r} file (use {})",
                            roles
                                .iter()
                                .map(|r| format!("{}=HEX", r.as_str()))
                                .collect::<Vec<_>>()
                                .join(" or ")
                        ))
                    })?,
                h,
            ),
            None if roles == [FileRole::Disk] => (FileRole::Disk, v.as_str()),
            None => {
                return Err(CliError::Local(format!(
                    "--sha256 {v}: say which file: kernel=HEX or initrd=HEX"
                )))
            }
        };
        cm_api::upload::check_sha256("--sha256", hex).map_err(CliError::Api)?;
        if out.insert(role, hex.to_ascii_lowercase()).is_some() {
            return Err(CliError::Local(format!(
                "--sha256 given twice for {}",
                role.as_str()
            )));
        }
    }
    Ok(out)
}

fn is_url(s: &str) -> bool {
    let l = s.get(..8).unwrap_or("").to_ascii_lowercase();
    l.starts_with("https://") || l.starts_with("http://")
}

/// Where one file comes from, sent or fetched as needed.
fn source(
    client: &Client,
    role: FileRole,
    given: &str,
    want: Option<String>,
    on_master: bool,
    uploaded: &mut Vec<uuid::Uuid>,
) -> Result<FileSource, CliError> {
    let name = role.as_str();
    if on_master {
        return Ok(FileSource {
            upload: None,
            path: Some(given.to_string()),
            sha256: want,
        });
    }
    let up = if is_url(given) {
        upload::fetch_url(client, given, want.clone(), name)?
    } else {
        upload::send_file(client, Path::new(given), name, want.as_deref())?
    };
    uploaded.push(up.id);
    Ok(FileSource::upload(up.id, up.sha256.or(want)))
}

fn add(client: &Client, args: AddImage, json: bool) -> Result<(), CliError> {
    let AddImage {
        name,
        kernel,
        initrd,
        cmdline,
        disk,
        sha256,
        on_master,
    } = args;
    cm_api::validate::name("name", &name, true).map_err(CliError::Api)?;
    // Refuse a taken name before sending gigabytes.
    if client.call(api::catalog::image(&name)).is_ok() {
        return Err(CliError::Api(
            ApiError::new(
                ErrorCode::AlreadyExists,
                format!("image '{name}' exists already"),
            )
            .with_field("name"),
        ));
    }
    let files: Vec<(FileRole, String)> = [
        (FileRole::Kernel, kernel),
        (FileRole::Initrd, initrd),
        (FileRole::Disk, disk),
    ]
    .into_iter()
    .filter_map(|(r, v)| v.map(|v| (r, v)))
    .collect();
    if files.is_empty() {
        return Err(CliError::Local(
            "give --kernel and --initrd, or --disk".into(),
        ));
    }
    let roles: Vec<FileRole> = files.iter().map(|(r, _)| *r).collect();
    let mut want = sha256_by_role(&sha256, &roles)?;
    let mut uploaded = Vec::new();
    let mut body = CreateImage {
        name,
        kernel: None,
        initrd: None,
        cmdline,
        disk: None,
    };
    for (role, given) in &files {
        let src = source(
            client,
            *role,
            given,
            want.remove(role),
            on_master,
            &mut uploaded,
        )?;
        match role {
            FileRole::Kernel => body.kernel = Some(src),
            FileRole::Initrd => body.initrd = Some(src),
            FileRole::Disk => body.disk = Some(src),
        }
    }
    let img: Image = match client.call(api::catalog::create_image(&body)) {
        Ok(i) => i,
        Err(e) => {
            // Refused: the uploads are of no use; do not leave them behind.
            if let CliError::Api(_) = e {
                for id in uploaded {
                    let _ = client.call(api::uploads::delete_upload(id));
                }
            }
            return Err(e);
        }
    };
    if json {
        return print_json(&img);
    }
    println!(
        "image {} added ({}, {} bytes)",
        img.name,
        img.kind.as_str(),
        img.total_size()
    );
    Ok(())
}

pub fn run(client: &Client, cmd: ImageCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        ImageCmd::Add(args) => add(client, args, json),
        ImageCmd::List => {
            let images: Vec<Image> = client.call(api::catalog::images())?;
            if json {
                return print_json(&images);
            }
            let mut t = Tabular::new(&["name", "kind", "size", "created"]).numeric(&[2]);
            for i in &images {
                t.row(vec![
                    i.name.clone(),
                    i.kind.as_str().into(),
                    format!("{:.1} MiB", i.total_size() as f64 / 1048576.0),
                    human_time(&i.created_at),
                ]);
            }
            t.print();
            Ok(())
        }
        ImageCmd::Create {
            name,
            from_instance,
            wait,
        } => {
            let body = ImageFromInstance {
                name: name.clone(),
                instance: from_instance.clone(),
            };
            let acc = client.call(api::catalog::image_from_instance(&body))?;
            let asked = format!("image {name}: making it from instance {from_instance}");
            if !json {
                if wait.no_wait {
                    println!("{asked}");
                } else {
                    eprintln!("{asked}");
                }
            }
            let id = acc.operation.target_id.to_string();
            super::instance::finish(client, acc.operation, &wait, json)?;
            if wait.no_wait {
                return Ok(());
            }
            let i: Image = client.call(api::catalog::image(&id))?;
            if json {
                return print_json(&i);
            }
            show(&i);
            Ok(())
        }
        ImageCmd::Show { name } => {
            let i: Image = client.call(api::catalog::image(&name))?;
            if json {
                return print_json(&i);
            }
            show(&i);
            Ok(())
        }
        ImageCmd::Delete { name } => {
            let v = client.call(api::catalog::delete_image(&name))?;
            super::done(json, &v, &format!("image {name} deleted"))
        }
    }
}

fn show(i: &Image) {
    let mut rows = vec![
        ("name", i.name.clone()),
        ("id", i.id.to_string()),
        ("kind", i.kind.as_str().to_string()),
        ("cmdline", opt(&i.cmdline)),
        ("created", human_time(&i.created_at)),
    ];
    for f in &i.files {
        rows.push((
            f.role.as_str(),
            format!("{} bytes sha256:{}", f.size, f.sha256),
        ));
    }
    fields(&rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn sha256_flags_name_their_file() {
        let disk = [FileRole::Disk];
        let m = sha256_by_role(&[H.to_uppercase()], &disk).unwrap();
        assert_eq!(m[&FileRole::Disk], H);
        let kernel = [FileRole::Kernel, FileRole::Initrd];
        let m = sha256_by_role(&[format!("initrd={H}")], &kernel).unwrap();
        assert_eq!(m[&FileRole::Initrd], H);
        sha256_by_role(&[H.into()], &kernel).unwrap_err();
        sha256_by_role(&[format!("disk={H}")], &kernel).unwrap_err();
        sha256_by_role(&["abc".into()], &disk).unwrap_err();
        sha256_by_role(&[H.into(), format!("disk={H}")], &disk).unwrap_err();
    }

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_url("https://example.org/x.qcow2"));
        assert!(is_url("HTTP://example.org/x"));
        assert!(!is_url("./https.qcow2"));
        assert!(!is_url("htt"));
    }
}
