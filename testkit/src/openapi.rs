//! The OpenAPI snapshot: a service's committed document (`docs/openapi/<service>.json`)
//! must be the one its code generates, so the published contract cannot drift.

use serde_json::Value;
use std::path::Path;

/// The variable that makes [`assert_committed_document`] rewrite the committed file.
pub const UPDATE_VARIABLE: &str = "UPDATE_OPENAPI";

/// Panics unless the file `committed` holds exactly `generated`. With `UPDATE_OPENAPI`
/// set, it first writes `generated` to the file, and panics all the same: a run with the
/// variable set never passes, so CI cannot pass by regenerating the document, and the
/// developer sees the change to review and commit. `regenerate` is the command to show.
pub fn assert_committed_document(committed: &Path, generated: &Value, regenerate: &str) {
    let on_disk: Value = std::fs::read_to_string(committed)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    if std::env::var_os(UPDATE_VARIABLE).is_some() {
        if on_disk != *generated {
            if let Err(e) = write_pretty(committed, generated) {
                panic!("cannot write {}: {e}", committed.display());
            }
            panic!(
                "{} updated; review and commit it. This run fails because {UPDATE_VARIABLE} \
                 is set: run the tests again without it",
                committed.display()
            );
        }
        panic!(
            "{} is up to date, but {UPDATE_VARIABLE} is set: a run with it never passes; \
             run the tests again without it",
            committed.display()
        );
    }
    assert!(
        on_disk == *generated,
        "{} is missing or differs from the document the code generates; regenerate it with\n\
         \n    {regenerate}\n\
         \nand commit the result",
        committed.display()
    );
}

fn write_pretty(path: &Path, document: &Value) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(document)? + "\n";
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

/// Panics unless every operation of `document` has an `operationId` and no two share one:
/// OpenAPI requires it, and client generators name their methods after them.
pub fn assert_unique_operation_ids(document: &Value) {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut seen = std::collections::BTreeMap::new();
    let paths = document["paths"].as_object();
    for (path, item) in paths.into_iter().flatten() {
        for method in METHODS {
            let operation = &item[method];
            if operation.is_null() {
                continue;
            }
            let Some(id) = operation["operationId"].as_str() else {
                panic!("{method} {path} has no operationId");
            };
            if let Some(other) = seen.insert(id.to_owned(), format!("{method} {path}")) {
                panic!("operationId {id:?} of {method} {path} is also that of {other}");
            }
        }
    }
    assert!(!seen.is_empty(), "no operations in the document");
}
