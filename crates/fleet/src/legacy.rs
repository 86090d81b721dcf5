//! The old cloudManager names as links to `cm`: `cmscp`, `cmrsync`,
//! `cmdo`, `cmstatus`, `cmstop`, `cmplay`, with their old argument order:
//!
//! ```text
//! cmscp *.html *:/var/www/teste/        cm scp *.html '*:/var/www/teste/'
//! cmrsync -az site/ B,D:/var/www/       cm rsync -az site/ B,D:/var/www/
//! cmdo B,D apachectl graceful           cm do B,D -- apachectl graceful
//! cmstop B    cmplay C,D    cmstatus    cm stop B / cm play C,D / cm status
//! ```
//!
//! Options of the new commands may come first (`cmdo -t 30 all uptime`).

use std::ffi::OsString;

/// Options of `cm do` that take a value (so the target is not mistaken for one).
const DO_VALUE_OPTS: &[&str] = &[
    "-f",
    "--fanout",
    "-t",
    "--timeout",
    "--inventory",
    "--ssh-config",
    "--connect-timeout",
];

/// The `cm` command line an old name stands for; None for other names.
pub fn translate(program: &str, args: &[String]) -> Option<Vec<String>> {
    let sub = match program {
        "cmscp" => "scp",
        "cmrsync" => "rsync",
        "cmstatus" => "status",
        "cmstop" => "stop",
        "cmplay" => "play",
        "cmdo" => "do",
        _ => return None,
    };
    let mut out = vec!["cm".to_string(), sub.to_string()];
    if sub != "do" {
        out.extend(args.iter().cloned());
        return Some(out);
    }
    // cmdo [OPTIONS] TARGETS CMD... → cm do [OPTIONS] TARGETS -- CMD...
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        if !a.starts_with('-') {
            break;
        }
        out.push(a.clone());
        if DO_VALUE_OPTS.contains(&a.as_str()) {
            if let Some(v) = args.get(i + 1) {
                out.push(v.clone());
                i += 1;
            }
        }
        i += 1;
    }
    if let Some(t) = args.get(i) {
        out.push(t.clone());
        out.push("--".into());
        out.extend(args[i + 1..].iter().cloned());
    }
    Some(out)
}

/// When `cm` is invoked as one of the old names, run that command and
/// return the exit code; `None` for any other program name.
pub fn legacy_main(program: &str, args: Vec<OsString>) -> Option<i32> {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let argv = translate(program, &args)?;
    #[derive(clap::Parser)]
    #[command(name = "cm")]
    struct Legacy {
        /// Print JSON for scripts.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        cmd: crate::FleetCommand,
    }
    use clap::Parser;
    match Legacy::try_parse_from(&argv) {
        Ok(l) => Some(crate::run(l.cmd, l.json)),
        Err(e) => {
            let _ = e.print();
            Some(if e.use_stderr() {
                crate::code::USAGE
            } else {
                0
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(p: &str, a: &[&str]) -> Vec<String> {
        translate(p, &a.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn old_orders_become_new_commands() {
        assert_eq!(
            t("cmscp", &["a.html", "b.html", "*:/var/www/teste/"]),
            ["cm", "scp", "a.html", "b.html", "*:/var/www/teste/"]
        );
        assert_eq!(
            t("cmdo", &["B,D", "uname", "-r"]),
            ["cm", "do", "B,D", "--", "uname", "-r"]
        );
        assert_eq!(
            t("cmdo", &["-t", "5", "-b", "all", "uptime"]),
            ["cm", "do", "-t", "5", "-b", "all", "--", "uptime"]
        );
        assert_eq!(t("cmstop", &["B"]), ["cm", "stop", "B"]);
        assert!(translate("cm", &[]).is_none());
    }
}
