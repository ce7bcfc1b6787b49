//! Which GPU code a build carries, and whether it runs on a given device.
//!
//! PyTorch reports its build targets as `torch._C._cuda_getArchFlags()` entries such as `sm_90`
//! (machine code, "SASS") and `compute_120` (PTX, compiled by the driver at load time). xformers
//! records the `TORCH_CUDA_ARCH_LIST` it was built with (`7.5;8.0+PTX 9.0a`). The rules below are
//! NVIDIA's binary-compatibility rules, so the verdict holds for any GPU, not one model:
//! - SASS for X.Y runs on devices of the same major version X with minor >= Y
//!   (sm_80 code runs on an 8.6 or 8.9 card; sm_120 on a 12.1 card);
//! - arch-specific SASS/PTX (`sm_90a`) runs only on exactly that capability;
//! - family-specific code (`sm_100f`) runs within its major version, like plain SASS;
//! - PTX for X.Y can be JIT-compiled by the driver for any device of capability >= X.Y.

use std::fmt;

/// A device's compute capability, e.g. 9.0 for an H100/H200 or 12.0 for an RTX 5090.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Capability {
    pub major: u32,
    pub minor: u32,
}

impl Capability {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// The `sm_XY` name PyTorch and nvcc use for this capability.
    pub fn sm_name(self) -> String {
        format!("sm_{}{}", self.major, self.minor)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeKind {
    /// Machine code for one GPU generation.
    Sass,
    /// Virtual-ISA code the driver compiles for the device at load time.
    Ptx,
}

/// Suffix of an arch name: none, `a` (only this exact capability) or `f` (this family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Plain,
    ArchSpecific,
    Family,
}

/// One entry of an arch list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchEntry {
    pub kind: CodeKind,
    pub capability: Capability,
    pub variant: Variant,
    /// The entry as the build wrote it, for messages.
    pub name: String,
}

/// How a build's code reaches a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coverage {
    /// Machine code that runs as is; the entry that provides it.
    Native(String),
    /// Only PTX the driver must JIT-compile (slow first start); the entry that provides it.
    PtxJit(String),
    /// Nothing runs on this device: "no kernel image is available for execution on the device".
    Missing,
}

/// Parses one PyTorch arch flag: `sm_75`, `sm_90a`, `sm_100f`, `sm_120`, `compute_90`.
/// The last digit is the minor version, the rest the major (`sm_100` = 10.0, `sm_103` = 10.3).
pub fn parse_torch_entry(entry: &str) -> Option<ArchEntry> {
    let (kind, rest) = if let Some(rest) = entry.strip_prefix("sm_") {
        (CodeKind::Sass, rest)
    } else if let Some(rest) = entry.strip_prefix("compute_") {
        (CodeKind::Ptx, rest)
    } else {
        return None;
    };
    let (digits, variant) = split_variant(rest)?;
    if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (major, minor) = digits.split_at(digits.len() - 1);
    Some(ArchEntry {
        kind,
        capability: Capability::new(major.parse().ok()?, minor.parse().ok()?),
        variant,
        name: entry.to_string(),
    })
}

/// Parses PyTorch's arch flags (whitespace separated), skipping what it does not recognise.
pub fn parse_torch_list<S: AsRef<str>>(entries: &[S]) -> Vec<ArchEntry> {
    entries
        .iter()
        .flat_map(|e| e.as_ref().split_whitespace())
        .filter_map(parse_torch_entry)
        .collect()
}

/// Parses a `TORCH_CUDA_ARCH_LIST` value as extension builds (xformers) record it:
/// `6.0;7.0;7.5;8.0+PTX 9.0a`, separated by `;`, `,` or spaces. `X.Y+PTX` carries SASS and PTX.
pub fn parse_cuda_arch_list(value: &str) -> Vec<ArchEntry> {
    let mut out = Vec::new();
    for item in value
        .split(|c: char| c == ';' || c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
    {
        let (version, with_ptx) = match item.strip_suffix("+PTX") {
            Some(v) => (v, true),
            None => (item, false),
        };
        let Some((major, rest)) = version.split_once('.') else {
            continue;
        };
        let Some((minor, variant)) = split_variant(rest) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
            continue;
        };
        let capability = Capability::new(major, minor);
        let suffix = match variant {
            Variant::Plain => "",
            Variant::ArchSpecific => "a",
            Variant::Family => "f",
        };
        out.push(ArchEntry {
            kind: CodeKind::Sass,
            capability,
            variant,
            name: format!("sm_{major}{minor}{suffix}"),
        });
        if with_ptx {
            out.push(ArchEntry {
                kind: CodeKind::Ptx,
                capability,
                variant,
                name: format!("compute_{major}{minor}{suffix}"),
            });
        }
    }
    out
}

