use crate::cli::FlavorCmd;
use crate::client::{api, CliError, Client};
use crate::output::{fields, json as print_json, Tabular};
use cm_api::image::{CreateFlavor, Flavor};

pub fn run(client: &Client, cmd: FlavorCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        FlavorCmd::List => {
            let flavors: Vec<Flavor> = client.call(api::catalog::flavors())?;
            if json {
                return print_json(&flavors);
            }
            let mut t =
                Tabular::new(&["name", "memory", "vcpus", "disk", "builtin"]).numeric(&[1, 2, 3]);
            for f in &flavors {
                t.row(vec![
                    f.name.clone(),
                    format!("{} MiB", f.memory_mib),
                    f.vcpus.to_string(),
                    format!("{} GiB", f.disk_gib),
                    if f.builtin { "yes".into() } else { "no".into() },
                ]);
            }
            t.print();
            Ok(())
        }
        FlavorCmd::Show { name } => {
            let f: Flavor = client.call(api::catalog::flavor(&name))?;
            if json {
                return print_json(&f);
            }
            fields(&[
                ("name", f.name.clone()),
                ("memory", format!("{} MiB", f.memory_mib)),
                ("vcpus", f.vcpus.to_string()),
                ("disk", format!("{} GiB", f.disk_gib)),
                ("builtin", f.builtin.to_string()),
            ]);
            Ok(())
        }
        FlavorCmd::Create {
            name,
            memory,
            vcpus,
            disk,
        } => {
            let body = CreateFlavor {
                name,
                memory_mib: memory,
                vcpus,
                disk_gib: disk,
            };
            let f: Flavor = client.call(api::catalog::create_flavor(&body))?;
            if json {
                return print_json(&f);
            }
            println!(
                "flavor {} created ({} MiB, {} vCPUs)",
                f.name, f.memory_mib, f.vcpus
            );
            Ok(())
        }
        FlavorCmd::Delete { name } => {
            let v = client.call(api::catalog::delete_flavor(&name))?;
            super::done(json, &v, &format!("flavor {name} deleted"))
        }
    }
}
