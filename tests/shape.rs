//! The code's shape, kept by a test: no controller imports another (what they share lives
//! beneath them, in `shared`, `runtime`, `etcd`, `api`), nothing beneath them imports a
//! controller, sibling modules never import each other both ways, and no source file
//! grows past about 600 lines (table tests excepted: they live beside their code as
//! `*_tests.rs`). See docs/architecture.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 650;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    name.ends_with("_tests.rs") || name == "tests.rs" || name == "fake_api.rs"
}

/// The code of a file without its `#[cfg(test)]` module (which may reach anywhere).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const CONTROLLERS: [&str; 5] = ["cluster", "backup", "schedule", "restore", "wiring"];

#[test]
fn no_controller_imports_another_and_nothing_beneath_imports_one() {
    let mut files = Vec::new();
    sources(&root().join("src"), &mut files);
    let mut wrong = Vec::new();
    for f in files.iter().filter(|f| !is_test_file(f)) {
        let rel = f.strip_prefix(root()).unwrap().to_string_lossy().to_string();
        let text = code(f);
        let own = CONTROLLERS.iter().find(|c| rel.starts_with(&format!("src/controllers/{c}/")));
        // `super::` is the controllers' folder from a controller's mod.rs, `super::super::`
        // from its other files.
        let up = if rel.ends_with("/mod.rs") { "super::" } else { "super::super::" };
        for other in CONTROLLERS {
            let reaches = text.contains(&format!("controllers::{other}::"))
                || text.contains(&format!("controllers::{other};"))
                || (own.is_some() && text.contains(&format!("{up}{other}::")));
            let allowed = match own {
                Some(c) => *c == other,
                // The manager starts every controller.
                None => rel == "src/manager.rs" || rel == "src/controllers/mod.rs",
            };
            if reaches && !allowed {
                wrong.push(format!("{rel} -> {other}"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports across controllers (move what they share to src/shared): {wrong:#?}");
}

#[test]
fn no_source_file_is_longer_than_about_600_lines() {
    let mut files = Vec::new();
    sources(&root().join("src"), &mut files);
    sources(&root().join("e2e/src"), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter(|f| !is_test_file(f))
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{}: {n} lines", f.strip_prefix(root()).unwrap().display()))
        })
        .collect();
    assert!(long.is_empty(), "split these (table tests go beside their code as *_tests.rs): {long:#?}");
}

/// The sibling modules a file names through `super::`.
fn siblings_used(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("super::") {
        let rest = &text[i + "super::".len()..];
        if let Some(list) = rest.strip_prefix('{') {
            let list = &list[..list.find('}').unwrap_or(list.len())];
            for item in list.split(',') {
                let name = item.trim().split("::").next().unwrap_or("").trim();
                out.insert(name.to_string());
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.insert(name);
        }
    }
    out
}

#[test]
fn sibling_modules_never_import_each_other_both_ways() {
    let mut files = Vec::new();
    sources(&root().join("src"), &mut files);
    sources(&root().join("e2e/src"), &mut files);
    // Per folder: module name -> siblings it uses (through `super::` or `crate::<path>::`).
    let mut by_dir: BTreeMap<PathBuf, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in files.iter().filter(|f| !is_test_file(f)) {
        let dir = f.parent().unwrap().to_path_buf();
        let module = f.file_stem().unwrap().to_string_lossy().to_string();
        if module == "mod" || module == "lib" || module == "main" {
            continue;
        }
        let text = code(f);
        let mut used = siblings_used(&text);
        // `crate::<path to this folder>::<sibling>`, as e2e/src's modules name each other.
        let prefix = if dir == root().join("e2e/src") {
            "crate::".to_string()
        } else {
            let rel = dir.strip_prefix(root().join("src")).map(|p| p.to_string_lossy().replace('/', "::"));
            match rel {
                Ok(r) if !r.is_empty() => format!("crate::{r}::"),
                _ => "crate::".to_string(),
            }
        };
        for (i, _) in text.match_indices(&prefix) {
            let name: String =
                text[i + prefix.len()..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            used.insert(name);
        }
        used.remove(&module);
        by_dir.entry(dir).or_default().insert(module, used);
    }
    let mut circles = Vec::new();
    for (dir, modules) in &by_dir {
        for (a, uses) in modules {
            for b in uses {
                if a < b && modules.get(b).is_some_and(|u| u.contains(a)) {
                    circles.push(format!("{}: {a} <-> {b}", dir.strip_prefix(root()).unwrap().display()));
                }
            }
        }
    }
    assert!(circles.is_empty(), "import circles: {circles:#?}");
}
