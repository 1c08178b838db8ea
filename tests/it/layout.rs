//! The layers the folders show, checked: which layer may name which, and no cycle between layers.
//!
//! A layer is a top-level module of the crate (`src/<layer>/` or `src/<layer>.rs`); a dependency is any
//! `crate::<layer>` path in its code (comments aside), `use crate::{a, b}` groups included.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each layer must never name.
const FORBIDDEN: &[(&str, &[&str])] = &[
    // The data plane gets a plain settings snapshot and plain options: no storage, no admin, no CLI,
    // no composition root, no repository management, no config file.
    (
        "proxy",
        &[
            "control",
            "admin",
            "cli",
            "app",
            "repository",
            "config",
            "keystore",
        ],
    ),
    (
        "tls",
        &[
            "proxy",
            "control",
            "admin",
            "cli",
            "app",
            "repository",
            "config",
            "keystore",
        ],
    ),
    // The admin server and the CLI both call the control plane, never each other.
    ("admin", &["cli", "app"]),
    ("cli", &["admin"]),
    ("control", &["admin", "cli", "app"]),
    ("repository", &["control", "admin", "cli", "app"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The layers one line of code names.
fn named_layers(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or_default();
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                names.push(name);
            }
        } else {
            names.push(
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    names
}

/// layer -> (named layer -> first place it is named).
fn dependencies() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let layers: BTreeSet<String> = files
        .iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(&src).ok()?;
            let first = rel.components().next()?.as_os_str().to_string_lossy();
            Some(first.trim_end_matches(".rs").to_string())
        })
        .collect();
    let mut deps: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let layer = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for named in named_layers(line) {
                if named != layer && layers.contains(&named) {
                    deps.entry(layer.clone())
                        .or_default()
                        .entry(named)
                        .or_insert_with(|| format!("src/{}:{}", rel.display(), n + 1));
                }
            }
        }
    }
    deps
}

#[test]
fn each_layer_names_only_the_layers_it_may() {
    let deps = dependencies();
    let mut broken = Vec::new();
    for (layer, forbidden) in FORBIDDEN {
        for (named, place) in deps.get(*layer).into_iter().flatten() {
            if forbidden.contains(&named.as_str()) {
                broken.push(format!("{layer} must not use {named} ({place})"));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    // The rules are not vacuous: the data plane does use what it may.
    assert!(deps["proxy"].contains_key("tls"), "{deps:?}");
    assert!(deps["app"].contains_key("proxy") && deps["app"].contains_key("control"));
}

#[test]
fn no_two_layers_depend_on_each_other_even_through_others() {
    let deps = dependencies();
    // Depth-first search for a cycle, reporting its path.
    fn visit(
        layer: &str,
        deps: &BTreeMap<String, BTreeMap<String, String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|l| l == layer) {
            let mut cycle = path[at..].to_vec();
            cycle.push(layer.to_string());
            return Some(cycle);
        }
        if done.contains(layer) {
            return None;
        }
        path.push(layer.to_string());
        for named in deps.get(layer).into_iter().flat_map(|d| d.keys()) {
            if let Some(cycle) = visit(named, deps, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(layer.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for layer in deps.keys() {
        if let Some(cycle) = visit(layer, &deps, &mut Vec::new(), &mut done) {
            let places: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{} -> {} ({})", w[0], w[1], deps[&w[0]][&w[1]]))
                .collect();
            panic!("layers form a cycle:\n{}", places.join("\n"));
        }
    }
}

#[test]
fn the_checker_sees_grouped_imports() {
    assert_eq!(
        named_layers("use crate::{control::state, proxy}; // crate::admin"),
        vec!["control".to_string(), "proxy".to_string()]
    );
    assert_eq!(
        named_layers("let x = crate::tls::client::f();"),
        vec!["tls"]
    );
}

/// What issue 28 removed, with the only places each may come back: a runtime per call, hand-written
/// HTTP, stringly errors, SQL text built with `format!` or carrying a quoted value (identifiers,
/// which cannot be bound, may be formatted in with `sql::ident`). Comments and doc text are not
/// code.
const REMOVED: &[(&str, &str, &[&str])] = &[
    (
        "Runtime::new",
        "a runtime is built once, at start, by the composition root",
        &["src/app/", "src/main.rs", "src/bin/"],
    ),
    (
        "Builder::new_",
        "a runtime is built once, at start, by the composition root",
        &["src/app/", "src/main.rs", "src/bin/"],
    ),
    (
        "format!(\"HTTP/1.1",
        "HTTP is axum's and hyper's, not hand-written",
        &[],
    ),
    (
        "Invalid(String)",
        "an error variant says what was wrong",
        &[],
    ),
    (
        "simple_query(&format!",
        "values travel as bound parameters",
        &[],
    ),
    ("query(&format!", "values travel as bound parameters", &[]),
    (
        // The call and its import: a quoted value in SQL text, wherever the text is run.
        "sql::literal",
        "values travel as bound parameters; only a SCRAM verifier in ALTER ROLE … PASSWORD, which \
         cannot be one, is quoted into the text",
        &["src/repository/roles.rs", "src/control/cluster/repo.rs"],
    ),
    (
        "escape_literal(",
        "values travel as bound parameters; quoting one is sql::literal's, and only SET, which \
         takes no parameter, on a warm session's raw simple Query quotes one itself",
        &["src/repository/sql.rs", "src/proxy/backend/reset.rs"],
    ),
];

/// Files of `src/` longer than this are split into modules named for what they hold.
const MAX_LINES: usize = 500;

#[test]
fn what_issue_28_removed_stays_removed_and_no_file_is_over_500_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut broken = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(root).unwrap().display().to_string();
        let text = std::fs::read_to_string(file).unwrap();
        let lines = text.lines().count();
        if lines > MAX_LINES {
            broken.push(format!("{rel} has {lines} lines (at most {MAX_LINES})"));
        }
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for (pattern, why, allowed) in REMOVED {
                if code.contains(pattern) && !allowed.iter().any(|a| rel.starts_with(a)) {
                    broken.push(format!("{rel}:{}: `{pattern}`: {why}", n + 1));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
