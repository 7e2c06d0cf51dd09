//! Types shared by clockpath's BPF stage programs (`clockpath-ebpf`) and its userspace
//! (`clockpath`): slot layout and slot config, the ring-buffer record, histogram bucket math,
//! counters and limits.
//!
//! Everything here is `#[repr(C)]`, `Copy`, and padded by hand (no `bool`, no `Option`), so the
//! kernel and userspace agree on every byte. With the `user` feature each struct is `aya::Pod`.
#![no_std]

pub mod clocks;
pub mod hist;
pub mod interference;
pub mod limits;
pub mod record;
pub mod slot;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each of these is `#[repr(C)]`, `Copy`, and has no implicit padding, so any byte
    // pattern is a valid value.
    unsafe impl aya::Pod for crate::slot::SlotConfig {}
    unsafe impl aya::Pod for crate::slot::InstanceKey {}
    unsafe impl aya::Pod for crate::slot::Instance {}
    unsafe impl aya::Pod for crate::record::Record {}
    unsafe impl aya::Pod for crate::record::Staged {}
    unsafe impl aya::Pod for crate::hist::HistRow {}
    unsafe impl aya::Pod for crate::slot::ChainCounters {}
    unsafe impl aya::Pod for crate::slot::Active {}
    unsafe impl aya::Pod for crate::interference::CpuInterference {}
    unsafe impl aya::Pod for crate::clocks::ClockRead {}
}
