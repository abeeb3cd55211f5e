//! A small reader of the kernel's BTF: where the fields the exec program reads live.
//!
//! In: the raw BTF blob (`/sys/kernel/btf/vmlinux`); out: byte offsets of struct members and
//! the [`KernelOffsets`] the kernel program is loaded with. State: the parsed type table.
//!
//! Rust eBPF programs have no CO-RE relocations, so the loader resolves every offset here,
//! against the running kernel, and passes them in as a global.

use std::path::Path;

use fenrir_common::KernelOffsets;

/// Where the running kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_LEN: usize = 12;
const KIND_INT: u8 = 1;
const KIND_ARRAY: u8 = 3;
const KIND_STRUCT: u8 = 4;
const KIND_UNION: u8 = 5;
const KIND_ENUM: u8 = 6;
const KIND_TYPEDEF: u8 = 8;
const KIND_VOLATILE: u8 = 9;
const KIND_CONST: u8 = 10;
const KIND_RESTRICT: u8 = 11;
const KIND_FUNC_PROTO: u8 = 13;
const KIND_VAR: u8 = 14;
const KIND_DATASEC: u8 = 15;
const KIND_DECL_TAG: u8 = 17;
const KIND_TYPE_TAG: u8 = 18;
const KIND_ENUM64: u8 = 19;
const KIND_MAX: u8 = 19;

/// Anonymous members nest a few levels at most in real kernels; the bound stops cycles in a
/// corrupt blob.
const MAX_NESTING: usize = 8;

