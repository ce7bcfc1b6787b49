//! Each rule broken on purpose in a fixture tree.

use super::*;

/// A tree that keeps every rule, and the facts it is checked against.
fn fixture() -> (tempfile::TempDir, Tree, Facts) {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = [
        (
            "README.md",
            "# Project\n\nReady means the API answers\nand a model is loaded. See docs/guide.md.\n\n\
             ## Configuration\n\n| Variable | Flag |\n|---|---|\n| `PORT` | `--port` |\n| `RUST_LOG` | |\n\n\
             ## Exit codes\n\n| Code | Meaning |\n|---|---|\n| handler's status | its own |\n| 78 | Bad configuration. |\n",
        ),
        ("docs/guide.md", "A guide.\n"),
        ("runtime/src/logging.rs", "// reads RUST_LOG\n"),
        (
            "tests/ready.rs",
            "#[test]\nfn ready_means_a_loaded_model() {}\n",
        ),
        (
            PROMISES,
            "# README phrase -> test\nthe API answers and a model is loaded -> tests/ready.rs::ready_means_a_loaded_model\n",
        ),
    ];
    for (path, text) in files {
        write(dir.path(), path, text);
    }
    let tree = Tree {
        root: dir.path().to_path_buf(),
        files: files.iter().map(|(path, _)| path.to_string()).collect(),
    };
    let facts = Facts {
        clap_env: BTreeSet::from(["PORT".to_string()]),
        exit_codes: BTreeSet::from([78]),
    };
    (dir, tree, facts)
}

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, text).expect("write");
}

fn add(tree: &mut Tree, path: &str, text: &str) {
    write(&tree.root, path, text);
    tree.files.push(path.to_string());
}

#[test]
fn a_tidy_tree_has_no_findings() {
    let (_dir, tree, facts) = fixture();
    assert_eq!(check(&tree, &facts), Vec::<String>::new());
}

#[test]
fn references_outside_the_repository_are_found_with_their_line() {
    let (_dir, mut tree, facts) = fixture();
    add(
        &mut tree,
        "src/a.rs",
        "// fine\n// see ../shared/notes\n// fixed in (issue 6)\n// measured on the lent H200\n// as the build machines do\n// as the seed's start.sh did\n",
    );
    let findings = check(&tree, &facts);
    assert_eq!(findings.len(), 5, "{findings:#?}");
    assert!(
        findings[0].starts_with("src/a.rs:2: \"../shared\""),
        "{findings:#?}"
    );
    assert!(
        findings[1].starts_with("src/a.rs:3: \"issue 6\""),
        "{findings:#?}"
    );
    assert!(
        findings[2].starts_with("src/a.rs:4: \"the lent h200\""),
        "{findings:#?}"
    );
    assert!(
        findings[3].starts_with("src/a.rs:5: \"the build machines\""),
        "{findings:#?}"
    );
    assert!(
        findings[4].starts_with("src/a.rs:6: \"the seed's\""),
        "{findings:#?}"
    );
}

#[test]
fn words_that_merely_contain_issue_are_not_references() {
    assert_eq!(tracker_reference("issues show the list"), None);
    assert_eq!(tracker_reference("tissue 5"), None);
    assert_eq!(
        tracker_reference("see issue #12."),
        Some("issue #12".to_string())
    );
    assert_eq!(
        tracker_reference("issues 5 and 6"),
        Some("issues 5".to_string())
    );
}

#[test]
fn only_the_ci_entry_point_may_name_the_tarball_beside_the_clone() {
    let (_dir, mut tree, facts) = fixture();
    add(&mut tree, ".ci/run", "tarball=../shared/a1111/src.tar.gz\n");
    add(
        &mut tree,
        ".ci/setup.sh",
        "tarball=../shared/a1111/src.tar.gz\n",
    );
    let findings = check(&tree, &facts);
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert!(findings[0].starts_with(".ci/setup.sh:1:"), "{findings:#?}");
}

