//! Layers point one way: no module of `src/` refers to a module above its own layer
//! (`crate::X` on a line of code, comments aside). The layers, lowest first, are in
//! [`LAYERS`]; a module missing from it fails the test, so a new module has to be placed.
//!
//! What still points up is listed in [`KNOWN`], each with the reason it is left; the list must
//! be exact, so it can only shrink: fixing one fails the test until its line is removed, and a
//! new upward reference fails it until the code is changed (or, with a reason, listed).

use std::collections::BTreeSet;
use std::path::Path;

/// Top-level modules of `src/` and their layer (0 is the lowest).
const LAYERS: &[(&str, u8)] = &[
    // Pure rules, types and helpers.
    ("domain", 0),
    ("log_safe", 0),
    ("token_file", 0),
    ("install_crypto_provider", 0),
    // What a node measures, and the on-disk queue of what could not be delivered.
    ("collector", 1),
    ("spool", 1),
    // The agent's reader of jobs' output files.
    ("log_tail", 1),
    // The database.
    ("store", 2),
    // On the store: the event feed, metrics, reports, schedulers; the client of our own API.
    ("events", 3),
    ("metrics", 3),
    ("report_events", 3),
    ("scheduler", 3),
    ("client", 3),
    // Serving it.
    ("api", 4),
    ("console", 4),
    // The commands, and the typed settings of `serve`.
    ("app", 5),
    ("agent", 5),
    ("hook", 5),
    ("watch", 5),
    ("report", 5),
    ("log_cmd", 5),
    ("config", 5),
    // Command-line arguments, turned into the commands' settings.
    ("cli", 6),
];

/// Upward references left, as (module, the module above it, file), with why. None are left:
/// `serve`'s and the hook's flags live with their settings (`config::args`,
/// `hook::config::HookArgs`), below `cli`, which only gathers them into subcommands.
const KNOWN: &[(&str, &str, &str)] = &[];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `X` of every `crate::X` on the code lines of `text` (whole-line comments and the part
/// of a line after ` // ` are skipped).
fn crate_references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let code = line.split(" // ").next().unwrap_or(line);
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            // `jobscope::`-qualified paths and `$crate::` in macros are not ours to check.
            let before = &code[..at];
            if !name.is_empty() && !before.ends_with('$') && !before.ends_with("jobscope::") {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn no_module_refers_to_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward = BTreeSet::new();
    let mut unplaced = BTreeSet::new();
    for file in &files {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel == "lib.rs" || rel == "main.rs" {
            continue;
        }
        let module = rel.split('/').next().unwrap().trim_end_matches(".rs");
        let Some(own) = layer(module) else {
            unplaced.insert(module.to_owned());
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for target in crate_references(&text) {
            match layer(&target) {
                Some(l) if l > own => {
                    upward.insert((module.to_owned(), target, rel.clone()));
                }
                Some(_) => {}
                None if target == module => {}
                None => {
                    unplaced.insert(target);
                }
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules without a layer in LAYERS: {unplaced:?}"
    );
    let known: BTreeSet<(String, String, String)> = KNOWN
        .iter()
        .map(|(a, b, f)| (a.to_string(), b.to_string(), f.to_string()))
        .collect();
    let new: Vec<_> = upward.difference(&known).collect();
    assert!(
        new.is_empty(),
        "modules referring to a layer above: {new:?}"
    );
    let fixed: Vec<_> = known.difference(&upward).collect();
    assert!(fixed.is_empty(), "fixed, remove from KNOWN: {fixed:?}");
}

#[test]
fn references_are_read_from_code_only() {
    let text = "use crate::store::Store;\n/// see [`crate::api`]\n    // crate::cli\nlet x = $crate::y; // crate::watch\njobscope::crate::z;\n";
    let found: Vec<String> = crate_references(text).into_iter().collect();
    assert_eq!(found, ["store"]);
}
