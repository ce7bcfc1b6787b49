// tidy: long because the six checks' rules are read side by side; a third of it is their unit tests.
//! The six checks: turn what the driver said (`probe`) and what the image was built with
//! (`facts`) into pass / warn / fail / skip lines with reasons and fixes. Pure: no I/O.

use super::arch::{self, Capability, Coverage};
use super::driver::{self as drv, CuError};
use super::facts::{FactsState, ImageFacts, XformersFacts};
use super::gpu_op::GpuOpError;
use super::probe::{DeviceInfo, Loaded, Probe};
use super::report::{Check, Status};

/// A1111 v1.10 (modules/sd_hijack_optimizations.py) uses xformers only within these capabilities
/// and silently ignores `--xformers` outside them.
pub const XFORMERS_MIN: Capability = Capability::new(6, 0);
pub const XFORMERS_MAX: Capability = Capability::new(9, 0);

/// Below this much free memory on the WebUI's GPU, a checkpoint may not even load.
const LOW_FREE_MEMORY: u64 = 2 << 30;

const FACTS_HINT: &str = "record them at image build time: worker-runtime facts --python <the WebUI's python> (IMAGE_FACTS points the check at another file)";

/// What the checks need besides the probe.
pub struct Context<'a> {
    pub facts: &'a FactsState,
    pub facts_path: &'a str,
    /// CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES, to explain an empty device list.
    pub visible_devices: Option<String>,
}

pub struct Outcome {
    pub checks: Vec<Check>,
    pub xformers_usable: bool,
}

pub fn evaluate(probe: &Probe, ctx: &Context<'_>) -> Outcome {
    let loaded = match probe {
        Probe::Loaded(l) => Some(l.as_ref()),
        _ => None,
    };
    let driver_ok = loaded.is_some_and(|l| l.cuda_version.is_ok() && driver_init_ok(l));
    let devices = loaded
        .and_then(|l| l.devices.as_ref().ok())
        .map(Vec::as_slice);
    // The WebUI runs on device 0; the checks that judge "this GPU" judge that one.
    let gpu0 = devices
        .and_then(|d| d.first())
        .filter(|d| d.context_error.is_none());

    let (xformers, xformers_usable) = check_xformers(gpu0, ctx.facts);
    Outcome {
        checks: vec![
            check_driver(probe),
            check_devices(loaded, driver_ok, ctx),
            check_kernels(gpu0, ctx),
            check_cuda_version(loaded, driver_ok, ctx),
            check_gpu_op(loaded, gpu0),
            xformers,
        ],
        xformers_usable,
    }
}

/// cuInit "failing" with no device is a healthy driver on a machine without a visible GPU:
/// check 2 reports it.
fn driver_init_ok(l: &Loaded) -> bool {
    match &l.init {
        Ok(()) => true,
        Err(e) => e.code == drv::CUDA_ERROR_NO_DEVICE,
    }
}

