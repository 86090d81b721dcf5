use crate::cli::ImageCmd;
use crate::client::{seg, CliError, Client};
use crate::output::{fields, json as print_json, opt, Tabular};
use cm_api::human_time;
use cm_api::image::{CreateImage, Image};

/// Paths are sent as given, made absolute against this directory: the
/// master reads them, and `cm` usually runs on the master's machine.
fn absolute(p: Option<String>) -> Option<String> {
    p.map(|p| {
        let path = std::path::Path::new(&p);
        if path.is_absolute() {
            p
        } else {
            std::env::current_dir()
                .map(|d| d.join(path).to_string_lossy().into_owned())
                .unwrap_or(p)
        }
    })
}

pub fn run(client: &Client, cmd: ImageCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        ImageCmd::Add {
            name,
            kernel,
            initrd,
            cmdline,
            disk,
        } => {
            let body = CreateImage {
                name,
                kernel: absolute(kernel),
                initrd: absolute(initrd),
                cmdline,
                disk: absolute(disk),
            };
            let img: Image = client.post("/v1/images", &body)?;
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
        ImageCmd::List => {
            let images: Vec<Image> = client.get("/v1/images")?;
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
        ImageCmd::Show { name } => {
            let i: Image = client.get(&format!("/v1/images/{}", seg(&name)))?;
            if json {
                return print_json(&i);
            }
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
            Ok(())
        }
        ImageCmd::Delete { name } => {
            let v: super::Ack = client.delete(&format!("/v1/images/{}", seg(&name)))?;
            super::done(json, &v, &format!("image {name} deleted"))
        }
    }
}