/// Why the kernel's BTF could not give an offset.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("failed to read kernel btf {path}")]
    Read {
        /// The file.
        path: String,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// The blob is not little-endian BTF or its header points outside it.
    #[error("invalid btf header: {reason}")]
    Header {
        /// What is wrong.
        reason: &'static str,
    },
    /// A type record runs past the type section or has an unknown kind.
    #[error("invalid btf type {type_id}: {reason}")]
    Type {
        /// Id of the broken type.
        type_id: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// No struct of that name exists.
    #[error("kernel btf has no struct {name}")]
    MissingStruct {
        /// The struct name.
        name: String,
    },
    /// The struct exists but has no such member (at any anonymous nesting level).
    #[error("kernel btf has no member {member} in struct {name}")]
    MissingMember {
        /// The struct name.
        name: String,
        /// The member name.
        member: String,
    },
    /// The member is a bitfield that does not start on a byte.
    #[error("member {member} of struct {name} is not byte aligned")]
    Unaligned {
        /// The struct name.
        name: String,
        /// The member name.
        member: String,
    },
}

#[derive(Debug, Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Debug)]
struct Type {
    kind: u8,
    name_off: u32,
    /// For modifiers and typedefs: the type they refer to.
    referent: u32,
    /// For structs and unions: `(first, count)` in `KernelBtf::members`.
    members: (usize, usize),
}

/// Parsed type table of one BTF blob.
#[derive(Debug)]
pub struct KernelBtf {
    /// Index 0 is `void`, as in BTF.
    types: Vec<Type>,
    members: Vec<Member>,
    strings: Vec<u8>,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let slice = bytes.get(at..at.checked_add(4)?)?;

    Some(u32::from_le_bytes(slice.try_into().ok()?))
}

fn header_field(bytes: &[u8], at: usize) -> Result<usize, BtfError> {
    u32_at(bytes, at)
        .map(|value| value as usize)
        .ok_or(BtfError::Header {
            reason: "truncated header",
        })
}

impl KernelBtf {
    /// Reads and parses the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// Reads and parses a BTF file.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;

        Self::parse(&bytes)
    }

    /// Parses a raw little-endian BTF blob.
    pub fn parse(bytes: &[u8]) -> Result<Self, BtfError> {
        let magic = bytes.get(..2).map(|m| u16::from_le_bytes([m[0], m[1]]));
        if magic != Some(MAGIC) {
            return Err(BtfError::Header {
                reason: "bad magic or big-endian blob",
            });
        }

        let header_len = header_field(bytes, 4)?;
        let type_off = header_field(bytes, 8)?;
        let type_len = header_field(bytes, 12)?;
        let str_off = header_field(bytes, 16)?;
        let str_len = header_field(bytes, 20)?;
        if header_len < HEADER_LEN {
            return Err(BtfError::Header {
                reason: "header shorter than 24 bytes",
            });
        }

        let section = |off: usize, len: usize| {
            let start = header_len.checked_add(off)?;
            bytes.get(start..start.checked_add(len)?)
        };
        let type_section = section(type_off, type_len).ok_or(BtfError::Header {
            reason: "type section outside the blob",
        })?;
        let strings = section(str_off, str_len).ok_or(BtfError::Header {
            reason: "string section outside the blob",
        })?;

        let mut btf = Self {
            types: vec![Type {
                kind: 0,
                name_off: 0,
                referent: 0,
                members: (0, 0),
            }],
            members: Vec::new(),
            strings: strings.to_vec(),
        };
        btf.parse_types(type_section)?;

        Ok(btf)
    }

    fn parse_types(&mut self, section: &[u8]) -> Result<(), BtfError> {
        let mut at = 0;

        while at < section.len() {
            let type_id = u32::try_from(self.types.len()).unwrap_or(u32::MAX);
            let broken = |reason| BtfError::Type { type_id, reason };
            let start = at;
            let field = |offset: usize| u32_at(section, start + offset).ok_or(broken("truncated"));

            let name_off = field(0)?;
            let info = field(4)?;
            let size_or_type = field(8)?;
            let kind = ((info >> 24) & 0x1f) as u8;
            let vlen = (info & 0xffff) as usize;
            let has_bitfields = info >> 31 == 1;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                1..=KIND_MAX => 0,
                _ => return Err(broken("unknown kind")),
            };
            if section.len() < start + TYPE_LEN + extra {
                return Err(broken("runs past the type section"));
            }

            let first = self.members.len();
            if matches!(kind, KIND_STRUCT | KIND_UNION) {
                for index in 0..vlen {
                    let member = TYPE_LEN + index * 12;
                    let raw_offset = field(member + 8)?;
                    self.members.push(Member {
                        name_off: field(member)?,
                        type_id: field(member + 4)?,
                        // With bitfields the top byte holds the field width.
                        bit_offset: if has_bitfields {
                            raw_offset & 0x00ff_ffff
                        } else {
                            raw_offset
                        },
                    });
                }
            }

            self.types.push(Type {
                kind,
                name_off,
                referent: size_or_type,
                members: (first, self.members.len() - first),
            });
            at = start + TYPE_LEN + extra;
        }

        Ok(())
    }

    fn name(&self, name_off: u32) -> &[u8] {
        let tail = self.strings.get(name_off as usize..).unwrap_or_default();
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());

        &tail[..end]
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut type_id: u32) -> Option<&Type> {
        for _ in 0..MAX_NESTING * 4 {
            let ty = self.types.get(type_id as usize)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    type_id = ty.referent;
                }
                _ => return Some(ty),
            }
        }

        None
    }

    fn member_bits(&self, ty: &Type, member: &[u8], depth: usize) -> Option<u32> {
        let (first, count) = ty.members;

        for candidate in self.members.get(first..first + count)? {
            if candidate.name_off != 0 && self.name(candidate.name_off) == member {
                return Some(candidate.bit_offset);
            }

            // Anonymous structs and unions put their members in the enclosing scope.
            if candidate.name_off == 0 && depth < MAX_NESTING {
                let inner = self.resolve(candidate.type_id)?;
                if matches!(inner.kind, KIND_STRUCT | KIND_UNION) {
                    if let Some(bits) = self.member_bits(inner, member, depth + 1) {
                        return Some(candidate.bit_offset + bits);
                    }
                }
            }
        }

        None
    }

    /// Returns the byte offset of `member` in `struct name`, looking through anonymous
    /// structs and unions.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let ty = self
            .types
            .iter()
            .find(|ty| {
                ty.kind == KIND_STRUCT
                    && ty.members.1 > 0
                    && self.name(ty.name_off) == name.as_bytes()
            })
            .ok_or_else(|| BtfError::MissingStruct {
                name: name.to_owned(),
            })?;

        let bits =
            self.member_bits(ty, member.as_bytes(), 0)
                .ok_or_else(|| BtfError::MissingMember {
                    name: name.to_owned(),
                    member: member.to_owned(),
                })?;
        if bits % 8 != 0 {
            return Err(BtfError::Unaligned {
                name: name.to_owned(),
                member: member.to_owned(),
            });
        }

        Ok(bits / 8)
    }

    /// Resolves every offset the kernel program reads.
    ///
    /// # Errors
    ///
    /// [`BtfError::MissingMember`] when the kernel lacks a field, for example
    /// `task_struct.loginuid` on a kernel built without `CONFIG_AUDIT`.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        // TODO: a kernel without CONFIG_AUDIT has no loginuid/sessionid and the tracer then
        // does not load at all; it should load with those two fields reported as absent.
        let at = |name: &str, member: &str| self.member_offset(name, member);

        Ok(KernelOffsets {
            task_pid: at("task_struct", "pid")?,
            task_tgid: at("task_struct", "tgid")?,
            task_real_parent: at("task_struct", "real_parent")?,
            task_cred: at("task_struct", "cred")?,
            task_comm: at("task_struct", "comm")?,
            task_loginuid: at("task_struct", "loginuid")?,
            task_sessionid: at("task_struct", "sessionid")?,
            task_signal: at("task_struct", "signal")?,
            task_mm: at("task_struct", "mm")?,
            task_exit_code: at("task_struct", "exit_code")?,
            cred_uid: at("cred", "uid")?,
            cred_euid: at("cred", "euid")?,
            cred_gid: at("cred", "gid")?,
            signal_tty: at("signal_struct", "tty")?,
            signal_live: at("signal_struct", "live")?,
            tty_index: at("tty_struct", "index")?,
            tty_name: at("tty_struct", "name")?,
            binprm_file: at("linux_binprm", "file")?,
            binprm_filename: at("linux_binprm", "filename")?,
            file_inode: at("file", "f_inode")?,
            inode_ino: at("inode", "i_ino")?,
            inode_sb: at("inode", "i_sb")?,
            sb_dev: at("super_block", "s_dev")?,
            mm_arg_start: at("mm_struct", "arg_start")?,
            mm_arg_end: at("mm_struct", "arg_end")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{BtfError, KernelBtf, KIND_INT, KIND_STRUCT, KIND_UNION, MAGIC};

    /// Builds a BTF blob: `struct outer { int a; union { int b; int c; }; int d; }` with the
    /// union at byte 8 and `d` at byte 16.
    fn sample_blob() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0d\0";
        let name = |s: &str| {
            let needle = format!("\0{s}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .map(|p| p as u32 + 1)
                .expect("test string is present")
        };
        let mut types = Vec::new();
        let mut push = |values: &[u32]| {
            for v in values {
                types.extend_from_slice(&v.to_le_bytes());
            }
        };
        let info = |kind: u8, vlen: u32| (u32::from(kind) << 24) | vlen;

        // 1: int
        push(&[name("int"), info(KIND_INT, 0), 4, 32]);
        // 2: anonymous union { int b; int c; }
        push(&[0, info(KIND_UNION, 2), 4]);
        push(&[name("b"), 1, 0, name("c"), 1, 0]);
        // 3: struct outer
        push(&[name("outer"), info(KIND_STRUCT, 3), 20]);
        push(&[name("a"), 1, 0, 0, 2, 64, name("d"), 1, 128]);

        let mut blob = Vec::new();
        blob.extend_from_slice(&MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for v in [
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&v.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(strings);
        blob
    }

    #[test]
    fn members_of_anonymous_unions_are_found_at_their_total_offset() {
        let btf = KernelBtf::parse(&sample_blob()).expect("sample parses");

        assert_eq!(btf.member_offset("outer", "a").expect("a"), 0);
        assert_eq!(btf.member_offset("outer", "b").expect("b"), 8);
        assert_eq!(btf.member_offset("outer", "c").expect("c"), 8);
        assert_eq!(btf.member_offset("outer", "d").expect("d"), 16);
    }

    #[test]
    fn missing_struct_and_member_are_named() {
        let btf = KernelBtf::parse(&sample_blob()).expect("sample parses");

        assert!(matches!(
            btf.member_offset("inner", "a"),
            Err(BtfError::MissingStruct { name }) if name == "inner"
        ));
        assert!(matches!(
            btf.member_offset("outer", "e"),
            Err(BtfError::MissingMember { member, .. }) if member == "e"
        ));
    }

    #[test]
    fn truncated_and_garbage_blobs_are_errors_not_panics() {
        let blob = sample_blob();

        for len in 0..blob.len() {
            let _ = KernelBtf::parse(&blob[..len]);
        }
        for seed in 0..2000u32 {
            let mut mutated = blob.clone();
            let at = (seed as usize * 7919) % mutated.len();
            mutated[at] ^= (seed % 255 + 1) as u8;
            if let Ok(btf) = KernelBtf::parse(&mutated) {
                let _ = btf.member_offset("outer", "d");
            }
        }
        assert!(matches!(
            KernelBtf::parse(b"garbage"),
            Err(BtfError::Header { .. })
        ));
    }

    #[test]
    fn running_kernel_btf_gives_every_offset() {
        let Ok(btf) = KernelBtf::from_sys_fs() else {
            println!("skipping: no readable /sys/kernel/btf/vmlinux");
            return;
        };

        let offsets = btf
            .kernel_offsets()
            .expect("every field exists in this kernel");

        // Two fields whose order is fixed by the C declaration order in every kernel.
        assert!(offsets.task_tgid == offsets.task_pid + 4);
        assert!(offsets.mm_arg_end == offsets.mm_arg_start + 8);
    }
}
