//! The NVIDIA driver library (libcuda), loaded at run time through cudarc.
//!
//! cudarc finds and opens libcuda (its list of library names) and gives the C types. The entry
//! points this check needs are resolved here, all at once, from cudarc's library handle, for two
//! reasons that matter to a check whose job is to survive broken machines:
//! - cudarc's generated wrappers panic when a symbol is missing (an old or stub driver); resolving
//!   first turns that into an error that names the symbol;
//! - they return `CUresult` as a Rust enum generated from CUDA 12.8 headers, and a newer driver may
//!   return a code that enum lacks, which would be undefined behaviour; here results are plain
//!   integers.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::fmt;

use cudarc::driver::sys::{CUcontext, CUdevice, CUdeviceptr, CUfunction, CUmodule, CUstream};

/// A raw CUDA driver status (`CUresult`): 0 is success.
type Status = c_uint;

pub const CUDA_SUCCESS: u32 = 0;
pub const CUDA_ERROR_OUT_OF_MEMORY: u32 = 2;
pub const CUDA_ERROR_STUB_LIBRARY: u32 = 34;
pub const CUDA_ERROR_INSUFFICIENT_DRIVER: u32 = 35;
pub const CUDA_ERROR_DEVICES_UNAVAILABLE: u32 = 46;
pub const CUDA_ERROR_NO_DEVICE: u32 = 100;
pub const CUDA_ERROR_INVALID_DEVICE: u32 = 101;
pub const CUDA_ERROR_NO_BINARY_FOR_GPU: u32 = 209;
pub const CUDA_ERROR_INVALID_PTX: u32 = 218;
pub const CUDA_ERROR_UNSUPPORTED_PTX_VERSION: u32 = 222;
pub const CUDA_ERROR_SYSTEM_DRIVER_MISMATCH: u32 = 803;
pub const CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE: u32 = 804;

/// A failed driver call: the call, its status, and the driver's own name and text for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CuError {
    pub call: &'static str,
    pub code: u32,
    pub name: String,
    pub text: String,
}

impl fmt::Display for CuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} returned {} ({}: {})",
            self.call, self.name, self.code, self.text
        )
    }
}

/// Why the driver could not be used at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// No libcuda on the library path: no NVIDIA driver, or the container runs without GPU access.
    Absent,
    /// libcuda loaded but lacks an entry point this check uses (a very old or partial driver).
    MissingSymbol(&'static str),
}

/// The driver entry points the check uses (signatures from cuda.h).
pub struct Driver {
    get_error_name: unsafe extern "C" fn(Status, *mut *const c_char) -> Status,
    get_error_string: unsafe extern "C" fn(Status, *mut *const c_char) -> Status,
    driver_get_version: unsafe extern "C" fn(*mut c_int) -> Status,
    init: unsafe extern "C" fn(c_uint) -> Status,
    device_get_count: unsafe extern "C" fn(*mut c_int) -> Status,
    device_get: unsafe extern "C" fn(*mut CUdevice, c_int) -> Status,
    device_get_name: unsafe extern "C" fn(*mut c_char, c_int, CUdevice) -> Status,
    device_get_attribute: unsafe extern "C" fn(*mut c_int, c_int, CUdevice) -> Status,
    device_total_mem: unsafe extern "C" fn(*mut usize, CUdevice) -> Status,
    primary_ctx_retain: unsafe extern "C" fn(*mut CUcontext, CUdevice) -> Status,
    primary_ctx_release: unsafe extern "C" fn(CUdevice) -> Status,
    ctx_set_current: unsafe extern "C" fn(CUcontext) -> Status,
    ctx_synchronize: unsafe extern "C" fn() -> Status,
    mem_get_info: unsafe extern "C" fn(*mut usize, *mut usize) -> Status,
    mem_alloc: unsafe extern "C" fn(*mut CUdeviceptr, usize) -> Status,
    mem_free: unsafe extern "C" fn(CUdeviceptr) -> Status,
    memcpy_htod: unsafe extern "C" fn(CUdeviceptr, *const c_void, usize) -> Status,
    memcpy_dtoh: unsafe extern "C" fn(*mut c_void, CUdeviceptr, usize) -> Status,
    module_load_data_ex: unsafe extern "C" fn(
        *mut CUmodule,
        *const c_void,
        c_uint,
        *mut c_uint,
        *mut *mut c_void,
    ) -> Status,
    module_get_function: unsafe extern "C" fn(*mut CUfunction, CUmodule, *const c_char) -> Status,
    module_unload: unsafe extern "C" fn(CUmodule) -> Status,
    #[allow(clippy::type_complexity)]
    launch_kernel: unsafe extern "C" fn(
        CUfunction,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        CUstream,
        *mut *mut c_void,
        *mut *mut c_void,
    ) -> Status,
}