pub fn cuda_version_string(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

fn check_driver(probe: &Probe) -> Check {
    const ID: &str = "driver";
    const TITLE: &str = "NVIDIA driver";
    let loaded = match probe {
        Probe::NoLibrary => {
            return Check::new(ID, TITLE, Status::Fail, "no NVIDIA driver: libcuda is not on the library path, so CUDA cannot be used")
                .hint("run the container on a GPU machine with the NVIDIA container runtime (docker run --gpus all; on RunPod, a GPU endpoint); LD_LIBRARY_PATH must reach libcuda.so.1 if it is in an unusual place");
        }
        Probe::MissingSymbol {
            symbol,
            library_path,
        } => {
            return Check::new(
                ID,
                TITLE,
                Status::Fail,
                format!(
                    "{} lacks {symbol}: the driver is too old or the library is incomplete",
                    library_path.as_deref().unwrap_or("libcuda")
                ),
            )
            .hint("use a host with an NVIDIA driver for CUDA 12 or newer (>= 525)");
        }
        Probe::Loaded(l) => l,
    };
    let version = match &loaded.cuda_version {
        Ok(v) => *v,
        Err(e) => {
            return Check::new(
                ID,
                TITLE,
                Status::Fail,
                format!("the driver does not report its version: {e}"),
            )
            .hint("the driver installation is broken: reinstall it or use another machine");
        }
    };
    let mut what = format!("CUDA {} driver", cuda_version_string(version));
    if let Some(k) = &loaded.kernel_module {
        what.push_str(&format!(" (kernel module {k})"));
    }
    if let Some(p) = &loaded.library_path {
        what.push_str(&format!(", {p}"));
    }
    match &loaded.init {
        Err(e) if e.code != drv::CUDA_ERROR_NO_DEVICE => {
            Check::new(ID, TITLE, Status::Fail, format!("{what}, but {e}")).hint(init_hint(e))
        }
        _ => Check::new(ID, TITLE, Status::Pass, what),
    }
}

fn init_hint(e: &CuError) -> &'static str {
    match e.code {
        drv::CUDA_ERROR_STUB_LIBRARY => "this libcuda is the CUDA toolkit's stub, not the driver: start the container with the NVIDIA runtime (--gpus all) and keep stubs/ off LD_LIBRARY_PATH",
        drv::CUDA_ERROR_INSUFFICIENT_DRIVER => "the kernel driver is older than this libcuda: the image must not ship its own libcuda; let the NVIDIA container runtime mount the host's",
        drv::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH => "libcuda and the kernel module are different versions: remove the libcuda (or cuda-compat package) baked into the image",
        drv::CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE => "CUDA forward compatibility (cuda-compat) works only on datacenter GPUs: remove cuda-compat from the image or use a newer host driver",
        _ => "the GPU or driver is in a bad state (see the host's Xid messages): use another worker",
    }
}

fn check_devices(loaded: Option<&Loaded>, driver_ok: bool, ctx: &Context<'_>) -> Check {
    const ID: &str = "devices";
    const TITLE: &str = "GPU devices";
    let Some(l) = loaded.filter(|_| driver_ok) else {
        return Check::new(ID, TITLE, Status::Skip, "needs a working driver (check 1)");
    };
    let no_device = |why: String| {
        let hint = match &ctx.visible_devices {
            Some(v) => format!("the visible-devices setting ({v}) may hide every GPU: unset it or name an existing GPU"),
            None => "the driver sees no GPU: start the container with --gpus all (RunPod: a GPU endpoint), and check nvidia-smi on the host".into(),
        };
        Check::new(ID, TITLE, Status::Fail, why).hint(hint)
    };
    if let Err(e) = &l.init {
        return no_device(format!("no CUDA device: {e}"));
    }
    let devices = match &l.devices {
        Ok(d) => d,
        Err(e) => {
            return Check::new(
                ID,
                TITLE,
                Status::Fail,
                format!("cannot query the GPUs: {e}"),
            )
            .hint("the GPU or driver is in a bad state: use another worker");
        }
    };
    let Some(first) = devices.first() else {
        return no_device("no CUDA device: the driver reports 0 GPUs".into());
    };
    let listed = devices
        .iter()
        .map(describe_device)
        .collect::<Vec<_>>()
        .join("; ");
    let count = match devices.len() {
        1 => "1 GPU".to_string(),
        n => format!("{n} GPUs (the WebUI uses #0)"),
    };
    let reason = format!("{count}: {listed}");
    if let Some(e) = &first.context_error {
        let hint = match e.code {
            drv::CUDA_ERROR_DEVICES_UNAVAILABLE => "the GPU is in exclusive-process mode and another process holds it: stop that process or set the compute mode to default (nvidia-smi -c 0)",
            drv::CUDA_ERROR_OUT_OF_MEMORY => "the GPU's memory is full: another process is using it",
            _ => "the GPU refuses a context: it is busy, faulty or in a bad state; use another worker",
        };
        return Check::new(
            ID,
            TITLE,
            Status::Fail,
            format!("{reason}; cannot use #0: {e}"),
        )
        .hint(hint);
    }
    match first.free_bytes {
        Some(free) if free < LOW_FREE_MEMORY => Check::new(
            ID,
            TITLE,
            Status::Warn,
            format!("{reason}; only {} free on #0", gib(free)),
        )
        .hint("another process holds most of the GPU's memory: a checkpoint may not load; stop it or use another worker"),
        _ => Check::new(ID, TITLE, Status::Pass, reason),
    }
}

