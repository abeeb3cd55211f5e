//! Types shared by Fenrir's kernel program and its userspace loader.
//!
//! In: nothing; out: `#[repr(C)]` layouts both sides compile from this one place, the record
//! kind codes and the bounds every kernel copy is clamped to. No state.
//!
//! The kernel writes [`ExecRecord`] and [`ExitRecord`] into the `EVENTS` ring buffer; both start
//! with a [`RecordHeader`] whose `kind` tells userspace which one it got. Userspace passes the
//! kernel's structure layout in as [`KernelOffsets`] and names the package-manager binaries in
//! the `TRACKED_EXECUTABLES` map by [`ExecutableKey`].
#![no_std]

/// Bytes of a task's `comm`, including the terminating NUL the kernel always writes.
pub const COMM_LEN: usize = 16;

/// Bytes kept of the executed path; longer paths are cut and flagged.
pub const FILENAME_LEN: usize = 256;

/// Bytes kept of the NUL-separated argument block; must stay a power of two (it is used as a
/// mask the verifier can follow).
pub const ARGV_LEN: usize = 512;

/// Arguments userspace keeps from the argument block.
pub const ARGS_MAX: usize = 32;

/// Ancestors recorded above the exec'ing task.
pub const ANCESTRY_MAX: usize = 12;

/// Bytes of `tty_struct.name` (`char[64]` in every kernel Fenrir supports).
pub const TTY_NAME_LEN: usize = 64;

/// Value of `loginuid` and `sessionid` when no login set them (`AUDIT_UID_UNSET`).
pub const AUDIT_UNSET: u32 = u32::MAX;

/// Bytes of a tracked script's path as the kernel compares it, NUL padding included; longer
/// paths cannot be tracked.
pub const SCRIPT_PATH_LEN: usize = 128;

/// `TRACKED_EXES` value bit: the file is a package manager.
pub const EXE_PACKAGE_MANAGER: u32 = 1;

/// `TRACKED_EXES` value bit: the file interprets a package-manager script, so the exec'd path
/// decides (`TRACKED_SCRIPTS`).
pub const EXE_SCRIPT_INTERPRETER: u32 = 1 << 1;

/// Name of the global holding [`KernelOffsets`] in the kernel object.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";

/// Stable codes of ring-buffer records. A retired code is never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// An [`ExecRecord`].
    Exec = 1,
    /// An [`ExitRecord`].
    Exit = 2,
}

impl RecordKind {
    /// Returns the kind for a raw code, or `None` for a code this build does not know.
    #[must_use]
    pub const fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(Self::Exec),
            2 => Some(Self::Exit),
            _ => None,
        }
    }
}

/// Set in [`RecordHeader::flags`] when the executed binary itself is a package manager.
pub const FLAG_TRACKED_BINARY: u32 = 1;

/// Set when the executed path did not fit in [`ExecRecord::filename`].
pub const FLAG_FILENAME_TRUNCATED: u32 = 1 << 1;

/// Set when the argument block did not fit in [`ExecRecord::argv`].
pub const FLAG_ARGV_TRUNCATED: u32 = 1 << 2;

/// Set when the ancestry walk stopped at [`ANCESTRY_MAX`] rather than at init or the session.
pub const FLAG_ANCESTRY_TRUNCATED: u32 = 1 << 3;

/// Set when a kernel read for this record failed and some fields kept their zero value.
pub const FLAG_PARTIAL: u32 = 1 << 4;

/// First bytes of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// A [`RecordKind`] code.
    pub kind: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// `bpf_ktime_get_ns` when the record was made (monotonic, excludes suspend).
    pub ktime: u64,
}

/// One ancestor of an exec'ing task, nearest first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ancestor {
    /// Thread-group id (the pid userspace sees).
    pub pid: u32,
    /// Real uid.
    pub uid: u32,
    /// Audit login uid, [`AUDIT_UNSET`] when none.
    pub loginuid: u32,
    /// Keeps `comm` 8-byte aligned and the layout free of implicit padding.
    pub reserved: u32,
    /// Command name, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

