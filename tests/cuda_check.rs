// tidy: long because it is a catalogue of GPU situations, one short test each, around one fake libcuda.
//! `worker-runtime cuda-check`, `worker-runtime facts` and the launch step, on machines without a
//! GPU: a fake libcuda (tests/fake_libcuda/fake_libcuda.c, compiled by the tests' support) stands in for
//! the driver through LD_LIBRARY_PATH and reports the versions, devices and failures each test
//! chooses. Each test asserts what a user sees: exit status, report lines, JSON.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod support;

use runtime::cli::CudaCheckMode;
use runtime::cuda::{launch_step_with, LaunchVerdict};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_worker-runtime");

fn fake_driver() -> &'static Path {
    support::fake_libcuda_dir()
}

fn fake_driver_without_launch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| support::fake_libcuda_variant(&["-DFAKE_OMIT_LAUNCH"]))
}

/// A library path on which no libcuda loads, even on a machine with a real driver: an empty file
/// under every name the loader tries (cudarc's candidates) is found first, fails to load, and the
/// dynamic loader does not go on to the linker cache's real library.
fn no_driver() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("no_libcuda")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp dir")
            .keep();
        for name in ["cuda", "nvcuda"]
            .into_iter()
            .flat_map(cudarc::get_lib_name_candidates)
        {
            std::fs::write(dir.join(name), b"").expect("an unloadable stand-in");
        }
        dir
    })
}

const H200: &str = "NVIDIA H200,9.0,143771,143200";
const RTX_5090: &str = "NVIDIA GeForce RTX 5090,12.0,32607,31500";
const B200: &str = "NVIDIA B200,10.0,182642,181000";

const TORCH_2_11_CU130: &str = r#""torch": {"version": "2.11.0+cu130", "cuda": "13.0",
    "arch_list": ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]}"#;
const TORCH_2_7_CU128: &str = r#""torch": {"version": "2.7.0+cu128", "cuda": "12.8",
    "arch_list": ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]}"#;
const TORCH_2_1_CU121: &str = r#""torch": {"version": "2.1.2+cu121", "cuda": "12.1",
    "arch_list": ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]}"#;

fn xformers_for(torch: &str) -> String {
    format!(
        r#""xformers": {{"version": "0.0.30", "ops_import": true, "has_cpp_library": true,
           "built_for_torch": "{torch}", "arch_list": "8.0;8.6;9.0a;10.0;12.0"}}"#
    )
}

/// A case: which driver library, which fake behaviour, which image facts.
struct Case {
    lib: &'static Path,
    env: Vec<(String, String)>,
    facts: Option<String>,
    dir: tempfile::TempDir,
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn has_line(&self, text: &str) -> bool {
        self.stdout.lines().any(|l| l.contains(text))
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {}", self.stdout))
    }
}