fn describe_device(d: &DeviceInfo) -> String {
    let free = d
        .free_bytes
        .map(|f| format!(", {} free", gib(f)))
        .unwrap_or_default();
    format!(
        "#{} {}, compute capability {}, {} total{free}",
        d.index,
        d.name,
        d.capability,
        gib(d.total_bytes)
    )
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// The image facts, or the skip line that says why they are not there.
fn facts_or_skip<'a>(id: &str, title: &str, ctx: &'a Context<'_>) -> Result<&'a ImageFacts, Check> {
    match ctx.facts {
        FactsState::Loaded(f) => Ok(f),
        FactsState::Missing => Err(Check::new(
            id,
            title,
            Status::Skip,
            format!(
                "no image facts at {} (not checked, not guessed)",
                ctx.facts_path
            ),
        )
        .hint(FACTS_HINT)),
        FactsState::Unreadable(e) => Err(Check::new(
            id,
            title,
            Status::Skip,
            format!("image facts at {} are unreadable: {e}", ctx.facts_path),
        )
        .hint(FACTS_HINT)),
    }
}

fn check_kernels(gpu0: Option<&DeviceInfo>, ctx: &Context<'_>) -> Check {
    const ID: &str = "kernels";
    const TITLE: &str = "PyTorch kernels for this GPU";
    let Some(gpu) = gpu0 else {
        return Check::new(ID, TITLE, Status::Skip, "needs a usable GPU (check 2)");
    };
    let facts = match facts_or_skip(ID, TITLE, ctx) {
        Ok(f) => f,
        Err(skip) => return skip,
    };
    let Some(torch) = &facts.torch else {
        return Check::new(
            ID,
            TITLE,
            Status::Fail,
            format!(
                "the image's Python has no torch ({})",
                facts.torch_error.as_deref().unwrap_or("not importable")
            ),
        )
        .hint("install a CUDA build of torch into the WebUI's Python");
    };
    if torch.cuda.is_none() {
        return Check::new(ID, TITLE, Status::Fail, format!("torch {} is a CPU-only build", torch.version))
            .hint("install a CUDA build of torch (for example torch==2.7.1+cu128 from download.pytorch.org/whl/cu128)");
    }
    if torch.arch_list.is_empty() {
        return Check::new(
            ID,
            TITLE,
            Status::Skip,
            format!(
                "the image facts hold no arch list for torch {}",
                torch.version
            ),
        )
        .hint(format!("re-record them with this runtime: {FACTS_HINT}"));
    }
    let sm = gpu.capability.sm_name();
    let list = arch::parse_torch_list(&torch.arch_list);
    let built = torch.arch_list.join(" ");
    match arch::coverage(gpu.capability, &list) {
        Coverage::Native(entry) => Check::new(
            ID,
            TITLE,
            Status::Pass,
            format!(
                "torch {} carries {entry} code for {} ({sm})",
                torch.version, gpu.name
            ),
        ),
        Coverage::PtxJit(entry) => Check::new(
            ID,
            TITLE,
            Status::Warn,
            format!(
                "torch {} has no {sm} machine code for {} (built for {built}); the driver must JIT-compile its {entry} PTX at first use, which slows the first start by minutes",
                torch.version, gpu.name
            ),
        )
        .hint(format!(
            "install a torch build whose arch list includes {sm}, or keep the JIT cache (~/.nv/ComputeCache) on the volume"
        )),
        Coverage::Missing => Check::new(
            ID,
            TITLE,
            Status::Fail,
            format!(
                "torch {} has no kernels for {} ({sm}): it is built for {built}, so PyTorch fails with \"no kernel image is available for execution on the device\"",
                torch.version, gpu.name
            ),
        )
        .hint(kernels_hint(gpu.capability, &list)),
    }
}

fn kernels_hint(cc: Capability, list: &[arch::ArchEntry]) -> String {
    let oldest = list.iter().map(|e| e.capability).min();
    match oldest {
        Some(oldest) if cc < oldest => format!(
            "this GPU ({cc}) is older than anything this torch supports (oldest: {oldest}): use another GPU type or an older torch"
        ),
        _ if cc >= Capability::new(10, 0) => format!(
            "Blackwell GPUs ({cc}) need torch >= 2.7 built for CUDA 12.8 or newer (for example torch==2.7.1+cu128), whose arch list includes {}",
            cc.sm_name()
        ),
        _ => format!(
            "install a torch build whose arch list includes {}",
            cc.sm_name()
        ),
    }
}

/// "12.8" -> (12, 8).
fn parse_cuda(s: &str) -> Option<(i32, i32)> {
    let mut it = s.trim().split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next().unwrap_or("0").parse().ok()?;
    Some((major, minor))
}

/// The oldest driver branch that supports a CUDA major version (NVIDIA's compatibility table).
fn min_driver(major: i32) -> Option<&'static str> {
    match major {
        11 => Some(">= 450"),
        12 => Some(">= 525"),
        13 => Some(">= 580"),
        _ => None,
    }
}

