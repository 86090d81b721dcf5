//! `cm deploy`: apply, compare, show, follow, roll back and delete
//! deployables. A spec is checked here first with the master's own rules
//! (cm-api's `deploy::load`), so a bad one is refused with every path
//! before anything is sent; the master checks it again, with what only it
//! knows (images, flavors, balancers).

use super::events::{follow_events, print_line, Want};
use crate::cli::DeployCmd;
use crate::client::{api, CliError, Client};
use crate::output::{json as print_json, Tabular};
use cm_api::deploy::{
    self, ApplyAnswer, ApplyRequest, Deployable, DeployableList, RepairAnswer, RepairRequest,
    RollbackRequest, SpecFormat, SpecSource,
};
use cm_api::event::Event;
use cm_api::{human_time, ApiError};
use cm_client::api::events::EventQuery;
use std::io::Read;
use std::path::Path;

pub fn run(client: &Client, cmd: DeployCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        DeployCmd::Apply { file, format } => {
            let (name, req) = read_spec(&file, format.as_deref())?;
            let a: ApplyAnswer = client.call(api::deployables::apply(&name, &req))?;
            print_answer(&name, &a, json, false)
        }
        DeployCmd::Diff { file, format } => {
            let (name, req) = read_spec(&file, format.as_deref())?;
            let a: ApplyAnswer = client.call(api::deployables::diff(&name, &req))?;
            print_answer(&name, &a, json, true)
        }
        DeployCmd::List => {
            let l: DeployableList = client.call(api::deployables::list())?;
            if json {
                return print_json(&l);
            }
            let mut t =
                Tabular::new(&["name", "generation", "state", "slots", "updated"]).numeric(&[1]);
            for d in &l.deployables {
                t.row(vec![
                    d.name.clone(),
                    d.generation.to_string(),
                    d.state.as_str().into(),
                    slots_summary(d),
                    human_time(&d.updated_at),
                ]);
            }
            t.print();
            Ok(())
        }
        DeployCmd::Show {
            name,
            source,
            generation,
        } => {
            if source {
                let s: SpecSource = client.call(api::deployables::spec(&name, generation))?;
                if json {
                    return print_json(&s);
                }
                print!("{}", s.source);
                if !s.source.ends_with('\n') {
                    println!();
                }
                return Ok(());
            }
            let d: Deployable = client.call(api::deployables::show(&name))?;
            if json {
                return print_json(&d);
            }
            print_deployable(&d);
            Ok(())
        }
        DeployCmd::Events {
            name,
            since,
            follow,
        } => {
            let want = Want {
                kind: None,
                deployable: Some(name),
                line: deploy_line,
            };
            if follow {
                return follow_events(client, since, &want, json);
            }
            let events: Vec<Event> = client.call(api::events::events(&EventQuery {
                since,
                kind: None,
                limit: None,
                deployable: want.deployable.clone(),
            }))?;
            for e in &events {
                print_line(e, &want, json)?;
            }
            Ok(())
        }
        DeployCmd::Delete { name } => {
            let d: Deployable = client.call(api::deployables::delete_deployable(&name))?;
            if json {
                return print_json(&d);
            }
            println!(
                "deployable {} is {}: its instances are being removed",
                d.name,
                d.state.as_str()
            );
            Ok(())
        }
        DeployCmd::Rollback {
            name,
            to_generation,
        } => {
            let a: ApplyAnswer = client.call(api::deployables::rollback(
                &name,
                &RollbackRequest { to_generation },
            ))?;
            print_answer(&name, &a, json, false)
        }
        DeployCmd::Repair { name, slot } => {
            let a: RepairAnswer =
                client.call(api::deployables::repair(&name, &RepairRequest { slot }))?;
            if json {
                return print_json(&a);
            }
            if a.repaired.is_empty() {
                println!("{name}: no slot to repair: none is failed");
            } else {
                println!(
                    "{name}: repaired {}: the engine heals it again",
                    a.repaired.join(", ")
                );
            }
            Ok(())
        }
    }
}

