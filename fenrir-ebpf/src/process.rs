//! Fork and exit hooks: keep `TRACKED_TGIDS` equal to the live processes of package-manager
//! runs and report how each one ended.
//!
//! In: `sched_process_fork` (parent, child) and `sched_process_exit` (task).
//! Out: an [`ExitRecord`] when the last thread of a tracked thread group exits.
//! State: adds forked children of tracked groups to `TRACKED_TGIDS`, removes dead groups.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use fenrir_common::{ExitRecord, RecordHeader, RecordKind};

use crate::{
    count_drop,
    kernel::{offset, read, read_pointer, ReadError},
    submit_flags, EVENTS, TRACKED_TGIDS,
};

/// Runs in the parent after a fork or clone created `child`.
///
/// Tracepoint: `tp_btf/sched_process_fork`. Minimum kernel: 5.5 (BTF tracepoints).
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    // A child the program failed to track only loses its own later execs; nothing to report.
    let _ = try_sched_process_fork(&ctx);
    0
}

fn try_sched_process_fork(ctx: &BtfTracePointContext) -> Result<(), ReadError> {
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;

    let Some(root) = TRACKED_TGIDS.get_ptr(parent_tgid) else {
        return Ok(());
    };
    // SAFETY: the pointer comes from a successful lookup and the value is a plain u32.
    let root = unsafe { *root };

    let child: *const u8 = ctx.arg(1);
    let child_tgid = read::<u32>(child, offset!(task_tgid))?;

    // A new thread joins a group that is tracked already.
    if child_tgid != parent_tgid {
        TRACKED_TGIDS
            .insert(child_tgid, root, 0)
            .map_err(i64::from)?;
    }

    Ok(())
}

/// Runs in each exiting task, after its signal struct counted it out.
///
/// Tracepoint: `tp_btf/sched_process_exit`. Minimum kernel: 5.8 (BTF tracepoints need 5.5,
/// the ring buffer 5.8).
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sched_process_exit(&ctx);
    0
}

fn try_sched_process_exit(ctx: &BtfTracePointContext) -> Result<(), ReadError> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;

    let Some(root) = TRACKED_TGIDS.get_ptr(tgid) else {
        return Ok(());
    };
    // SAFETY: the pointer comes from a successful lookup and the value is a plain u32.
    let root = unsafe { *root };

    // `do_exit` decrements `signal->live` before this tracepoint: zero means this is the last
    // thread of the group, whichever thread that is.
    let task: *const u8 = ctx.arg(0);
    let signal = read_pointer(task, offset!(task_signal))?;
    let live = read::<i32>(signal, offset!(signal_live))?;
    if live != 0 {
        return Ok(());
    }

    let _ = TRACKED_TGIDS.remove(tgid);

    let Some(mut entry) = EVENTS.reserve::<ExitRecord>(0) else {
        count_drop();
        return Ok(());
    };

    let exit_code = read::<u32>(task, offset!(task_exit_code)).unwrap_or(u32::MAX);
    entry.write(ExitRecord {
        header: RecordHeader {
            kind: RecordKind::Exit as u32,
            flags: 0,
            // SAFETY: plain helper without arguments.
            ktime: unsafe { bpf_ktime_get_ns() },
        },
        pid: pid_tgid as u32,
        tgid,
        exit_code,
        reserved: 0,
    });

    // The end of a package-manager run is worth a wake-up; its children's ends are not.
    entry.submit(submit_flags(root == tgid));

    Ok(())
}
