//! ARCHITECTURE.md's "Architecture invariant" lines, checked: reads the `crate::` paths of
//! every file in `src/` and fails when a module depends on one its invariant forbids, or when
//! the top-level modules' dependency graph has a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Modules whose invariant differs from their parent's, so they count as nodes of their own.
const SUBMODULES: &[&str] = &["target::scim"];

/// The node a module path names: its top-level module, or one of [`SUBMODULES`].
fn node(path: &str) -> String {
    SUBMODULES
        .iter()
        .find(|sub| path == **sub || path.starts_with(&format!("{sub}::")))
        .map(|sub| sub.to_string())
        .unwrap_or_else(|| path.split("::").next().unwrap_or(path).to_string())
}

/// The node a file belongs to (`src/plan/diff.rs` → `plan`, `src/target/scim/path.rs` →
/// `target::scim`); `None` for the crate roots, which assemble everything.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let path: Vec<&str> = rel
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .collect();
    let path = path.join("::");
    (path != "lib" && path != "main").then(|| node(&path))
}

/// The part of a file that the product compiles: unit tests may reach anywhere, so files
/// named like tests and everything from the first `#[cfg(test)]` on are left out, and so
/// are comments.
fn product_code(path: &Path) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name == "tests.rs" || name.ends_with("_tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let mut code = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// The module path at the start of `s` (`target::scim::path::ScimPath` → all of it; the
/// caller's [`node`] keeps what matters).
fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    s[..end].trim_end_matches(':')
}

/// The nodes named by the `crate::` paths in `code`, including each first-level
/// name of a `crate::{a::X, b}` group.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        // `$crate::` in macros and `other_crate::` are not ours.
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        start = false;
                        let name = ident(&group[i..]);
                        if !name.is_empty() {
                            names.insert(node(name));
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                names.insert(node(name));
            }
        }
    }
    names
}

/// Each node and the other nodes its product code names.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let named = named_modules(&product_code(&file));
        let entry = deps.entry(module.clone()).or_default();
        entry.extend(named.into_iter().filter(|n| *n != module));
    }
    deps
}

/// What each node may name: ARCHITECTURE.md's "Architecture invariant" lines, as data. A
/// node missing here fails the test, so a new module gets an invariant when it is added.
const ALLOWED: &[(&str, &[&str])] = &[
    ("util", &[]),
    ("attrs", &["util"]),
    ("http", &["util"]),
    ("model", &["attrs", "util"]),
    ("summary", &["model", "util"]),
    ("provlog", &["model", "summary", "util"]),
    ("scope", &["model", "attrs", "util"]),
    ("target::scim", &["model", "attrs", "util"]),
    (
        "mapping",
        &["model", "attrs", "scope", "target::scim", "util"],
    ),
    (
        "plan",
        &["model", "attrs", "mapping", "scope", "summary", "util"],
    ),
    (
        "source",
        &["model", "attrs", "http", "mapping", "scope", "util"],
    ),
    ("state", &["model", "attrs", "summary", "util"]),
    ("notify", &["state", "summary", "util"]),
    (
        "target",
        &["target::scim", "http", "model", "attrs", "summary", "util"],
    ),
    ("sandbox", &["target::scim", "model", "attrs", "util"]),
    (
        "cycle",
        &[
            "provlog",
            "plan",
            "mapping",
            "scope",
            "source",
            "state",
            "target",
            "target::scim",
            "model",
            "attrs",
            "summary",
            "util",
        ],
    ),
    (
        "config",
        &[
            "notify",
            "provlog",
            "cycle",
            "mapping",
            "plan",
            "scope",
            "source",
            "target",
            "target::scim",
            "model",
            "attrs",
            "util",
        ],
    ),
    (
        "daemon",
        &[
            "notify",
            "provlog",
            "config",
            "cycle",
            "plan",
            "mapping",
            "scope",
            "source",
            "state",
            "target",
            "target::scim",
            "model",
            "attrs",
            "summary",
            "http",
            "util",
        ],
    ),
    (
        "cli",
        &[
            "notify",
            "provlog",
            "daemon",
            "config",
            "cycle",
            "plan",
            "mapping",
            "scope",
            "source",
            "state",
            "target",
            "target::scim",
            "sandbox",
            "model",
            "attrs",
            "summary",
            "http",
            "util",
        ],
    ),
];