fn check_cuda_version(loaded: Option<&Loaded>, driver_ok: bool, ctx: &Context<'_>) -> Check {
    const ID: &str = "cuda-version";
    const TITLE: &str = "Driver vs image CUDA";
    let Some(driver) = loaded
        .filter(|_| driver_ok)
        .and_then(|l| l.cuda_version.as_ref().ok().copied())
    else {
        return Check::new(ID, TITLE, Status::Skip, "needs a working driver (check 1)");
    };
    let facts = match facts_or_skip(ID, TITLE, ctx) {
        Ok(f) => f,
        Err(skip) => return skip,
    };
    let Some((torch, built)) = facts
        .torch
        .as_ref()
        .and_then(|t| t.cuda.as_deref().map(|c| (t, c)))
    else {
        return Check::new(
            ID,
            TITLE,
            Status::Skip,
            "the image has no CUDA build of torch (check 3)",
        );
    };
    let Some((t_major, t_minor)) = parse_cuda(built) else {
        return Check::new(
            ID,
            TITLE,
            Status::Skip,
            format!("cannot read torch's CUDA version {built:?}"),
        );
    };
    let (d_major, d_minor) = (driver / 1000, (driver % 1000) / 10);
    let d = cuda_version_string(driver);
    if d_major < t_major {
        let needs = min_driver(t_major)
            .map(|m| format!(" (driver {m})"))
            .unwrap_or_default();
        return Check::new(
            ID,
            TITLE,
            Status::Fail,
            format!(
                "torch {} is built for CUDA {built}, but this driver supports CUDA {d} at most: torch cannot use the GPU (torch.cuda.is_available() is False)",
                torch.version
            ),
        )
        .hint(format!(
            "pin torch's CUDA flavour to what the hosts run, e.g. +cu128 for CUDA 12.8 drivers (pip install torch --index-url https://download.pytorch.org/whl/cu128), or deploy only on hosts with CUDA {t_major}.x drivers{needs}"
        ));
    }
    if d_major == t_major && d_minor < t_minor {
        return Check::new(
            ID,
            TITLE,
            Status::Warn,
            format!(
                "torch {} is built for CUDA {built}, this driver supports CUDA {d}: it runs through minor-version compatibility, without features newer than {d} (and without JIT of newer PTX)",
                torch.version
            ),
        )
        .hint(format!(
            "update the host driver to CUDA {built} or newer, or use a torch built for CUDA {d} or older"
        ));
    }
    Check::new(
        ID,
        TITLE,
        Status::Pass,
        format!(
            "driver supports CUDA {d}, torch {} is built for CUDA {built}",
            torch.version
        ),
    )
}

