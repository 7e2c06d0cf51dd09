//! clockpath's BPF object: a fixed set of generic stage programs ("slots") per attach kind,
//! each with its slot index compiled in. Userspace gives each slot a role (chain, stage, key)
//! through the read-only `SLOT_CONFIGS` (`config.rs`); see `stage.rs` for what a hit does.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features, reason = "atomic_xadd: the BPF target has no AtomicU64::fetch_add")]

mod btf_args;
mod config;
mod counters;
mod kprobe;
mod maps;
mod ring;
mod stage;
mod staging;
mod tracepoint;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