// Attribute numbers from cuda.h (CUdevice_attribute); stable since CUDA 2.x.
const ATTR_COMPUTE_CAPABILITY_MAJOR: c_int = 75;
const ATTR_COMPUTE_CAPABILITY_MINOR: c_int = 76;
// JIT option numbers from cuda.h (CUjit_option).
const JIT_ERROR_LOG_BUFFER: c_uint = 5;
const JIT_ERROR_LOG_BUFFER_SIZE_BYTES: c_uint = 6;

impl Driver {
    /// Opens libcuda and resolves every entry point. Never panics: cudarc's loader panics when
    /// no library exists, so presence is asked first.
    pub fn load() -> Result<Driver, LoadError> {
        // SAFETY: only dlopen/dlclose of candidate names; no driver code runs.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(LoadError::Absent);
        }
        // SAFETY: present (checked above), so cudarc's loader finds a library and returns it.
        let lib = unsafe { cudarc::driver::sys::culib() };
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the field's type is the symbol's C signature from cuda.h; the library
                // handle is 'static, so the function pointer never dangles.
                match unsafe { lib.get($name.as_bytes()) } {
                    Ok(symbol) => *symbol,
                    Err(_) => return Err(LoadError::MissingSymbol($name)),
                }
            };
        }
        Ok(Driver {
            get_error_name: sym!("cuGetErrorName"),
            get_error_string: sym!("cuGetErrorString"),
            driver_get_version: sym!("cuDriverGetVersion"),
            init: sym!("cuInit"),
            device_get_count: sym!("cuDeviceGetCount"),
            device_get: sym!("cuDeviceGet"),
            device_get_name: sym!("cuDeviceGetName"),
            device_get_attribute: sym!("cuDeviceGetAttribute"),
            device_total_mem: sym!("cuDeviceTotalMem_v2"),
            primary_ctx_retain: sym!("cuDevicePrimaryCtxRetain"),
            primary_ctx_release: sym!("cuDevicePrimaryCtxRelease_v2"),
            ctx_set_current: sym!("cuCtxSetCurrent"),
            ctx_synchronize: sym!("cuCtxSynchronize"),
            mem_get_info: sym!("cuMemGetInfo_v2"),
            mem_alloc: sym!("cuMemAlloc_v2"),
            mem_free: sym!("cuMemFree_v2"),
            memcpy_htod: sym!("cuMemcpyHtoD_v2"),
            memcpy_dtoh: sym!("cuMemcpyDtoH_v2"),
            module_load_data_ex: sym!("cuModuleLoadDataEx"),
            module_get_function: sym!("cuModuleGetFunction"),
            module_unload: sym!("cuModuleUnload"),
            launch_kernel: sym!("cuLaunchKernel"),
        })
    }

    fn check(&self, call: &'static str, status: Status) -> Result<(), CuError> {
        if status == CUDA_SUCCESS {
            return Ok(());
        }
        let describe = |f: unsafe extern "C" fn(Status, *mut *const c_char) -> Status| {
            let mut ptr: *const c_char = std::ptr::null();
            // SAFETY: the driver writes a pointer to a static string, or fails for unknown codes.
            let ok = unsafe { f(status, &mut ptr) } == CUDA_SUCCESS && !ptr.is_null();
            // SAFETY: a non-null result is a NUL-terminated static string owned by the driver.
            ok.then(|| {
                unsafe { CStr::from_ptr(ptr) }
                    .to_string_lossy()
                    .into_owned()
            })
        };
        Err(CuError {
            call,
            code: status,
            name: describe(self.get_error_name).unwrap_or_else(|| "CUDA_ERROR_UNKNOWN_CODE".into()),
            text: describe(self.get_error_string)
                .unwrap_or_else(|| "a status this check does not know".into()),
        })
    }

    /// The CUDA version the driver supports, as 1000*major + 10*minor (13000 = CUDA 13.0).
    /// Works before `cuInit`.
    pub fn driver_version(&self) -> Result<i32, CuError> {
        let mut v = 0;
        // SAFETY: out-pointer to a live local.
        self.check("cuDriverGetVersion", unsafe {
            (self.driver_get_version)(&mut v)
        })?;
        Ok(v)
    }

    pub fn init(&self) -> Result<(), CuError> {
        // SAFETY: flags must be 0.
        self.check("cuInit", unsafe { (self.init)(0) })
    }

    pub fn device_count(&self) -> Result<i32, CuError> {
        let mut n = 0;
        // SAFETY: out-pointer to a live local.
        self.check("cuDeviceGetCount", unsafe {
            (self.device_get_count)(&mut n)
        })?;
        Ok(n)
    }

    pub fn device(&self, ordinal: i32) -> Result<CUdevice, CuError> {
        let mut dev = 0;
        // SAFETY: out-pointer to a live local.
        self.check("cuDeviceGet", unsafe {
            (self.device_get)(&mut dev, ordinal)
        })?;
        Ok(dev)
    }

    pub fn device_name(&self, dev: CUdevice) -> Result<String, CuError> {
        let mut buf = [0 as c_char; 256];
        // SAFETY: the driver writes at most `len` bytes including the NUL.
        self.check("cuDeviceGetName", unsafe {
            (self.device_get_name)(buf.as_mut_ptr(), buf.len() as c_int, dev)
        })?;
        // The driver NUL-terminates; the last byte is forced to NUL in case it did not.
        buf[buf.len() - 1] = 0;
        // SAFETY: NUL-terminated within the buffer (see above).
        Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .trim()
            .to_string())
    }

    pub fn capability(&self, dev: CUdevice) -> Result<(u32, u32), CuError> {
        let attr = |a: c_int| {
            let mut v = 0;
            // SAFETY: out-pointer to a live local.
            self.check("cuDeviceGetAttribute", unsafe {
                (self.device_get_attribute)(&mut v, a, dev)
            })
            .map(|()| v.max(0) as u32)
        };
        Ok((
            attr(ATTR_COMPUTE_CAPABILITY_MAJOR)?,
            attr(ATTR_COMPUTE_CAPABILITY_MINOR)?,
        ))
    }

    pub fn total_memory(&self, dev: CUdevice) -> Result<u64, CuError> {
        let mut bytes = 0usize;
        // SAFETY: out-pointer to a live local.
        self.check("cuDeviceTotalMem", unsafe {
            (self.device_total_mem)(&mut bytes, dev)
        })?;
        Ok(bytes as u64)
    }

    /// Makes the device's primary context (the one PyTorch also uses) current on this thread.
    /// It is released when the returned guard drops.
    pub fn activate(&self, dev: CUdevice) -> Result<Context<'_>, CuError> {
        let mut ctx: CUcontext = std::ptr::null_mut();
        // SAFETY: out-pointer to a live local.
        self.check("cuDevicePrimaryCtxRetain", unsafe {
            (self.primary_ctx_retain)(&mut ctx, dev)
        })?;
        let guard = Context { driver: self, dev };
        // SAFETY: `ctx` was just retained and stays alive while the guard exists.
        self.check("cuCtxSetCurrent", unsafe { (self.ctx_set_current)(ctx) })?;
        Ok(guard)
    }

    /// JIT-compiles PTX text for the current context's device. On failure the driver's JIT log
    /// comes with the error.
    pub fn load_ptx(&self, ptx: &CStr) -> Result<Module<'_>, (CuError, String)> {
        let mut log = vec![0u8; 4096];
        let mut options = [JIT_ERROR_LOG_BUFFER, JIT_ERROR_LOG_BUFFER_SIZE_BYTES];
        // cuda.h passes option values through void*: a pointer for the buffer, the size as an
        // integer cast to a pointer.
        let mut values = [
            log.as_mut_ptr() as *mut c_void,
            std::ptr::without_provenance_mut(log.len()),
        ];
        let mut module: CUmodule = std::ptr::null_mut();
        // SAFETY: `ptx` is NUL-terminated PTX text; the option arrays and log buffer outlive the
        // call.
        let status = unsafe {
            (self.module_load_data_ex)(
                &mut module,
                ptx.as_ptr() as *const c_void,
                options.len() as c_uint,
                options.as_mut_ptr(),
                values.as_mut_ptr(),
            )
        };
        match self.check("cuModuleLoadDataEx", status) {
            Ok(()) => Ok(Module {
                driver: self,
                module,
            }),
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]).trim().to_string();
                Err((e, text))
            }
        }
    }

    pub fn alloc(&self, bytes: usize) -> Result<DeviceBuffer<'_>, CuError> {
        let mut ptr: CUdeviceptr = 0;
        // SAFETY: out-pointer to a live local; a context is current (caller holds one).
        self.check("cuMemAlloc", unsafe { (self.mem_alloc)(&mut ptr, bytes) })?;
        Ok(DeviceBuffer {
            driver: self,
            ptr,
            bytes,
        })
    }

    pub fn synchronize(&self) -> Result<(), CuError> {
        // SAFETY: no arguments; a context is current.
        self.check("cuCtxSynchronize", unsafe { (self.ctx_synchronize)() })
    }
}