fn check_gpu_op(loaded: Option<&Loaded>, gpu0: Option<&DeviceInfo>) -> Check {
    const ID: &str = "gpu-op";
    const TITLE: &str = "GPU operation";
    let (Some(gpu), Some(result)) = (gpu0, loaded.and_then(|l| l.gpu_op.as_ref())) else {
        return Check::new(ID, TITLE, Status::Skip, "needs a usable GPU (check 2)");
    };
    match result {
        Ok(ok) => Check::new(
            ID,
            TITLE,
            Status::Pass,
            format!(
                "{} values computed on {} by a PTX kernel (JIT-compiled by the driver in {:.1} ms) and verified, {:.1} ms in all",
                ok.elements, gpu.name, ok.jit_ms, ok.total_ms
            ),
        ),
        Err(GpuOpError::Driver {
            stage,
            error,
            jit_log,
        }) => {
            let mut reason = format!("{stage} failed on {}: {error}", gpu.name);
            if let Some(first) = jit_log.lines().find(|l| !l.trim().is_empty()) {
                reason.push_str(&format!(" (JIT: {})", first.trim()));
            }
            let hint = match error.code {
                drv::CUDA_ERROR_NO_BINARY_FOR_GPU
                | drv::CUDA_ERROR_INVALID_PTX
                | drv::CUDA_ERROR_UNSUPPORTED_PTX_VERSION => {
                    "the driver cannot JIT-compile PTX for this GPU: update the host driver"
                }
                drv::CUDA_ERROR_OUT_OF_MEMORY => {
                    "the GPU's memory is full: another process is using it"
                }
                _ => "the GPU fails a trivial kernel: it is unhealthy; take this worker out of service",
            };
            Check::new(ID, TITLE, Status::Fail, reason).hint(hint)
        }
        Err(GpuOpError::WrongValues {
            mismatches,
            first_index,
            expected,
            got,
        }) => Check::new(
            ID,
            TITLE,
            Status::Fail,
            format!(
                "the kernel ran on {} but {mismatches} of {} values are wrong (first at index {first_index}: expected {expected:#010x}, got {got:#010x})",
                gpu.name,
                crate::cuda::gpu_op::ELEMENTS
            ),
        )
        .hint("the GPU computes wrong results: it is faulty; take this worker out of service"),
    }
}

