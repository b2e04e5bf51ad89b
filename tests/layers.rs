//! The crate's layers point down (ARCHITECTURE.md): a module may name only the layers below it.
//! This reads the sources, so an upward `crate::...` path fails here even when it compiles.

use std::path::{Path, PathBuf};

/// Each top-level module of `host/src` and the modules it may use.
const LAYERS: &[(&str, &[&str])] = &[
    ("store", &[]),
    ("town", &["store"]),
    ("runtime", &["store"]),
    ("host", &["store", "town", "runtime"]),
    ("scaffold", &["store", "runtime"]),
    ("bench", &["store", "town", "runtime", "host"]),
    ("serve", &["store", "town", "runtime", "host"]),
    (
        "cli",
        &[
            "store", "town", "runtime", "host", "scaffold", "bench", "serve",
        ],
    ),
];

/// Layers that must not touch wasmtime (the store is tested without it).
const NO_WASM: &[&str] = &["store", "town"];

/// No source file is longer than this: one concept per file.
const MAX_LINES: usize = 500;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
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

/// The files of top-level module `name` (`name.rs` or `name/`).
fn files_of(name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let dir = src().join(name);
    if dir.is_dir() {
        rust_files(&dir, &mut out);
    }
    let file = src().join(format!("{name}.rs"));
    if file.is_file() {
        out.push(file);
    }
    out
}

/// The top-level modules a source text names with `crate::<module>`.
fn uses(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let name: String = rest[i + 7..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.push(name);
        rest = &rest[i + 7..];
    }
    out
}

#[test]
fn every_module_is_in_a_layer() {
    let mut top: Vec<String> = std::fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() || p.extension().is_some_and(|x| x == "rs"))
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        // The executable's own modules (`main.rs`: `mem`) are no layer of the library.
        .filter(|n| !matches!(n.as_str(), "lib" | "main" | "mem" | "templates"))
        .collect();
    top.sort();
    top.dedup();
    for name in top {
        assert!(
            LAYERS.iter().any(|(l, _)| *l == name),
            "module `{name}` is in no layer: add it to LAYERS here and to ARCHITECTURE.md"
        );
    }
}

#[test]
fn layers_point_down() {
    let mut wrong = Vec::new();
    for (layer, allowed) in LAYERS {
        for file in files_of(layer) {
            let text = std::fs::read_to_string(&file).unwrap();
            for used in uses(&text) {
                if used != *layer && !allowed.contains(&used.as_str()) {
                    wrong.push(format!(
                        "{} names crate::{used}, above or beside layer `{layer}`",
                        file.display()
                    ));
                }
            }
            if NO_WASM.contains(layer)
                && (text.contains("wasmtime::") || text.contains("wasmtime_wasi"))
            {
                wrong.push(format!(
                    "{} uses wasmtime in layer `{layer}`",
                    file.display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_source_file_is_too_long() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these by concept (at most {MAX_LINES} lines):\n{}",
        long.join("\n")
    );
}
