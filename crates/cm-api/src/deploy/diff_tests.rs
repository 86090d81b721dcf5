//! `diff`: which slots a new spec adds, removes, replaces or reconfigures.

use super::*;

fn spec() -> DeployableSpec {
    let svc = ServiceSpec {
        name: "httpd".into(),
        run: Some("httpd -f".into()),
        lsb: None,
        check: None,
        depends_on: vec![],
        env: Default::default(),
        escalation: None,
        may_move_to: vec![],
        pool: None,
    };
    let asm = |name: &str, count| AssemblySpec {
        name: name.into(),
        image: "img-v1".into(),
        flavor: None,
        memory_mib: None,
        vcpus: None,
        count,
        spread: Spread::Prefer,
        ports: vec![],
        config: None,
        stateful: false,
        services: vec![svc.clone()],
        escalation: None,
    };
    DeployableSpec {
        name: "app".into(),
        uuid: None,
        assemblies: vec![asm("web", 3), asm("db", 1)],
        policy: Policy::default(),
        update: UpdatePolicy::default(),
    }
}

fn kinds(c: &[Change]) -> Vec<(String, ChangeKind, Vec<u32>)> {
    c.iter()
        .map(|c| (c.assembly.clone(), c.kind, c.slots.clone()))
        .collect()
}

#[test]
fn first_apply_adds_every_slot() {
    let c = diff(None, &spec());
    assert_eq!(
        kinds(&c),
        vec![
            ("web".into(), ChangeKind::Add, vec![0, 1, 2]),
            ("db".into(), ChangeKind::Add, vec![0]),
        ]
    );
}

#[test]
fn the_same_spec_changes_nothing() {
    assert!(diff(Some(&spec()), &spec()).is_empty());
}

#[test]
fn counts_add_and_remove_highest_first() {
    let mut new = spec();
    new.assemblies[0].count = 5;
    new.assemblies[1].count = 1;
    let c = diff(Some(&spec()), &new);
    assert_eq!(kinds(&c), vec![("web".into(), ChangeKind::Add, vec![3, 4])]);
    assert_eq!(c[0].why, "count 3 → 5");
    let mut small = spec();
    small.assemblies[0].count = 1;
    let c = diff(Some(&spec()), &small);
    assert_eq!(
        kinds(&c),
        vec![("web".into(), ChangeKind::Remove, vec![2, 1])]
    );
}

#[test]
fn image_size_ports_or_stateful_replace_the_kept_slots() {
    let mut new = spec();
    new.assemblies[0].image = "img-v2".into();
    new.assemblies[0].count = 2;
    let c = diff(Some(&spec()), &new);
    assert_eq!(
        kinds(&c),
        vec![
            ("web".into(), ChangeKind::Remove, vec![2]),
            ("web".into(), ChangeKind::Replace, vec![0, 1]),
        ]
    );
    assert_eq!(c[1].why, "image img-v1 → img-v2");
    for change in [
        |a: &mut AssemblySpec| a.memory_mib = Some(256),
        |a: &mut AssemblySpec| a.vcpus = Some(2),
        |a: &mut AssemblySpec| a.flavor = Some("m1.small".into()),
        |a: &mut AssemblySpec| a.stateful = true,
        |a: &mut AssemblySpec| {
            a.ports = vec![PortSpec {
                name: "http".into(),
                guest: 80,
            }]
        },
    ] {
        let mut new = spec();
        change(&mut new.assemblies[1]);
        let c = diff(Some(&spec()), &new);
        assert_eq!(kinds(&c), vec![("db".into(), ChangeKind::Replace, vec![0])]);
    }
}

#[test]
fn services_env_checks_and_config_reconfigure_in_place() {
    let mut new = spec();
    new.assemblies[0].services[0]
        .env
        .insert("DB".into(), EnvValue::Text("x".into()));
    new.assemblies[0].config = Some("[files]".into());
    let c = diff(Some(&spec()), &new);
    assert_eq!(
        kinds(&c),
        vec![("web".into(), ChangeKind::Reconfigure, vec![0, 1, 2])]
    );
    assert_eq!(c[0].why, "env, config");
    let mut new = spec();
    new.assemblies[1].services[0].run = Some("other".into());
    new.assemblies[1].services[0].check = Some(CheckSpec {
        exec: Some("true".into()),
        http: None,
        interval: Dur::from_secs(1),
        timeout: Dur::from_secs(1),
    });
    let c = diff(Some(&spec()), &new);
    assert_eq!(c[0].kind, ChangeKind::Reconfigure);
    assert_eq!(c[0].why, "services, checks");
}

#[test]
fn policy_and_update_only_restart_nothing() {
    let mut new = spec();
    new.policy.heartbeat_interval = Dur::from_secs(2);
    new.update.max_parallel = 2;
    let c = diff(Some(&spec()), &new);
    assert_eq!(kinds(&c), vec![(String::new(), ChangeKind::Policy, vec![])]);
    assert_eq!(c[0].why, "policy, update");
    let mut new = spec();
    new.assemblies[0].escalation = Some(Budget::default());
    let c = diff(Some(&spec()), &new);
    assert_eq!(kinds(&c), vec![("web".into(), ChangeKind::Policy, vec![])]);
}

#[test]
fn a_removed_assembly_removes_all_its_slots() {
    let mut new = spec();
    new.assemblies.remove(0);
    let c = diff(Some(&spec()), &new);
    assert_eq!(
        kinds(&c),
        vec![("web".into(), ChangeKind::Remove, vec![2, 1, 0])]
    );
}
