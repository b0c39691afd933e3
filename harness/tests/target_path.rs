//! Where `--target t.toml` is looked for: where the binary runs, then
//! where the user ran cargo (`PWD`), then the parent directories up to
//! the workspace root.
extern crate service_test_harness as harness;

use std::path::{Path, PathBuf};

use harness::cli::resolve_target;
use harness::service_test;

/// A fresh tree: `root/suites` (where cargo runs the binary), `root/ext`
/// (where the user stands), with `t.toml` where `place` says.
fn tree(name: &str, place: &[&str]) -> PathBuf {
    let root = std::env::temp_dir().join(format!("target-path-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for d in ["suites", "ext"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    // `root` is a workspace's root: the lookup goes no higher.
    std::fs::write(root.join("Cargo.lock"), "").expect("write");
    for p in place {
        std::fs::write(root.join(p).join("t.toml"), "").expect("write");
    }
    root
}

#[service_test(unit)]
fn a_file_above_the_workspace_root_is_not_found() {
    let outer = tree("above", &[]);
    let root = outer.join("ws");
    std::fs::create_dir_all(root.join("suites")).expect("mkdir");
    std::fs::write(root.join("Cargo.lock"), "").expect("write");
    // Planted above the workspace: never chosen.
    std::fs::write(outer.join("t.toml"), "").expect("write");
    let found = resolve_target("t.toml".into(), &root.join("suites"), None);
    assert_eq!(found, PathBuf::from("t.toml"));
}

#[service_test(unit)]
fn a_file_where_the_user_ran_cargo_is_found_from_the_package_directory() {
    let root = tree("invoked", &["ext"]);
    let found = resolve_target(
        "t.toml".into(),
        &root.join("suites"),
        Some(&root.join("ext")),
    );
    assert_eq!(found, root.join("ext/t.toml"));
}

#[service_test(unit)]
fn the_invoking_directory_wins_over_a_parent_directory() {
    let root = tree("both", &["", "ext"]);
    let found = resolve_target(
        "t.toml".into(),
        &root.join("suites"),
        Some(&root.join("ext")),
    );
    assert_eq!(found, root.join("ext/t.toml"));
}

#[service_test(unit)]
fn a_file_in_a_parent_directory_is_found_without_pwd() {
    let root = tree("parent", &[""]);
    let found = resolve_target("t.toml".into(), &root.join("suites"), None);
    assert_eq!(found, root.join("t.toml"));
}

#[service_test(unit)]
fn a_file_found_nowhere_is_returned_as_given() {
    let root = tree("none", &[]);
    let found = resolve_target(
        "t.toml".into(),
        &root.join("suites"),
        Some(Path::new("relative/pwd")),
    );
    assert_eq!(found, PathBuf::from("t.toml"));
}

harness::main!();
