//! The direction of dependencies between the crate's top-level modules,
//! read from the source: each module may use only modules of a lower
//! layer, so no cycle can form (node <-> persist, node <-> replication
//! were the last ones). A new import that breaks the order fails here with
//! the file and line; ARCHITECTURE.md draws the same layers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Layers, lowest first. A module may depend on modules of lower layers
/// only (not on its own layer's other modules either).
const LAYERS: &[&[&str]] = &[
    &["util", "glob"],
    &["resp", "cluster"],
    &["store", "gossip"],
    &["runtime"],
    &["persist", "replication", "proxy"],
    &["node"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// (file, line, from, to) for every `crate::<to>` outside comments and
/// test modules.
fn imports() -> Vec<(String, usize, String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "main" || top == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            // An inline test module runs last in a file: tests may reach
            // anywhere.
            let next = lines.get(n + 1).map_or("", |l| l.trim());
            if line.trim() == "#[cfg(test)]" && next.starts_with("mod ") && next.ends_with('{') {
                break;
            }
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + 7..];
                let to: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !to.is_empty() && to != top {
                    out.push((rel.display().to_string(), n + 1, top.clone(), to));
                }
            }
        }
    }
    out
}

#[test]
fn every_module_is_in_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for e in std::fs::read_dir(src).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        let module = name.trim_end_matches(".rs");
        if ["main", "lib"].contains(&module) || name.ends_with(".tsv") {
            continue;
        }
        assert!(
            layer_of(module).is_some(),
            "src/{name}: add the module to LAYERS in tests/layers.rs"
        );
    }
}

#[test]
fn modules_only_use_lower_layers() {
    let mut bad: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (file, line, from, to) in imports() {
        let (Some(a), Some(b)) = (layer_of(&from), layer_of(&to)) else {
            continue;
        };
        if b >= a {
            bad.entry(format!("{from} -> {to}"))
                .or_default()
                .push(format!("src/{file}:{line}"));
        }
    }
    assert!(
        bad.is_empty(),
        "imports against the layer order (see ARCHITECTURE.md):\n{bad:#?}"
    );
}