impl Case {
    fn new() -> Case {
        Case {
            lib: fake_driver(),
            env: Vec::new(),
            facts: None,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn lib(mut self, lib: &'static Path) -> Case {
        self.lib = lib;
        self
    }

    fn env(mut self, key: &str, value: &str) -> Case {
        self.env.push((key.into(), value.into()));
        self
    }

    fn devices(self, spec: &str) -> Case {
        self.env("FAKE_CUDA_DEVICES", spec)
    }

    /// Image facts made of JSON members (`"torch": {...}`, ...).
    fn facts(mut self, members: &[&str]) -> Case {
        self.facts = Some(format!("{{{}}}", members.join(",")));
        self
    }

    fn facts_path(&self) -> PathBuf {
        self.dir.path().join("image-facts.json")
    }

    fn command(&self, args: &[&str]) -> Command {
        if let Some(f) = &self.facts {
            std::fs::write(self.facts_path(), f).expect("write facts");
        }
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("LD_LIBRARY_PATH", self.lib)
            // Never the build machine's own facts or GPU settings.
            .env("IMAGE_FACTS", self.facts_path())
            .env_remove("CUDA_VISIBLE_DEVICES")
            .env_remove("NVIDIA_VISIBLE_DEVICES");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Outcome {
        let out = self.command(args).output().expect("run worker-runtime");
        let o = Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(
            !o.stderr.contains("panicked"),
            "worker-runtime panicked: {}",
            o.stderr
        );
        o
    }

    fn check(&self) -> Outcome {
        self.run(&["cuda-check"])
    }

    fn check_json(&self) -> Outcome {
        self.run(&["cuda-check", "--json"])
    }

    /// An executable that runs worker-runtime with this case's environment: what the launch
    /// step runs as its child (the test process's own environment stays untouched).
    fn wrapper(&self) -> PathBuf {
        if let Some(f) = &self.facts {
            std::fs::write(self.facts_path(), f).expect("write facts");
        }
        let mut script = format!(
            "#!/bin/sh\nexport LD_LIBRARY_PATH='{}' IMAGE_FACTS='{}'\nunset CUDA_VISIBLE_DEVICES NVIDIA_VISIBLE_DEVICES\n",
            self.lib.display(),
            self.facts_path().display()
        );
        for (k, v) in &self.env {
            script.push_str(&format!("export {k}='{v}'\n"));
        }
        script.push_str(&format!("exec '{BIN}' \"$@\"\n"));
        script_file(self.dir.path(), "worker-runtime-wrapper", &script)
    }
}

fn script_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("create script");
    f.write_all(text.as_bytes()).expect("write script");
    drop(f);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn statuses(json: &Value) -> Vec<String> {
    json["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["status"].as_str().unwrap_or("?").to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// No driver, no device, broken driver

#[test]
fn without_libcuda_the_verdict_is_a_clean_failure_not_a_panic() {
    let case = Case::new().lib(no_driver());
    let out = case.check();
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.has_line("❌ FAIL 1/6 NVIDIA driver: no NVIDIA driver"));
    assert!(out.has_line("❌ CUDA compatibility test FAILED"));
    assert!(out.has_line("❌ Check the logs above for details"));
    let json = case.check_json().json();
    assert_eq!(json["verdict"], 2);
    assert_eq!(json["xformers_usable"], false);
    assert_eq!(json["gpu"], Value::Null);
    assert_eq!(
        statuses(&json),
        ["fail", "skip", "skip", "skip", "skip", "skip"]
    );
}

#[test]
fn no_device_fails_the_device_check_with_the_drivers_words() {
    let out = Case::new().env("FAKE_CUDA_INIT_RESULT", "100").check();
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.has_line("✓ PASS 1/6 NVIDIA driver: CUDA 13.0 driver"));
    assert!(out.has_line(
        "❌ FAIL 2/6 GPU devices: no CUDA device: cuInit returned CUDA_ERROR_NO_DEVICE (100: no CUDA-capable device is detected)"
    ));
    assert!(out.has_line("--gpus all"));

    // Zero devices after a good cuInit, hidden by a visible-devices setting.
    let out = Case::new()
        .devices("")
        .env("CUDA_VISIBLE_DEVICES", "7")
        .check();
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.has_line("no CUDA device: the driver reports 0 GPUs"));
    assert!(out.has_line("CUDA_VISIBLE_DEVICES=7"));
}

#[test]
fn a_driver_the_library_cannot_use_fails_check_one_with_a_fix() {
    let out = Case::new().env("FAKE_CUDA_INIT_RESULT", "35").check();
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.has_line("❌ FAIL 1/6 NVIDIA driver: CUDA 13.0 driver"));
    assert!(out.has_line("CUDA_ERROR_INSUFFICIENT_DRIVER"));
    assert!(out.has_line("the image must not ship its own libcuda"));

    let out = Case::new().env("FAKE_CUDA_INIT_RESULT", "34").check();
    assert_eq!(out.code, 2);
    assert!(out.has_line("the CUDA toolkit's stub"));
}

#[test]
fn a_driver_lacking_an_entry_point_is_named_not_a_panic() {
    let out = Case::new().lib(fake_driver_without_launch()).check();
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.has_line("lacks cuLaunchKernel"), "{}", out.stdout);
}

#[test]
fn a_gpu_held_by_another_process_is_a_device_failure() {
    let out = Case::new().env("FAKE_CUDA_CTX_RESULT", "46").check();
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.has_line(
        "cannot use #0: cuDevicePrimaryCtxRetain returned CUDA_ERROR_DEVICES_UNAVAILABLE"
    ));
    assert!(out.has_line("exclusive-process mode"));
}

// ---------------------------------------------------------------------------------------------
// The GPU operation