/// A retained primary context, current on this thread while it lives.
pub struct Context<'d> {
    driver: &'d Driver,
    dev: CUdevice,
}

impl Context<'_> {
    /// Free and total bytes of the context's device.
    pub fn memory_info(&self) -> Result<(u64, u64), CuError> {
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: out-pointers to live locals; this context is current.
        self.driver.check("cuMemGetInfo", unsafe {
            (self.driver.mem_get_info)(&mut free, &mut total)
        })?;
        Ok((free as u64, total as u64))
    }
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        // SAFETY: balances the retain in `Driver::activate`.
        unsafe { (self.driver.primary_ctx_release)(self.dev) };
    }
}

/// A loaded module, unloaded on drop.
pub struct Module<'d> {
    driver: &'d Driver,
    module: CUmodule,
}

impl Module<'_> {
    pub fn function(&self, name: &CStr) -> Result<Function, CuError> {
        let mut f: CUfunction = std::ptr::null_mut();
        // SAFETY: `name` is NUL-terminated; the module is loaded.
        self.driver.check("cuModuleGetFunction", unsafe {
            (self.driver.module_get_function)(&mut f, self.module, name.as_ptr())
        })?;
        Ok(Function(f))
    }

    /// Launches `f` on the default stream with 1-D grid and block sizes.
    ///
    /// # Safety
    /// `params` must point to values whose types and count match the kernel's parameters.
    pub unsafe fn launch(
        &self,
        f: &Function,
        grid: u32,
        block: u32,
        params: &mut [*mut c_void],
    ) -> Result<(), CuError> {
        self.driver.check(
            "cuLaunchKernel",
            (self.driver.launch_kernel)(
                f.0,
                grid,
                1,
                1,
                block,
                1,
                1,
                0,
                std::ptr::null_mut(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            ),
        )
    }
}

