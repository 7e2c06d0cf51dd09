//! A stock Debian kernel booted under qemu (TCG) for tests that need what the development
//! kernel lacks (kprobes, fentry, real clocksource switches).
//!
//! - Assets are prepared once per kernel package and cached under `target/guest/<package>/`:
//!   the kernel .deb from the archive (`linux-image-amd64`, the stock 6.1, by default; the
//!   6.12 and 6.12 PREEMPT_RT packages for the kernel matrix), its uncompressed ELF `vmlinux`
//!   (PVH boot skips the slow decompressor under TCG), and the virtio / 9p modules with their
//!   dependencies from `modules.dep`. Test modules (`tests/modules/<name>`) are built against
//!   the matching headers, unpacked next to them (`build_module`).
//! - Each boot builds a small initramfs (busybox, the `clockpath` binary's shared libraries,
//!   the modules, an init) and shares a work directory over 9p as `/mnt/host`: the test's
//!   script runs from there as `/mnt/host/test.sh`, with the freshly built `clockpath` next to
//!   it, and leaves results there. The console goes to `serial.log`; `results.txt` is also
//!   written through a virtio-serial port.
//! - User-mode networking forwards a host loopback port to the guest, so the host can scrape
//!   a `clockpath run` inside the guest.
//!
//! KVM on these machines cannot run a stock kernel, so the guest always uses TCG (about 2-3 s
//! to boot), single-threaded by default (see `GuestOptions::tcg_thread`). Everything that is
//! missing is installed (apt) or downloaded; a failure panics with what to fix.

use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use crate::{clockpath_bin, free_port, workspace};

/// Modules the init needs (virtio devices, the 9p share); their dependencies are found in the
/// kernel's `modules.dep`, so the list holds across kernels (6.12 folds fscache into netfs).
const MODULES: &[&str] = &["virtio_pci", "virtio_net", "virtio_console", "9pnet_virtio", "9p"];

const INIT: &str = r#"#!/bin/sh
# PID 1 of the clockpath test guest.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
echo "GUEST_INIT uptime=$(cut -d' ' -f1 /proc/uptime)"
for m in __MODULES__; do
  f=$(find /lib/modules -name "$m.ko" | head -1)
  [ -n "$f" ] && insmod "$f" 2>/dev/null