#[test]
fn a_kernel_launch_failure_fails_the_gpu_operation() {
    let out = Case::new().env("FAKE_CUDA_LAUNCH_RESULT", "719").check();
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.has_line(
        "❌ FAIL 5/6 GPU operation: launching the kernel failed on NVIDIA H200: cuLaunchKernel returned CUDA_ERROR_LAUNCH_FAILED"
    ));
    assert!(out.has_line("❌ NVIDIA H200 may not be properly supported"));
}

#[test]
fn a_jit_failure_shows_the_drivers_log() {
    let out = Case::new().env("FAKE_CUDA_MODULE_RESULT", "218").check();
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.has_line("JIT-compiling the PTX kernel failed"));
    assert!(out.has_line("(JIT: ptxas fatal   : fake JIT failure)"));
    assert!(out.has_line("update the host driver"));
}

#[test]
fn every_value_is_verified() {
    let out = Case::new()
        .env("FAKE_CUDA_CORRUPT_INDEX", "1048575")
        .check();
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.has_line("1 of 1048576 values are wrong (first at index 1048575"));
}

// ---------------------------------------------------------------------------------------------
// Verdicts with image facts

#[test]
fn h200_with_a_matching_image_passes_and_names_the_gpu() {
    let xformers = xformers_for("2.11.0+cu130");
    let case = Case::new()
        .devices(H200)
        .facts(&[TORCH_2_11_CU130, &xformers]);
    let out = case.check();
    assert_eq!(out.code, 0, "{}", out.stdout);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        &lines[..3],
        [
            "==============================================",
            "RUNNING CUDA COMPATIBILITY TESTS",
            "=============================================="
        ]
    );
    assert!(out.has_line("✓ PASS 2/6 GPU devices: 1 GPU: #0 NVIDIA H200, compute capability 9.0, 140.4 GiB total, 139.8 GiB free"));
    assert!(out.has_line("✓ PASS 3/6 PyTorch kernels for this GPU: torch 2.11.0+cu130 carries sm_90 code for NVIDIA H200 (sm_90)"));
    assert!(out.has_line("✓ PASS 4/6 Driver vs image CUDA: driver supports CUDA 13.0, torch 2.11.0+cu130 is built for CUDA 13.0"));
    assert!(out.has_line(
        "✓ PASS 5/6 GPU operation: 1048576 values computed on NVIDIA H200 by a PTX kernel"
    ));
    assert!(
        out.has_line("✓ PASS 6/6 xformers: xformers 0.0.30 imports (built for torch 2.11.0+cu130)")
    );
    assert_eq!(
        lines.last().copied(),
        Some("🎉 CUDA compatibility test PASSED - NVIDIA H200 ready!")
    );
}

#[test]
fn missing_facts_are_skipped_and_said_never_guessed() {
    let case = Case::new().devices(H200);
    let out = case.check();
    assert_eq!(out.code, 0, "{}", out.stdout);
    let path = case.facts_path();
    assert!(out.has_line(&format!(
        "– SKIP 3/6 PyTorch kernels for this GPU: no image facts at {} (not checked, not guessed)",
        path.display()
    )));
    assert!(out.has_line("– SKIP 4/6 Driver vs image CUDA: no image facts"));
    assert!(out.has_line("– SKIP 6/6 xformers: no image facts"));
    assert!(out.has_line("worker-runtime facts --python"));
    assert!(out.has_line("ℹ 3 of 6 checks skipped (see above)"));
    let json = case.check_json().json();
    assert_eq!(json["facts"]["status"], "missing");
    // Inside A1111's xformers range but nothing confirms xformers: the launcher drops the flag.
    assert_eq!(json["xformers_usable"], false);
}

#[test]
fn rtx_5090_with_an_old_torch_has_no_kernel_image() {
    let case = Case::new()
        .devices(RTX_5090)
        .env("FAKE_CUDA_DRIVER_VERSION", "12080")
        .facts(&[TORCH_2_1_CU121]);
    let out = case.check();
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.has_line("❌ FAIL 3/6 PyTorch kernels for this GPU: torch 2.1.2+cu121 has no kernels for NVIDIA GeForce RTX 5090 (sm_120)"));
    assert!(out.has_line("no kernel image is available for execution on the device"));
    assert!(out.has_line("torch >= 2.7 built for CUDA 12.8"));
    assert!(out.has_line("❌ NVIDIA GeForce RTX 5090 may not be properly supported"));
    let json = case.check_json().json();
    assert_eq!(json["gpu"], "NVIDIA GeForce RTX 5090");
    assert_eq!(json["gpus"][0]["compute_capability"], "12.0");
    assert_eq!(json["xformers_usable"], false);
}

