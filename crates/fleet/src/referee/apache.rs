//! Apache mod_proxy_balancer, the seed's referee. cm owns one marked block
//! of the config file (`# BEGIN cloudmaster balancer ID` ... `# END ...`)
//! holding the seed's output:
//!
//! ```apache
//! <Proxy balancer://meuCluster>
//!     BalancerMember http://10.0.2.12:80
//!     BalancerMember http://10.0.2.13:80 status=+S
//! </Proxy>
//! ProxyPass /cs balancer://meuCluster
//! ```
//!
//! A stopped node stays in the block, marked `status=+S` (stopped), so the
//! member list never loses anyone. Everything outside the block is kept
//! byte for byte; a `balancer://ID` defined outside it is refused rather
//! than overwritten (the seed's version rewrote the file blindly). Each
//! change is checked (`apache2ctl configtest`) before a graceful reload,
//! and the old file is put back when the check fails.

use super::*;

pub struct Apache {
    pub runner: Runner,
    pub config: String,
    pub cluster_id: String,
    pub folder: String,
    pub check: String,
    pub reload: String,
}

fn begin(id: &str) -> String {
    format!(
        "# BEGIN cloudmaster balancer {id} (written by cm stop/play; edits inside are replaced)"
    )
}
fn end(id: &str) -> String {
    format!("# END cloudmaster balancer {id}")
}

/// A config file split around cm's block.
#[derive(Debug, PartialEq, Eq)]
pub struct Split {
    pub before: String,
    pub block: Option<String>,
    pub after: String,
}

/// Split `text` at cm's block for `id`; refuse a `balancer://id` outside it.
pub fn split(text: &str, id: &str, path: &str) -> Result<Split, RefereeError> {
    let (b, e) = (format!("# BEGIN cloudmaster balancer {id}"), end(id));
    let b_sp = format!("{b} ");
    let mut before = String::new();
    let mut block: Option<String> = None;
    let mut after = String::new();
    let mut state = 0; // 0 before, 1 inside, 2 after
    let target = format!("balancer://{id}");
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let t = line.trim();
        match state {
            0 if t == b || t.starts_with(&b_sp) => {
                state = 1;
                block = Some(String::new());
            }
            1 if t == e => state = 2,
            1 => block.get_or_insert_with(String::new).push_str(line),
            _ => {
                let mentions = t
                    .split(|c: char| c.is_whitespace() || c == '>')
                    .any(|w| w == target);
                if mentions && !t.starts_with('#') {
                    return Err(RefereeError::Foreign(format!(
                        "{path}:{}: {target} is defined outside cm's block; remove it (cm writes its own) or put it between '{}' and '{e}'",
                        i + 1,
                        begin(id)
                    )));
                }
                if state == 0 {
                    before.push_str(line);
                } else {
                    after.push_str(line);
                }
            }
        }
    }
    if state == 1 {
        return Err(RefereeError::Foreign(format!(
            "{path}: cm's block for {id} has no '{e}' line"
        )));
    }
    Ok(Split {
        before,
        block,
        after,
    })
}

/// The member URL of a node: `http://HOST:PORT` (port 80 when unset).
fn url(n: &Node) -> String {
    let host = if n.host.contains(':') {
        format!("[{}]", n.host)
    } else {
        n.host.clone()
    };
    format!("http://{host}:{}", n.web_port.unwrap_or(80))
}

/// Member URLs marked stopped in a block.
fn stopped(block: &str) -> Vec<String> {
    block
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("BalancerMember")).then_some(())?;
            let u = w.next()?.to_string();
            w.any(|p| p.starts_with("status=") && p.contains('S'))
                .then_some(u)
        })
        .collect()
}

impl Apache {
    fn render(&self, inv: &Inventory, stopped: &[String]) -> String {
        let id = &self.cluster_id;
        let mut s = format!("{}\n<Proxy balancer://{id}>\n", begin(id));
        for n in &inv.nodes {
            let u = url(n);
            let mark = if stopped.contains(&u) {
                " status=+S"
            } else {
                ""
            };
            s.push_str(&format!("    BalancerMember {u}{mark}\n"));
        }
        let folder = self.folder.trim_start_matches('/');
        s.push_str(&format!(
            "</Proxy>\nProxyPass /{folder} balancer://{id}\n{}\n",
            end(id)
        ));
        s
    }

    fn current(&self) -> Result<(Option<Vec<u8>>, Split), RefereeError> {
        let old = self.runner.read_file(&self.config)?;
        let text = String::from_utf8_lossy(old.as_deref().unwrap_or_default()).into_owned();
        let split = split(&text, &self.cluster_id, &self.config)?;
        Ok((old, split))
    }