impl Drop for Module<'_> {
    fn drop(&mut self) {
        // SAFETY: the module was loaded by `load_ptx` and is unloaded once.
        unsafe { (self.driver.module_unload)(self.module) };
    }
}

/// A kernel handle; valid while its module lives (the borrow is not tracked: it stays local).
pub struct Function(CUfunction);

/// Device memory, freed on drop.
pub struct DeviceBuffer<'d> {
    driver: &'d Driver,
    pub ptr: CUdeviceptr,
    bytes: usize,
}

impl DeviceBuffer<'_> {
    pub fn copy_from(&self, src: &[u32]) -> Result<(), CuError> {
        let bytes = std::mem::size_of_val(src).min(self.bytes);
        // SAFETY: copies at most the allocation's size from a live slice.
        self.driver.check("cuMemcpyHtoD", unsafe {
            (self.driver.memcpy_htod)(self.ptr, src.as_ptr() as *const c_void, bytes)
        })
    }

    pub fn copy_to(&self, dst: &mut [u32]) -> Result<(), CuError> {
        let bytes = std::mem::size_of_val(dst).min(self.bytes);
        // SAFETY: writes at most the slice's size into a live, exclusively borrowed slice.
        self.driver.check("cuMemcpyDtoH", unsafe {
            (self.driver.memcpy_dtoh)(dst.as_mut_ptr() as *mut c_void, self.ptr, bytes)
        })
    }
}

impl Drop for DeviceBuffer<'_> {
    fn drop(&mut self) {
        // SAFETY: allocated by `Driver::alloc`, freed once.
        unsafe { (self.driver.mem_free)(self.ptr) };
    }
}

/// The file libcuda was loaded from (read from this process's memory map): shows at once whether
/// the real driver or a toolkit stub was picked up.
pub fn loaded_library_path() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            path.rsplit('/')
                .next()
                .is_some_and(|file| file.starts_with("libcuda.so"))
        })
        .map(str::to_string)
}

/// The kernel module's version ("580.159.04"), when the container can see /proc/driver/nvidia.
pub fn kernel_module_version() -> Option<String> {
    parse_kernel_module_version(&std::fs::read_to_string("/proc/driver/nvidia/version").ok()?)
}

/// The first version-looking word of the NVRM line; the proprietary and the open kernel modules
/// word that line differently ("Kernel Module  535.129.03" vs "Open Kernel Module for x86_64
/// 580.159.04").
fn parse_kernel_module_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("NVRM version"))?;
    line.split_whitespace()
        .find(|w| {
            w.starts_with(|c: char| c.is_ascii_digit())
                && w.contains('.')
                && w.chars().all(|c| c.is_ascii_digit() || c == '.')
        })
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_module_version_from_both_module_flavours() {
        let proprietary = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.129.03  Thu Oct 19 18:56:32 UTC 2023\nGCC version:  gcc version 12.2.0\n";
        let open = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs-builder@U22)  Tue Jun  3 2025\n";
        assert_eq!(
            parse_kernel_module_version(proprietary).as_deref(),
            Some("535.129.03")
        );
        assert_eq!(
            parse_kernel_module_version(open).as_deref(),
            Some("580.159.04")
        );
        assert_eq!(parse_kernel_module_version("nothing"), None);
    }
}
