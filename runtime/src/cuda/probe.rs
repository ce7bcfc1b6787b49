//! Asks the driver, in order, everything the checks judge: library, version, init, devices,
//! and a real GPU operation on device 0. Only records; `checks` decides what is good or bad.

use std::time::Instant;

use super::arch::Capability;
use super::driver::{self, CuError, Driver, LoadError};
use super::gpu_op::{self, GpuOpError, GpuOpOk};

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    pub index: u32,
    pub name: String,
    pub capability: Capability,
    pub total_bytes: u64,
    pub free_bytes: Option<u64>,
    /// Creating the device's context failed (exclusive mode taken, out of memory, faulty GPU).
    pub context_error: Option<CuError>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub library_path: Option<String>,
    pub kernel_module: Option<String>,
    /// 1000*major + 10*minor.
    pub cuda_version: Result<i32, CuError>,
    pub init: Result<(), CuError>,
    /// Empty when init failed; an error when a device query failed.
    pub devices: Result<Vec<DeviceInfo>, CuError>,
    /// None when there was no usable device 0.
    pub gpu_op: Option<Result<GpuOpOk, GpuOpError>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    NoLibrary,
    MissingSymbol {
        symbol: &'static str,
        library_path: Option<String>,
    },
    Loaded(Box<Loaded>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeTimings {
    pub library_load_ms: f64,
    pub cu_init_ms: f64,
    pub devices_ms: f64,
    pub gpu_op_ms: f64,
}

pub fn run() -> (Probe, ProbeTimings) {
    let mut t = ProbeTimings::default();
    let started = Instant::now();
    let driver = Driver::load();
    t.library_load_ms = ms(started);
    let driver = match driver {
        Ok(d) => d,
        Err(LoadError::Absent) => return (Probe::NoLibrary, t),
        Err(LoadError::MissingSymbol(symbol)) => {
            let library_path = driver::loaded_library_path();
            return (
                Probe::MissingSymbol {
                    symbol,
                    library_path,
                },
                t,
            );
        }
    };
    let cuda_version = driver.driver_version();
    let step = Instant::now();
    let init = driver.init();
    t.cu_init_ms = ms(step);

    let mut loaded = Loaded {
        library_path: driver::loaded_library_path(),
        kernel_module: driver::kernel_module_version(),
        cuda_version,
        init: init.clone(),
        devices: Ok(Vec::new()),
        gpu_op: None,
    };
    if init.is_err() {
        return (Probe::Loaded(Box::new(loaded)), t);
    }

    let step = Instant::now();
    let mut context0 = None;
    loaded.devices = (|| {
        let count = driver.device_count()?;
        let mut devices = Vec::new();
        // Last to first, so device 0's context, kept for the GPU operation, is the current one
        // at the end.
        for ordinal in (0..count).rev() {
            let dev = driver.device(ordinal)?;
            let (major, minor) = driver.capability(dev)?;
            let mut info = DeviceInfo {
                index: ordinal as u32,
                name: driver.device_name(dev)?,
                capability: Capability::new(major, minor),
                total_bytes: driver.total_memory(dev)?,
                free_bytes: None,
                context_error: None,
            };
            match driver.activate(dev) {
                Ok(ctx) => {
                    info.free_bytes = ctx.memory_info().ok().map(|(free, _)| free);
                    if ordinal == 0 {
                        context0 = Some(ctx);
                    }
                }
                Err(e) => info.context_error = Some(e),
            }
            devices.push(info);
        }
        devices.reverse();
        Ok(devices)
    })();
    t.devices_ms = ms(step);

    if let Some(_current) = &context0 {
        let step = Instant::now();
        loaded.gpu_op = Some(gpu_op::run(&driver));
        t.gpu_op_ms = ms(step);
    }
    // The context is released before the driver handle goes (the process exits right after).
    drop(context0);
    (Probe::Loaded(Box::new(loaded)), t)
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}
