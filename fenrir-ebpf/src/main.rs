//! Fenrir's kernel program: sees who runs package managers and what they run.
//!
//! In: exec, fork and exit of every task (BTF tracepoints), the package-manager executables
//! userspace put in `TRACKED_EXES`, the structure offsets userspace wrote into `OFFSETS`.
//! Out: an [`ExecRecord`](fenrir_common::ExecRecord) in `EVENTS` for each exec of a package
//! manager or of one of its descendants, an [`ExitRecord`](fenrir_common::ExitRecord) when such
//! a process ends, a count of records lost to a full ring buffer in `DROPPED`.
//! State: `TRACKED_TGIDS`, the thread groups that belong to a package-manager run.
//!
//! Every other exec leaves no record: the filter runs here, not in userspace, so a busy host
//! pays one hash lookup per exec and the ring buffer only carries what Fenrir reports.
#![no_std]
#![no_main]

mod exec;
mod kernel;
mod process;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use fenrir_common::{ExecutableKey, KernelOffsets, ScriptPath};

/// Bytes of `EVENTS`: about 750 exec records. The kernel maps the ring twice into the reader,
/// so its size counts double in the sensor's resident memory.
const EVENTS_BYTES: u32 = 1 << 20;

/// Unread bytes from which every record wakes userspace: a burst of maintainer-script execs,
/// which alone never wake it, is drained long before the ring fills.
const WAKE_AT_BYTES: u64 = EVENTS_BYTES as u64 / 4;

/// Records for userspace.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Records lost because `EVENTS` was full, per CPU (index 0).
#[map]
static DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Package-manager executables and the interpreters of package-manager scripts by (device,
/// inode); the value holds `EXE_*` bits.
#[map]
static TRACKED_EXES: HashMap<ExecutableKey, u32> = HashMap::with_max_entries(1024, 0);

/// Paths of package-manager scripts, checked only when an interpreter in `TRACKED_EXES` runs.
#[map]
static TRACKED_SCRIPTS: HashMap<ScriptPath, u32> = HashMap::with_max_entries(256, 0);

/// Per-CPU room for a `TRACKED_SCRIPTS` key: 128 bytes are too many for the 512-byte stack
/// next to everything else the exec hook holds.
#[map]
static SCRIPT_SCRATCH: PerCpuArray<ScriptPath> = PerCpuArray::with_max_entries(1, 0);

/// Thread groups inside a package-manager run, mapped to the tgid of the package manager
/// that started it. LRU so that an exit the program missed can never fill it up.
#[map]
static TRACKED_TGIDS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(16_384, 0);

/// Structure layout of the running kernel, written by userspace before load from its BTF.
///
/// The defaults are `offsetof` values printed by a C program compiled against
/// `bpftool btf dump file /sys/kernel/btf/vmlinux format c` of the 6.18 kernel Fenrir is
/// developed on; they are only right for that kernel.
#[no_mangle]
static OFFSETS: KernelOffsets = KernelOffsets {
    task_pid: 1264,
    task_tgid: 1268,
    task_real_parent: 1280,
    task_cred: 1736,
    task_comm: 1752,
    task_loginuid: 1952,
    task_sessionid: 1956,
    task_signal: 1848,
    task_mm: 1136,
    task_exit_code: 1164,
    cred_uid: 8,
    cred_euid: 24,
    cred_gid: 12,
    signal_tty: 408,
    signal_live: 4,
    tty_index: 4,
    tty_name: 352,
    binprm_file: 64,
    binprm_filename: 96,
    file_inode: 32,
    inode_ino: 64,
    inode_sb: 40,
    sb_dev: 16,
    mm_arg_start: 488,
    mm_arg_end: 496,
};

/// Returns the flags to submit a record with: a record that matters on its own (a package
/// manager starting or ending) wakes userspace as usual; any other waits for the next drain
/// unless the ring is filling up.
fn submit_flags(wakes: bool) -> u64 {
    if wakes {
        0
    } else if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= WAKE_AT_BYTES {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// Counts one record lost to a full ring buffer.
fn count_drop() {
    if let Some(counter) = DROPPED.get_ptr_mut(0) {
        // SAFETY: the pointer comes from a successful lookup of this CPU's slot, which no other
        // program run can touch while this one runs (per-CPU map, no preemption in BPF).
        unsafe { *counter += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // No code path of this program panics (no indexing, no unwrap). Were one added, this loop
    // makes the verifier reject the whole object at load, which is the loud failure we want.
    loop {}
}

// The kernel lets only GPL-compatible programs call `bpf_probe_read_kernel` and friends.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