/// Check 6 and whether `--xformers` can stay.
fn check_xformers(gpu0: Option<&DeviceInfo>, facts: &FactsState) -> (Check, bool) {
    const ID: &str = "xformers";
    const TITLE: &str = "xformers";
    let Some(gpu) = gpu0 else {
        return (
            Check::new(ID, TITLE, Status::Skip, "needs a usable GPU (check 2)"),
            false,
        );
    };
    let cc = gpu.capability;
    if cc < XFORMERS_MIN || cc > XFORMERS_MAX {
        // Certain without facts: A1111 itself refuses xformers on this GPU.
        return (
            Check::new(
                ID,
                TITLE,
                Status::Warn,
                format!(
                    "A1111 v1.10 uses xformers only for compute capability {XFORMERS_MIN} to {XFORMERS_MAX}; {} is {cc}, so --xformers would be ignored: reduced performance",
                    gpu.name
                ),
            )
            .hint("nothing to install: the WebUI runs with --opt-sdp-attention (PyTorch SDP attention) instead"),
            false,
        );
    }
    let warn = |reason: String, hint: String| {
        (
            Check::new(
                ID,
                TITLE,
                Status::Warn,
                format!("{reason}: reduced performance"),
            )
            .hint(hint),
            false,
        )
    };
    let f = match facts {
        FactsState::Loaded(f) => f,
        // Unknown: --xformers is dropped. With xformers installed but unusable (a CPU run, a
        // mismatched build), A1111's VAE takes xformers' kernels whatever else is asked and every
        // generation fails; SDP attention is always a safe choice.
        FactsState::Missing => {
            return (
                Check::new(ID, TITLE, Status::Skip, "no image facts: xformers not confirmed, --xformers dropped (SDP attention is used)")
                    .hint(FACTS_HINT),
                false,
            )
        }
        FactsState::Unreadable(e) => {
            return (
                Check::new(ID, TITLE, Status::Skip, format!("image facts unreadable ({e}): xformers not confirmed, --xformers dropped"))
                    .hint(FACTS_HINT),
                false,
            )
        }
    };
    let Some(x) = &f.xformers else {
        let why = f.xformers_error.as_deref().unwrap_or("not installed");
        return warn(
            format!("xformers is not in the image ({why})"),
            matching_wheel(f),
        );
    };
    if let Some(problem) = xformers_problem(f, x, gpu) {
        return warn(problem, matching_wheel(f));
    }
    let version = x.version.as_deref().unwrap_or("(unknown version)");
    (
        Check::new(
            ID,
            TITLE,
            Status::Pass,
            format!(
                "xformers {version} imports{}; A1111 uses it on {} ({cc})",
                x.built_for_torch
                    .as_deref()
                    .map(|t| format!(" (built for torch {t})"))
                    .unwrap_or_default(),
                gpu.name
            ),
        ),
        true,
    )
}

/// What keeps an installed xformers from working on this GPU, if anything: the first of an
/// import that fails, a build for another torch, a C++/CUDA extension that does not load, or no
/// kernels for this compute capability.
fn xformers_problem(f: &ImageFacts, x: &XformersFacts, gpu: &DeviceInfo) -> Option<String> {
    let version = x.version.as_deref().unwrap_or("(unknown version)");
    if !x.ops_import {
        return Some(format!(
            "xformers {version} is installed but `import xformers.ops` fails ({})",
            x.ops_error.as_deref().unwrap_or("no reason recorded")
        ));
    }
    let torch_version = f.torch.as_ref().map(|t| t.version.as_str());
    if let (Some(built), Some(have)) = (&x.built_for_torch, torch_version) {
        if built != have {
            return Some(format!("xformers {version} was built for torch {built}, the image has torch {have}: its CUDA kernels do not load"));
        }
    }
    if let Some(e) = &x.cpp_library_error {
        return Some(format!(
            "xformers {version} cannot load its C++/CUDA extension ({e})"
        ));
    }
    let list = x.arch_list.as_deref().filter(|l| !l.trim().is_empty())?;
    let cc = gpu.capability;
    (arch::coverage(cc, &arch::parse_cuda_arch_list(list)) == Coverage::Missing).then(|| {
        format!(
            "xformers {version} has no kernels for {} ({}): built for {list}",
            gpu.name,
            cc.sm_name()
        )
    })
}

