//! The crate's layers, as the table in `src/lib.rs` states them, hold in the code: every `crate::`
//! path in `src/` names a module of its own layer or a lower one, the modules of one layer import
//! each other without a cycle, and every module of the crate stands in the table exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `module → layer number`, from the `//! | N name | [`a`] (…), [`b`] … |` rows of `src/lib.rs`.
fn layers(lib: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for row in lib.lines().filter_map(|l| l.strip_prefix("//! | ")) {
        let Some((layer, modules)) = row.split_once(" | ") else { continue };
        let Some(n) = layer.split_whitespace().next().and_then(|n| n.parse::<u32>().ok()) else { continue };
        for name in modules.split("[`").skip(1).filter_map(|m| m.split_once("`]")).map(|(m, _)| m) {
            assert!(out.insert(name.to_owned(), n).is_none(), "{name} stands twice in the layer table");
        }
    }
    out
}

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

/// The top-level modules a file's code names (`crate::x`, in `use` lines and in paths), comments
/// left out: a doc link may point anywhere.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines().map(str::trim_start).filter(|l| !l.starts_with("//")) {
        let code = line.split(" //").next().unwrap_or(line);
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
        // `use crate::{a, b::c}`
        if let Some(group) = code.strip_prefix("use crate::{") {
            for part in group.split(',') {
                let name: String = part.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
    }
    out
}

#[test]
fn every_import_runs_down_the_layer_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(root.join("lib.rs")).unwrap();
    let layer = layers(&lib);
    assert!(layer.len() >= 20, "the layer table in src/lib.rs went missing: {layer:?}");

    // Every `pub mod` of lib.rs is in the table, and nothing else is.
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ").or_else(|| l.strip_prefix("mod ")))
        .map(|l| l.trim_end_matches(';').to_owned())
        .collect();
    let tabled: BTreeSet<String> = layer.keys().cloned().collect();
    assert_eq!(declared, tabled, "src/lib.rs declares other modules than its layer table lists");

    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&root).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        // The binary's own modules (`main.rs`, `cli/`) stand above every layer.
        let Some(&from) = layer.get(&module) else {
            assert!(module == "main" || module == "cli" || module == "lib", "{} is in no layer", rel.display());
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for to in named_modules(&text) {
            if to == module {
                continue;
            }
            let Some(&n) = layer.get(&to) else { continue };
            if n > from {
                wrong.push(format!("{} (layer {from}) imports {to} (layer {n})", rel.display()));
            }
            if n == from {
                edges.entry(module.clone()).or_default().insert(to);
            }
        }
    }
    assert!(wrong.is_empty(), "imports that run up a layer:\n{}", wrong.join("\n"));

    // Within a layer: no cycle (depth-first search with colours).
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) {
        match state.get(m) {
            Some(2) => return,
            Some(1) => panic!("a cycle within a layer: {} -> {m}", path.join(" -> ")),
            _ => {}
        }
        state.insert(m.to_owned(), 1);
        path.push(m.to_owned());
        for next in edges.get(m).into_iter().flatten() {
            visit(next, edges, state, path);
        }
        path.pop();
        state.insert(m.to_owned(), 2);
    }
    let mut state = BTreeMap::new();
    for m in edges.keys() {
        visit(m, &edges, &mut state, &mut Vec::new());
    }
}

/// The checker itself: it sees a `crate::` path in code, in a grouped `use`, and not in a comment.
#[test]
fn the_checker_reads_paths_in_code_and_not_in_comments() {
    let text = "use crate::a::B;\nuse crate::{c, d::E};\n// crate::f\nlet x = crate::g::h(); // crate::i\n";
    let got: Vec<String> = named_modules(text).into_iter().collect();
    assert_eq!(got, ["a", "c", "d", "g"]);
    let lib = "//! | 2 infra | [`x`] (the x), [`y`] |\n//! | 1 base | [`z`] |\n";
    assert_eq!(layers(lib), BTreeMap::from([("x".into(), 2), ("y".into(), 2), ("z".into(), 1)]));
}