#[test]
fn rtx_5090_with_a_cu128_torch_passes_with_warnings_and_without_xformers() {
    let xformers = xformers_for("2.7.0+cu128");
    let case = Case::new()
        .devices(RTX_5090)
        .env("FAKE_CUDA_DRIVER_VERSION", "12080")
        .facts(&[TORCH_2_7_CU128, &xformers]);
    let out = case.check();
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.has_line(
        "✓ PASS 3/6 PyTorch kernels for this GPU: torch 2.7.0+cu128 carries sm_120 code"
    ));
    assert!(out.has_line("⚠ WARN 6/6 xformers: A1111 v1.10 uses xformers only for compute capability 6.0 to 9.0; NVIDIA GeForce RTX 5090 is 12.0"));
    assert!(out.has_line("--opt-sdp-attention"));
    assert_eq!(
        out.stdout.lines().last(),
        Some("⚠ CUDA test passed with warnings - continuing with reduced performance")
    );
    let json = case.check_json().json();
    assert_eq!(
        (json["verdict"].as_u64(), &json["xformers_usable"]),
        (Some(1), &Value::Bool(false))
    );
}

#[test]
fn xformers_is_ruled_out_by_capability_even_without_facts() {
    let json = Case::new().devices(B200).check_json().json();
    assert_eq!(json["verdict"], 1);
    assert_eq!(json["xformers_usable"], false);
    assert_eq!(
        statuses(&json),
        ["pass", "pass", "skip", "skip", "pass", "warn"]
    );
}

#[test]
fn an_image_without_xformers_runs_with_reduced_performance() {
    let out = Case::new()
        .devices(H200)
        .facts(&[TORCH_2_11_CU130, r#""xformers_error": "not installed""#])
        .check();
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.has_line(
        "⚠ WARN 6/6 xformers: xformers is not in the image (not installed): reduced performance"
    ));
}

#[test]
fn a_cuda_13_torch_on_a_cuda_12_driver_is_a_failure_with_a_pinning_hint() {
    let out = Case::new()
        .devices(H200)
        .env("FAKE_CUDA_DRIVER_VERSION", "12080")
        .facts(&[TORCH_2_11_CU130])
        .check();
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.has_line("❌ FAIL 4/6 Driver vs image CUDA: torch 2.11.0+cu130 is built for CUDA 13.0, but this driver supports CUDA 12.8 at most"));
    assert!(out.has_line("+cu128"));
    assert!(out.has_line("(driver >= 580)"));
}

#[test]
fn an_older_driver_minor_version_is_a_warning() {
    let out = Case::new()
        .devices(H200)
        .env("FAKE_CUDA_DRIVER_VERSION", "12040")
        .facts(&[TORCH_2_7_CU128, &xformers_for("2.7.0+cu128")])
        .check();
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.has_line("⚠ WARN 4/6 Driver vs image CUDA: torch 2.7.0+cu128 is built for CUDA 12.8, this driver supports CUDA 12.4"));
}

#[test]
fn unreadable_facts_are_skipped_with_the_reason() {
    let mut case = Case::new().devices(H200);
    case.facts = Some("{ not json".into());
    let out = case.check();
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(out.has_line("are unreadable: not valid image facts"));
}

#[test]
fn several_gpus_are_listed_and_device_0_is_judged() {
    let out = Case::new().devices(&format!("{H200};{RTX_5090}")).check();
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(out.has_line("2 GPUs (the WebUI uses #0): #0 NVIDIA H200, compute capability 9.0"));
    assert!(out.has_line("#1 NVIDIA GeForce RTX 5090, compute capability 12.0"));
}