fn split_variant(s: &str) -> Option<(&str, Variant)> {
    if let Some(d) = s.strip_suffix('a') {
        Some((d, Variant::ArchSpecific))
    } else if let Some(d) = s.strip_suffix('f') {
        Some((d, Variant::Family))
    } else if s.is_empty() {
        None
    } else {
        Some((s, Variant::Plain))
    }
}

impl ArchEntry {
    /// Whether this entry's code runs on `device` (SASS as is, PTX after JIT).
    pub fn runs_on(&self, device: Capability) -> bool {
        let own = self.capability;
        match (self.kind, self.variant) {
            (_, Variant::ArchSpecific) => own == device,
            (CodeKind::Sass, _) | (CodeKind::Ptx, Variant::Family) => {
                own.major == device.major && own.minor <= device.minor
            }
            (CodeKind::Ptx, Variant::Plain) => own <= device,
        }
    }
}

/// The best way `entries` reach `device`: machine code if any entry has it, else PTX.
pub fn coverage(device: Capability, entries: &[ArchEntry]) -> Coverage {
    let best = |kind: CodeKind| {
        entries
            .iter()
            .filter(|e| e.kind == kind && e.runs_on(device))
            // The closest match is what the CUDA runtime picks and the clearest to report.
            .max_by_key(|e| e.capability)
            .map(|e| e.name.clone())
    };
    if let Some(name) = best(CodeKind::Sass) {
        Coverage::Native(name)
    } else if let Some(name) = best(CodeKind::Ptx) {
        Coverage::PtxJit(name)
    } else {
        Coverage::Missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Arch lists of real builds.
    const TORCH_2_1_CU121: &[&str] = &[
        "sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90",
    ];
    const TORCH_2_7_CU128: &[&str] = &[
        "sm_75",
        "sm_80",
        "sm_86",
        "sm_90",
        "sm_100",
        "sm_120",
        "compute_120",
    ];
    // Measured on an H200 (torch 2.11.0+cu130).
    const TORCH_2_11_CU130: &[&str] = &["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"];
    // A custom build that ships Ampere code plus PTX for newer GPUs.
    const AMPERE_PLUS_PTX: &[&str] = &["sm_80", "compute_80"];
    // Hopper-only build with arch-specific features (as FlashAttention-3 style builds do).
    const HOPPER_ONLY: &[&str] = &["sm_90a"];

    fn cov(cc: (u32, u32), list: &[&str]) -> Coverage {
        coverage(Capability::new(cc.0, cc.1), &parse_torch_list(list))
    }

    fn native(name: &str) -> Coverage {
        Coverage::Native(name.into())
    }

    fn ptx(name: &str) -> Coverage {
        Coverage::PtxJit(name.into())
    }

    /// The table: devices from sm_75 to sm_120 against each build.
    #[test]
    fn device_table_against_real_arch_lists() {
        use Coverage::Missing;
        // (capability, device, arch list, expected)
        type Row = ((u32, u32), &'static str, &'static [&'static str], Coverage);
        let rows: &[Row] = &[
            ((7, 5), "T4", TORCH_2_1_CU121, native("sm_75")),
            ((8, 0), "A100", TORCH_2_1_CU121, native("sm_80")),
            ((8, 6), "A10 / RTX 3090", TORCH_2_1_CU121, native("sm_86")),
            ((8, 9), "L4 / RTX 4090", TORCH_2_1_CU121, native("sm_86")),
            ((9, 0), "H100 / H200", TORCH_2_1_CU121, native("sm_90")),
            ((10, 0), "B200", TORCH_2_1_CU121, Missing),
            ((12, 0), "RTX 5090", TORCH_2_1_CU121, Missing),
            ((7, 0), "V100", TORCH_2_7_CU128, Missing),
            ((7, 5), "T4", TORCH_2_7_CU128, native("sm_75")),
            ((8, 9), "L4 / RTX 4090", TORCH_2_7_CU128, native("sm_86")),
            ((9, 0), "H100 / H200", TORCH_2_7_CU128, native("sm_90")),
            ((10, 0), "B200", TORCH_2_7_CU128, native("sm_100")),
            ((10, 3), "B300", TORCH_2_7_CU128, native("sm_100")),
            ((12, 0), "RTX 5090", TORCH_2_7_CU128, native("sm_120")),
            ((12, 1), "DGX Spark", TORCH_2_7_CU128, native("sm_120")),
            ((6, 1), "P40 / GTX 1080", TORCH_2_11_CU130, Missing),
            ((9, 0), "H100 / H200", TORCH_2_11_CU130, native("sm_90")),
            ((12, 0), "RTX 5090", TORCH_2_11_CU130, native("sm_120")),
            ((7, 5), "T4", AMPERE_PLUS_PTX, Missing),
            ((8, 6), "A10 / RTX 3090", AMPERE_PLUS_PTX, native("sm_80")),
            ((9, 0), "H100 / H200", AMPERE_PLUS_PTX, ptx("compute_80")),
            ((12, 0), "RTX 5090", AMPERE_PLUS_PTX, ptx("compute_80")),
            ((9, 0), "H100 / H200", HOPPER_ONLY, native("sm_90a")),
            ((8, 9), "L4 / RTX 4090", HOPPER_ONLY, Missing),
            ((10, 0), "B200", HOPPER_ONLY, Missing),
        ];
        for (cc, device, list, expected) in rows {
            assert_eq!(
                &cov(*cc, list),
                expected,
                "{device} ({}.{}) against {list:?}",
                cc.0,
                cc.1
            );
        }
    }

    #[test]
    fn torch_entries_parse_major_from_all_but_the_last_digit() {
        let e = parse_torch_entry("sm_120").unwrap();
        assert_eq!(
            (e.kind, e.capability),
            (CodeKind::Sass, Capability::new(12, 0))
        );
        let e = parse_torch_entry("sm_103").unwrap();
        assert_eq!(e.capability, Capability::new(10, 3));
        let e = parse_torch_entry("compute_90a").unwrap();
        assert_eq!(
            (e.kind, e.capability, e.variant),
            (CodeKind::Ptx, Capability::new(9, 0), Variant::ArchSpecific)
        );
        let e = parse_torch_entry("sm_100f").unwrap();
        assert_eq!(e.variant, Variant::Family);
        for bad in ["sm_", "sm_9", "gfx90a", "sm_x0", "compute_"] {
            assert!(parse_torch_entry(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn family_code_stays_within_its_major_version() {
        let list = parse_torch_list(&["sm_100f"]);
        assert_eq!(coverage(Capability::new(10, 3), &list), native("sm_100f"));
        assert_eq!(coverage(Capability::new(12, 0), &list), Coverage::Missing);
    }

    #[test]
    fn ptx_jit_only_runs_forward() {
        let list = parse_torch_list(&["compute_90"]);
        assert_eq!(coverage(Capability::new(12, 0), &list), ptx("compute_90"));
        assert_eq!(coverage(Capability::new(8, 9), &list), Coverage::Missing);
        // Arch-specific PTX does not JIT forward.
        let list = parse_torch_list(&["compute_90a"]);
        assert_eq!(coverage(Capability::new(10, 0), &list), Coverage::Missing);
    }

    #[test]
    fn native_code_wins_over_ptx_and_the_closest_match_is_named() {
        let list = parse_torch_list(&["compute_75", "sm_80", "sm_86"]);
        assert_eq!(coverage(Capability::new(8, 9), &list), native("sm_86"));
    }

    #[test]
    fn extension_arch_lists_in_torch_cuda_arch_list_syntax() {
        let list = parse_cuda_arch_list("6.0;7.0;7.5;8.0+PTX 9.0a");
        let names: Vec<_> = list.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["sm_60", "sm_70", "sm_75", "sm_80", "compute_80", "sm_90a"]
        );
        assert_eq!(coverage(Capability::new(8, 6), &list), native("sm_80"));
        assert_eq!(coverage(Capability::new(9, 0), &list), native("sm_90a"));
        assert_eq!(coverage(Capability::new(12, 0), &list), ptx("compute_80"));
        assert!(parse_cuda_arch_list("").is_empty());
        assert!(parse_cuda_arch_list("garbage;;8").is_empty());
        assert_eq!(
            parse_cuda_arch_list("12.0,10.0f")
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>(),
            ["sm_120", "sm_100f"]
        );
    }
}
