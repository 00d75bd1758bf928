//! `provisiond mappings`: a job's effective attribute mappings and scoping filters.

use super::out::outln;
use super::Failure;
use crate::config::{Config, JobConfig};
use crate::mapping::{Apply, Mapping, MappingSource};
use serde_json::{json, Value};

/// The widest a table line may be, indent included: a 100-column terminal.
const MAX_WIDTH: usize = 100;
/// The indent of a table line.
const INDENT: &str = "  ";
/// The gap between columns.
const GAP: &str = "  ";

/// The effective mappings (preset merged with the job's overrides) and scoping filters, as a
/// table or (`json`) one JSON object per job, a line each.
pub(crate) fn mappings(config: &Config, job: Option<&str>, json: bool) -> Result<i32, Failure> {
    for j in super::select(config, job)? {
        if json {
            outln!("{}", job_json(j));
        } else {
            print_job(j);
        }
    }
    Ok(super::exit::OK)
}

/// Where a mapping's value comes from, as the table shows it.
fn from_text(m: &Mapping) -> String {
    match &m.source {
        MappingSource::Attribute(a) => format!("[{a}]"),
        MappingSource::Constant(c) => format!("constant {c}"),
        MappingSource::Expression(e) => e.text().to_string(),
    }
}

/// `always` or `create`, as the config spells it.
fn apply_name(a: Apply) -> &'static str {
    match a {
        Apply::Always => "always",
        Apply::Create => "create",
    }
}

/// One job as a JSON object: its mappings by object type, and its scoping filters.
fn job_json(j: &JobConfig) -> Value {
    let list = |ms: &[Mapping]| -> Vec<Value> {
        ms.iter()
            .map(|m| {
                let (kind, value) = match &m.source {
                    MappingSource::Attribute(a) => ("attribute", json!(a)),
                    MappingSource::Constant(c) => ("constant", json!(c)),
                    MappingSource::Expression(e) => ("expression", json!(e.text())),
                };
                json!({
                    "target": m.target,
                    "source": {"kind": kind, "value": value},
                    "apply": apply_name(m.apply),
                    "default": m.default,
                    "matching": m.matching,
                })
            })
            .collect()
    };
    let filters = |fs: &[crate::scope::ScopingFilter]| -> Vec<Value> {
        fs.iter()
            .map(|f| serde_json::to_value(&f.spec).unwrap_or_default())
            .collect()
    };
    json!({
        "job": j.name,
        "fingerprint": j.mappings.fingerprint.to_string(),
        "users": list(&j.mappings.users),
        "groups": list(&j.mappings.groups),
        "scoping_filters": {
            "users": filters(&j.scope.user_filters),
            "groups": filters(&j.scope.group_filters),
        },
    })
}

/// One job as a table, each line at most [`MAX_WIDTH`] columns.
fn print_job(j: &JobConfig) {
    outln!("{} (fingerprint {})", j.name, j.mappings.fingerprint);
    let mut rows: Vec<Vec<String>> =
        vec![["type", "target", "from", "apply", "default", "matching"]
            .map(String::from)
            .to_vec()];
    for (ty, list) in [("user", &j.mappings.users), ("group", &j.mappings.groups)] {
        for m in list.iter() {
            rows.push(vec![
                ty.into(),
                m.target.clone(),
                from_text(m),
                apply_name(m.apply).into(),
                m.default
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
                m.matching.map(|p| p.to_string()).unwrap_or_default(),
            ]);
        }
    }
    for line in table(&rows, MAX_WIDTH - INDENT.len()) {
        outln!("{INDENT}{line}");
    }
    for (ty, filters) in [
        ("users", &j.scope.user_filters),
        ("groups", &j.scope.group_filters),
    ] {
        if filters.is_empty() {
            outln!("  scoping filters for {ty}: none (everything in the assignment scope)");
            continue;
        }
        outln!("  scoping filters for {ty} (an object must pass one filter; all clauses of it):");
        for (i, f) in filters.iter().enumerate() {
            let title = f
                .spec
                .title
                .clone()
                .unwrap_or_else(|| format!("filter {}", i + 1));
            let clauses: Vec<String> = f
                .spec
                .clauses
                .iter()
                .map(|c| match &c.value {
                    Some(serde_json::Value::String(v)) => {
                        format!("{} {} {v}", c.attribute, c.operator)
                    }
                    Some(v) => format!("{} {} {v}", c.attribute, c.operator),
                    None => format!("{} {}", c.attribute, c.operator),
                })
                .collect();
            outln!("    {title}: {}", clauses.join(" AND "));
        }
    }
}

/// Lay `rows` out in columns at most `width` wide in all: the widest columns give way
/// first, and a cell longer than its column continues on the next lines.
fn table(rows: &[Vec<String>], width: usize) -> Vec<String> {
    /// No column narrower than this (or its header, whichever is less).
    const MIN: usize = 8;
    let cols = rows.first().map(Vec::len).unwrap_or(0);
    let mut widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let total = |w: &[usize]| w.iter().sum::<usize>() + GAP.len() * w.len().saturating_sub(1);
    while total(&widths) > width {
        let Some((i, w)) = widths.iter().copied().enumerate().max_by_key(|(_, w)| *w) else {
            break;
        };
        if w <= MIN {
            break;
        }
        widths[i] = w - 1;
    }
    let mut out = Vec::new();
    for r in rows {
        let cells: Vec<Vec<String>> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| chunks(cell, *w))
            .collect();
        let height = cells.iter().map(Vec::len).max().unwrap_or(1);
        for k in 0..height {
            let line: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{:<w$}", c.get(k).map(String::as_str).unwrap_or("")))
                .collect();
            out.push(line.join(GAP).trim_end().to_string());
        }
    }
    out
}

/// `text` in pieces of at most `width` characters, broken after a space, a comma, a dot or a
/// colon where one is near the end of a piece (SCIM paths and URNs break at their parts).
fn chunks(text: &str, width: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= width || width == 0 {
        return vec![text.to_string()];
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        let mut end = (start + width).min(chars.len());
        if end < chars.len() {
            // Prefer a break in the last third of the piece.
            if let Some(b) = (start + width * 2 / 3..end)
                .rev()
                .find(|&i| matches!(chars[i], ' ' | ',' | '.' | ':'))
            {
                end = b + 1;
            }
        }
        out.push(
            chars[start..end]
                .iter()
                .collect::<String>()
                .trim_end()
                .to_string(),
        );
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wide_table_fits_and_keeps_every_character() {
        let long = "Join(\" \", [givenName], [surname], Switch([department], \"x\", \"R&D\", \"Engineering\"))";
        let rows = vec![
            vec!["type".to_string(), "target".into(), "from".into()],
            vec![
                "user".into(),
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager".into(),
                long.into(),
            ],
        ];
        let lines = table(&rows, 60);
        assert!(lines.iter().all(|l| l.chars().count() <= 60), "{lines:#?}");
        assert!(lines.len() > 2, "nothing wrapped: {lines:#?}");
        let pieces = chunks(long, 20);
        assert!(
            pieces.iter().all(|p| p.chars().count() <= 20),
            "{pieces:#?}"
        );
        let squeeze = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        assert_eq!(squeeze(&pieces.concat()), squeeze(long));
        // A narrow table is left as it is.
        let lines = table(&rows[..1], 60);
        assert_eq!(lines, vec!["type  target  from"]);
    }
}
