//! VM exit reasons as KVM's `kvm_exit` tracepoint reports them (`exit_reason`): AMD SVM exit
//! codes and Intel VMX basic exit reasons are different number spaces (VMX 32 is MSR_WRITE,
//! SVM 0x20 is read_dr0), so a host's reasons are decoded by its vendor's table. Names are the
//! kernel's own (`arch/x86/include/uapi/asm/{svm,vmx}.h`, as the tracepoint prints them).
//!
//! Chains with `causes_from = "kvm_exit_reason"` label each instance with a class of its
//! reason ([`CAUSES`]): a kernel histogram row per class keeps the in-kernel path to one map
//! lookup; the exact reason travels with every record as the captured value.

/// The hardware virtualisation extension whose exit codes a host's KVM reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isa {
    /// AMD-V (kvm_amd).
    Svm,
    /// Intel VT-x (kvm_intel).
    Vmx,
}

/// The decoder name chains give as `causes_from`.
pub const DECODER: &str = "kvm_exit_reason";

/// Cause classes, in cause-index order; index 0 takes every reason not listed below. At most
/// 7: a one-segment chain has 7 kernel histogram rows besides `total`.
pub const CAUSES: [&str; 7] = ["other", "io", "npf", "msr", "cpuid", "interrupt", "hlt"];

/// (class, SVM codes, VMX reasons). `npf`: SVM's nested page fault, VMX's EPT violation and
/// misconfiguration (guest MMIO, hpet reads among them, and faults on unmapped guest memory).
const CLASSES: [(&str, &[u64], &[u64]); 6] = [
    ("io", &[0x07b], &[30]),
    ("npf", &[0x400], &[48, 49]),
    ("msr", &[0x07c], &[31, 32]),
    ("cpuid", &[0x072], &[10]),
    ("interrupt", &[0x060, 0x061], &[1]),
    ("hlt", &[0x078], &[12]),
];

/// (captured value, cause index) for every reason with a class of its own on `isa`.
pub fn cause_values(isa: Isa) -> Vec<(u64, u8)> {
    let mut out = Vec::new();
    for (class, svm, vmx) in CLASSES {
        let index = CAUSES.iter().position(|c| *c == class).unwrap_or(0) as u8;
        let codes = match isa {
            Isa::Svm => svm,
            Isa::Vmx => vmx,
        };
        out.extend(codes.iter().map(|&c| (c, index)));
    }
    out
}

/// The kernel's name of an exit reason, e.g. `io`, `npf` (SVM) or `IO_INSTRUCTION` (VMX);
/// `None` for a code the table does not know.
pub fn reason_name(isa: Isa, code: u64) -> Option<&'static str> {
    let table: &[(u64, &str)] = match isa {
        Isa::Svm => SVM,
        Isa::Vmx => VMX,
    };
    // VMX reports flags (FAILED_VMENTRY) in the high half.
    let code = if isa == Isa::Vmx { code & 0xffff } else { code };
    table.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

const SVM: &[(u64, &str)] = &[
    (0x000, "read_cr0"),
    (0x003, "read_cr3"),
    (0x004, "read_cr4"),
    (0x008, "read_cr8"),
    (0x010, "write_cr0"),
    (0x013, "write_cr3"),
    (0x014, "write_cr4"),
    (0x018, "write_cr8"),
    (0x027, "read_dr7"),
    (0x037, "write_dr7"),
    (0x041, "DB excp"),
    (0x043, "BP excp"),
    (0x046, "UD excp"),
    (0x047, "NM excp"),
    (0x04d, "GP excp"),
    (0x04e, "PF excp"),
    (0x052, "MC excp"),
    (0x060, "interrupt"),
    (0x061, "nmi"),
    (0x062, "smi"),
    (0x063, "init"),
    (0x064, "vintr"),
    (0x065, "cr0_sel_write"),
    (0x06e, "rdtsc"),
    (0x06f, "rdpmc"),
    (0x070, "pushf"),
    (0x071, "popf"),
    (0x072, "cpuid"),
    (0x073, "rsm"),
    (0x074, "iret"),
    (0x075, "swint"),
    (0x076, "invd"),
    (0x077, "pause"),
    (0x078, "hlt"),
    (0x079, "invlpg"),
    (0x07a, "invlpga"),
    (0x07b, "io"),
    (0x07c, "msr"),
    (0x07d, "task_switch"),
    (0x07f, "shutdown"),
    (0x080, "vmrun"),
    (0x081, "hypercall"),
    (0x082, "vmload"),
    (0x083, "vmsave"),
    (0x084, "stgi"),
    (0x085, "clgi"),
    (0x086, "skinit"),
    (0x087, "rdtscp"),
    (0x088, "icebp"),
    (0x089, "wbinvd"),
    (0x08a, "monitor"),
    (0x08b, "mwait"),
    (0x08d, "xsetbv"),
    (0x08f, "write_efer_trap"),
    (0x090, "write_cr0_trap"),
    (0x094, "write_cr4_trap"),
    (0x098, "write_cr8_trap"),
    (0x0a2, "invpcid"),
    (0x0a5, "buslock"),
    (0x0a6, "idle-halt"),
    (0x400, "npf"),
    (0x401, "avic_incomplete_ipi"),
    (0x402, "avic_unaccelerated_access"),
    (0x403, "vmgexit"),
];

