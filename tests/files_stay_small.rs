//! No source file of the crate is over 500 lines: a file that grows past that holds more than one
//! concern, and is split along them (issue 25's house rule; `src/config/` is an example).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

const MAX_LINES: usize = 500;

fn check(dir: &Path, long: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            check(&path, long);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let lines = std::fs::read_to_string(&path).unwrap().lines().count();
            if lines > MAX_LINES {
                long.push(format!("{} has {lines} lines", path.display()));
            }
        }
    }
}

#[test]
fn no_source_file_is_over_500_lines() {
    let mut long = Vec::new();
    check(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut long);
    assert!(long.is_empty(), "split these along their concerns:\n{}", long.join("\n"));
}