    /// Write the block with `stopped`, check, and reload gracefully.
    fn apply(
        &self,
        inv: &Inventory,
        old: Option<Vec<u8>>,
        sp: &Split,
        stopped: &[String],
    ) -> Result<(), RefereeError> {
        let mut before = sp.before.clone();
        if !before.is_empty() && !before.ends_with('\n') {
            before.push('\n');
        }
        let new = format!("{before}{}{}", self.render(inv, stopped), sp.after);
        self.runner.write_file(&self.config, new.as_bytes())?;
        let check = self.runner.sh(&self.check, None)?;
        if check.rc != 0 {
            match &old {
                Some(bytes) => self.runner.write_file(&self.config, bytes)?,
                None => {
                    self.runner
                        .sh(&format!("rm -f {}", crate::ssh::quote(&self.config)), None)?;
                }
            }
            let output = format!(
                "{} {}",
                String::from_utf8_lossy(&check.stdout).trim(),
                check.stderr
            )
            .trim()
            .to_string();
            return Err(RefereeError::CheckFailed {
                command: self.check.clone(),
                output,
            });
        }
        self.runner.sh_ok("reloading apache", &self.reload, None)?;
        Ok(())
    }

    fn stopped_now(sp: &Split) -> Vec<String> {
        sp.block.as_deref().map(stopped).unwrap_or_default()
    }
}

impl Balancer for Apache {
    fn runner(&self) -> &Runner {
        &self.runner
    }

    fn lock_file(&self) -> String {
        super::lock::beside(&self.config)
    }

    fn members(&self, inv: &Inventory) -> Result<Vec<Member>, RefereeError> {
        let (_, sp) = self.current()?;
        let stopped = Self::stopped_now(&sp);
        Ok(inv
            .nodes
            .iter()
            .map(|n| {
                let serving = !stopped.contains(&url(n));
                let state = match (&sp.block, serving) {
                    (None, _) => "not written yet",
                    (_, true) => "active",
                    (_, false) => "stopped",
                };
                Member {
                    node: n.name.clone(),
                    state: state.into(),
                    weight: None,
                    conns: None,
                    serving,
                }
            })
            .collect())
    }

    fn stop(
        &self,
        inv: &Inventory,
        nodes: &[&Node],
        opts: ChangeOpts,
        log: Log,
    ) -> Result<(), RefereeError> {
        let (old, sp) = self.current()?;
        check_pool(&self.members(inv)?, nodes, opts.force)?;
        let mut st = Self::stopped_now(&sp);
        for n in nodes {
            let u = url(n);
            if !st.contains(&u) {
                st.push(u);
            }
        }
        self.apply(inv, old, &sp, &st)?;
        for n in nodes {
            log(&format!(
                "{}: stopped (status=+S; graceful reload lets open requests finish)",
                n.name
            ));
        }
        Ok(())
    }

    fn play(
        &self,
        inv: &Inventory,
        nodes: &[&Node],
        _opts: ChangeOpts,
        log: Log,
    ) -> Result<(), RefereeError> {
        let (old, sp) = self.current()?;
        let urls: Vec<String> = nodes.iter().map(|n| url(n)).collect();
        let st: Vec<String> = Self::stopped_now(&sp)
            .into_iter()
            .filter(|u| !urls.contains(u))
            .collect();
        self.apply(inv, old, &sp, &st)?;
        for n in nodes {
            log(&format!("{}: in the pool", n.name));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_content_is_kept_and_a_foreign_balancer_refused() {
        let text = format!("# mine\nProxyTimeout 5\n{}\n<Proxy balancer://c>\n    BalancerMember http://h:80 status=+S\n</Proxy>\n{}\nLogLevel warn\n", begin("c"), end("c"));
        let sp = split(&text, "c", "f").unwrap();
        assert_eq!(sp.before, "# mine\nProxyTimeout 5\n");
        assert_eq!(sp.after, "LogLevel warn\n");
        assert_eq!(stopped(sp.block.as_deref().unwrap()), ["http://h:80"]);
        let seed = "<Proxy balancer://meuCluster>\n   BalancerMember http://10.0.2.12:80\n</Proxy>\nProxyPass /cs balancer://meuCluster\n";
        let e = split(seed, "meuCluster", "/etc/apache2/includes/proxybalancer").unwrap_err();
        assert!(
            e.to_string().starts_with(
                "/etc/apache2/includes/proxybalancer:1: balancer://meuCluster is defined outside"
            ),
            "{e}"
        );
        assert!(split("other stuff\n", "c", "f").unwrap().block.is_none());
        // Another cluster's block is foreign content, kept as is.
        let two = format!("{}\nx\n{}\n", begin("other"), end("other"));
        assert_eq!(split(&two, "c", "f").unwrap().before, two);
    }
}