#[test]
fn documents_that_are_not_in_the_repository_are_found() {
    let (_dir, mut tree, facts) = fixture();
    add(
        &mut tree,
        "src/b.py",
        "# see docs/guide.md and CHANGELOG.md\n# see ENVIRONMENT.md\n",
    );
    let findings = check(&tree, &facts);
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert!(
        findings[0].starts_with("src/b.py:2: \"ENVIRONMENT.md\""),
        "{findings:#?}"
    );
}

#[test]
fn the_configuration_table_and_the_code_are_compared_both_ways() {
    let (_dir, tree, mut facts) = fixture();
    facts.clap_env = BTreeSet::from(["HOST".to_string()]);
    let findings = check(&tree, &facts);
    assert_eq!(
        findings,
        [
            "README.md:10: `PORT` is documented but no argument of runtime/src/cli.rs reads it",
            "README.md: `HOST` (runtime/src/cli.rs) is missing from the configuration table",
        ]
    );
}

#[test]
fn a_variable_read_outside_clap_must_still_be_read_where_the_list_says() {
    let (_dir, tree, facts) = fixture();
    write(&tree.root, "runtime/src/logging.rs", "// no filter\n");
    let findings = check(&tree, &facts);
    assert_eq!(
        findings,
        ["README.md:11: `RUST_LOG` is documented but runtime/src/logging.rs no longer reads it"]
    );
}

#[test]
fn the_exit_code_table_and_exit_code_rs_are_compared_both_ways() {
    let (_dir, tree, mut facts) = fixture();
    facts.exit_codes = BTreeSet::from([81]);
    let findings = check(&tree, &facts);
    assert_eq!(
        findings,
        [
            "README.md:18: exit code 78 is not in runtime/src/exit_code.rs",
            "README.md: exit code 81 (runtime/src/exit_code.rs) is missing from the exit-code table",
        ]
    );
}

#[test]
fn a_promise_needs_its_words_in_the_readme_and_its_test_in_the_tree() {
    let (_dir, tree, facts) = fixture();
    write(
        &tree.root,
        PROMISES,
        "the API answers and a model is loaded -> tests/ready.rs::gone\n\
         the API answers in a second -> tests/ready.rs::ready_means_a_loaded_model\n\
         no arrow here\n\
         the API answers -> tests/missing.rs::a_test\n",
    );
    let findings = check(&tree, &facts);
    assert_eq!(
        findings,
        [
            "xtask/tidy/promises.txt:1: tests/ready.rs has no test `gone`",
            "xtask/tidy/promises.txt:2: README.md no longer says \"the API answers in a second\"",
            "xtask/tidy/promises.txt:3: expected `README phrase -> path::test_name`",
            "xtask/tidy/promises.txt:4: tests/missing.rs does not exist",
        ]
    );
}

#[test]
fn a_long_source_file_needs_a_reason_in_its_first_lines() {
    let (_dir, mut tree, facts) = fixture();
    let body = "x = 1\n".repeat(MAX_LINES);
    add(&mut tree, "src/short.py", &body);
    add(&mut tree, "src/long.py", &format!("{body}x = 2\n"));
    add(
        &mut tree,
        "src/explained.py",
        &format!("#!/usr/bin/env python3\n# {LONG_MARKER} it is one table\n{body}"),
    );
    add(&mut tree, "src/data.json", &format!("{body}{body}"));
    let findings = check(&tree, &facts);
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert!(
        findings[0].starts_with("src/long.py: 601 lines, over 600"),
        "{findings:#?}"
    );
}

#[test]
fn the_runtime_facts_come_from_its_clap_definition_and_exit_codes() {
    let facts = Facts::of_runtime();
    assert!(facts.clap_env.contains("WEBUI_PORT"));
    assert!(
        facts.clap_env.contains("IMAGE_FACTS"),
        "subcommands' variables count"
    );
    assert!(facts.exit_codes.contains(&runtime::exit_code::BAD_CONFIG));
}
