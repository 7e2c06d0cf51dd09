//! The architecture, checked (docs/architecture.md says what and why):
//!
//! 1. Crates: each workspace crate depends only on crates below it (common ← offline ← probe ←
//!    clockpath ← tests), and the offline crate's dependency tree has no eBPF loader, async
//!    runtime or HTTP stack (aya, tokio, hyper), so analysis and fuzzing build without them.
//! 2. Modules: in every crate, the modules under any one parent import each other without a
//!    cycle. A module may use its parent's items and its own children freely; what must not
//!    loop is sibling → sibling (config ↔ sinks, daemon ↔ http, …). References are read from
//!    the source with syn (`use` trees and qualified paths), resolved like rustc does for
//!    `crate::`, `super::`, `self::` and child-module paths.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use syn::visit::Visit;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// The crates whose modules are checked, by source directory.
const CRATES: &[(&str, &str)] = &[
    ("clockpath-common", "common/src"),
    ("clockpath-ebpf", "ebpf/src"),
    ("clockpath-offline", "exporter/offline/src"),
    ("clockpath-probe", "exporter/probe/src"),
    ("clockpath", "exporter/clockpath/src"),
    ("clockpath-tests", "tests/src"),
];

/// The layering, bottom first: a crate may depend on crates before it only.
const LAYERS: &[&str] =
    &["clockpath-common", "clockpath-ebpf", "clockpath-offline", "clockpath-probe", "clockpath", "clockpath-tests"];

type ModPath = Vec<String>;

/// One reference from a module to another, and where it was written.
#[derive(Clone, Debug)]
struct Reference {
    from: ModPath,
    to: ModPath,
    at: String,
}

/// Module path of a source file below `src`.
fn module_of(src: &Path, file: &Path) -> Option<ModPath> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop()?;
    match last.as_str() {
        "lib.rs" if parts.is_empty() => {}
        "main.rs" => return None,
        "mod.rs" => {}
        f => parts.push(f.strip_suffix(".rs")?.to_string()),
    }
    Some(parts)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Collects the paths a file refers to, with the module (file module plus inline `mod`s) each
/// reference is written in.
struct Collector<'a> {
    file: &'a str,
    module: ModPath,
    paths: Vec<(ModPath, Vec<String>, usize)>,
}

impl Collector<'_> {
    fn push(&mut self, segments: Vec<String>, line: usize) {
        if matches!(segments.first().map(String::as_str), Some("crate" | "super" | "self")) || segments.len() > 1 {
            self.paths.push((self.module.clone(), segments, line));
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree, line: usize) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree, line);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut v = prefix.clone();
                if n.ident != "self" {
                    v.push(n.ident.to_string());
                }
                self.push(v, line);
            }
            syn::UseTree::Rename(r) => {
                let mut v = prefix.clone();
                if r.ident != "self" {
                    v.push(r.ident.to_string());
                }
                self.push(v, line);
            }
            syn::UseTree::Glob(_) => self.push(prefix.clone(), line),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t, line);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if m.content.is_some() {
            self.module.push(m.ident.to_string());
            syn::visit::visit_item_mod(self, m);
            self.module.pop();
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let line = u.use_token.span.start().line;
        self.use_tree(&mut Vec::new(), &u.tree, line);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        let line = p.segments.first().map_or(0, |s| s.ident.span().start().line);
        self.push(segments, line);
        syn::visit::visit_path(self, p);
    }
}

