//! `provisiond mappings`: a job's effective attribute mappings and scoping filters.

use super::Failure;
use crate::config::Config;

/// The effective mappings (preset merged with the job's overrides) and scoping filters.
pub(crate) fn mappings(config: &Config, job: Option<&str>) -> Result<i32, Failure> {
    use crate::mapping::{Apply, MappingSource};
    for j in config.select(job)? {
        println!("{} (fingerprint {})", j.name, j.mappings.fingerprint);
        let mut rows: Vec<[String; 6]> = vec![[
            "type".into(),
            "target".into(),
            "from".into(),
            "apply".into(),
            "default".into(),
            "matching".into(),
        ]];
        for (ty, list) in [("user", &j.mappings.users), ("group", &j.mappings.groups)] {
            for m in list.iter() {
                let from = match &m.source {
                    MappingSource::Attribute(a) => format!("[{a}]"),
                    MappingSource::Constant(c) => format!("constant {c}"),
                    MappingSource::Expression(e) => e.text().to_string(),
                };
                rows.push([
                    ty.into(),
                    m.target.clone(),
                    from,
                    match m.apply {
                        Apply::Always => "always".into(),
                        Apply::Create => "create".into(),
                    },
                    m.default
                        .as_ref()
                        .map(|d| d.to_string())
                        .unwrap_or_default(),
                    m.matching.map(|p| p.to_string()).unwrap_or_default(),
                ]);
            }
        }
        let widths: Vec<usize> = (0..6)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for r in &rows {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            println!("  {}", line.join("  ").trim_end());
        }
        for (ty, filters) in [
            ("users", &j.scope.user_filters),
            ("groups", &j.scope.group_filters),
        ] {
            if filters.is_empty() {
                println!("  scoping filters for {ty}: none (everything in the assignment scope)");
                continue;
            }
            println!(
                "  scoping filters for {ty} (an object must pass one filter; all clauses of it):"
            );
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
                println!("    {title}: {}", clauses.join(" AND "));
            }
        }
    }
    Ok(0)
}
