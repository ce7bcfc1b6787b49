//! The flag set, the catalog and the extra-flag check, against A1111's own argparse behaviour.

use super::*;
use clap::Parser;

fn config() -> Config {
    crate::cli::Cli::parse_from(["worker-runtime"]).config
}

#[test]
fn every_flag_the_runtime_emits_is_in_the_a1111_catalog() {
    for f in FLAG_SET {
        let arity = catalog().get(f.name);
        assert!(arity.is_some(), "{} is not an A1111 v1.10 flag", f.name);
        let takes_value = !matches!(f.value, FlagValue::None);
        assert_eq!(
            takes_value,
            arity != Some(&Arity::Switch),
            "{} arity",
            f.name
        );
    }
}

const CONFIRMED: Conditions = Conditions {
    xformers_confirmed: true,
};
const NOT_CONFIRMED: Conditions = Conditions {
    xformers_confirmed: false,
};

#[test]
fn the_flag_set_with_port_and_loopback() {
    let args = base_args(&config(), CONFIRMED);
    let joined = args.join(" ");
    assert!(joined.starts_with("--xformers --no-half-vae"), "{joined}");
    assert!(joined.contains("--ckpt /model.safetensors"));
    assert!(joined.contains("--port 3000 --server-name 127.0.0.1"));
    assert!(joined.ends_with("--no-download-sd-model"));
    assert!(!joined.contains("--use-cpu"), "{joined}");
    assert!(!base_args(&config(), NOT_CONFIRMED).contains(&"--xformers".to_string()));
    assert!(base_args(&config(), NOT_CONFIRMED).contains(&"--opt-sdp-attention".to_string()));
}

#[test]
fn cpu_device_adds_a1111s_cpu_flags_and_never_xformers() {
    let cpu = crate::cli::Cli::parse_from(["worker-runtime", "--webui-device", "cpu"]).config;
    let joined = base_args(&cpu, CONFIRMED).join(" ");
    assert!(
        joined.ends_with("--use-cpu all --no-half --precision full"),
        "{joined}"
    );
    assert!(!joined.contains("--xformers"), "{joined}");
    assert!(joined.contains("--opt-sdp-attention"), "{joined}");
}

#[test]
fn extra_args_are_split_like_a_shell_and_checked() {
    let ok = parse_extra_args("WEBUI_EXTRA_ARGS", "--medvram --precision full --max-batch-count=4 --use-cpu all interrogate --styles-file 'my styles.csv'");
    assert_eq!(ok.map(|a| a.len()), Ok(9));
    let ok = parse_extra_args(
        "WEBUI_EXTRA_ARGS",
        "--max-batch-count ' 1_000' --ckpt-dir -1 --nowe",
    );
    assert!(ok.is_ok(), "{ok:?}");
    let bad = |s: &str| parse_extra_args("WEBUI_EXTRA_ARGS", s).unwrap_err().message;
    assert!(bad("--xformer").contains("did you mean --xformers?"));
    assert!(bad("--no-such-flag-at-all-here").contains("unknown WebUI flag"));
    assert!(bad("--port 7860").contains("set WEBUI_PORT"));
    assert!(bad("--listen").contains("127.0.0.1"));
    assert!(bad("--max-batch-count x").contains("integer"));
    assert!(bad("--precision double").contains("one of full, half, autocast"));
    assert!(bad("--ckpt-dir").contains("needs a value"));
    assert!(bad("--api=1").contains("takes no value"));
    assert!(bad("medvram").contains("unexpected word"));
    assert!(bad("--ckpt 'unclosed").contains("quotes"));
    assert!(bad("--ckpt-dir -f").contains("needs a value"));
    assert!(bad("--use-cpu=all interrogate").contains("unexpected word"));
    assert!(bad("--serv 0.0.0.0").contains("A1111 reads --serv as --server-name"));
    assert!(bad("--po=1").contains("--port is set by worker-runtime"));
    assert!(bad("--api-auth a:b").contains("not supported"));
    assert!(bad("--no-hal").contains("ambiguous"));
}

#[test]
fn the_catalog_is_complete() {
    assert_eq!(catalog().len(), CATALOG_TSV.lines().count() - 1);
    assert_eq!(
        catalog().get("--lora-dir"),
        Some(&Arity::One {
            int: false,
            choices: None
        })
    );
}