const VMX: &[(u64, &str)] = &[
    (0, "EXCEPTION_NMI"),
    (1, "EXTERNAL_INTERRUPT"),
    (2, "TRIPLE_FAULT"),
    (3, "INIT_SIGNAL"),
    (4, "SIPI_SIGNAL"),
    (7, "INTERRUPT_WINDOW"),
    (8, "NMI_WINDOW"),
    (9, "TASK_SWITCH"),
    (10, "CPUID"),
    (12, "HLT"),
    (13, "INVD"),
    (14, "INVLPG"),
    (15, "RDPMC"),
    (16, "RDTSC"),
    (18, "VMCALL"),
    (28, "CR_ACCESS"),
    (29, "DR_ACCESS"),
    (30, "IO_INSTRUCTION"),
    (31, "MSR_READ"),
    (32, "MSR_WRITE"),
    (33, "INVALID_STATE"),
    (36, "MWAIT_INSTRUCTION"),
    (37, "MONITOR_TRAP_FLAG"),
    (39, "MONITOR_INSTRUCTION"),
    (40, "PAUSE_INSTRUCTION"),
    (43, "TPR_BELOW_THRESHOLD"),
    (44, "APIC_ACCESS"),
    (45, "EOI_INDUCED"),
    (46, "GDTR_IDTR"),
    (47, "LDTR_TR"),
    (48, "EPT_VIOLATION"),
    (49, "EPT_MISCONFIG"),
    (51, "RDTSCP"),
    (52, "PREEMPTION_TIMER"),
    (54, "WBINVD"),
    (55, "XSETBV"),
    (56, "APIC_WRITE"),
    (57, "RDRAND"),
    (58, "INVPCID"),
    (61, "RDSEED"),
    (62, "PML_FULL"),
    (63, "XSAVES"),
    (64, "XRSTORS"),
    (74, "BUS_LOCK"),
    (75, "NOTIFY"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_its_own_row_and_both_vendors_fill_it() {
        for isa in [Isa::Svm, Isa::Vmx] {
            let values = cause_values(isa);
            let classes: std::collections::BTreeSet<u8> = values.iter().map(|(_, c)| *c).collect();
            assert_eq!(classes.len(), CAUSES.len() - 1, "{isa:?}: every class but `other` has codes");
            assert!(!classes.contains(&0), "`other` is the default, never mapped");
            // Each mapped code's name is known, and its class is what the name says.
            for (code, class) in values {
                let name = reason_name(isa, code).expect("a mapped code has a name").to_lowercase();
                let class = CAUSES[class as usize];
                let expected: &[&str] = match class {
                    "io" => &["io", "io_instruction"],
                    "npf" => &["npf", "ept_violation", "ept_misconfig"],
                    "msr" => &["msr", "msr_read", "msr_write"],
                    "interrupt" => &["interrupt", "nmi", "external_interrupt"],
                    other => &[other],
                };
                assert!(expected.contains(&name.as_str()), "{isa:?} {code:#x} {name} in class {class}");
            }
        }
    }

    #[test]
    fn the_two_number_spaces_differ_where_they_overlap() {
        // 32: VMX MSR_WRITE, SVM read_dr0 (not a class of its own: `other`).
        assert_eq!(reason_name(Isa::Vmx, 32), Some("MSR_WRITE"));
        assert!(!cause_values(Isa::Svm).iter().any(|(c, _)| *c == 32));
        // FAILED_VMENTRY in the high half does not hide the basic reason's name.
        assert_eq!(reason_name(Isa::Vmx, 0x8000_0021), Some("INVALID_STATE"));
        assert_eq!(reason_name(Isa::Svm, 0x07b), Some("io"));
        assert_eq!(reason_name(Isa::Svm, 0x999), None);
    }
}
