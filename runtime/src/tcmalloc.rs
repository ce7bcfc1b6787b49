//! tcmalloc preloading. The WebUI allocates heavily from Python and torch; A1111's webui.sh preloads
//! tcmalloc for it. The runtime finds the library in the dynamic linker cache (what `ldconfig -p`
//! shows) and re-executes itself once with LD_PRELOAD set, so every process it starts inherits it.

use std::ffi::{CStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli::Config;

/// Set in the re-executed image: says what was preloaded, and stops a second re-exec.
pub const REEXEC_MARKER: &str = "WORKER_RUNTIME_TCMALLOC";

/// What happened, logged once logging is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcmallocStatus {
    /// NO_TCMALLOC is set.
    Disabled,
    /// This process was re-executed with the library in LD_PRELOAD.
    Preloaded(PathBuf),
    /// LD_PRELOAD already names a tcmalloc; it is kept as it is.
    AlreadyPreloaded(String),
    /// No usable libtcmalloc in the linker cache.
    NotFound(String),
    /// The re-exec itself failed; the runtime goes on without tcmalloc.
    ReexecFailed(String),
}

impl TcmallocStatus {
    pub fn log(&self) {
        match self {
            Self::Disabled => tracing::info!("tcmalloc: disabled by NO_TCMALLOC"),
            Self::Preloaded(path) => {
                tracing::info!("tcmalloc: LD_PRELOAD={}", path.display())
            }
            Self::AlreadyPreloaded(value) => {
                tracing::info!("tcmalloc: already in LD_PRELOAD ({value}), kept as is")
            }
            Self::NotFound(why) => tracing::warn!(
                "tcmalloc: not preloaded ({why}); the WebUI runs with glibc malloc \
                 (install libgoogle-perftools4 in the image to get it)"
            ),
            Self::ReexecFailed(why) => {
                tracing::warn!("tcmalloc: re-exec failed ({why}); continuing without it")
            }
        }
    }
}

/// Decides, and on success never returns: the process image is replaced by itself with
/// LD_PRELOAD extended. Everything that follows in the launch sequence runs in the new image.
pub fn preload_and_reexec(config: &Config) -> TcmallocStatus {
    if let Some(done) = std::env::var_os(REEXEC_MARKER) {
        return TcmallocStatus::Preloaded(PathBuf::from(done));
    }
    if config.tcmalloc_disabled() {
        return TcmallocStatus::Disabled;
    }
    let existing = std::env::var("LD_PRELOAD").unwrap_or_default();
    if existing
        .split([':', ' '])
        .any(|entry| is_tcmalloc(Path::new(entry)))
    {
        return TcmallocStatus::AlreadyPreloaded(existing);
    }
    let library = match find_in_linker_cache() {
        Ok(library) => library,
        Err(why) => return TcmallocStatus::NotFound(why),
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            return TcmallocStatus::ReexecFailed(format!("cannot find my own executable: {e}"))
        }
    };
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut command = Command::new(exe);
    command
        .args(args)
        .env("LD_PRELOAD", extend_preload(&existing, &library))
        .env(REEXEC_MARKER, &library);
    // The start-up report counts the re-exec as a phase of its own.
    if let Some(clock) = crate::startup_report::clock_for_reexec() {
        command.env(crate::startup_report::START_CLOCK_ENV, clock);
    }
    let error = command.exec();
    TcmallocStatus::ReexecFailed(error.to_string())
}

fn is_tcmalloc(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("libtcmalloc"))
}

/// Appends, so libraries the user preloads on purpose keep their place.
fn extend_preload(existing: &str, library: &Path) -> OsString {
    let mut value = OsString::from(existing.trim());
    if !value.is_empty() {
        value.push(":");
    }
    value.push(library);
    value
}

