//! The machine the process runs on, and what it was built with: what
//! uname(2) says (for reports and the preflight check; only the fields
//! uringnotes shows are decoded), which glommio patches the binary carries
//! ([`glommio_patches`]), and the process limits it raises for itself.

/// The system, host and kernel names of the running machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uname {
    /// Operating system name (`Linux`).
    pub sysname: String,
    /// Host name.
    pub nodename: String,
    /// Kernel release (`6.18.44-...`).
    pub release: String,
}

/// Calls uname(2); `None` if it failed.
pub fn uname() -> Option<Uname> {
    // SAFETY: uname(2) fills the struct we pass; every field it sets is a
    // NUL-terminated string within its array (zeroed first, so even a
    // missing terminator stops at the array's end below).
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    Some(Uname {
        sysname: c_field(&uts.sysname),
        nodename: c_field(&uts.nodename),
        release: c_field(&uts.release),
    })
}

fn c_field(field: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = field
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The glommio patches this binary was built with, as `tools/build-tuned`
/// names them (`coop-taskrun,lean-loop`); `None` for stock glommio (a plain
/// `cargo build`). Set at compile time by the build script's environment.
pub fn glommio_patches() -> Option<&'static str> {
    option_env!("URINGNOTES_GLOMMIO_PATCHES").filter(|p| !p.is_empty())
}

/// Whether this binary was compiled with a profile from `tools/pgo-train`
/// (`tools/build-tuned`'s release builds). Set at compile time.
pub fn profile_guided() -> bool {
    option_env!("URINGNOTES_PGO_PROFILE") == Some("yes")
}

/// One line on how this build's executors talk to io_uring, for the
/// startup log and `uringnotes doctor`.
pub fn ring_setup() -> String {
    match glommio_patches() {
        None => "stock glommio 0.9: every io_uring completion interrupts the serving core, \
                 and every loop pass re-arms two timers; build with tools/build-tuned"
            .to_string(),
        Some(patches) => format!(
            "glommio 0.9 with patches {patches} (tools/build-tuned): COOP_TASKRUN rings \
             (a plain ring on kernels before 5.19), timers kept across loop passes, no membarrier(2), \
             no clock reads or timer-map splits on empty loop passes, one standing ring-link poll, \
             receive polls armed once per connection (multishot)"
        ),
    }
}

/// Whether this machine is a virtual machine, and how that shows:
/// `Some("cpuinfo hypervisor flag")` or `Some("/sys/hypervisor/type: xen")`;
/// `None` on bare metal (or when neither source says so).
///
/// It decides `placement = "auto"`: under a hypervisor, waking an executor
/// pinned to another, idle CPU is an inter-processor interrupt that exits to
/// the host, and an unpinned executor can instead be woken on the CPU of
/// its waker (perf/RESULTS.md, "Placement").
pub fn hypervisor() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if cpuinfo_has_hypervisor_flag(&cpuinfo) {
        return Some("cpuinfo hypervisor flag".into());
    }
    let kind = std::fs::read_to_string("/sys/hypervisor/type").unwrap_or_default();
    let kind = kind.trim();
    (!kind.is_empty()).then(|| format!("/sys/hypervisor/type: {kind}"))
}

/// True when the first `flags` line of /proc/cpuinfo (x86) lists
/// `hypervisor`, the bit CPUID sets inside a virtual machine.
fn cpuinfo_has_hypervisor_flag(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .is_some_and(|(_, flags)| flags.split_ascii_whitespace().any(|f| f == "hypervisor"))
}

/// Raises the soft open-files limit to the hard limit: every connection is
/// a descriptor (the server's, and the load generator's), and the default
/// soft limit (1024) is far below what one core can hold.
pub fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_machine_has_a_kernel_release() {
        let u = super::uname().expect("uname");
        assert_eq!(u.sysname, "Linux");
        assert!(
            u.release.chars().next().is_some_and(|c| c.is_ascii_digit()),
            "{u:?}"
        );
    }

    #[test]
    fn the_hypervisor_flag_is_read_from_the_flags_line_only() {
        let vm =
            "processor\t: 0\nflags\t\t: fpu vme sse2 hypervisor lahf_lm\nbugs\t\t: spectre_v1\n";
        let metal = "processor\t: 0\nflags\t\t: fpu vme sse2 lahf_lm\nmodel name\t: hypervisor-ready chip\n";
        assert!(super::cpuinfo_has_hypervisor_flag(vm));
        assert!(!super::cpuinfo_has_hypervisor_flag(metal));
        assert!(!super::cpuinfo_has_hypervisor_flag(""));
    }
}
