//! (being written)
use crate::cli::Config;
pub enum TcmallocStatus {
    Disabled,
}
pub fn preload_and_reexec(_c: &Config) -> TcmallocStatus {
    TcmallocStatus::Disabled
}
