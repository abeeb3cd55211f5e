//! Decoding of the kernel program's ring-buffer records into owned Rust values.
//!
//! In: raw record bytes from the `EVENTS` ring buffer; out: [`KernelRecord`]. No state.
//!
//! The kernel clamps every length it writes, but these bytes still cross a trust boundary
//! (another program could share the map), so every length is clamped again here and nothing
//! is indexed unchecked. Invalid UTF-8 is replaced with U+FFFD.

use fenrir_common::{
    self as common, RecordHeader, RecordKind, ARGS_MAX, AUDIT_UNSET, FLAG_ANCESTRY_TRUNCATED,
    FLAG_ARGV_TRUNCATED, FLAG_FILENAME_TRUNCATED, FLAG_PARTIAL, FLAG_TRACKED_BINARY,
};

/// A record the kernel program sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelRecord {
    /// An exec of a package manager or of one of its descendants.
    Exec(ExecRecord),
    /// The end of a tracked process.
    Exit(ExitRecord),
}

/// One ancestor of an exec'ing process, nearest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ancestor {
    /// Process id.
    pub pid: u32,
    /// Command name (at most 15 bytes in the kernel).
    pub comm: String,
    /// Real uid.
    pub uid: u32,
    /// Audit login uid; `None` when no login set it.
    pub loginuid: Option<u32>,
}

/// An exec seen by the kernel program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRecord {
    /// Thread id of the exec'ing task.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// Effective uid.
    pub euid: u32,
    /// Real gid.
    pub gid: u32,
    /// Audit login uid: who logged in, whatever they became since; `None` when unset.
    pub loginuid: Option<u32>,
    /// Audit session id; `None` when unset.
    pub sessionid: Option<u32>,
    /// Controlling terminal (`pts/3` is `pts3` in the kernel's naming); `None` when none.
    pub tty: Option<String>,
    /// Cgroup v2 id of the process.
    pub cgroup_id: u64,
    /// Command name after the exec.
    pub comm: String,
    /// Path passed to execve.
    pub filename: String,
    /// Arguments, at most [`ARGS_MAX`].
    pub argv: Vec<String>,
    /// Ancestors, nearest first.
    pub ancestry: Vec<Ancestor>,
    /// Kernel monotonic time of the exec, in nanoseconds.
    pub ktime: u64,
    /// Device (kernel encoding) and inode of the executed file.
    pub executable: (u32, u64),
    /// Process id of the package manager whose run this exec belongs to.
    pub tracked_root: u32,
    /// Whether the executed file is itself a tracked package manager.
    pub is_package_manager: bool,
    /// Whether some field was cut to its bound (`filename`, `argv`, `ancestry`).
    pub is_truncated: bool,
    /// Whether a kernel read failed and some field kept a placeholder value.
    pub is_partial: bool,
}

/// The end of a tracked process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitRecord {
    /// Thread id of the last exiting thread.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    /// Wait status, as `waitpid` would report it.
    pub exit_code: u32,
    /// Kernel monotonic time of the exit, in nanoseconds.
    pub ktime: u64,
}

impl ExitRecord {
    /// Returns the exit status for a normal exit, `None` when a signal ended the process.
    #[must_use]
    pub fn status(&self) -> Option<u8> {
        let signal = self.exit_code & 0x7f;

        (signal == 0).then_some(((self.exit_code >> 8) & 0xff) as u8)
    }
}

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record is shorter than its kind requires.
    #[error("kernel record of {len} bytes is too short for its kind")]
    Short {
        /// Bytes received.
        len: usize,
    },
    /// The kind code is not one this build knows.
    #[error("unknown kernel record kind {code}")]
    UnknownKind {
        /// The raw code.
        code: u32,
    },
}

fn read_struct<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short { len: bytes.len() });
    }

    // SAFETY: the slice holds at least `size_of::<T>()` bytes, the read is unaligned-safe, and
    // `T` is one of the `fenrir_common` records: integers and byte arrays only, so every bit
    // pattern is a valid value.
    Ok(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());

    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn audit_id(value: u32) -> Option<u32> {
    (value != AUDIT_UNSET).then_some(value)
}