/// Resolve a path written in module `at` to the deepest module of `modules` it names.
fn resolve(at: &ModPath, segments: &[String], modules: &BTreeSet<ModPath>) -> Option<ModPath> {
    let mut base: ModPath;
    let mut rest = segments;
    match segments.first().map(String::as_str) {
        Some("crate") => {
            base = Vec::new();
            rest = &segments[1..];
        }
        Some("self") => {
            base = at.clone();
            rest = &segments[1..];
        }
        Some("super") => {
            base = at.clone();
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        Some(first) => {
            // A path starting with a child module of the current module (2018+ paths).
            let mut child = at.clone();
            child.push(first.to_string());
            if !modules.contains(&child) {
                return None;
            }
            base = at.clone();
        }
        None => return None,
    }
    let mut deepest = base.clone();
    for s in rest {
        base.push(s.clone());
        if modules.contains(&base) {
            deepest = base.clone();
        } else {
            break;
        }
    }
    Some(deepest)
}

/// Every module and every cross-module reference of a crate.
fn references(src: &Path) -> (BTreeSet<ModPath>, Vec<Reference>) {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut parsed = Vec::new();
    let mut modules = BTreeSet::new();
    for f in &files {
        let Some(m) = module_of(src, f) else { continue };
        let text = std::fs::read_to_string(f).unwrap();
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        modules.insert(m.clone());
        parsed.push((f.clone(), m, ast));
    }
    // Inline modules (`mod tests { … }`) are modules too.
    let mut collected = Vec::new();
    for (f, m, ast) in &parsed {
        let name = f.strip_prefix(workspace()).unwrap_or(f).display().to_string();
        let mut c = Collector { file: &name, module: m.clone(), paths: Vec::new() };
        c.visit_file(ast);
        for (module, _, _) in &c.paths {
            modules.insert(module.clone());
        }
        collected.push((c.file.to_string(), c.paths));
    }
    let mut refs = Vec::new();
    for (file, paths) in collected {
        for (module, segments, line) in paths {
            if let Some(to) = resolve(&module, &segments, &modules)
                && to != module
            {
                refs.push(Reference { from: module, to, at: format!("{file}:{line} ({})", segments.join("::")) });
            }
        }
    }
    (modules, refs)
}

/// Sibling edges: for each parent, child A → child B when something inside A refers to
/// something inside B. References to an ancestor's own items, or from a module into its own
/// descendants, are not edges.
fn sibling_edges(refs: &[Reference]) -> BTreeMap<ModPath, BTreeMap<(String, String), Vec<String>>> {
    let mut out: BTreeMap<ModPath, BTreeMap<(String, String), Vec<String>>> = BTreeMap::new();
    for r in refs {
        let common = r.from.iter().zip(&r.to).take_while(|(a, b)| a == b).count();
        if common == r.from.len() || common == r.to.len() {
            continue;
        }
        let parent = r.from[..common].to_vec();
        let edge = (r.from[common].clone(), r.to[common].clone());
        out.entry(parent).or_default().entry(edge).or_default().push(r.at.clone());
    }
    out
}

/// A cycle in a directed graph, if there is one.
fn find_cycle(edges: &BTreeMap<(String, String), Vec<String>>) -> Option<Vec<String>> {
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        graph.entry(a).or_default().push(b);
        graph.entry(b).or_default();
    }
    // 0: unvisited, 1: on the stack, 2: done.
    let mut state: BTreeMap<&str, u8> = graph.keys().map(|k| (*k, 0)).collect();
    fn dfs<'a>(
        n: &'a str,
        graph: &BTreeMap<&'a str, Vec<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        state.insert(n, 1);
        stack.push(n);
        for &m in &graph[n] {
            match state[m] {
                1 => {
                    let i = stack.iter().position(|s| *s == m).unwrap_or(0);
                    let mut cycle: Vec<String> = stack[i..].iter().map(|s| s.to_string()).collect();
                    cycle.push(m.to_string());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = dfs(m, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n, 2);
        None
    }
    let nodes: Vec<&str> = graph.keys().copied().collect();
    for n in nodes {
        if state[n] == 0
            && let Some(c) = dfs(n, &graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_modules_of_every_crate_form_no_cycle() {
    let root = workspace();
    let mut report = String::new();
    let mut checked = 0;
    for (name, dir) in CRATES {
        let (modules, refs) = references(&root.join(dir));
        checked += modules.len();
        for (parent, edges) in sibling_edges(&refs) {
            if let Some(cycle) = find_cycle(&edges) {
                let at = if parent.is_empty() {
                    format!("{name} (crate root)")
                } else {
                    format!("{name}::{}", parent.join("::"))
                };
                let _ = writeln!(report, "{at}: {}", cycle.join(" → "));
                for w in cycle.windows(2) {
                    for place in edges[&(w[0].clone(), w[1].clone())].iter().take(3) {
                        let _ = writeln!(report, "    {} → {}: {place}", w[0], w[1]);
                    }
                }
            }
        }
    }
    assert!(checked > 60, "only {checked} modules found: is the layout what this test expects?");
    assert!(report.is_empty(), "module cycles:\n{report}");
}

/// The configuration owns every section's type and check and imports no other module of the
/// binary crate (only lower crates): everything reads it, it reads nothing back.
#[test]
fn config_is_a_leaf_of_the_binary_crate() {
    let (_, refs) = references(&workspace().join("exporter/clockpath/src"));
    let out: Vec<String> = refs
        .iter()
        .filter(|r| r.from.first().is_some_and(|m| m == "config") && r.to.first().is_some_and(|m| m != "config"))
        .filter(|r| !r.to.is_empty())
        .map(|r| format!("{} → {}: {}", r.from.join("::"), r.to.join("::"), r.at))
        .collect();
    assert!(out.is_empty(), "config imports other modules of the crate:\n{}", out.join("\n"));
}

#[test]
fn the_resolver_follows_rust_paths() {
    let modules: BTreeSet<ModPath> =
        [vec![], vec!["a".into()], vec!["a".into(), "b".into()], vec!["c".into()]].into_iter().collect();
    let v = |s: &str| s.split("::").map(str::to_string).collect::<Vec<_>>();
    let at = vec!["a".to_string(), "b".to_string()];
    assert_eq!(resolve(&at, &v("crate::c::X"), &modules), Some(vec!["c".into()]));
    assert_eq!(resolve(&at, &v("super::super::c"), &modules), Some(vec!["c".into()]));
    assert_eq!(resolve(&at, &v("super::Y"), &modules), Some(vec!["a".into()]));
    assert_eq!(resolve(&vec!["a".into()], &v("b::Z"), &modules), Some(at.clone()), "child path");
    assert_eq!(resolve(&at, &v("std::sync::Arc"), &modules), None, "external crate");
    let refs = vec![
        Reference { from: vec!["c".into()], to: vec!["a".into(), "b".into()], at: "x".into() },
        Reference { from: at.clone(), to: vec!["c".into()], at: "y".into() },
        Reference { from: at.clone(), to: vec!["a".into()], at: "parent".into() },
    ];
    let edges = sibling_edges(&refs);
    assert_eq!(edges[&vec![]].len(), 2, "c → a and a → c at the root; the child → parent use is no edge");
    assert_eq!(find_cycle(&edges[&vec![]]), Some(vec!["a".to_string(), "c".into(), "a".into()]));
}

/// `cargo metadata` of the workspace (offline: the lockfile has everything).
fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline", "--filter-platform"])
        .arg(env!("BUILD_TARGET"))
        .current_dir(workspace())
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("cargo metadata JSON")
}

/// Names of every crate `package` depends on through normal (not dev or build) dependencies,
/// with the features `cargo build -p package` would enable: `cargo tree`'s view, not the
/// workspace-wide feature union `cargo metadata` resolves.
fn normal_closure(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--locked", "--offline", "-e", "normal", "--prefix", "none", "--format", "{p}", "-p", package])
        .args(["--target", env!("BUILD_TARGET")])
        .current_dir(workspace())
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != package)
        .map(str::to_string)
        .collect()
}

#[test]
fn crates_depend_only_on_crates_below_them() {
    let meta = metadata();
    let members: Vec<&serde_json::Value> =
        meta["packages"].as_array().expect("packages").iter().filter(|p| p["source"].is_null()).collect();
    for p in &members {
        let name = p["name"].as_str().unwrap_or_default();
        let Some(level) = LAYERS.iter().position(|l| *l == name) else { continue };
        for d in p["dependencies"].as_array().into_iter().flatten() {
            let dep = d["name"].as_str().unwrap_or_default();
            if let Some(dl) = LAYERS.iter().position(|l| *l == dep) {
                assert!(dl < level, "{name} depends on {dep}, which is not below it ({LAYERS:?})");
            }
        }
    }
    let offline = normal_closure("clockpath-offline");
    for banned in ["aya", "tokio", "hyper", "opentelemetry", "prometheus-client"] {
        assert!(!offline.contains(banned), "clockpath-offline depends on {banned} (its tree: {offline:?})");
    }
    assert!(offline.contains("clockpath-common") && offline.contains("rand"), "{offline:?}");
    let probe = normal_closure("clockpath-probe");
    for banned in ["hyper", "opentelemetry", "prometheus-client", "figment"] {
        assert!(!probe.contains(banned), "clockpath-probe depends on {banned}");
    }
}
