//! The house's arrows point down: the top-level modules of `src/` import
//! each other without a cycle, and in the order `src/lib.rs` documents.
//!
//! The graph is read from the source text: every `crate::NAME` reference
//! (including `use crate::{a, b::c}` groups) in a file under `src/NAME/` or
//! `src/NAME.rs` is an edge from that file's top-level module to `NAME`.
//! Comments are ignored; tests inside modules count like any other code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom, as `src/lib.rs` lists them: a module may import only
/// modules below it.
const LAYERS: [&str; 19] = [
    "cli",
    "node",
    "doctor",
    "logging",
    "watchdog",
    "shard",
    "metrics",
    "api",
    "cluster",
    "config",
    "store",
    "bench",
    "http",
    "tls",
    "net",
    "fault",
    "encoding",
    "host",
    "sd_notify",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without `//` comments (doc comments name files and modules
/// freely) and without the contents of string literals.
fn code_of(source: &str) -> String {
    let mut code = String::with_capacity(source.len());
    for line in source.lines() {
        let mut in_string = false;
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if !in_string && c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' {
                in_string = !in_string;
            } else if !in_string {
                code.push(c);
            }
            prev = c;
        }
        code.push('\n');
    }
    code
}

fn ident_at(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The top-level modules `code` refers to through `crate::`.
fn referenced(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = code[i + "crate::".len()..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::x, b, c::{y, z}}`: the first segment of each item
            // at the group's top level.
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphabetic() || c == '_') => {
                        names.insert(ident_at(&group[j..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident_at(rest);
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

fn import_graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("a component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "main" || module == "lib" {
            continue;
        }
        let source = std::fs::read_to_string(&file).expect("read a source file");
        for target in referenced(&code_of(&source)) {
            if target != module {
                graph
                    .entry(module.clone())
                    .or_default()
                    .entry(target)
                    .or_default()
                    .insert(rel.display().to_string());
            }
        }
    }
    graph
}

#[test]
fn the_reference_reader_sees_paths_and_groups() {
    let code = code_of("use crate::a::X; // crate::nope\nuse crate::{b::Y, c, d::{e, f}};\nlet s = \"crate::no\"; crate::g::h();");
    let names: Vec<String> = referenced(&code).into_iter().collect();
    assert_eq!(names, ["a", "b", "c", "d", "g"]);
}

#[test]
fn every_module_is_placed_in_the_layers() {
    let graph = import_graph();
    let mut modules: BTreeSet<&str> = graph.keys().map(String::as_str).collect();
    for targets in graph.values() {
        modules.extend(targets.keys().map(String::as_str));
    }
    for m in modules {
        assert!(
            LAYERS.contains(&m),
            "module `{m}` is not in LAYERS: place it (and in src/lib.rs's map)"
        );
    }
}

#[test]
fn imports_point_down_the_layers() {
    let graph = import_graph();
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m).unwrap_or(usize::MAX);
    let mut upward = Vec::new();
    for (from, targets) in &graph {
        for (to, files) in targets {
            if rank(to) <= rank(from) {
                upward.push(format!("{from} -> {to} (in {files:?})"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up (or sideways) the layers:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = import_graph();
    // Depth-first search with colours: reaching a grey module again is a cycle.
    fn visit<'g>(
        m: &'g str,
        graph: &'g BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        colour: &mut BTreeMap<&'g str, u8>,
        path: &mut Vec<&'g str>,
    ) -> Option<Vec<String>> {
        match colour.get(m) {
            Some(1) => {
                let start = path.iter().position(|p| *p == m).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(m.to_string());
                return Some(cycle);
            }
            Some(2) => return None,
            _ => {}
        }
        colour.insert(m, 1);
        path.push(m);
        if let Some(targets) = graph.get(m) {
            for t in targets.keys() {
                if let Some(cycle) = visit(t, graph, colour, path) {
                    return Some(cycle);
                }
            }
        }
        path.pop();
        colour.insert(m, 2);
        None
    }
    let mut colour = BTreeMap::new();
    for m in graph.keys() {
        let mut path = Vec::new();
        if let Some(cycle) = visit(m, &graph, &mut colour, &mut path) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}
