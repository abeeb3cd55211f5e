//! Reads of kernel memory at offsets userspace found in the running kernel's BTF.
//!
//! In: pointers to kernel structures and the `OFFSETS` global; out: field values. No state.
#![expect(
    clippy::inline_always,
    reason = "each reader is a helper call and a check; a BPF-to-BPF call would cost more"
)]

use aya_ebpf::helpers::generated::{
    bpf_probe_read_kernel, bpf_probe_read_kernel_str, bpf_probe_read_user,
};
use core::{ffi::c_void, mem::MaybeUninit};
use fenrir_common::ExecutableKey;

/// Error of a failed kernel read: the negative errno the helper returned.
pub type ReadError = i64;

/// Reads one field of the `OFFSETS` global.
///
/// The read is volatile: a plain one would let the compiler fold in the default value, but
/// the loader rewrites the global after compilation.
macro_rules! offset {
    ($field:ident) => {
        // SAFETY: the pointer is to a field of a static, valid and aligned for the whole run.
        unsafe { ::core::ptr::read_volatile(::core::ptr::addr_of!($crate::OFFSETS.$field)) }
    };
}
pub(crate) use offset;

/// Reads a `T` at `offset` bytes past `base` in kernel memory.
#[inline(always)]
pub fn read<T: Copy>(base: *const u8, offset: u32) -> Result<T, ReadError> {
    let mut value = MaybeUninit::<T>::uninit();

    // SAFETY: the helper writes at most `size_of::<T>()` bytes into `value` and reports
    // failure (leaving it unread) for any address it cannot read.
    let ret = unsafe {
        bpf_probe_read_kernel(
            value.as_mut_ptr().cast::<c_void>(),
            size_of::<T>() as u32,
            base.wrapping_add(offset as usize).cast::<c_void>(),
        )
    };

    if ret < 0 {
        return Err(ret);
    }

    // SAFETY: the helper succeeded, so all `size_of::<T>()` bytes were written.
    Ok(unsafe { value.assume_init() })
}

/// Reads a pointer field, failing on NULL so callers never follow it.
#[inline(always)]
pub fn read_pointer(base: *const u8, offset: u32) -> Result<*const u8, ReadError> {
    let pointer = read::<*const u8>(base, offset)?;

    if pointer.is_null() {
        return Err(-14);
    }

    Ok(pointer)
}

/// Copies a NUL-terminated kernel string into `dest`, returning the bytes used without the
/// NUL (0 on failure, with `dest[0]` set to NUL).
#[inline(always)]
pub fn read_str<const N: usize>(source: *const u8, dest: &mut [u8; N]) -> usize {
    // SAFETY: the helper writes at most `N` bytes into `dest`, always NUL-terminated.
    let ret =
        unsafe { bpf_probe_read_kernel_str(dest.as_mut_ptr().cast(), N as u32, source.cast()) };

    match usize::try_from(ret) {
        Ok(with_nul) if with_nul > 0 => (with_nul - 1).min(N),
        _ => {
            dest[0] = 0;
            0
        }
    }
}

/// Copies `len` bytes (clamped to `N`) of user memory at `source` into `dest`.
#[inline(always)]
pub fn read_user_bytes<const N: usize>(
    source: u64,
    len: u64,
    dest: &mut [u8; N],
) -> Result<usize, ReadError> {
    let len = if len > N as u64 { N as u64 } else { len };

    if len == 0 {
        return Ok(0);
    }

    // SAFETY: `len` is at most `N`, the size of `dest`; the helper reports unreadable memory.
    let ret = unsafe {
        bpf_probe_read_user(
            dest.as_mut_ptr().cast(),
            len as u32,
            source as *const c_void,
        )
    };

    if ret < 0 {
        return Err(ret);
    }

    Ok(len as usize)
}

/// Returns the (device, inode) identity of an open `struct file`.
#[inline(always)]
pub fn executable_key(file: *const u8) -> Result<ExecutableKey, ReadError> {
    let inode = read_pointer(file, offset!(file_inode))?;
    let ino = read::<u64>(inode, offset!(inode_ino))?;
    let super_block = read_pointer(inode, offset!(inode_sb))?;
    let dev = read::<u32>(super_block, offset!(sb_dev))?;

    Ok(ExecutableKey {
        dev,
        reserved: 0,
        ino,
    })
}
