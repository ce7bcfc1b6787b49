//! The exact commands a build runs, pinned.

use super::*;

#[test]
fn tags_keep_the_registry_port_out_of_the_tag() {
    assert_eq!(split_tag("sd-worker").ok(), Some(("sd-worker", "latest")));
    assert_eq!(split_tag("sd-worker:dev").ok(), Some(("sd-worker", "dev")));
    assert_eq!(
        split_tag("reg.example:5000/me/sd:1.0").ok(),
        Some(("reg.example:5000/me/sd", "1.0"))
    );
    assert_eq!(
        split_tag("reg.example:5000/me/sd").ok(),
        Some(("reg.example:5000/me/sd", "latest"))
    );
    assert!(split_tag("sd@sha256:abc").is_err());
}

#[test]
fn build_args_need_a_name_and_an_equals_sign() {
    assert_eq!(
        parse_build_arg("MODEL_URL=https://x/y?a=b"),
        Ok(("MODEL_URL".into(), "https://x/y?a=b".into()))
    );
    assert_eq!(parse_build_arg("EMPTY="), Ok(("EMPTY".into(), "".into())));
    assert!(parse_build_arg("NOVALUE").is_err());
    assert!(parse_build_arg("BAD-NAME=1").is_err());
}

#[test]
fn versions_file_rejects_what_would_break_a_build() {
    let ok = parse_versions("# c\n\nA=1\nB=x+y\n").ok();
    assert_eq!(
        ok,
        Some(vec![("A".into(), "1".into()), ("B".into(), "x+y".into())])
    );
    assert!(parse_versions("A=1\nA=2\n").is_err());
    assert!(parse_versions("A=\n").is_err());
    assert!(parse_versions("A=two words\n").is_err());
    assert!(parse_versions("just text\n").is_err());
}

#[test]
fn user_build_args_override_pins_and_add_new_ones() {
    let pins = vec![("A".to_string(), "1".to_string())];
    let user = vec![
        ("A".to_string(), "2".to_string()),
        ("M".to_string(), "u".to_string()),
    ];
    assert_eq!(
        merge_overrides(&pins, &user),
        vec![
            ("A".to_string(), "2".to_string(), true),
            ("M".to_string(), "u".to_string(), true)
        ]
    );
}

fn args(extra: &[&str]) -> ImageArgs {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        image: ImageArgs,
    }
    let mut argv = vec!["image", "--dry-run"];
    argv.extend_from_slice(extra);
    Cli::parse_from(argv).image
}

fn plan_error(extra: &[&str]) -> String {
    match Plan::new(&crate::project_root(), &args(extra)) {
        Ok(_) => panic!("{extra:?} was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn webui_image_flags_are_refused_beside_webui_image() {
    for flag in ["--webui-src", "--model", "--base-image"] {
        let err = plan_error(&["--webui-image", "mine:1", flag, "x"]);
        assert!(
            err.starts_with(&format!("{flag}: it applies to the WebUI image")),
            "{err}"
        );
    }
}

#[test]
fn a_model_must_be_one_existing_checkpoint() -> Result<()> {
    let err = plan_error(&["--model", "/no/such/model.safetensors"]);
    assert_eq!(err, "--model /no/such/model.safetensors: no such file");
    let dir = tempfile::tempdir()?;
    let bin = dir.path().join("model.bin");
    std::fs::write(&bin, b"x")?;
    let err = plan_error(&["--model", &bin.display().to_string()]);
    assert!(
        err.contains("expected a .safetensors or .ckpt checkpoint"),
        "{err}"
    );
    let ckpt = dir.path().join("old.ckpt");
    std::fs::write(&ckpt, b"x")?;
    let err = plan_error(&[
        "--model",
        &ckpt.display().to_string(),
        "--build-arg",
        "MODEL_URL=https://example.invalid/m.safetensors",
    ]);
    assert!(err.contains("give one checkpoint"), "{err}");
    let plan = Plan::new(
        &crate::project_root(),
        &args(&["--model", &ckpt.display().to_string()]),
    )?;
    let webui = plan.webui.as_ref().expect("a WebUI build");
    assert!(webui
        .build_args
        .contains(&("MODEL_FILE".to_string(), "model.ckpt".to_string())));
    Ok(())
}

#[test]
fn declared_args_are_found_before_and_after_from() {
    let dockerfile = "ARG BASE\nFROM ${BASE}\n  arg X=1 Y\nRUN echo ARG Z\n";
    assert_eq!(declared_args(dockerfile), vec!["BASE", "X", "Y"]);
}
