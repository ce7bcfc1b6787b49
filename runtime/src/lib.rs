//! The worker runtime as a library: the binary (`src/main.rs`) is a thin entry point, and xtask
//! reads the WebUI flag set from here to generate its documentation.

pub mod cli;
pub mod cuda;
pub mod exit_code;
pub mod gate;
pub mod health;
pub mod interrupt;
pub mod launch;
pub mod listener;
pub mod logging;
pub mod png;
pub mod process_tree;
pub mod readiness;
pub mod shlex;
pub mod signals;
pub mod startup_report;
pub mod supervisor;
pub mod tcmalloc;
pub mod warmup;
pub mod webui_extensions;
pub mod webui_flags;
pub mod webui_log;