/// An exec of a package manager or of one of its descendants.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecRecord {
    /// Kind [`RecordKind::Exec`].
    pub header: RecordHeader,
    /// Thread id of the exec'ing task.
    pub pid: u32,
    /// Thread-group id of the exec'ing task.
    pub tgid: u32,
    /// Thread-group id of the real parent.
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// Effective uid.
    pub euid: u32,
    /// Real gid.
    pub gid: u32,
    /// Audit login uid, [`AUDIT_UNSET`] when none.
    pub loginuid: u32,
    /// Audit session id, [`AUDIT_UNSET`] when none.
    pub sessionid: u32,
    /// Index of the controlling terminal within its driver (`tty_struct.index`).
    pub tty_index: u32,
    /// Bytes used in `filename`.
    pub filename_len: u16,
    /// Bytes used in `argv`.
    pub argv_len: u16,
    /// Entries used in `ancestry`.
    pub ancestry_len: u32,
    /// Thread-group id of the package manager whose run this exec belongs to (its own tgid
    /// for a package manager started outside any run).
    pub tracked_root: u32,
    /// Inode number of the executed file.
    pub ino: u64,
    /// Id of the task's cgroup v2 (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    /// Device of the executed file, kernel encoding (`MAJOR << 20 | MINOR`).
    pub dev: u32,
    /// Keeps `comm` aligned without implicit padding.
    pub reserved: u32,
    /// Command name after the exec, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// Controlling terminal name (`pts3`, `tty1`), empty when none.
    pub tty: [u8; TTY_NAME_LEN],
    /// Path passed to execve, as the kernel resolved it.
    pub filename: [u8; FILENAME_LEN],
    /// NUL-separated arguments as found on the new process's stack.
    pub argv: [u8; ARGV_LEN],
    /// Ancestors, nearest first.
    pub ancestry: [Ancestor; ANCESTRY_MAX],
}

/// Exit of a whole tracked thread group.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitRecord {
    /// Kind [`RecordKind::Exit`].
    pub header: RecordHeader,
    /// Thread id of the last exiting task.
    pub pid: u32,
    /// Thread-group id.
    pub tgid: u32,
    /// Wait status as `waitpid` reports it (`code << 8`, or the terminating signal).
    pub exit_code: u32,
    /// Keeps the record size a multiple of 8.
    pub reserved: u32,
}

/// Identity of an executable file: where the kernel looks a package manager up.
///
/// A comm or a path can be faked with a symlink or a copy; the inode of the file the kernel
/// actually mapped cannot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExecutableKey {
    /// Device of the file, kernel encoding (`MAJOR << 20 | MINOR`).
    pub dev: u32,
    /// Keeps the layout free of implicit padding (hash keys compare every byte).
    pub reserved: u32,
    /// Inode number.
    pub ino: u64,
}

impl ExecutableKey {
    /// Builds a key from a device major/minor pair and an inode number.
    #[must_use]
    pub const fn new(major: u32, minor: u32, ino: u64) -> Self {
        Self {
            dev: (major << 20) | (minor & 0xf_ffff),
            reserved: 0,
            ino,
        }
    }
}

/// Path of a package-manager script (`#!` file), NUL-padded: the `TRACKED_SCRIPTS` key.
///
/// By the time the exec tracepoint fires the kernel has swapped the script's file for its
/// interpreter's, so scripts are recognised by the interpreter's inode plus this path.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScriptPath {
    /// The path bytes followed by NULs.
    pub bytes: [u8; SCRIPT_PATH_LEN],
}

impl ScriptPath {
    /// Builds a key from a path, or `None` when it does not fit with its terminating NUL.
    #[must_use]
    pub fn new(path: &[u8]) -> Option<Self> {
        if path.len() >= SCRIPT_PATH_LEN || path.contains(&0) {
            return None;
        }

        let mut bytes = [0; SCRIPT_PATH_LEN];
        bytes[..path.len()].copy_from_slice(path);
        Some(Self { bytes })
    }
}

/// Byte offsets of the kernel structure fields the program reads.
///
/// Userspace fills this from the running kernel's BTF; the defaults compiled into the kernel
/// program only serve when nothing overrides them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.pid`.
    pub task_pid: u32,
    /// `task_struct.tgid`.
    pub task_tgid: u32,
    /// `task_struct.real_parent`.
    pub task_real_parent: u32,
    /// `task_struct.cred` (the effective credentials).
    pub task_cred: u32,
    /// `task_struct.comm`.
    pub task_comm: u32,
    /// `task_struct.loginuid`.
    pub task_loginuid: u32,
    /// `task_struct.sessionid`.
    pub task_sessionid: u32,
    /// `task_struct.signal`.
    pub task_signal: u32,
    /// `task_struct.mm`.
    pub task_mm: u32,
    /// `task_struct.exit_code`.
    pub task_exit_code: u32,
    /// `cred.uid`.
    pub cred_uid: u32,
    /// `cred.euid`.
    pub cred_euid: u32,
    /// `cred.gid`.
    pub cred_gid: u32,
    /// `signal_struct.tty`.
    pub signal_tty: u32,
    /// `signal_struct.live` (threads still running; 0 once the group is dead).
    pub signal_live: u32,
    /// `tty_struct.index`.
    pub tty_index: u32,
    /// `tty_struct.name`.
    pub tty_name: u32,
    /// `linux_binprm.file`.
    pub binprm_file: u32,
    /// `linux_binprm.filename`.
    pub binprm_filename: u32,
    /// `file.f_inode`.
    pub file_inode: u32,
    /// `inode.i_ino`.
    pub inode_ino: u32,
    /// `inode.i_sb`.
    pub inode_sb: u32,
    /// `super_block.s_dev`.
    pub sb_dev: u32,
    /// `mm_struct.arg_start`.
    pub mm_arg_start: u32,
    /// `mm_struct.arg_end`.
    pub mm_arg_end: u32,
}