/// Splits the NUL-separated argument block, keeping at most [`ARGS_MAX`] arguments.
///
/// Returns the arguments and whether some were left out.
fn split_argv(block: &[u8]) -> (Vec<String>, bool) {
    let block = block.strip_suffix(&[0]).unwrap_or(block);
    if block.is_empty() {
        return (Vec::new(), false);
    }

    let mut pieces = block.split(|&b| b == 0);
    let argv: Vec<String> = pieces
        .by_ref()
        .take(ARGS_MAX)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();

    (argv, pieces.next().is_some())
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<KernelRecord, DecodeError> {
    let header: RecordHeader = read_struct(bytes)?;

    match RecordKind::from_code(header.kind) {
        Some(RecordKind::Exec) => Ok(KernelRecord::Exec(decode_exec(bytes)?)),
        Some(RecordKind::Exit) => {
            let raw: common::ExitRecord = read_struct(bytes)?;
            Ok(KernelRecord::Exit(ExitRecord {
                pid: raw.pid,
                tgid: raw.tgid,
                exit_code: raw.exit_code,
                ktime: raw.header.ktime,
            }))
        }
        None => Err(DecodeError::UnknownKind { code: header.kind }),
    }
}

fn decode_exec(bytes: &[u8]) -> Result<ExecRecord, DecodeError> {
    let raw: common::ExecRecord = read_struct(bytes)?;
    let flags = raw.header.flags;

    let filename_len = usize::from(raw.filename_len).min(raw.filename.len());
    let argv_len = usize::from(raw.argv_len).min(raw.argv.len());
    let (argv, argv_cut) = split_argv(&raw.argv[..argv_len]);

    let ancestry_len = (raw.ancestry_len as usize).min(raw.ancestry.len());
    let ancestry = raw.ancestry[..ancestry_len]
        .iter()
        .map(|ancestor| Ancestor {
            pid: ancestor.pid,
            comm: text(&ancestor.comm),
            uid: ancestor.uid,
            loginuid: audit_id(ancestor.loginuid),
        })
        .collect();

    let tty = (raw.tty_index != u32::MAX && raw.tty[0] != 0).then(|| text(&raw.tty));
    let truncating = FLAG_FILENAME_TRUNCATED | FLAG_ARGV_TRUNCATED | FLAG_ANCESTRY_TRUNCATED;

    Ok(ExecRecord {
        pid: raw.pid,
        tgid: raw.tgid,
        ppid: raw.ppid,
        uid: raw.uid,
        euid: raw.euid,
        gid: raw.gid,
        loginuid: audit_id(raw.loginuid),
        sessionid: audit_id(raw.sessionid),
        tty,
        cgroup_id: raw.cgroup_id,
        comm: text(&raw.comm),
        filename: text(&raw.filename[..filename_len]),
        argv,
        ancestry,
        ktime: raw.header.ktime,
        executable: (raw.dev, raw.ino),
        tracked_root: raw.tracked_root,
        is_package_manager: flags & FLAG_TRACKED_BINARY != 0,
        is_truncated: flags & truncating != 0 || argv_cut,
        is_partial: flags & FLAG_PARTIAL != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::{decode, split_argv, DecodeError, KernelRecord};
    use fenrir_common::{self as common, RecordHeader, RecordKind, ARGS_MAX, AUDIT_UNSET};

    fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
        // SAFETY: test-only view of a plain `#[repr(C)]` record without padding.
        unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>())
        }
        .to_vec()
    }

    fn exec_record() -> common::ExecRecord {
        let mut raw = common::ExecRecord {
            header: RecordHeader {
                kind: RecordKind::Exec as u32,
                flags: common::FLAG_TRACKED_BINARY,
                ktime: 7,
            },
            pid: 10,
            tgid: 10,
            ppid: 9,
            uid: 0,
            euid: 0,
            gid: 0,
            loginuid: 1000,
            sessionid: AUDIT_UNSET,
            tty_index: u32::MAX,
            filename_len: 12,
            argv_len: 0,
            ancestry_len: 1,
            tracked_root: 10,
            ino: 5,
            cgroup_id: 3,
            dev: 1,
            reserved: 0,
            comm: [0; 16],
            tty: [0xff; 64],
            filename: [0; 256],
            argv: [0; 512],
            ancestry: [common::Ancestor::default(); 12],
        };
        raw.comm[..4].copy_from_slice(b"dpkg");
        raw.filename[..12].copy_from_slice(b"/usr/bin/dpk");
        let argv = b"dpkg\0-i\0x.deb\0";
        raw.argv[..argv.len()].copy_from_slice(argv);
        raw.argv_len = argv.len() as u16;
        raw.ancestry[0].pid = 9;
        raw.ancestry[0].loginuid = AUDIT_UNSET;
        raw.ancestry[0].comm[..4].copy_from_slice(b"bash");
        raw
    }

    #[test]
    fn exec_record_decodes_to_owned_fields() {
        let KernelRecord::Exec(exec) = decode(&bytes_of(&exec_record())).expect("decodes") else {
            panic!("wrong kind");
        };

        assert_eq!(exec.comm, "dpkg");
        assert_eq!(exec.filename, "/usr/bin/dpk");
        assert_eq!(exec.argv, ["dpkg", "-i", "x.deb"]);
        assert_eq!(exec.loginuid, Some(1000));
        assert_eq!(exec.sessionid, None);
        assert_eq!(exec.tty, None);
        assert_eq!(exec.ancestry.len(), 1);
        assert_eq!(exec.ancestry[0].comm, "bash");
        assert_eq!(exec.ancestry[0].loginuid, None);
        assert!(exec.is_package_manager);
        assert!(!exec.is_truncated);
    }

    #[test]
    fn oversized_lengths_are_clamped_not_trusted() {
        let mut raw = exec_record();
        raw.filename_len = u16::MAX;
        raw.argv_len = u16::MAX;
        raw.ancestry_len = u32::MAX;
        raw.filename = [b'a'; 256];

        let KernelRecord::Exec(exec) = decode(&bytes_of(&raw)).expect("decodes") else {
            panic!("wrong kind");
        };

        assert_eq!(exec.filename.len(), 256);
        assert_eq!(exec.ancestry.len(), 12);
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        let bytes = bytes_of(&exec_record());

        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err());
        }

        let mut unknown = bytes.clone();
        unknown[0] = 99;
        assert_eq!(decode(&unknown), Err(DecodeError::UnknownKind { code: 99 }));
    }

    #[test]
    fn argv_keeps_at_most_args_max_and_reports_the_cut() {
        let block: Vec<u8> = (0..40)
            .flat_map(|i| format!("a{i}\0").into_bytes())
            .collect();

        let (argv, cut) = split_argv(&block);

        assert_eq!(argv.len(), ARGS_MAX);
        assert!(cut);
        assert_eq!(
            split_argv(b"x\0\xff\0"),
            (vec!["x".into(), "\u{fffd}".into()], false)
        );
    }

    #[test]
    fn exit_status_separates_codes_from_signals() {
        let raw = common::ExitRecord {
            header: RecordHeader {
                kind: RecordKind::Exit as u32,
                flags: 0,
                ktime: 1,
            },
            pid: 4,
            tgid: 4,
            exit_code: 2 << 8,
            reserved: 0,
        };
        let KernelRecord::Exit(exit) = decode(&bytes_of(&raw)).expect("decodes") else {
            panic!("wrong kind");
        };

        assert_eq!(exit.status(), Some(2));
        assert_eq!(
            super::ExitRecord {
                exit_code: 9,
                ..exit
            }
            .status(),
            None
        );
    }
}
