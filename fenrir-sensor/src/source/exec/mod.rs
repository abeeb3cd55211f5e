//! The kernel exec stream: who ran a package manager, and everything it ran.
//!
//! In: the kernel program (`fenrir-ebpf`, embedded at build time), the running kernel's BTF
//! and the package-manager executables on this host. Out: [`KernelRecord`]s — one
//! [`ExecRecord`] per exec of a package manager or of any of its descendants (maintainer
//! scripts and what they run), one [`ExitRecord`] when such a process ends. State: the attached
//! programs and their maps, held by [`ExecTracer`].
//!
//! The kernel does the filtering: other execs cost one hash lookup there and never reach
//! userspace. When the program cannot load (no privilege, no BPF, a build without the object)
//! [`ExecTracer::load`] returns a [`LoadError`] and the sensor runs without attribution.

pub mod btf;
pub mod loader;
pub mod record;

pub use btf::{BtfError, KernelBtf};
pub use loader::{
    default_executables, executable_key, ExecTracer, LoadError, ProgramStats, TracerConfig,
    TrackedExecutable,
};
pub use record::{decode, Ancestor, DecodeError, ExecRecord, ExitRecord, KernelRecord};