done
mkdir -p /mnt/host /tmp
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 hostshare /mnt/host || echo "GUEST_9P_FAILED"
ip link set lo up
ip link set eth0 up 2>/dev/null && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
cd /mnt/host
sh /mnt/host/test.sh > /mnt/host/results.txt 2>&1
echo "GUEST_TEST_EXIT $?" >> /mnt/host/results.txt
for p in /sys/class/virtio-ports/*; do
  [ "$(cat $p/name 2>/dev/null)" = results ] && cat /mnt/host/results.txt > /dev/$(basename $p)
done
sync
echo "GUEST_DONE"
poweroff -f
"#;

/// Modules a nested host (`GuestOptions::nested`) also loads: AMD's KVM and what it needs.
const KVM_MODULES: &[&str] = &["kvm-amd"];

/// Modules a KVM guest (`Nested`, L2) also loads: `ptp_kvm`, the host's CLOCK_REALTIME as a
/// PTP clock (`/dev/ptp0`), which relates the guest's clocks to the host's.
const KVM_GUEST_MODULES: &[&str] = &["ptp_kvm"];

/// What a guest is, for its initramfs: which modules it loads and whether it carries qemu.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Plain,
    KvmHost,
    KvmGuest,
}

/// The cached kernel and modules.
pub struct Assets {
    pub vmlinux: PathBuf,
    pub modules: Vec<PathBuf>,
    /// `KVM_MODULES` and their dependencies not already in `modules`, in load order.
    pub kvm_modules: Vec<PathBuf>,
    /// `KVM_GUEST_MODULES` and their dependencies not already in `modules`, in load order.
    pub kvm_guest_modules: Vec<PathBuf>,
    /// e.g. `6.1.0-56-amd64`.
    pub release: String,
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(out.status.success(), "{what} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ensure_packages() {
    let need: Vec<&str> = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("cpio", "cpio"),
        ("xz", "xz-utils"),
        ("zstd", "zstd"),
        ("lz4", "lz4"),
        ("iasl", "acpica-tools"),
        ("make", "make"),
        ("gcc-12", "gcc-12"),
    ]
    .iter()
    .filter(|(bin, _)| crate::which(bin).is_none())
    .map(|(_, pkg)| *pkg)
    .chain((!Path::new("/bin/busybox").exists()).then_some("busybox-static"))
    .collect();
    if !need.is_empty() {
        let _ = Command::new("apt-get").arg("update").arg("-qq").status();
        run(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&need)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            "apt-get install guest packages",
        );
    }
}

/// The read function a clocksource chain's first read must hit after a switch to `cs` (the
/// product's own table).
pub fn read_fn(cs: &str) -> &'static str {
    clockpath_probe::plan::CLOCKSOURCE_READ_FUNCTIONS
        .iter()
        .find(|(name, _)| *name == cs)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no known read function for clocksource {cs}"))
}

/// The stock kernel: what `linux-image-amd64` depends on (Debian bookworm: 6.1).
pub const STOCK_KERNEL: &str = "linux-image-amd64";

/// Prepare (once per process; cached under `target/guest/<package>/` across runs) the kernel
/// of a Debian package (`linux-image-6.12.107+deb12-rt-amd64-unsigned`), or of the package a
/// meta-package depends on (`linux-image-amd64`).
pub fn assets_for(package: &str) -> &'static Assets {
    static ASSETS: OnceLock<std::sync::Mutex<std::collections::BTreeMap<String, &'static Assets>>> = OnceLock::new();
    let mut cache = ASSETS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    cache.entry(package.to_string()).or_insert_with(|| Box::leak(Box::new(prepare_assets(package))))
}

/// The newest Debian bookworm 6.12 kernel package of `flavour` (`amd64`, `rt-amd64`) in the
/// archive (`linux-image-6.12.N+deb12-<flavour>-unsigned`): the archive keeps a few point
/// releases, and the newest is the one sure to be downloadable.
pub fn kernel_6_12(flavour: &str) -> String {
    let pattern = format!(r"^linux-image-6\.12\.[0-9]+\+deb12-{flavour}-unsigned$");
    let found = run(Command::new("apt-cache").args(["search", "--names-only", &pattern]), "apt-cache search");
    found
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .max_by_key(|p| p.trim_start_matches("linux-image-6.12.").split('+').next().and_then(|n| n.parse::<u32>().ok()))
        .map(String::from)
        .unwrap_or_else(|| panic!("no 6.12 {flavour} kernel in the apt archive (apt-get update?)"))
}

/// Build the test module `tests/modules/<name>` against the headers of `kernel`'s release
/// (cached under `target/guest/<package>/`) and return the `.ko`. The headers packages
/// (`linux-headers-<release>`, its common headers and kbuild) are downloaded and unpacked
/// there rather than installed: installing them would pull the kernel image onto the host.
pub fn build_module(kernel: &str, name: &str) -> PathBuf {
    let assets = assets_for(kernel);
    let dir = workspace().join("target/guest").join(kernel);
    let root = dir.join("headers");
    let headers = root.join("usr/src").join(format!("linux-headers-{}", assets.release));
    if !headers.join("Makefile").is_file() {
        let top = format!("linux-headers-{}", assets.release);
        let depends = run(Command::new("apt-cache").args(["depends", &top]), "apt-cache depends headers");
        let mut pkgs = vec![top.clone()];
        pkgs.extend(
            depends
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Depends: "))
                .filter(|p| p.starts_with("linux-headers-") || p.starts_with("linux-kbuild-"))
                .map(String::from),
        );
        let debs = dir.join("header-debs");
        fs::create_dir_all(&debs).unwrap();
        run(Command::new("apt-get").arg("download").args(&pkgs).current_dir(&debs), "apt-get download headers");
        let tmp = dir.join("headers.tmp");
        let _ = fs::remove_dir_all(&tmp);
        for deb in fs::read_dir(&debs).unwrap().filter_map(Result::ok).map(|e| e.path()) {
            run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp), "dpkg-deb -x headers");
        }
        // The flavour's Makefile includes the common headers by absolute path.
        let makefile = tmp.join("usr/src").join(&top).join("Makefile");
        let text = fs::read_to_string(&makefile).unwrap_or_else(|e| panic!("{}: {e}", makefile.display()));
        fs::write(&makefile, text.replace("/usr/src/", &format!("{}/usr/src/", root.display()))).unwrap();
        let _ = fs::remove_dir_all(&root);
        fs::rename(&tmp, &root).unwrap();
    }
    let build = dir.join("module-build").join(name);
    let _ = fs::remove_dir_all(&build);
    fs::create_dir_all(&build).unwrap();
    let src = workspace().join("tests/modules").join(name);
    for f in fs::read_dir(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display())).filter_map(Result::ok) {
        fs::copy(f.path(), build.join(f.file_name())).unwrap();
    }
    // No BTF for the test module: pahole is not needed, and nothing attaches to it.
    run(
        Command::new("make")
            .arg("-C")
            .arg(&headers)
            .arg(format!("M={}", build.display()))
            .arg("CONFIG_DEBUG_INFO_BTF_MODULES=")
            .arg("modules"),
        "make modules",
    );
    let ko = build.join(format!("{name}.ko"));
    assert!(ko.is_file(), "make wrote no {}", ko.display());
    ko
}

/// The package holding the kernel image: `package` itself, or the image a meta-package
/// (`linux-image-amd64`) depends on.
fn image_package(package: &str) -> String {
    let depends = run(Command::new("apt-cache").args(["depends", package]), "apt-cache depends");
    depends
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: ").filter(|p| p.starts_with("linux-image-")))
        .map(String::from)
        .unwrap_or_else(|| package.to_string())
}

fn prepare_assets(package: &str) -> Assets {
    ensure_packages();
    let dir = workspace().join("target/guest").join(package);
    fs::create_dir_all(&dir).expect("create target/guest/<package>");
    let kdir = dir.join("kernel");
    if !kdir.join("boot").is_dir() {
        let pkg = image_package(package);
        let debs = dir.join("debs");
        fs::create_dir_all(&debs).unwrap();
        run(Command::new("apt-get").args(["download", &pkg]).current_dir(&debs), "apt-get download kernel");
        let deb = fs::read_dir(&debs)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{pkg}_"))))
            .expect("downloaded kernel .deb");
        let tmp = dir.join("kernel.tmp");
        let _ = fs::remove_dir_all(&tmp);
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp), "dpkg-deb -x");
        fs::rename(&tmp, &kdir).unwrap();
    }
    let vmlinuz = fs::read_dir(kdir.join("boot"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .expect("vmlinuz in the kernel package");
    let release = vmlinuz.file_name().unwrap().to_string_lossy().trim_start_matches("vmlinuz-").to_string();
    let vmlinux = dir.join(format!("vmlinux-{release}"));
    if !is_elf(&vmlinux) {
        extract_vmlinux(&vmlinuz, &vmlinux);
    }
    let mdir = kdir.join("lib/modules").join(&release);
    if !mdir.join("modules.dep").is_file() {
        // The package's postinst would run depmod; the extracted tree has no modules.dep yet.
        run(Command::new("depmod").arg("-b").arg(&kdir).arg(&release), "depmod");
    }
    let modules = load_order(&mdir, &dir.join("modules"), MODULES);
    let kvm_modules =
        load_order(&mdir, &dir.join("modules"), KVM_MODULES).into_iter().filter(|m| !modules.contains(m)).collect();
    let kvm_guest_modules = load_order(&mdir, &dir.join("modules"), KVM_GUEST_MODULES)
        .into_iter()
        .filter(|m| !modules.contains(m))
        .collect();
    Assets { vmlinux, modules, kvm_modules, kvm_guest_modules, release }
}

/// A module's name as insmod and modprobe spell it (the file stem) from a modules.dep path.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).to_string()
}

/// `wanted` modules and their dependencies in load order, uncompressed into `out` (busybox
/// insmod takes plain .ko files; 6.12 packages ship .ko.xz). Built-in ones are skipped.
fn load_order(mdir: &Path, out: &Path, wanted: &[&str]) -> Vec<PathBuf> {
    let deps_text =
        fs::read_to_string(mdir.join("modules.dep")).unwrap_or_else(|e| panic!("{}/modules.dep: {e}", mdir.display()));
    let builtin = fs::read_to_string(mdir.join("modules.builtin")).unwrap_or_default();
    // Module name → (its path, the names of the modules it needs).
    type Deps = std::collections::BTreeMap<String, (String, Vec<String>)>;
    let deps: Deps = deps_text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| (module_name(m), (m.to_string(), d.split_whitespace().map(module_name).collect())))
        .collect();
    fn visit(m: &str, deps: &Deps, builtin: &str, order: &mut Vec<String>) {
        if order.iter().any(|o| o == m) {
            return;
        }
        match deps.get(m) {
            Some((_, ds)) => {
                for d in ds {
                    visit(d, deps, builtin, order);
                }
                order.push(m.to_string());
            }
            None if builtin.lines().any(|l| l.ends_with(&format!("/{m}.ko"))) => {}
            None => panic!("module {m} is neither in modules.dep nor built in"),
        }
    }
    let mut order = Vec::new();
    for m in wanted {
        visit(m, &deps, &builtin, &mut order);
    }
    fs::create_dir_all(out).expect("create the modules directory");
    order
        .iter()
        .map(|m| {
            let src = mdir.join(&deps[m].0);
            let dst = out.join(format!("{m}.ko"));
            if !dst.exists() {
                let tool = match src.extension().and_then(|e| e.to_str()) {
                    Some("xz") => Some("xz"),
                    Some("zst") => Some("zstd"),
                    _ => None,
                };
                match tool {
                    Some(t) => {
                        let ko = Command::new(t).arg("-dc").arg(&src).output().expect("decompress a module");
                        assert!(ko.status.success(), "{t} -dc {}", src.display());
                        fs::write(&dst, ko.stdout).unwrap();
                    }
                    None => {
                        fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
                    }
                }
            }
            dst
        })
        .collect()
}

fn is_elf(p: &Path) -> bool {
    let mut magic = [0u8; 4];
    fs::File::open(p).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == *b"\x7fELF"
}

/// Find the compressed payload in a bzImage and decompress it to an ELF vmlinux.
fn extract_vmlinux(vmlinuz: &Path, out: &Path) {
    let data = fs::read(vmlinuz).expect("read vmlinuz");
    let formats: [(&[u8], &str); 3] =
        [(b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"\x02\x21\x4c\x18", "lz4")];
    for (magic, tool) in formats {
        let mut start = 0;
        while let Some(pos) = data[start..].windows(magic.len()).position(|w| w == magic) {
            let off = start + pos;
            start = off + 1;
            let mut child = Command::new(tool)
                .arg("-dc")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{tool}: {e}"));
            let mut stdin = child.stdin.take().unwrap();
            let payload = data[off..].to_vec();
            let writer = std::thread::spawn(move || {
                use std::io::Write as _;
                let _ = stdin.write_all(&payload);
            });
            let output = child.wait_with_output().unwrap();
            let _ = writer.join();
            if output.stdout.starts_with(b"\x7fELF") {
                fs::write(out, &output.stdout).expect("write vmlinux");
                return;
            }
        }
    }
    panic!("no ELF kernel found inside {}", vmlinuz.display());
}

/// Shared libraries a dynamically linked binary needs (from ldd).
fn shared_libs(bin: &Path) -> Vec<PathBuf> {
    let out = run(Command::new("ldd").arg(bin), "ldd");
    out.lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')).map(PathBuf::from))
        .filter(|p| p.exists())
        .collect()
}

/// qemu's firmware a nested host needs to start its guest with PVH boot: (source, name under
/// /usr/share/qemu).
const QEMU_FIRMWARE: &[(&str, &str)] = &[
    ("/usr/share/seabios/bios-256k.bin", "bios-256k.bin"),
    ("/usr/share/qemu/kvmvapic.bin", "kvmvapic.bin"),
    ("/usr/share/qemu/linuxboot_dma.bin", "linuxboot_dma.bin"),
    ("/usr/share/qemu/pvh.bin", "pvh.bin"),
];

/// `nested_host`: also AMD's KVM modules, and qemu with its libraries and firmware, so the
/// guest can start a KVM guest of its own.
fn build_initramfs(assets: &Assets, out: &Path, role: Role) {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "mnt", "etc", "lib/modules"] {
        fs::create_dir_all(r.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", r.join("bin/busybox")).expect("copy busybox (busybox-static)");
    let applets = run(Command::new("/bin/busybox").arg("--list"), "busybox --list");
    for a in applets.lines() {
        let link = r.join("bin").join(a);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    // Peer tools the guest tests compare clockpath with: ppstest (pps-tools) reads the same
    // PPS device, adjtimex prints the same kernel clock state; setpriv (util-linux) runs
    // clockpath as an unprivileged user with chosen capabilities.
    let peers =
        [("/usr/bin/ppstest", "pps-tools"), ("/usr/sbin/adjtimex", "adjtimex"), ("/usr/bin/setpriv", "util-linux")];
    for (tool, package) in peers {
        let dst = r.join("usr/bin").join(Path::new(tool).file_name().unwrap());
        fs::copy(tool, dst).unwrap_or_else(|e| panic!("copy {tool} ({package}; scripts/setup.sh installs it): {e}"));
    }
    let mut libs = shared_libs(&clockpath_bin());
    for (tool, _) in peers {
        libs.extend(shared_libs(Path::new(tool)));
    }
    if role == Role::KvmHost {
        let qemu = crate::which("qemu-system-x86_64").expect("qemu-system-x86_64 (qemu-system-x86)");
        fs::copy(&qemu, r.join("usr/bin/qemu-system-x86_64")).expect("copy qemu-system-x86_64");
        libs.extend(shared_libs(&qemu));
        let fw = r.join("usr/share/qemu");
        fs::create_dir_all(&fw).unwrap();
        for (src, name) in QEMU_FIRMWARE {
            fs::copy(src, fw.join(name)).unwrap_or_else(|e| panic!("copy {src} (qemu-system-x86): {e}"));
        }
    }
    libs.sort();
    libs.dedup();
    for lib in libs {
        let dst = r.join(lib.strip_prefix("/").unwrap());
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        fs::copy(&lib, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", lib.display()));
    }
    let extra = match role {
        Role::Plain => &[][..],
        Role::KvmHost => &assets.kvm_modules[..],
        Role::KvmGuest => &assets.kvm_guest_modules[..],
    };
    let modules: Vec<&PathBuf> = assets.modules.iter().chain(extra).collect();
    for m in &modules {
        fs::copy(m, r.join("lib/modules").join(m.file_name().unwrap())).unwrap();
    }
    // In load order (dependencies first).
    let names: Vec<String> = modules.iter().map(|m| m.file_stem().unwrap().to_string_lossy().into_owned()).collect();
    let init = INIT.replace("__MODULES__", &names.join(" "));
    fs::write(r.join("init"), init).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(r.join("init"), fs::Permissions::from_mode(0o755)).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("cd {} && find . | cpio -o -H newc --quiet | gzip -1 > {}", r.display(), out.display()))
        .status()
        .expect("cpio");
    assert!(status.success(), "building the initramfs failed");
}

/// The SSDT that gives the guest's vCPUs ACPI C-states (`fixtures/guest-cstates.asl`, see
/// there why), compiled with `iasl` into `target/guest/`: boot with it in
/// `GuestOptions::acpi_tables` and the stock kernel's acpi_idle offers POLL, C1 and C2.
pub fn cstate_table() -> PathBuf {
    ensure_packages();
    let src = workspace().join("tests/fixtures/guest-cstates.asl");
    let dir = workspace().join("target/guest/acpi");
    fs::create_dir_all(&dir).expect("create target/guest/acpi");
    let asl = dir.join("guest-cstates.asl");
    fs::copy(&src, &asl).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    let aml = dir.join("guest-cstates.aml");
    // iasl writes its output into the working directory.
    run(Command::new("iasl").arg("guest-cstates.asl").current_dir(&dir), "iasl guest-cstates.asl");
    assert!(aml.is_file(), "iasl wrote no {}", aml.display());
    aml
}

/// Options for one boot.
pub struct GuestOptions {
    pub cpus: u32,
    pub memory_mb: u32,
    /// Extra kernel command line (e.g. `tsc=reliable` to offer tsc as a clocksource).
    pub cmdline: String,
    /// Guest TCP port to forward from a host loopback port.
    pub forward: Option<u16>,
    /// Kill the guest after this long.
    pub timeout: Duration,
    /// Extra ACPI tables (compiled AML, e.g. an SSDT) handed to the guest firmware.
    pub acpi_tables: Vec<PathBuf>,
    /// qemu's `-cpu` model and flags.
    pub cpu: String,
    /// The Debian kernel package to boot (see `assets_for`).
    pub kernel: String,
    /// Files (built modules) copied into the share, next to the script.
    pub share_files: Vec<PathBuf>,
    /// qemu's TCG threading: `single` (the vCPUs take turns on one host thread) or `multi`.
    /// Single by default: with multi-threaded TCG a vCPU can run a stale translation of code
    /// another vCPU just patched, and the kernel patches live text whenever a probe attaches
    /// (jump labels, BPF trampolines): 6.12 PREEMPT_RT guests died of an unhandled int3 in
    /// __schedule seconds after `clockpath doctor`, in two boots of four.
    pub tcg_thread: &'static str,
    /// Make this guest a KVM host (L1) that can start a KVM guest (L2) of its own: see
    /// [`Nested`] and [`GuestOptions::nested_host`].
    pub nested: Option<Nested>,
}

/// The KVM guest (L2) of a nested host (L1), the same kernel package started inside L1 by
/// qemu with `-accel kvm`.
///
/// L1 runs under TCG with AMD SVM emulated (`-cpu EPYC,+svm`): qemu's TCG emulates SVM, not
/// VMX, and a stock kernel's kvm_amd needs nothing more, so L1 is a real KVM host whose exits
/// and entries are KVM's own code paths; L2 runs on L1's KVM with kvm-clock. The machine's
/// own /dev/kvm cannot host a stock kernel (see the module docs), and under TCG all times
/// are emulation times.
///
/// L2's share is `l2/` in L1's share (`/mnt/host/l2` in L1, `/mnt/host` in L2): its script
/// runs as `/mnt/host/test.sh` there with `clockpath` beside it, as in any guest. L1's
/// script starts L2 with `. /mnt/host/l2.sh; l2_start` and waits for it with `l2_wait
/// SECONDS` (0 when L2's script exited 0).
pub struct Nested {
    /// L2's script (sh).
    pub script: String,
    /// Files (name, contents) next to L2's script.
    pub files: Vec<(String, String)>,
    pub cpus: u32,
    pub memory_mb: u32,
    /// Extra kernel command line of L2.
    pub cmdline: String,
    /// L2's TCP port forwarded (through L1) to a host loopback port: [`Guest::l2_url`].
    pub forward: Option<u16>,
}

/// The port in L1 that forwards to L2's `Nested::forward` port.
const L2_RELAY_PORT: u16 = 39200;

impl Default for GuestOptions {
    fn default() -> Self {
        GuestOptions {
            cpus: 2,
            memory_mb: 1024,
            cmdline: String::new(),
            forward: None,
            timeout: Duration::from_secs(600),
            acpi_tables: Vec::new(),
            cpu: "max".into(),
            kernel: STOCK_KERNEL.into(),
            share_files: Vec::new(),
            tcg_thread: "single",
            nested: None,
        }
    }
}

impl GuestOptions {
    /// A nested KVM host (L1) for `l2`: one vCPU with AMD SVM emulated, 2 GiB.
    pub fn nested_host(l2: Nested) -> GuestOptions {
        GuestOptions { cpus: 1, memory_mb: 2048, cpu: "EPYC,+svm".into(), nested: Some(l2), ..GuestOptions::default() }
    }
}

/// A running guest.
pub struct Guest {
    child: Child,
    dir: Option<tempfile::TempDir>,
    /// Host loopback port forwarded to `GuestOptions::forward`.
    pub host_port: Option<u16>,
    /// Host loopback port forwarded (through L1) to `Nested::forward`.
    pub l2_port: Option<u16>,
    started: Instant,
    timeout: Duration,
}

/// What a finished guest left.
pub struct GuestOutput {
    pub serial: String,
    /// The script's output (from the 9p share, or the virtio-serial copy).
    pub results: String,
    /// The share directory, for files the script wrote.
    pub dir: tempfile::TempDir,
    pub elapsed: Duration,
}

/// Shell functions L1's script sources (`. /mnt/host/l2.sh`) to run its KVM guest.
const L2_SH: &str = r#"# Start and wait for the KVM guest (L2) of this nested host; its share is /mnt/host/l2.
l2_start() {
  qemu-system-x86_64 -accel kvm -cpu host -m __MEM__ -smp __CPUS__ -no-reboot -nodefaults -display none \
    -L /usr/share/qemu -serial file:/mnt/host/l2/serial.log \
    -kernel /mnt/host/l2/vmlinux -initrd /mnt/host/l2/initramfs.cpio.gz \
    -append "console=ttyS0 quiet panic=-1 __CMDLINE__" \
    -virtfs local,path=/mnt/host/l2,mount_tag=hostshare,security_model=none,id=hs \
    -device virtio-serial-pci -chardev file,id=res,path=/mnt/host/l2/results-vport.txt \
    -device virtserialport,chardev=res,name=results \
    -netdev user,id=n0__HOSTFWD__ -device virtio-net-pci,netdev=n0,romfile= \
    > /mnt/host/l2/qemu.log 2>&1 &
  L2_QEMU=$!
  echo "L2 started (qemu pid $L2_QEMU) at $(cut -d' ' -f1 /proc/uptime)"
}
# Wait up to $1 seconds for L2's script to finish; its exit status (124: it did not finish).
l2_wait() {
  i=0
  while [ $i -lt "$1" ]; do
    if grep -q '^GUEST_TEST_EXIT' /mnt/host/l2/results.txt 2>/dev/null; then
      wait $L2_QEMU 2>/dev/null
      echo "L2 finished at $(cut -d' ' -f1 /proc/uptime)"
      return "$(sed -n 's/^GUEST_TEST_EXIT //p' /mnt/host/l2/results.txt | tail -1)"
    fi
    sleep 1; i=$((i + 1))
  done
  kill $L2_QEMU 2>/dev/null
  return 124
}
"#;

/// Fill L1's share for its KVM guest: `l2/` (script, files, clockpath, kernel, initramfs) and
/// `l2.sh`.
fn prepare_l2(share: &Path, assets: &Assets, l2: &Nested) {
    let dir = share.join("l2");
    fs::create_dir_all(&dir).expect("create the L2 share");
    fs::write(dir.join("test.sh"), &l2.script).unwrap();
    fs::copy(clockpath_bin(), dir.join("clockpath")).expect("copy clockpath into the L2 share");
    for (name, contents) in &l2.files {
        fs::write(dir.join(name), contents).unwrap();
    }
    fs::copy(&assets.vmlinux, dir.join("vmlinux")).expect("copy the kernel into the L2 share");
    build_initramfs(assets, &dir.join("initramfs.cpio.gz"), Role::KvmGuest);
    let hostfwd = l2.forward.map(|p| format!(",hostfwd=tcp::{L2_RELAY_PORT}-:{p}")).unwrap_or_default();
    let sh = L2_SH
        .replace("__MEM__", &l2.memory_mb.to_string())
        .replace("__CPUS__", &l2.cpus.to_string())
        .replace("__CMDLINE__", &l2.cmdline)
        .replace("__HOSTFWD__", &hostfwd);
    fs::write(share.join("l2.sh"), sh).unwrap();
}

impl GuestOutput {
    /// The script's exit status, as reported by the init.
    pub fn exit_code(&self) -> Option<i32> {
        self.results.lines().rev().find_map(|l| l.strip_prefix("GUEST_TEST_EXIT ")).and_then(|c| c.trim().parse().ok())
    }

    pub fn file(&self, name: &str) -> String {
        fs::read_to_string(self.dir.path().join(name)).unwrap_or_else(|e| panic!("guest file {name}: {e}"))
    }
}

impl Guest {
    /// Boot the guest running `script` (sh) with the built `clockpath` at `/mnt/host/clockpath`
    /// and `files` (name, contents) next to it.
    pub fn start(script: &str, files: &[(&str, &str)], opts: GuestOptions) -> Guest {
        let assets = assets_for(&opts.kernel);
        let dir = tempfile::tempdir().expect("guest share dir");
        let share = dir.path();
        fs::write(share.join("test.sh"), script).unwrap();
        fs::copy(clockpath_bin(), share.join("clockpath")).expect("copy clockpath into the share");
        for (name, contents) in files {
            fs::write(share.join(name), contents).unwrap();
        }
        for f in &opts.share_files {
            fs::copy(f, share.join(f.file_name().expect("a file"))).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        }
        if let Some(l2) = &opts.nested {
            assert!(opts.cpu.contains("svm"), "a nested host needs AMD SVM emulated (-cpu …,+svm), not `{}`", opts.cpu);
            prepare_l2(share, assets, l2);
        }
        let initrd = share.join("initramfs.cpio.gz");
        build_initramfs(assets, &initrd, if opts.nested.is_some() { Role::KvmHost } else { Role::Plain });
        let host_port = opts.forward.map(|_| free_port());
        let l2_port = opts.nested.as_ref().and_then(|l2| l2.forward).map(|_| free_port());
        let mut netdev = "user,id=n0".to_string();
        if let (Some(g), Some(h)) = (opts.forward, host_port) {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{h}-:{g}"));
        }
        if let Some(h) = l2_port {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{h}-:{L2_RELAY_PORT}"));
        }
        let serial = fs::File::create(share.join("serial.log")).unwrap();
        let mut qemu = Command::new("qemu-system-x86_64");
        for t in &opts.acpi_tables {
            qemu.arg("-acpitable").arg(format!("file={}", t.display()));
        }
        let child = qemu
            .args([
                "-accel",
                &format!("tcg,thread={}", opts.tcg_thread),
                "-cpu",
                &opts.cpu,
                "-m",
                &opts.memory_mb.to_string(),
                "-smp",
                &opts.cpus.to_string(),
            ])
            .args(["-no-reboot", "-nodefaults", "-display", "none", "-serial", "stdio"])
            .arg("-kernel")
            .arg(&assets.vmlinux)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", &format!("console=ttyS0 quiet panic=-1 {}", opts.cmdline)])
            .arg("-virtfs")
            .arg(format!("local,path={},mount_tag=hostshare,security_model=none,id=hs", share.display()))
            .args(["-device", "virtio-serial-pci"])
            .arg("-chardev")
            .arg(format!("file,id=res,path={}", share.join("results-vport.txt").display()))
            .args(["-device", "virtserialport,chardev=res,name=results"])
            .args(["-netdev", &netdev, "-device", "virtio-net-pci,netdev=n0,romfile="])
            .stdin(Stdio::null())
            .stdout(serial)
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu-system-x86_64");
        Guest { child, dir: Some(dir), host_port, l2_port, started: Instant::now(), timeout: opts.timeout }
    }

    /// The share directory (`/mnt/host` in the guest).
    pub fn share(&self) -> &Path {
        self.dir.as_ref().expect("guest share dir").path()
    }

    /// Poll the share until `probe` holds; on timeout, panic with what the guest left.
    pub fn wait_until(&self, what: &str, within: Duration, mut probe: impl FnMut(&Path) -> bool) {
        let share = self.share();
        crate::wait_for_or(what, within, || probe(share).then_some(()), || left_behind(share));
    }

    /// `http://127.0.0.1:PORT` of the forwarded guest port.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.host_port.expect("no forwarded port"))
    }

    /// `http://127.0.0.1:PORT` of L2's forwarded port (through L1).
    pub fn l2_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.l2_port.expect("no forwarded L2 port"))
    }

    /// Wait for the guest to power off (or the timeout), and collect its output.
    pub fn wait(mut self) -> GuestOutput {
        let dir = self.dir.take().expect("guest share dir");
        let within = self.timeout.saturating_sub(self.started.elapsed());
        let child = &mut self.child;
        // On timeout the panic unwinds through Guest's drop, which kills qemu.
        crate::wait_for_or(
            "the guest to finish",
            within,
            || matches!(child.try_wait(), Ok(Some(_))).then_some(()),
            || left_behind(dir.path()),
        );
        let share = dir.path();
        let serial = fs::read_to_string(share.join("serial.log")).unwrap_or_default();
        let results = fs::read_to_string(share.join("results.txt"))
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| fs::read_to_string(share.join("results-vport.txt")).ok())
            .unwrap_or_default();
        GuestOutput { serial, results, elapsed: self.started.elapsed(), dir }
    }
}

/// What a guest that did not finish left in its share: the script's output so far and the
/// serial console.
fn left_behind(share: &Path) -> String {
    let so_far = fs::read_to_string(share.join("results.txt"))
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| fs::read_to_string(share.join("results-vport.txt")).ok())
        .unwrap_or_default();
    let serial = fs::read_to_string(share.join("serial.log")).unwrap_or_default();
    let mut out = format!("; the script's output so far:\n{so_far}\nserial console:\n{serial}");
    let l2 = share.join("l2");
    if l2.is_dir() {
        for f in ["results.txt", "serial.log", "qemu.log"] {
            let text = fs::read_to_string(l2.join(f)).unwrap_or_default();
            out.push_str(&format!("\nL2 {f}:\n{text}"));
        }
    }
    out
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
