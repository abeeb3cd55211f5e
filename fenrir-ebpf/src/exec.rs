//! The exec hook: records execs of package managers and of their descendants.
//!
//! In: `sched_process_exec` (task, old pid, `linux_binprm`); `TRACKED_EXES`,
//! `TRACKED_SCRIPTS`, `TRACKED_TGIDS`.
//! Out: one [`ExecRecord`] per exec of a tracked binary or by a tracked thread group.
//! State: an exec of a tracked binary adds its thread group to `TRACKED_TGIDS`.

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_ns,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use aya_log_ebpf::debug;
use fenrir_common::{
    Ancestor, ExecRecord, RecordHeader, RecordKind, ANCESTRY_MAX, ARGV_LEN, AUDIT_UNSET,
    EXE_PACKAGE_MANAGER, EXE_SCRIPT_INTERPRETER, FILENAME_LEN, FLAG_ANCESTRY_TRUNCATED,
    FLAG_ARGV_TRUNCATED, FLAG_FILENAME_TRUNCATED, FLAG_PARTIAL, FLAG_TRACKED_BINARY,
    SCRIPT_PATH_LEN,
};

use crate::{
    count_drop,
    kernel::{executable_key, offset, read, read_pointer, read_str, read_user_bytes, ReadError},
    submit_flags, EVENTS, SCRIPT_SCRATCH, TRACKED_EXES, TRACKED_SCRIPTS, TRACKED_TGIDS,
};

/// Runs after a successful exec, in the context of the task that exec'd.
///
/// Tracepoint: `tp_btf/sched_process_exec`. Minimum kernel: 5.8 (BTF tracepoints need 5.5, the
/// ring buffer 5.8).
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    match try_sched_process_exec(&ctx) {
        Ok(()) => 0,
        Err(error) => {
            // Only failures to read the exec'd file's identity get here: rare, and worth
            // knowing about because such an exec goes unfiltered.
            debug!(
                &ctx,
                "exec not classified: kernel read failed with {}", error
            );
            0
        }
    }
}

fn try_sched_process_exec(ctx: &BtfTracePointContext) -> Result<(), ReadError> {
    let task: *const u8 = ctx.arg(0);
    let bprm: *const u8 = ctx.arg(2);
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;

    let file = read_pointer(bprm, offset!(binprm_file))?;
    let key = executable_key(file)?;
    let exe_flags = match TRACKED_EXES.get_ptr(key) {
        // SAFETY: the pointer comes from a successful lookup and the value is a plain u32.
        Some(flags) => unsafe { *flags },
        None => 0,
    };
    let is_tracked_binary = exe_flags & EXE_PACKAGE_MANAGER != 0
        || (exe_flags & EXE_SCRIPT_INTERPRETER != 0 && is_tracked_script(bprm));

    // The common case, an exec outside any package-manager run, ends here.
    let root = match TRACKED_TGIDS.get_ptr(tgid) {
        // SAFETY: the pointer comes from a successful lookup and the value is a plain u32.
        Some(root) => unsafe { *root },
        None if is_tracked_binary => {
            // A failed insert only loses the descendants; the record below is still sent.
            let _ = TRACKED_TGIDS.insert(tgid, tgid, 0);
            tgid
        }
        None => return Ok(()),
    };

    let Some(mut entry) = EVENTS.reserve::<ExecRecord>(0) else {
        count_drop();
        return Ok(());
    };

    // SAFETY: the reserved entry is exclusively ours until submit; every field userspace reads
    // is written below (byte arrays are read only up to the lengths written with them).
    let record = unsafe { &mut *entry.as_mut_ptr() };
    let mut flags = if is_tracked_binary {
        FLAG_TRACKED_BINARY
    } else {
        0
    };

    record.pid = pid_tgid as u32;
    record.tgid = tgid;
    record.tracked_root = root;
    record.dev = key.dev;
    record.ino = key.ino;
    record.reserved = 0;
    // SAFETY: plain helper without arguments, allowed in tracing programs.
    record.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    record.comm = bpf_get_current_comm().unwrap_or_default();

    if fill_task(record, task).is_err() {
        flags |= FLAG_PARTIAL;
    }

    record.filename_len = if let Ok(filename) = read_pointer(bprm, offset!(binprm_filename)) {
        read_str(filename, &mut record.filename) as u16
    } else {
        flags |= FLAG_PARTIAL;
        0
    };
    if usize::from(record.filename_len) + 1 >= FILENAME_LEN {
        flags |= FLAG_FILENAME_TRUNCATED;
    }

    match fill_argv(record, task) {
        Ok(true) => flags |= FLAG_ARGV_TRUNCATED,
        Ok(false) => {}
        Err(_) => flags |= FLAG_PARTIAL,
    }

    if fill_ancestry(record, task) {
        flags |= FLAG_ANCESTRY_TRUNCATED;
    }

    record.header = RecordHeader {
        kind: RecordKind::Exec as u32,
        flags,
        // SAFETY: plain helper without arguments.
        ktime: unsafe { bpf_ktime_get_ns() },
    };

    // Descendants come in bursts (maintainer scripts): userspace drains them with the next
    // package-manager record or its periodic poll instead of being woken for each.
    entry.submit(submit_flags(is_tracked_binary));

    Ok(())
}