/// The linker cache, as `ldconfig -p` prints it (/sbin is not always on PATH).
fn find_in_linker_cache() -> Result<PathBuf, String> {
    let listing = ["ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"]
        .iter()
        .find_map(|ldconfig| Command::new(ldconfig).arg("-p").output().ok())
        .filter(|out| out.status.success())
        .ok_or_else(|| "ldconfig -p could not run".to_string())?;
    let listing = String::from_utf8_lossy(&listing.stdout);
    let candidates = candidates(&listing);
    if candidates.is_empty() {
        return Err("no libtcmalloc in the linker cache (ldconfig -p)".into());
    }
    let needs_libpthread = glibc_before_2_34();
    let mut rejected = Vec::new();
    for library in candidates {
        if !library.exists() {
            rejected.push(format!("{} is in the cache but missing", library.display()));
        } else if needs_libpthread && !linked_with_libpthread(&library) {
            // Before glibc 2.34 pthread_key_create lives in libpthread; a tcmalloc not linked with
            // it fails with "undefined symbol: pthread_key_create" (webui.sh's rule).
            rejected.push(format!(
                "{} is not linked with libpthread",
                library.display()
            ));
        } else {
            return Ok(library);
        }
    }
    Err(rejected.join("; "))
}

/// Full tcmalloc first, then tcmalloc_minimal; only libraries of this binary's architecture.
fn candidates(ldconfig_listing: &str) -> Vec<PathBuf> {
    let arch_tag = if cfg!(target_arch = "x86_64") {
        "x86-64"
    } else if cfg!(target_arch = "aarch64") {
        "AArch64"
    } else {
        ""
    };
    let mut full = Vec::new();
    let mut minimal = Vec::new();
    for line in ldconfig_listing.lines() {
        let Some((left, path)) = line.split_once("=>") else {
            continue;
        };
        let mut words = left.split_whitespace();
        let Some(soname) = words.next() else {
            continue;
        };
        let tags = words.collect::<Vec<_>>().join(" ");
        if !tags.contains(arch_tag) {
            continue;
        }
        let path = PathBuf::from(path.trim());
        if versioned_soname(soname, "libtcmalloc.so.") {
            full.push(path);
        } else if versioned_soname(soname, "libtcmalloc_minimal.so.") {
            minimal.push(path);
        }
    }
    full.extend(minimal);
    full
}

/// `libtcmalloc.so.4` yes; `libtcmalloc.so` (the dev symlink) and `libtcmalloc_debug.so.4` no.
fn versioned_soname(soname: &str, prefix: &str) -> bool {
    soname
        .strip_prefix(prefix)
        .and_then(|rest| rest.split('.').next())
        .is_some_and(|major| !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()))
}

fn glibc_before_2_34() -> bool {
    // SAFETY: gnu_get_libc_version returns a pointer to a static, NUL-terminated string.
    let version = unsafe { CStr::from_ptr(nix::libc::gnu_get_libc_version()) };
    let version = version.to_string_lossy();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) < (2, 34)
}

fn linked_with_libpthread(library: &Path) -> bool {
    Command::new("ldd")
        .arg(library)
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("libpthread"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "\
1234 libs found in cache `/etc/ld.so.cache'
\tlibtcmalloc_minimal.so.4 (libc6,x86-64) => /lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
\tlibtcmalloc_debug.so.4 (libc6,x86-64) => /lib/x86_64-linux-gnu/libtcmalloc_debug.so.4
\tlibtcmalloc.so.4 (libc6) => /lib/i386-linux-gnu/libtcmalloc.so.4
\tlibtcmalloc.so.4 (libc6,x86-64) => /lib/x86_64-linux-gnu/libtcmalloc.so.4
\tlibtcmalloc.so (libc6,x86-64) => /lib/x86_64-linux-gnu/libtcmalloc.so
\tlibc.so.6 (libc6,x86-64, OS ABI: Linux 3.2.0) => /lib/x86_64-linux-gnu/libc.so.6
";

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn prefers_full_tcmalloc_of_this_architecture_then_minimal() {
        assert_eq!(
            candidates(LISTING),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libtcmalloc.so.4"),
                PathBuf::from("/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"),
            ]
        );
    }

    #[test]
    fn appends_to_an_existing_preload() {
        let lib = Path::new("/lib/libtcmalloc.so.4");
        assert_eq!(
            extend_preload("", lib),
            OsString::from("/lib/libtcmalloc.so.4")
        );
        assert_eq!(
            extend_preload("/opt/a.so", lib),
            OsString::from("/opt/a.so:/lib/libtcmalloc.so.4")
        );
        assert!(is_tcmalloc(Path::new("/x/libtcmalloc_minimal.so.4")));
        assert!(!is_tcmalloc(Path::new("/x/libjemalloc.so.2")));
    }
}