#[test]
fn json_is_one_object_with_checks_verdict_gpus_and_timings() {
    let case = Case::new()
        .devices(H200)
        .facts(&[TORCH_2_11_CU130, &xformers_for("2.11.0+cu130")]);
    let out = case.check_json();
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stdout.trim().lines().count(),
        1,
        "one line: {}",
        out.stdout
    );
    let json = out.json();
    assert_eq!(json["verdict"], 0);
    assert_eq!(
        json["summary"],
        "🎉 CUDA compatibility test PASSED - NVIDIA H200 ready!"
    );
    assert_eq!(json["xformers_usable"], true);
    assert_eq!(json["gpu"], "NVIDIA H200");
    assert_eq!(json["gpus"][0]["total_mib"], 143771);
    assert_eq!(json["gpus"][0]["free_mib"], 143200);
    assert_eq!(json["driver"]["cuda_version"], "13.0");
    assert!(json["driver"]["library"]
        .as_str()
        .is_some_and(|l| l.ends_with("libcuda.so.1")));
    assert_eq!(json["facts"]["status"], "loaded");
    assert_eq!(json["facts"]["torch"], "2.11.0+cu130 (CUDA 13.0)");
    let ids: Vec<&str> = json["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "driver",
            "devices",
            "kernels",
            "cuda-version",
            "gpu-op",
            "xformers"
        ]
    );
    for key in [
        "library_load_ms",
        "cu_init_ms",
        "devices_ms",
        "gpu_op_ms",
        "total_ms",
    ] {
        assert!(
            json["timings_ms"][key].is_f64(),
            "timings_ms.{key}: {}",
            json["timings_ms"]
        );
    }
    assert!(json["peak_rss_kib"].as_u64().is_some_and(|k| k > 0));
}

// ---------------------------------------------------------------------------------------------
// Image facts

/// A stand-in for the image's Python: prints what facts.py would print for a CUDA 12.8 image.
fn fake_python(dir: &Path) -> PathBuf {
    script_file(
        dir,
        "python",
        r#"#!/bin/sh
[ "$1" = "-c" ] || exit 9
echo "some import-time chatter on stdout"
echo '@@IMAGE_FACTS@@{"python": {"version": "3.10.14", "executable": "/venv/bin/python"}, "torch": {"version": "2.7.0+cu128", "cuda": "12.8", "arch_list": ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"], "arch_list_source": "torch._C._cuda_getArchFlags()"}, "xformers": {"version": "0.0.30", "ops_import": true, "has_cpp_library": true, "built_for_torch": "2.7.0+cu128", "built_for_cuda": "1208", "arch_list": "8.0;9.0a;12.0"}}'
"#,
    )
}