/// Returns whether the path being exec'd is a tracked package-manager script.
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "passing the key by value would copy its 128 bytes onto the stack"
)]
fn is_tracked_script(bprm: *const u8) -> bool {
    let Some(scratch) = SCRIPT_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot, used by no other program run while this one runs.
    let scratch = unsafe { &mut *scratch };

    // TODO: a script started by a relative path (`./unattended-upgrade`) or as an argument
    // (`python3 /usr/bin/unattended-upgrade`) is not recognised here; its run is then only
    // seen from the dpkg or apt binaries it starts.

    // The key compares all 128 bytes: clear what the previous exec on this CPU left.
    scratch.bytes = [0; SCRIPT_PATH_LEN];
    let Ok(filename) = read_pointer(bprm, offset!(binprm_filename)) else {
        return false;
    };
    read_str(filename, &mut scratch.bytes);

    TRACKED_SCRIPTS.get_ptr(&*scratch).is_some()
}

/// Fills identity, credentials, audit and terminal fields from the task.
fn fill_task(record: &mut ExecRecord, task: *const u8) -> Result<(), ReadError> {
    record.ppid = 0;
    record.uid = AUDIT_UNSET;
    record.euid = AUDIT_UNSET;
    record.gid = AUDIT_UNSET;
    record.tty_index = u32::MAX;
    record.tty[0] = 0;

    record.loginuid = read::<u32>(task, offset!(task_loginuid)).unwrap_or(AUDIT_UNSET);
    record.sessionid = read::<u32>(task, offset!(task_sessionid)).unwrap_or(AUDIT_UNSET);

    let parent = read_pointer(task, offset!(task_real_parent))?;
    record.ppid = read::<u32>(parent, offset!(task_tgid))?;

    let cred = read_pointer(task, offset!(task_cred))?;
    record.uid = read::<u32>(cred, offset!(cred_uid))?;
    record.euid = read::<u32>(cred, offset!(cred_euid))?;
    record.gid = read::<u32>(cred, offset!(cred_gid))?;

    // No controlling terminal (daemons, cron, systemd units) is the normal case, not a failure.
    let signal = read_pointer(task, offset!(task_signal))?;
    if let Ok(tty) = read_pointer(signal, offset!(signal_tty)) {
        record.tty_index = read::<u32>(tty, offset!(tty_index))?;
        read_str(
            tty.wrapping_add(offset!(tty_name) as usize),
            &mut record.tty,
        );
    }

    Ok(())
}

/// Copies the argument block of the new program; returns whether it was cut.
fn fill_argv(record: &mut ExecRecord, task: *const u8) -> Result<bool, ReadError> {
    record.argv_len = 0;

    let mm = read_pointer(task, offset!(task_mm))?;
    let start = read::<u64>(mm, offset!(mm_arg_start))?;
    let end = read::<u64>(mm, offset!(mm_arg_end))?;
    let len = end.saturating_sub(start);

    record.argv_len = read_user_bytes(start, len, &mut record.argv)? as u16;

    Ok(len > ARGV_LEN as u64)
}

/// Walks `real_parent` up to init, to the first ancestor outside the task's audit session
/// (kept: it is the login that opened the session), or [`ANCESTRY_MAX`] levels.
///
/// Returns whether the walk stopped at the level bound.
fn fill_ancestry(record: &mut ExecRecord, task: *const u8) -> bool {
    let session = record.sessionid;
    let mut current = task;
    let mut depth = 0;

    record.ancestry_len = 0;

    for slot in &mut record.ancestry {
        let Ok(parent) = read_pointer(current, offset!(task_real_parent)) else {
            return false;
        };
        if parent == current {
            return false;
        }

        let Ok(sessionid) = fill_ancestor(slot, parent) else {
            return false;
        };
        depth += 1;
        record.ancestry_len = depth;

        if slot.pid <= 1 || (session != AUDIT_UNSET && sessionid != session) {
            return false;
        }

        current = parent;
    }

    depth as usize == ANCESTRY_MAX
}

/// Fills one ancestor; returns its audit session id.
fn fill_ancestor(slot: &mut Ancestor, task: *const u8) -> Result<u32, ReadError> {
    slot.pid = read::<u32>(task, offset!(task_tgid))?;
    slot.reserved = 0;
    slot.loginuid = read::<u32>(task, offset!(task_loginuid)).unwrap_or(AUDIT_UNSET);
    slot.uid = match read_pointer(task, offset!(task_cred)) {
        Ok(cred) => read::<u32>(cred, offset!(cred_uid)).unwrap_or(AUDIT_UNSET),
        Err(_) => AUDIT_UNSET,
    };
    slot.comm = read::<[u8; 16]>(task, offset!(task_comm)).unwrap_or_default();

    Ok(read::<u32>(task, offset!(task_sessionid)).unwrap_or(AUDIT_UNSET))
}
