//! The OpenAPI document as the tests read it: its text, and the operations of its `paths:`
//! section, so that route tables (the OpenAPI check, the identity matrix) come from one place
//! and a new route cannot be forgotten.

pub const SPEC: &str = include_str!("../../openapi/jobscope.yaml");
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// (path, method) pairs of the document's `paths:` section, read from its layout: a path is a
/// two-space-indented key starting with `/`, an operation a four-space-indented method key.
pub fn operations() -> Vec<(String, String)> {
    let mut ops = Vec::new();
    let mut in_paths = false;
    let mut current: Option<String> = None;
    for line in SPEC.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_paths = line.trim_end() == "paths:";
            current = None;
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(path) = line.strip_prefix("  /") {
            current = Some(format!("/{}", path.trim_end().trim_end_matches(':')));
        } else if let (Some(path), Some(rest)) = (&current, line.strip_prefix("    ")) {
            let key = rest.trim_end().trim_end_matches(':');
            if METHODS.contains(&key) && !rest.starts_with(' ') {
                ops.push((path.clone(), key.to_uppercase()));
            }
        }
    }
    ops
}