/// The spec file, checked here with the master's rules. A refused spec is
/// the same refusal the master gives (exit 1, every path on its own line).
fn read_spec(file: &Path, format: Option<&str>) -> Result<(String, ApplyRequest), CliError> {
    let shown = file.display().to_string();
    let format = match format {
        Some(f) => SpecFormat::of_path(&format!("x.{f}"))
            .ok_or_else(|| CliError::Local(format!("--format {f}: use yaml, toml, json or xml")))?,
        None => SpecFormat::of_path(&shown).ok_or_else(|| {
            CliError::Local(format!(
                "{shown}: cannot tell the format from the name (.yaml, .toml, .json, .xml); \
                 give --format"
            ))
        })?,
    };
    let f = std::fs::File::open(file).map_err(|e| CliError::Local(format!("{shown}: {e}")))?;
    let mut source = String::new();
    let limit = u64::try_from(deploy::MAX_SPEC_BYTES).unwrap_or(u64::MAX);
    f.take(limit + 1)
        .read_to_string(&mut source)
        .map_err(|e| CliError::Local(format!("{shown}: {e}")))?;
    let spec = deploy::load(format, &source).map_err(|errs| {
        CliError::Api(ApiError::invalid(
            errs.first_path(),
            format!("{shown} is not a valid deployable:\n{errs}"),
        ))
    })?;
    Ok((spec.name, ApplyRequest { format, source }))
}

fn print_answer(name: &str, a: &ApplyAnswer, json: bool, dry: bool) -> Result<(), CliError> {
    if json {
        return print_json(a);
    }
    let generation = a.deployable.as_ref().map(|d| d.generation);
    match (dry, a.changed, generation) {
        (true, false, _) => println!("deployable {name}: no changes"),
        (true, true, None) => println!("deployable {name}: not deployed yet; apply would:"),
        (true, true, Some(g)) => println!("deployable {name} (generation {g}); apply would:"),
        (false, false, Some(g)) => println!("deployable {name}: unchanged at generation {g}"),
        (false, _, g) => println!(
            "deployable {name}: generation {}",
            g.map(|g| g.to_string()).unwrap_or_default()
        ),
    }
    if a.changes.is_empty() {
        return Ok(());
    }
    let mut t = Tabular::new(&["change", "assembly", "slots", "why"]);
    for c in &a.changes {
        t.row(vec![
            c.kind.as_str().into(),
            if c.assembly.is_empty() {
                "-".into()
            } else {
                c.assembly.clone()
            },
            c.slots
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
            c.why.clone(),
        ]);
    }
    t.print();
    Ok(())
}

/// `2/3 healthy`.
fn slots_summary(d: &Deployable) -> String {
    let healthy = d
        .slots
        .iter()
        .filter(|s| s.state == cm_api::words::SlotState::Healthy)
        .count();
    format!("{healthy}/{} healthy", d.slots.len())
}

fn print_deployable(d: &Deployable) {
    println!("name:        {}", d.name);
    println!("id:          {}", d.id);
    println!("generation:  {}", d.generation);
    let reason = d
        .reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    println!("state:       {}{reason}", d.state.as_str());
    if let Some(g) = d.rollout_from {
        println!("rollout of:  generation {g} → {}", d.generation);
    }
    println!("updated:     {}", human_time(&d.updated_at));
    if let Some(spec) = &d.spec {
        let asm: Vec<String> = spec
            .assemblies
            .iter()
            .map(|a| format!("{} × {} ({})", a.count, a.name, a.image))
            .collect();
        println!("assemblies:  {}", asm.join(", "));
    }
    if d.slots.is_empty() {
        println!("slots:       none yet (the engine creates them)");
        return;
    }
    let mut t = Tabular::new(&[
        "slot", "state", "instance", "host", "inc", "gen", "action", "since", "reason",
    ])
    .numeric(&[4, 5]);
    for s in &d.slots {
        t.row(vec![
            s.name.clone(),
            s.state.as_str().into(),
            s.instance.clone().unwrap_or_else(|| "-".into()),
            s.host.clone().unwrap_or_else(|| "-".into()),
            s.incarnation.to_string(),
            s.generation.to_string(),
            s.action
                .map(|a| a.as_str().to_string())
                .unwrap_or_else(|| "-".into()),
            human_time(&s.since),
            s.reason.clone().unwrap_or_default(),
        ]);
    }
    t.print();
}

/// `time object action from→to "reason"`.
fn deploy_line(e: &Event) -> String {
    let d = &e.detail;
    let object = d.object.clone().unwrap_or_else(|| e.target.clone());
    let action = d
        .action
        .map(|a| a.as_str().to_string())
        .unwrap_or_else(|| e.kind.to_string());
    let change = match (&d.from, &d.to) {
        (None, None) => "-".to_string(),
        (f, t) => format!(
            "{}→{}",
            f.as_deref().unwrap_or(""),
            t.as_deref().unwrap_or("")
        ),
    };
    let reason = d.reason.as_deref().unwrap_or(&e.message);
    format!(
        "{} {object} {action} {change} {reason:?}",
        human_time(&e.time)
    )
}