/// The fix for any xformers problem: the wheel built for the image's torch and CUDA flavour.
fn matching_wheel(f: &ImageFacts) -> String {
    let torch_version = f.torch.as_ref().map(|t| t.version.as_str());
    // PyTorch's wheel index names CUDA flavours cuXYZ: "12.8" -> cu128.
    let flavour = f
        .torch
        .as_ref()
        .and_then(|t| t.cuda.as_deref())
        .and_then(parse_cuda)
        .map(|(major, minor)| format!("cu{major}{minor}"))
        .unwrap_or_else(|| "cuXYZ".into());
    format!(
        "install the xformers wheel built for torch {} (pip install xformers --index-url https://download.pytorch.org/whl/{flavour})",
        torch_version.unwrap_or("<the image's version>")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::facts::{TorchFacts, XformersFacts};
    use crate::cuda::gpu_op::GpuOpOk;

    fn gpu(name: &str, major: u32, minor: u32) -> DeviceInfo {
        DeviceInfo {
            index: 0,
            name: name.into(),
            capability: Capability::new(major, minor),
            total_bytes: 80 << 30,
            free_bytes: Some(79 << 30),
            context_error: None,
        }
    }

    fn probe(driver: i32, devices: Vec<DeviceInfo>) -> Probe {
        Probe::Loaded(Box::new(Loaded {
            library_path: None,
            kernel_module: None,
            cuda_version: Ok(driver),
            init: Ok(()),
            devices: Ok(devices),
            gpu_op: Some(Ok(GpuOpOk {
                elements: 4,
                jit_ms: 1.0,
                total_ms: 2.0,
            })),
        }))
    }

    fn facts(
        torch: &str,
        cuda: &str,
        arch: &[&str],
        xformers: Option<XformersFacts>,
    ) -> FactsState {
        FactsState::Loaded(Box::new(ImageFacts {
            torch: Some(TorchFacts {
                version: torch.into(),
                cuda: Some(cuda.into()),
                arch_list: arch.iter().map(|s| s.to_string()).collect(),
                arch_list_source: String::new(),
            }),
            xformers,
            ..Default::default()
        }))
    }

    fn xformers_for(torch: &str) -> XformersFacts {
        XformersFacts {
            version: Some("0.0.30".into()),
            ops_import: true,
            has_cpp_library: Some(true),
            built_for_torch: Some(torch.into()),
            arch_list: Some("8.0;9.0a;10.0;12.0".into()),
            ..Default::default()
        }
    }

    fn run(probe: &Probe, facts: &FactsState) -> Outcome {
        evaluate(
            probe,
            &Context {
                facts,
                facts_path: "/etc/sd-worker/image-facts.json",
                visible_devices: None,
            },
        )
    }

    fn statuses(o: &Outcome) -> Vec<Status> {
        o.checks.iter().map(|c| c.status).collect()
    }

    #[test]
    fn a_cuda_13_torch_on_a_cuda_12_driver_fails_with_a_pinning_hint() {
        let o = run(
            &probe(12080, vec![gpu("NVIDIA A100", 8, 0)]),
            &facts("2.9.0+cu130", "13.0", &["sm_80"], None),
        );
        let c = &o.checks[3];
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.reason.contains("CUDA 12.8 at most"), "{}", c.reason);
        assert!(c.hint.as_deref().unwrap_or("").contains("+cu128"));
        assert!(c.hint.as_deref().unwrap_or("").contains(">= 580"));
    }

    #[test]
    fn an_older_driver_minor_is_a_warning_and_newer_is_a_pass() {
        let f = facts("2.7.0+cu128", "12.8", &["sm_80"], None);
        let o = run(&probe(12040, vec![gpu("NVIDIA A100", 8, 0)]), &f);
        assert_eq!(o.checks[3].status, Status::Warn);
        let o = run(&probe(13000, vec![gpu("NVIDIA A100", 8, 0)]), &f);
        assert_eq!(o.checks[3].status, Status::Pass);
    }

    #[test]
    fn rtx_5090_with_an_old_torch_fails_kernels_and_never_uses_xformers() {
        let o = run(
            &probe(12080, vec![gpu("NVIDIA GeForce RTX 5090", 12, 0)]),
            &facts(
                "2.1.2+cu121",
                "12.1",
                &["sm_80", "sm_86", "sm_90"],
                Some(xformers_for("2.1.2+cu121")),
            ),
        );
        assert_eq!(o.checks[2].status, Status::Fail);
        assert!(o.checks[2]
            .hint
            .as_deref()
            .unwrap_or("")
            .contains("torch >= 2.7"));
        assert_eq!(o.checks[5].status, Status::Warn);
        assert!(!o.xformers_usable);
    }

    #[test]
    fn xformers_outside_a1111s_range_is_certain_without_facts() {
        let o = run(
            &probe(13000, vec![gpu("NVIDIA B200", 10, 0)]),
            &FactsState::Missing,
        );
        assert_eq!(o.checks[5].status, Status::Warn);
        assert!(!o.xformers_usable);
        // Inside the range, missing facts do not confirm xformers: the flag is dropped.
        let o = run(
            &probe(13000, vec![gpu("NVIDIA H200", 9, 0)]),
            &FactsState::Missing,
        );
        assert_eq!(
            statuses(&o),
            [
                Status::Pass,
                Status::Pass,
                Status::Skip,
                Status::Skip,
                Status::Pass,
                Status::Skip
            ]
        );
        assert!(!o.xformers_usable);
    }

    #[test]
    fn xformers_built_for_another_torch_or_without_kernels_is_unusable() {
        let p = probe(13000, vec![gpu("NVIDIA H200", 9, 0)]);
        let ok = run(
            &p,
            &facts(
                "2.7.0+cu128",
                "12.8",
                &["sm_90"],
                Some(xformers_for("2.7.0+cu128")),
            ),
        );
        assert_eq!(ok.checks[5].status, Status::Pass, "{:?}", ok.checks[5]);
        assert!(ok.xformers_usable);
        let stale = run(
            &p,
            &facts(
                "2.7.1+cu128",
                "12.8",
                &["sm_90"],
                Some(xformers_for("2.7.0+cu128")),
            ),
        );
        assert_eq!(stale.checks[5].status, Status::Warn);
        assert!(!stale.xformers_usable);
        let mut no_hopper = xformers_for("2.7.0+cu128");
        no_hopper.arch_list = Some("7.5;8.0;8.6".into());
        let o = run(
            &p,
            &facts("2.7.0+cu128", "12.8", &["sm_90"], Some(no_hopper)),
        );
        assert_eq!(o.checks[5].status, Status::Warn);
        let o = run(&p, &facts("2.7.0+cu128", "12.8", &["sm_90"], None));
        assert_eq!(o.checks[5].status, Status::Warn);
        assert!(o.checks[5].reason.contains("not in the image"));
        assert!(o.checks[5]
            .hint
            .as_deref()
            .unwrap_or("")
            .contains("whl/cu128"));
    }

    #[test]
    fn no_driver_fails_the_driver_check_and_skips_the_rest() {
        let o = run(&Probe::NoLibrary, &FactsState::Missing);
        assert_eq!(
            statuses(&o),
            [
                Status::Fail,
                Status::Skip,
                Status::Skip,
                Status::Skip,
                Status::Skip,
                Status::Skip
            ]
        );
        assert!(o.checks[0].reason.contains("no NVIDIA driver"));
        assert!(!o.xformers_usable);
    }

    #[test]
    fn ptx_only_coverage_is_a_warning() {
        let o = run(
            &probe(13000, vec![gpu("NVIDIA H200", 9, 0)]),
            &facts("2.7.0+custom", "12.8", &["sm_80", "compute_80"], None),
        );
        assert_eq!(o.checks[2].status, Status::Warn);
        assert!(o.checks[2].reason.contains("compute_80"));
    }

    #[test]
    fn cuda_versions_parse_like_torch_writes_them() {
        assert_eq!(parse_cuda("12.8"), Some((12, 8)));
        assert_eq!(parse_cuda("13"), Some((13, 0)));
        assert_eq!(parse_cuda("x"), None);
        assert_eq!(cuda_version_string(12080), "12.8");
        assert_eq!(cuda_version_string(13000), "13.0");
    }
}
