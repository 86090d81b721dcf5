//! What changes between the spec in force and a new one, per assembly:
//! the answer of `cm deploy diff` and the plan of a rollout.

use super::{AssemblySpec, Change, ChangeKind, DeployableSpec};

/// The changes from `old` (None: nothing deployed yet) to `new`. Pure; the
/// engine's rollout and `POST /v1/deployables/{name}/diff` share it.
/// A change of the whole deployable (policy, update) has an empty
/// `assembly`.
pub fn diff(old: Option<&DeployableSpec>, new: &DeployableSpec) -> Vec<Change> {
    let mut out = Vec::new();
    let Some(old) = old else {
        for a in &new.assemblies {
            out.push(Change {
                assembly: a.name.clone(),
                kind: ChangeKind::Add,
                slots: (0..a.count).collect(),
                why: format!("new assembly ({} × {})", a.count, a.image),
            });
        }
        return out;
    };
    for a in &new.assemblies {
        match old.assemblies.iter().find(|o| o.name == a.name) {
            None => out.push(Change {
                assembly: a.name.clone(),
                kind: ChangeKind::Add,
                slots: (0..a.count).collect(),
                why: format!("new assembly ({} × {})", a.count, a.image),
            }),
            Some(o) => assembly(o, a, &mut out),
        }
    }
    for o in &old.assemblies {
        if !new.assemblies.iter().any(|a| a.name == o.name) {
            out.push(Change {
                assembly: o.name.clone(),
                kind: ChangeKind::Remove,
                slots: (0..o.count).rev().collect(),
                why: "assembly removed".into(),
            });
        }
    }
    let mut whole = Vec::new();
    if old.policy != new.policy {
        whole.push("policy");
    }
    if old.update != new.update {
        whole.push("update");
    }
    if old.uuid != new.uuid {
        whole.push("uuid");
    }
    if !whole.is_empty() {
        out.push(Change {
            assembly: String::new(),
            kind: ChangeKind::Policy,
            slots: Vec::new(),
            why: whole.join(", "),
        });
    }
    out
}

fn show<T: std::fmt::Debug>(v: &Option<T>) -> String {
    match v {
        Some(v) => format!("{v:?}").trim_matches('"').to_string(),
        None => "-".into(),
    }
}

fn assembly(o: &AssemblySpec, a: &AssemblySpec, out: &mut Vec<Change>) {
    let name = || a.name.clone();
    if a.count > o.count {
        out.push(Change {
            assembly: name(),
            kind: ChangeKind::Add,
            slots: (o.count..a.count).collect(),
            why: format!("count {} → {}", o.count, a.count),
        });
    } else if a.count < o.count {
        out.push(Change {
            assembly: name(),
            kind: ChangeKind::Remove,
            slots: (a.count..o.count).rev().collect(),
            why: format!("count {} → {}", o.count, a.count),
        });
    }
    let kept: Vec<u32> = (0..a.count.min(o.count)).collect();
    let mut replace = Vec::new();
    if o.image != a.image {
        replace.push(format!("image {} → {}", o.image, a.image));
    }
    if o.flavor != a.flavor {
        replace.push(format!("flavor {} → {}", show(&o.flavor), show(&a.flavor)));
    }
    if o.memory_mib != a.memory_mib {
        replace.push(format!(
            "memory_mib {} → {}",
            show(&o.memory_mib),
            show(&a.memory_mib)
        ));
    }
    if o.vcpus != a.vcpus {
        replace.push(format!("vcpus {} → {}", show(&o.vcpus), show(&a.vcpus)));
    }
    if o.ports != a.ports {
        replace.push("ports".into());
    }
    if o.stateful != a.stateful {
        replace.push(format!("stateful {} → {}", o.stateful, a.stateful));
    }
    if !replace.is_empty() {
        if !kept.is_empty() {
            out.push(Change {
                assembly: name(),
                kind: ChangeKind::Replace,
                slots: kept,
                why: replace.join(", "),
            });
        }
        return;
    }
    let mut reconf = Vec::new();
    let shape = |s: &super::ServiceSpec| {
        (
            s.name.clone(),
            s.run.clone(),
            s.lsb.clone(),
            s.depends_on.clone(),
            s.pool.clone(),
            s.may_move_to.clone(),
        )
    };
    let shapes = |x: &AssemblySpec| x.services.iter().map(shape).collect::<Vec<_>>();
    if shapes(o) != shapes(a) {
        reconf.push("services");
    }
    let envs = |x: &AssemblySpec| x.services.iter().map(|s| s.env.clone()).collect::<Vec<_>>();
    if o.services.len() == a.services.len() && envs(o) != envs(a) {
        reconf.push("env");
    }
    let checks = |x: &AssemblySpec| {
        x.services
            .iter()
            .map(|s| s.check.clone())
            .collect::<Vec<_>>()
    };
    if o.services.len() == a.services.len() && checks(o) != checks(a) {
        reconf.push("checks");
    }
    if o.config != a.config {
        reconf.push("config");
    }
    if !reconf.is_empty() {
        if !kept.is_empty() {
            out.push(Change {
                assembly: name(),
                kind: ChangeKind::Reconfigure,
                slots: kept,
                why: reconf.join(", "),
            });
        }
        return;
    }
    let budgets = |x: &AssemblySpec| {
        (
            x.escalation,
            x.spread,
            x.services.iter().map(|s| s.escalation).collect::<Vec<_>>(),
        )
    };
    if budgets(o) != budgets(a) {
        out.push(Change {
            assembly: name(),
            kind: ChangeKind::Policy,
            slots: Vec::new(),
            why: "escalation or spread".into(),
        });
    }
}