impl KernelOffsets {
    /// Returns every offset with its field name, in declaration order.
    #[must_use]
    pub const fn fields(&self) -> [(&'static str, u32); 25] {
        [
            ("task_pid", self.task_pid),
            ("task_tgid", self.task_tgid),
            ("task_real_parent", self.task_real_parent),
            ("task_cred", self.task_cred),
            ("task_comm", self.task_comm),
            ("task_loginuid", self.task_loginuid),
            ("task_sessionid", self.task_sessionid),
            ("task_signal", self.task_signal),
            ("task_mm", self.task_mm),
            ("task_exit_code", self.task_exit_code),
            ("cred_uid", self.cred_uid),
            ("cred_euid", self.cred_euid),
            ("cred_gid", self.cred_gid),
            ("signal_tty", self.signal_tty),
            ("signal_live", self.signal_live),
            ("tty_index", self.tty_index),
            ("tty_name", self.tty_name),
            ("binprm_file", self.binprm_file),
            ("binprm_filename", self.binprm_filename),
            ("file_inode", self.file_inode),
            ("inode_ino", self.inode_ino),
            ("inode_sb", self.inode_sb),
            ("sb_dev", self.sb_dev),
            ("mm_arg_start", self.mm_arg_start),
            ("mm_arg_end", self.mm_arg_end),
        ]
    }
}

#[cfg(feature = "user")]
mod user {
    use super::{ExecRecord, ExecutableKey, ExitRecord, KernelOffsets, ScriptPath};

    // SAFETY: every type is `#[repr(C)]`, made only of integers and byte arrays, with explicit
    // `reserved` fields instead of implicit padding, so any bit pattern is a valid value.
    unsafe impl aya::Pod for KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ExecutableKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ExecRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ExitRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ScriptPath {}
}

#[cfg(test)]
mod tests {
    use super::{
        Ancestor, ExecRecord, ExecutableKey, ExitRecord, KernelOffsets, RecordHeader, RecordKind,
        ARGV_LEN,
    };
    use core::mem::{align_of, size_of};

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<RecordHeader>(), 16);
        assert_eq!(size_of::<Ancestor>(), 32);
        assert_eq!(size_of::<ExitRecord>(), 32);
        assert_eq!(size_of::<ExecutableKey>(), 16);
        assert_eq!(size_of::<KernelOffsets>(), 25 * 4);
        let fields = 16 + 9 * 4 + 2 * 2 + 2 * 4 + 2 * 8 + 2 * 4 + 16 + 64 + 256 + 512 + 12 * 32;
        assert_eq!(size_of::<ExecRecord>(), fields);
        assert_eq!(size_of::<ExecRecord>() % align_of::<ExecRecord>(), 0);
    }

    #[test]
    fn argv_bound_is_a_power_of_two() {
        assert!(ARGV_LEN.is_power_of_two());
    }

    #[test]
    fn record_codes_are_stable() {
        assert_eq!(RecordKind::from_code(1), Some(RecordKind::Exec));
        assert_eq!(RecordKind::from_code(2), Some(RecordKind::Exit));
        assert_eq!(RecordKind::from_code(0), None);
        assert_eq!(RecordKind::Exit as u32, 2);
    }

    #[test]
    fn script_path_refuses_paths_it_cannot_hold() {
        let key = super::ScriptPath::new(b"/usr/bin/unattended-upgrade").expect("fits");
        assert_eq!(&key.bytes[..27], b"/usr/bin/unattended-upgrade");
        assert!(key.bytes[27..].iter().all(|&b| b == 0));
        assert!(super::ScriptPath::new(&[b'a'; super::SCRIPT_PATH_LEN]).is_none());
        assert!(super::ScriptPath::new(b"a\0b").is_none());
    }

    #[test]
    fn executable_key_uses_kernel_device_encoding() {
        let key = ExecutableKey::new(254, 1, 42);
        assert_eq!(key.dev, (254 << 20) | 1);
        assert_eq!(key.ino, 42);
    }
}