#[test]
fn facts_recorded_at_build_time_drive_the_check() {
    let case = Case::new()
        .devices(H200)
        .env("FAKE_CUDA_DRIVER_VERSION", "12080");
    let webui = case.dir.path().join("webui");
    std::fs::create_dir(&webui).expect("mkdir");
    std::fs::write(webui.join("CHANGELOG.md"), "## 1.10.1\n\n### Bug Fixes\n").expect("write");
    let python = fake_python(case.dir.path());
    let out = case.run(&[
        "facts",
        "--python",
        python.to_str().expect("utf-8 path"),
        "--webui-dir",
        webui.to_str().expect("utf-8 path"),
        "--output",
        case.facts_path().to_str().expect("utf-8 path"),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("image facts written to"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("torch 2.7.0+cu128 (CUDA 12.8"),
        "{}",
        out.stderr
    );
    let text = std::fs::read_to_string(case.facts_path()).expect("facts written");
    let facts: Value = serde_json::from_str(&text).expect("facts are JSON");
    assert_eq!(facts["schema"], 1);
    assert_eq!(facts["torch"]["arch_list"][6], "compute_120");
    assert_eq!(facts["xformers"]["built_for_torch"], "2.7.0+cu128");
    assert_eq!(facts["webui"]["version"], "1.10.1");
    assert_eq!(facts["webui"]["version_source"], "CHANGELOG.md");

    // The check reads what was recorded (IMAGE_FACTS points at it).
    let out = case.check();
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(out.has_line("torch 2.7.0+cu128 carries sm_90 code for NVIDIA H200"));
    assert!(out.has_line("driver supports CUDA 12.8, torch 2.7.0+cu128 is built for CUDA 12.8"));
    assert!(out.has_line("xformers 0.0.30 imports (built for torch 2.7.0+cu128)"));
}

#[test]
fn facts_with_a_real_python_and_a_git_checkout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let webui = dir.path().join("webui");
    std::fs::create_dir(&webui).expect("mkdir");
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
            ])
            .arg("-C")
            .arg(&webui)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["commit", "-q", "--allow-empty", "-m", "x"]);
    git(&["tag", "v1.10.1"]);
    let out = Command::new(BIN)
        .args([
            "facts",
            "--python",
            "python3",
            "--output",
            "-",
            "--webui-dir",
        ])
        .arg(&webui)
        .output()
        .expect("run facts");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let facts: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert!(facts["python"]["version"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.")));
    // Whatever this machine has: torch recorded, or the reason it is not.
    assert!(
        facts["torch"].is_object() || facts["torch_error"].is_string(),
        "{facts}"
    );
    assert!(
        facts["xformers"].is_object() || facts["xformers_error"].is_string(),
        "{facts}"
    );
    assert_eq!(facts["webui"]["version"], "v1.10.1");
    assert_eq!(facts["webui"]["version_source"], "git describe --tags");
    assert_eq!(facts["webui"]["commit"].as_str().map(str::len), Some(40));
}

#[test]
fn facts_fail_clearly_when_python_cannot_run() {
    let out = Command::new(BIN)
        .args(["facts", "--python", "/nonexistent/python", "--output", "-"])
        .output()
        .expect("run facts");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("facts: cannot run /nonexistent/python"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// The launch step (library API, the real binary as its child)

/// Runs the launch step with a log capture; returns the verdict, the log and how long it took.
fn launch(exe: &Path, mode: CudaCheckMode, timeout: Duration) -> (LaunchVerdict, String, Duration) {
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .with_writer(move || writer.clone())
        .finish();
    let started = Instant::now();
    let verdict =
        tracing::subscriber::with_default(subscriber, || launch_step_with(exe, mode, timeout));
    let took = started.elapsed();
    let log = String::from_utf8_lossy(&capture.0.lock().expect("log lock")).into_owned();
    (verdict, log, took)
}

#[test]
fn launch_step_logs_the_torch_checks_lines_and_returns_the_verdict() {
    let case = Case::new()
        .devices(H200)
        .facts(&[TORCH_2_11_CU130, &xformers_for("2.11.0+cu130")]);
    let (v, log, _) = launch(
        &case.wrapper(),
        CudaCheckMode::Warn,
        Duration::from_secs(30),
    );
    assert_eq!(
        v,
        LaunchVerdict {
            code: 0,
            xformers_usable: true
        },
        "{log}"
    );
    let banner = log
        .find("RUNNING CUDA COMPATIBILITY TESTS")
        .expect("banner");
    let verdict = log
        .find("🎉 CUDA compatibility test PASSED - NVIDIA H200 ready!")
        .expect("verdict line");
    assert!(banner < verdict, "{log}");
    assert!(
        log.contains("INFO ============================================"),
        "{log}"
    );
    assert!(log.contains("in a child process"), "{log}");
}

#[test]
fn launch_step_reports_xformers_unusable_on_blackwell() {
    let case = Case::new().devices(RTX_5090).facts(&[TORCH_2_11_CU130]);
    let (v, log, _) = launch(
        &case.wrapper(),
        CudaCheckMode::Warn,
        Duration::from_secs(30),
    );
    assert_eq!(
        v,
        LaunchVerdict {
            code: 1,
            xformers_usable: false
        },
        "{log}"
    );
    assert!(
        log.contains("WARN ⚠ CUDA test passed with warnings - continuing with reduced performance"),
        "{log}"
    );
}

#[test]
fn launch_step_failure_continues_in_warn_mode_only() {
    let case = Case::new().env("FAKE_CUDA_INIT_RESULT", "100");
    let (v, log, _) = launch(
        &case.wrapper(),
        CudaCheckMode::Warn,
        Duration::from_secs(30),
    );
    assert_eq!(v.code, 2, "{log}");
    assert!(
        log.contains("ERROR ❌ CUDA compatibility test FAILED"),
        "{log}"
    );
    assert!(
        log.contains("WARN ⚠ Attempting to continue anyway..."),
        "{log}"
    );
    let (v, log, _) = launch(
        &case.wrapper(),
        CudaCheckMode::Strict,
        Duration::from_secs(30),
    );
    assert_eq!(v.code, 2);
    assert!(
        log.contains("ERROR ❌ CUDA compatibility test FAILED"),
        "{log}"
    );
    assert!(!log.contains("Attempting to continue"), "{log}");
}

#[test]
fn launch_step_stops_a_hung_driver_at_the_timeout() {
    const HANG_S: u64 = 60;
    let case = Case::new().env("FAKE_CUDA_INIT_SLEEP", &HANG_S.to_string());
    let (v, log, took) = launch(&case.wrapper(), CudaCheckMode::Warn, Duration::from_secs(1));
    assert_eq!(v.code, 2, "{log}");
    // Not a speed bound: a check that waited for the hung driver would take the whole hang.
    assert!(took < Duration::from_secs(HANG_S), "took {took:?}");
    assert!(log.contains("did not finish within 1 s"), "{log}");
}

#[test]
fn launch_step_turns_a_crashed_or_silent_check_into_a_failure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let crash = script_file(dir.path(), "crash", "#!/bin/sh\nkill -ABRT $$\n");
    let (v, log, _) = launch(&crash, CudaCheckMode::Warn, Duration::from_secs(10));
    assert_eq!(v.code, 2, "{log}");
    assert!(log.contains("the CUDA check crashed (signal 6)"), "{log}");
    let silent = script_file(dir.path(), "silent", "#!/bin/sh\necho not json\nexit 0\n");
    let (v, log, _) = launch(&silent, CudaCheckMode::Warn, Duration::from_secs(10));
    assert_eq!(v.code, 2, "{log}");
    assert!(log.contains("the CUDA check gave no report"), "{log}");
    let (v, log, _) = launch(
        &dir.path().join("absent"),
        CudaCheckMode::Warn,
        Duration::from_secs(10),
    );
    assert_eq!(v.code, 2);
    assert!(log.contains("cannot start the CUDA check"), "{log}");
}

// ---------------------------------------------------------------------------------------------
// What the verdict does to the WebUI's command line

/// `worker-runtime webui-args` for this case, as words.
fn webui_words(case: &Case, extra_env: &[(&str, &str)]) -> Vec<String> {
    let dir = case.dir.path();
    std::fs::write(dir.join("webui.py"), "").expect("write webui.py");
    std::fs::write(dir.join("handler.py"), "").expect("write handler.py");
    let mut cmd = case.command(&["webui-args"]);
    cmd.env("WEBUI_DIR", dir)
        .env("HANDLER_PATH", dir.join("handler.py"))
        .env("WEBUI_PYTHON", "python3")
        .env("HANDLER_PYTHON", "python3")
        .env("CUDA_CHECK", "warn")
        .env_remove("WEBUI_DEVICE");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run worker-runtime webui-args");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    shell_words::split(String::from_utf8_lossy(&out.stdout).trim()).expect("shell words")
}

#[test]
fn xformers_is_passed_only_when_the_gpu_check_confirms_it() {
    let xformers = xformers_for("2.11.0+cu130");
    let confirmed = Case::new()
        .devices(H200)
        .facts(&[TORCH_2_11_CU130, &xformers]);
    assert!(webui_words(&confirmed, &[]).contains(&"--xformers".to_string()));

    // No facts: nothing says xformers works, so A1111 must not be told to use it.
    let unknown = Case::new().devices(H200);
    let words = webui_words(&unknown, &[]);
    assert!(!words.contains(&"--xformers".to_string()), "{words:?}");
    assert!(words.contains(&"--opt-sdp-attention".to_string()));

    // No check at all.
    let words = webui_words(&confirmed, &[("CUDA_CHECK", "off")]);
    assert!(!words.contains(&"--xformers".to_string()), "{words:?}");

    // No driver: the check fails, xformers is not confirmed.
    let words = webui_words(&Case::new().lib(no_driver()), &[]);
    assert!(!words.contains(&"--xformers".to_string()), "{words:?}");
}

#[test]
fn a_cpu_worker_gets_a1111s_cpu_flags_and_no_gpu_check() {
    let xformers = xformers_for("2.11.0+cu130");
    let case = Case::new()
        .devices(H200)
        .facts(&[TORCH_2_11_CU130, &xformers]);
    let words = webui_words(&case, &[("WEBUI_DEVICE", "cpu")]);
    let line = words.join(" ");
    assert!(
        line.contains("--use-cpu all --no-half --precision full"),
        "{line}"
    );
    assert!(!words.contains(&"--xformers".to_string()), "{line}");

    let bad = case
        .command(&["webui-args"])
        .env("WEBUI_DEVICE", "cuda")
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(78));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("invalid value 'cuda'") && err.contains("gpu, cpu"),
        "{err}"
    );
}
