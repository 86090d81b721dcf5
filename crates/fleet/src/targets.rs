//! Target expressions, as pdsh and ClusterShell users write them:
//! `A`, `B,D`, `*` or `all`, ranges `web[01-20,30]`, `@group`, and
//! exclusions `!C`. Terms are separated by commas (outside brackets); the
//! result is every node a positive term names, minus every excluded one, in
//! the inventory's order. With only exclusions, they apply to all nodes.
//! An unknown name is an error, never silently skipped.

use crate::inventory::Inventory;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("unknown node '{0}' (cm nodes all lists them)")]
    UnknownNode(String),
    #[error("unknown group '@{0}'")]
    UnknownGroup(String),
    #[error("bad target expression '{0}': {1}")]
    Syntax(String, String),
    #[error("'{0}' selects no node")]
    Empty(String),
}

/// Split at commas that are not inside brackets.
fn terms(expr: &str) -> Result<Vec<String>, TargetError> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in expr.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(TargetError::Syntax(
                expr.into(),
                "unbalanced brackets".into(),
            ));
        }
        if c == ',' && depth == 0 {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if depth != 0 {
        return Err(TargetError::Syntax(
            expr.into(),
            "unbalanced brackets".into(),
        ));
    }
    out.push(cur);
    Ok(out
        .into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect())
}

/// Expand `web[01-03,7]x` into web01x, web02x, web03x, web7x (zero padding
/// kept from the range's first bound); several bracket groups multiply.
pub fn expand(term: &str) -> Result<Vec<String>, TargetError> {
    expand_part(term).map_err(|e| match e {
        TargetError::Syntax(_, why) => TargetError::Syntax(term.into(), why),
        other => other,
    })
}

fn expand_part(term: &str) -> Result<Vec<String>, TargetError> {
    let Some(open) = term.find('[') else {
        return Ok(vec![term.to_string()]);
    };
    let close = term[open..]
        .find(']')
        .map(|i| open + i)
        .ok_or_else(|| TargetError::Syntax(term.into(), "missing ]".into()))?;
    let (prefix, inner, rest) = (&term[..open], &term[open + 1..close], &term[close + 1..]);
    let tails = expand_part(rest)?;
    let mut out = Vec::new();
    for part in inner.split(',') {
        let part = part.trim();
        let bad = |why: &str| TargetError::Syntax(term.into(), why.into());
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        if lo.is_empty()
            || !lo.chars().all(|c| c.is_ascii_digit())
            || !hi.chars().all(|c| c.is_ascii_digit())
            || hi.is_empty()
        {
            return Err(bad("ranges are numbers: [1-5], [01-20,30]"));
        }
        let (a, b): (u64, u64) = (
            lo.parse().map_err(|_| bad("number too large"))?,
            hi.parse().map_err(|_| bad("number too large"))?,
        );
        if b < a {
            return Err(bad("a range goes up: [1-5], not [5-1]"));
        }
        if b - a > 100_000 {
            return Err(bad("a range of more than 100000 names"));
        }
        let width = if lo.len() > 1 && lo.starts_with('0') {
            lo.len()
        } else {
            0
        };
        for n in a..=b {
            for t in &tails {
                out.push(format!("{prefix}{n:0width$}{t}"));
            }
        }
    }
    Ok(out)
}

/// The nodes `expr` selects, in the inventory's order.
pub fn select(inv: &Inventory, expr: &str) -> Result<Vec<String>, TargetError> {
    let terms = terms(expr)?;
    if terms.is_empty() {
        return Err(TargetError::Empty(expr.into()));
    }
    let mut include = std::collections::HashSet::new();
    let mut exclude = std::collections::HashSet::new();
    let mut any_positive = false;
    for t in &terms {
        let (negated, body) = match t.strip_prefix('!') {
            Some(b) => (true, b.trim()),
            None => (false, t.as_str()),
        };
        let names: Vec<String> = if body == "*" || body == "all" {
            inv.nodes.iter().map(|n| n.name.clone()).collect()
        } else if let Some(g) = body.strip_prefix('@') {
            inv.groups
                .get(g)
                .cloned()
                .ok_or_else(|| TargetError::UnknownGroup(g.into()))?
        } else {
            let names = expand(body)?;
            for n in &names {
                if inv.node(n).is_none() {
                    return Err(TargetError::UnknownNode(n.clone()));
                }
            }
            names
        };
        if negated {
            exclude.extend(names);
        } else {
            any_positive = true;
            include.extend(names);
        }
    }
    let out: Vec<String> = inv
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .filter(|n| (!any_positive || include.contains(n)) && !exclude.contains(n))
        .collect();
    if out.is_empty() {
        return Err(TargetError::Empty(expr.into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Node;

    fn inv(names: &[&str]) -> Inventory {
        let mut i = Inventory::default();
        for n in names {
            i.nodes.push(Node {
                name: n.to_string(),
                host: format!("h-{n}"),
                web_port: None,
                ssh: Default::default(),
                balancer_name: None,
            });
        }
        i
    }

    #[test]
    fn ranges_expand_with_their_padding() {
        assert_eq!(
            expand("web[01-03,10]").unwrap(),
            ["web01", "web02", "web03", "web10"]
        );
        assert_eq!(
            expand("n[1-2]x[a]").unwrap_err(),
            TargetError::Syntax(
                "n[1-2]x[a]".into(),
                "ranges are numbers: [1-5], [01-20,30]".into()
            )
        );
        assert_eq!(
            expand("r[1-2]c[1-2]").unwrap(),
            ["r1c1", "r1c2", "r2c1", "r2c2"]
        );
        expand("x[3-1]").unwrap_err();
        expand("x[1-").unwrap_err();
        assert_eq!(expand("plain").unwrap(), ["plain"]);
    }

    #[test]
    fn expressions_select_in_inventory_order() {
        let mut i = inv(&["A", "B", "C", "D", "E"]);
        i.groups
            .insert("odd".into(), vec!["A".into(), "C".into(), "E".into()]);
        assert_eq!(select(&i, "A").unwrap(), ["A"]);
        assert_eq!(select(&i, "D,B").unwrap(), ["B", "D"]);
        assert_eq!(select(&i, "*").unwrap(), ["A", "B", "C", "D", "E"]);
        assert_eq!(select(&i, "all,!C").unwrap(), ["A", "B", "D", "E"]);
        assert_eq!(select(&i, "!C").unwrap(), ["A", "B", "D", "E"]);
        assert_eq!(select(&i, "@odd,!E").unwrap(), ["A", "C"]);
        assert_eq!(select(&i, "@odd,B").unwrap(), ["A", "B", "C", "E"]);
        assert_eq!(
            select(&i, "Z").unwrap_err(),
            TargetError::UnknownNode("Z".into())
        );
        assert_eq!(
            select(&i, "A,Z").unwrap_err(),
            TargetError::UnknownNode("Z".into())
        );
        assert_eq!(
            select(&i, "@nope").unwrap_err(),
            TargetError::UnknownGroup("nope".into())
        );
        assert_eq!(
            select(&i, "A,!A").unwrap_err(),
            TargetError::Empty("A,!A".into())
        );
        select(&i, "").unwrap_err();
    }

    #[test]
    fn ranges_select_nodes() {
        let i = inv(&["web01", "web02", "web03", "web30", "db1"]);
        assert_eq!(
            select(&i, "web[01-02,30]").unwrap(),
            ["web01", "web02", "web30"]
        );
        assert_eq!(
            select(&i, "web[01-04]").unwrap_err(),
            TargetError::UnknownNode("web04".into())
        );
    }
}
