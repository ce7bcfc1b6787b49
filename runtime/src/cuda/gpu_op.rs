//! A real GPU operation: the driver JIT-compiles a small PTX kernel, the kernel transforms a
//! buffer on the device, and every value that comes back is checked on the host.
//!
//! PTX text (not a prebuilt cubin) so one binary works on every GPU generation: the driver
//! compiles it for whatever device is present, which is itself part of what is being verified.
//! No NVRTC: the kernel is written in PTX directly.

use std::ffi::{c_void, CStr};
use std::time::Instant;

use super::driver::{CuError, Driver};

/// Entry point name in the PTX below (the fake libcuda used by the tests knows it too).
const KERNEL_NAME: &CStr = c"sdw_check";

/// `out[i] = (in[i] * 3 + 7) ^ i` over `n` u32 values, one thread per value.
/// PTX ISA 6.0 / sm_50: old enough for every driver this runtime meets (CUDA 9+), and the driver
/// JIT-compiles it for newer devices (measured on an H200 with driver 580).
const PTX: &CStr = c"
.version 6.0
.target sm_50
.address_size 64

.visible .entry sdw_check(
    .param .u64 sdw_check_in,
    .param .u64 sdw_check_out,
    .param .u32 sdw_check_n
)
{
    .reg .pred  %p<2>;
    .reg .b32   %r<8>;
    .reg .b64   %rd<8>;

    ld.param.u64        %rd1, [sdw_check_in];
    ld.param.u64        %rd2, [sdw_check_out];
    ld.param.u32        %r1, [sdw_check_n];
    mov.u32             %r2, %ctaid.x;
    mov.u32             %r3, %ntid.x;
    mov.u32             %r4, %tid.x;
    mad.lo.s32          %r5, %r2, %r3, %r4;
    setp.ge.u32         %p1, %r5, %r1;
    @%p1 bra            $L_done;
    cvta.to.global.u64  %rd3, %rd1;
    cvta.to.global.u64  %rd4, %rd2;
    mul.wide.u32        %rd5, %r5, 4;
    add.s64             %rd6, %rd3, %rd5;
    add.s64             %rd7, %rd4, %rd5;
    ld.global.u32       %r6, [%rd6];
    mad.lo.s32          %r7, %r6, 3, 7;
    xor.b32             %r7, %r7, %r5;
    st.global.u32       [%rd7], %r7;
$L_done:
    ret;
}
";

/// 1 Mi values (4 MiB each way): large enough to use thousands of threads, small enough to take
/// well under a millisecond on any datacenter GPU.
pub const ELEMENTS: u32 = 1 << 20;
const BLOCK: u32 = 256;

/// What the kernel must produce for input `x` at index `i`.
pub fn expected(x: u32, i: u32) -> u32 {
    x.wrapping_mul(3).wrapping_add(7) ^ i
}

/// A varied input (Knuth's multiplicative hash of the index) so a kernel that ignores its input,
/// or writes the wrong slot, cannot pass by accident.
fn input(i: u32) -> u32 {
    i.wrapping_mul(2_654_435_761)
}

#[derive(Debug, Clone, PartialEq)]
pub struct GpuOpOk {
    pub elements: u32,
    /// Time to JIT-compile and load the PTX module.
    pub jit_ms: f64,
    /// Whole operation: JIT, allocate, copy in, launch, synchronize, copy back, verify.
    pub total_ms: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GpuOpError {
    /// A driver call failed; `stage` says which step, `jit_log` holds the JIT's own words.
    Driver {
        stage: &'static str,
        error: CuError,
        jit_log: String,
    },
    /// The kernel ran but wrote wrong values.
    WrongValues {
        mismatches: usize,
        first_index: u32,
        expected: u32,
        got: u32,
    },
}

/// Runs the operation on the device whose context is current.
pub fn run(driver: &Driver) -> Result<GpuOpOk, GpuOpError> {
    let started = Instant::now();
    let stage = |stage: &'static str| {
        move |error: CuError| GpuOpError::Driver {
            stage,
            error,
            jit_log: String::new(),
        }
    };
    let module = driver
        .load_ptx(PTX)
        .map_err(|(error, jit_log)| GpuOpError::Driver {
            stage: "JIT-compiling the PTX kernel",
            error,
            jit_log,
        })?;
    let jit_ms = ms(started);
    let function = module
        .function(KERNEL_NAME)
        .map_err(stage("finding the kernel"))?;

    let host_in: Vec<u32> = (0..ELEMENTS).map(input).collect();
    let bytes = std::mem::size_of_val(host_in.as_slice());
    let dev_in = driver
        .alloc(bytes)
        .map_err(stage("allocating device memory"))?;
    let dev_out = driver
        .alloc(bytes)
        .map_err(stage("allocating device memory"))?;
    dev_in
        .copy_from(&host_in)
        .map_err(stage("copying to the device"))?;

    let (mut p_in, mut p_out, mut p_n) = (dev_in.ptr, dev_out.ptr, ELEMENTS);
    let mut params = [
        &mut p_in as *mut _ as *mut c_void,
        &mut p_out as *mut _ as *mut c_void,
        &mut p_n as *mut _ as *mut c_void,
    ];
    let grid = ELEMENTS.div_ceil(BLOCK);
    // SAFETY: three parameters (u64 pointer, u64 pointer, u32), as the PTX entry declares; the
    // locals they point to live until the launch returns (the driver copies them at launch).
    unsafe { module.launch(&function, grid, BLOCK, &mut params) }
        .map_err(stage("launching the kernel"))?;
    // Launch errors that happen while running (illegal address, ...) surface here.
    driver.synchronize().map_err(stage("running the kernel"))?;

    let mut host_out = vec![0u32; ELEMENTS as usize];
    dev_out
        .copy_to(&mut host_out)
        .map_err(stage("copying back from the device"))?;
    verify(&host_in, &host_out)?;
    Ok(GpuOpOk {
        elements: ELEMENTS,
        jit_ms,
        total_ms: ms(started),
    })
}

fn verify(host_in: &[u32], host_out: &[u32]) -> Result<(), GpuOpError> {
    let mut bad = host_in
        .iter()
        .zip(host_out)
        .enumerate()
        .filter(|(i, (&x, &y))| expected(x, *i as u32) != y);
    let Some((first, (&x, &got))) = bad.next() else {
        return Ok(());
    };
    Err(GpuOpError::WrongValues {
        mismatches: 1 + bad.count(),
        first_index: first as u32,
        expected: expected(x, first as u32),
        got,
    })
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_names_the_first_wrong_value_and_counts_all() {
        let input: Vec<u32> = (0..8).map(input).collect();
        let mut out: Vec<u32> = input
            .iter()
            .enumerate()
            .map(|(i, &x)| expected(x, i as u32))
            .collect();
        assert_eq!(verify(&input, &out), Ok(()));
        out[3] ^= 1;
        out[6] = 0;
        match verify(&input, &out) {
            Err(GpuOpError::WrongValues {
                mismatches,
                first_index,
                ..
            }) => assert_eq!((mismatches, first_index), (2, 3)),
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    #[test]
    fn the_ptx_declares_the_entry_point_the_launcher_asks_for() {
        let ptx = PTX.to_str().expect("PTX is ASCII");
        let name = KERNEL_NAME.to_str().expect("ASCII name");
        assert!(ptx.contains(&format!(".visible .entry {name}(")));
    }
}