/// Each dependency that `allowed` does not permit, and each node it has no entry for.
fn violations(
    deps: &BTreeMap<String, BTreeSet<String>>,
    allowed: &BTreeMap<&str, &[&str]>,
) -> Vec<String> {
    let mut broken = Vec::new();
    for (module, named) in deps {
        let Some(ok) = allowed.get(module.as_str()) else {
            broken.push(format!(
                "{module}: no invariant in ALLOWED (and ARCHITECTURE.md)"
            ));
            continue;
        };
        for dep in named {
            if !ok.contains(&dep.as_str()) {
                broken.push(format!("{module} must not depend on {dep}"));
            }
        }
    }
    broken
}

/// A cycle in the dependency graph, as the path that closes it, if there is one.
fn find_cycle(deps: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    // Depth-first search: reaching a node that is still on the stack closes a cycle.
    fn visit<'a>(
        node: &'a str,
        deps: &'a BTreeMap<String, BTreeSet<String>>,
        on_stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = on_stack.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = on_stack[at..].iter().map(|s| s.to_string()).collect();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        on_stack.push(node);
        for next in deps.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, deps, on_stack, done) {
                return Some(cycle);
            }
        }
        on_stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    deps.keys()
        .find_map(|node| visit(node, deps, &mut Vec::new(), &mut done))
}

#[test]
fn every_module_depends_only_on_what_its_invariant_allows() {
    let deps = dependencies();
    // Too few modules would mean the reader lost its way, and the test would pass vacuously.
    assert!(
        deps.len() >= 15,
        "the reader found too few modules: {deps:?}"
    );
    assert!(
        deps["cycle"].contains("plan"),
        "cycle must be seen to use plan"
    );
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let broken = violations(&deps, &allowed);
    assert!(
        broken.is_empty(),
        "architecture invariants broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn modules_form_no_import_cycle() {
    if let Some(cycle) = find_cycle(&dependencies()) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_dependency_reader_sees_groups_paths_and_submodules() {
    let code = "use crate::{model::Link, target::scim::path::ScimPath, util};\n\
                let x = crate::plan::diff(a);\nuse other_crate::state;\n$crate::cli::x";
    let named: Vec<String> = named_modules(code).into_iter().collect();
    assert_eq!(named, ["model", "plan", "target::scim", "util"]);
}

/// The checks themselves, on made-up graphs: a forbidden edge, an unknown module and a cycle
/// are each reported.
#[test]
fn a_forbidden_dependency_an_unknown_module_and_a_cycle_are_reported() {
    let graph = |edges: &[(&str, &str)]| {
        let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, to) in edges {
            deps.entry(from.to_string())
                .or_default()
                .insert(to.to_string());
            deps.entry(to.to_string()).or_default();
        }
        deps
    };
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let planner_uses_client = graph(&[("plan", "model"), ("plan", "target")]);
    assert_eq!(
        violations(&planner_uses_client, &allowed),
        ["plan must not depend on target"]
    );
    let newcomer = graph(&[("newcomer", "util")]);
    assert_eq!(violations(&newcomer, &allowed).len(), 1);
    let cyclic = graph(&[
        ("config", "source"),
        ("source", "util"),
        ("source", "config"),
    ]);
    let cycle = find_cycle(&cyclic).expect("a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert!(cycle.contains(&"config".to_string()) && cycle.contains(&"source".to_string()));
    assert_eq!(find_cycle(&graph(&[("a", "b"), ("b", "c")])), None);
}
