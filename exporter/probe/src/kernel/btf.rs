//! The running kernel's BTF: function and tracepoint prototypes, and struct member offsets for
//! `argN->member` keys (Rust BPF code has no CO-RE relocations, so offsets are resolved here
//! and written into the slot config).
//!
//! Read in place: the file's bytes, an offset per type id and a name index sorted by name —
//! about 1.3 times the file (5.5 MB of BTF: ~8 MB), where a parsed type graph costs tens of
//! times the file. Every query walks the raw records (`Documentation/bpf/btf.rst`).
//! [`KernelBtf::attach_blob`] gives aya a BTF with the same type ids that keeps only the
//! attach targets' names, so aya's own parse of it stays small too.

use std::{cmp::Ordering, ops::Range, path::Path};

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;

/// A BTF blob from its type section (as words) and string section: the header, then both.
pub(crate) fn assemble(types: &[u32], strings: &[u8]) -> Vec<u8> {
    let type_len = (types.len() * 4) as u32;
    let mut out = Vec::with_capacity(HEADER_LEN + type_len as usize + strings.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&[1, 0]);
    for w in [HEADER_LEN as u32, 0, type_len, type_len, strings.len() as u32] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    for w in types {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(strings);
    out
}

pub(crate) const KIND_INT: u32 = 1;
pub(crate) const KIND_PTR: u32 = 2;
pub(crate) const KIND_ARRAY: u32 = 3;
pub(crate) const KIND_STRUCT: u32 = 4;
pub(crate) const KIND_UNION: u32 = 5;
pub(crate) const KIND_ENUM: u32 = 6;
pub(crate) const KIND_FWD: u32 = 7;
pub(crate) const KIND_TYPEDEF: u32 = 8;
pub(crate) const KIND_VOLATILE: u32 = 9;
pub(crate) const KIND_CONST: u32 = 10;
pub(crate) const KIND_RESTRICT: u32 = 11;
pub(crate) const KIND_FUNC: u32 = 12;
pub(crate) const KIND_FUNC_PROTO: u32 = 13;
pub(crate) const KIND_VAR: u32 = 14;
pub(crate) const KIND_DATASEC: u32 = 15;
pub(crate) const KIND_FLOAT: u32 = 16;
pub(crate) const KIND_DECL_TAG: u32 = 17;
pub(crate) const KIND_TYPE_TAG: u32 = 18;
pub(crate) const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read BTF from {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid BTF: {why}")]
    Invalid { path: String, why: String },
    #[error("`{0}` is not a function in the kernel's BTF")]
    NoFunction(String),
    #[error("no tracepoint `{0}` in the kernel's BTF (no btf_trace_{0} typedef)")]
    NoTracepoint(String),
    #[error("no `struct {0}` in the kernel's BTF")]
    NoStruct(String),
    #[error("{what} is not a pointer to a struct (it is {ty}); cast it: (struct NAME *){what}->member")]
    NotStructPointer { what: String, ty: String },
    #[error("`struct {st}` has no member `{member}`")]
    NoMember { st: String, member: String },
    #[error("member `{0}` is a bitfield; bitfields cannot be read as keys")]
    Bitfield(String),
    #[error("member `{member}` is {ty} ({size} bytes); a key is read from a 1, 2, 4 or 8-byte integer or pointer")]
    BadSize { member: String, ty: String, size: usize },
}

/// Where a dereferenced value sits: `offset` bytes into the pointee, `size` bytes wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberLoc {
    pub offset: u32,
    pub size: u8,
}

/// A type of the kernel's BTF, by id (0 is `void`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeId(u32);

/// One type record, borrowed from the blob.
#[derive(Clone, Copy)]
pub(crate) struct Rec<'a> {
    pub name_off: u32,
    pub info: u32,
    pub size_type: u32,
    /// The kind-specific words after the three header words.
    pub extra: &'a [u8],
}

impl Rec<'_> {
    pub fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }

    pub fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }

    pub fn kind_flag(&self) -> bool {
        self.info >> 31 != 0
    }

    /// Word `i` of the kind-specific data.
    pub fn word(&self, i: usize) -> u32 {
        self.extra.get(4 * i..4 * i + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Words of kind-specific data after a record's header, or None for an unknown kind.
pub(crate) fn extra_words(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 1,
        KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_FUNC | KIND_FLOAT
        | KIND_TYPE_TAG => 0,
        KIND_ARRAY => 3,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 3 * vlen,
        KIND_ENUM | KIND_FUNC_PROTO => 2 * vlen,
        _ => return None,
    })
}

/// Raw BTF, indexed: the blob, where each type's record starts, and the named types sorted by
/// name. Shared by [`KernelBtf`] and the fixture slicer (`btf_slice`).
pub(crate) struct RawBtf {
    bytes: Vec<u8>,
    types: Range<usize>,
    strings: Range<usize>,
    /// Start of type id `i + 1`'s record within `types`.
    offsets: Vec<u32>,
    /// (name offset, type id) of every named type, sorted by name.
    by_name: Vec<(u32, u32)>,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

impl RawBtf {
    /// Index `bytes` (a little-endian BTF blob, as every x86 and arm64 kernel writes).
    pub fn parse(bytes: Vec<u8>) -> Result<RawBtf, String> {
        if bytes.len() < HEADER_LEN || u16::from_le_bytes([bytes[0], bytes[1]]) != MAGIC {
            return Err("bad magic or header".into());
        }
        let word = |i: usize| u32_at(&bytes, 4 + 4 * i).map(|w| w as usize).ok_or("short header");
        let hdr_len = word(0)?;
        let (type_off, type_len, str_off, str_len) = (word(1)?, word(2)?, word(3)?, word(4)?);
        let types = hdr_len + type_off..hdr_len + type_off + type_len;
        let strings = hdr_len + str_off..hdr_len + str_off + str_len;
        if types.end > bytes.len() || strings.end > bytes.len() {
            return Err("type or string section past the end".into());
        }
        let mut offsets = Vec::with_capacity(type_len / 16);
        let mut by_name = Vec::new();
        let tb = &bytes[types.clone()];
        let mut off = 0;
        while off < tb.len() {
            let id = offsets.len() as u32 + 1;
            let (Some(name_off), Some(info)) = (u32_at(tb, off), u32_at(tb, off + 4)) else {
                return Err(format!("type section truncated at type {id}"));
            };
            let kind = (info >> 24) & 0x1f;
            let words = extra_words(kind, (info & 0xffff) as usize)
                .ok_or_else(|| format!("type {id} has unknown kind {kind}"))?;
            let len = 12 + 4 * words;
            if off + len > tb.len() {
                return Err(format!("type section truncated at type {id}"));
            }
            if name_off as usize >= str_len {
                return Err(format!("type {id} names string {name_off}, past the string section"));
            }
            offsets.push(off as u32);
            if name_off != 0 {
                by_name.push((name_off, id));
            }
            off += len;
        }
        let mut raw = RawBtf { bytes, types, strings, offsets, by_name: Vec::new() };
        by_name.sort_unstable_by(|a, b| raw.str_at(a.0).cmp(raw.str_at(b.0)).then(a.1.cmp(&b.1)));
        raw.by_name = by_name;
        Ok(raw)
    }

    /// Number of types, `void` not counted (ids run from 1 to this).
    pub fn len(&self) -> u32 {
        self.offsets.len() as u32
    }

    pub fn get(&self, id: u32) -> Option<Rec<'_>> {
        let off = *self.offsets.get((id as usize).checked_sub(1)?)? as usize;
        let tb = &self.bytes[self.types.clone()];
        let info = u32_at(tb, off + 4)?;
        let words = extra_words((info >> 24) & 0x1f, (info & 0xffff) as usize)?;
        Some(Rec {
            name_off: u32_at(tb, off)?,
            info,
            size_type: u32_at(tb, off + 8)?,
            extra: tb.get(off + 12..off + 12 + 4 * words)?,
        })
    }

    /// The string at `off` of the string section ("" when it is not valid UTF-8).
    pub fn str_at(&self, off: u32) -> &str {
        let s = &self.bytes[self.strings.clone()];
        let start = (off as usize).min(s.len());
        let end = s[start..].iter().position(|&b| b == 0).map_or(s.len(), |n| start + n);
        std::str::from_utf8(&s[start..end]).unwrap_or_default()
    }

    pub fn name(&self, r: &Rec<'_>) -> &str {
        self.str_at(r.name_off)
    }

    /// Ids of the types named `name`, in id order.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = u32> + 'a {
        let start = self.by_name.partition_point(|&(off, _)| self.str_at(off).cmp(name) == Ordering::Less);
        self.by_name[start..].iter().take_while(move |&&(off, _)| self.str_at(off) == name).map(|&(_, id)| id)
    }

    /// Ids of the types named `name` of kind `kind`.
    pub fn named_kind<'a>(&'a self, name: &'a str, kind: u32) -> impl Iterator<Item = u32> + 'a {
        self.named(name).filter(move |&id| self.get(id).is_some_and(|r| r.kind() == kind))
    }

    /// The string section.
    pub fn string_section(&self) -> &[u8] {
        &self.bytes[self.strings.clone()]
    }

    /// Bytes the index holds (the blob and its tables), for the memory report.
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + 4 * self.offsets.capacity() + 8 * self.by_name.capacity()
    }
}

/// The kernel's BTF.
pub struct KernelBtf {
    raw: RawBtf,
}

impl std::fmt::Debug for KernelBtf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelBtf").field("types", &self.raw.len()).finish()
    }
}

/// A parameter of a prototype: its name (may be empty) and type.
struct Param {
    name_off: u32,
    ty: u32,
}

impl KernelBtf {
    pub fn load(path: &Path) -> Result<KernelBtf, BtfError> {
        let bytes =
            std::fs::read(path).map_err(|source| BtfError::Read { path: path.display().to_string(), source })?;
        KernelBtf::parse(bytes).map_err(|why| BtfError::Invalid { path: path.display().to_string(), why })
    }

    pub fn parse(bytes: Vec<u8>) -> Result<KernelBtf, String> {
        Ok(KernelBtf { raw: RawBtf::parse(bytes)? })
    }

    /// Memory the parsed BTF holds.
    pub fn heap_bytes(&self) -> usize {
        self.raw.heap_bytes()
    }

    pub fn has_function(&self, name: &str) -> bool {
        self.func_proto(name).is_ok()
    }

    pub fn has_tracepoint(&self, name: &str) -> bool {
        self.tracepoint_proto(name).is_ok()
    }

    fn func_proto(&self, name: &str) -> Result<u32, BtfError> {
        self.raw
            .named_kind(name, KIND_FUNC)
            .filter_map(|id| self.raw.get(id))
            .map(|f| f.size_type)
            .find(|&p| self.raw.get(p).is_some_and(|r| r.kind() == KIND_FUNC_PROTO))
            .ok_or_else(|| BtfError::NoFunction(name.to_string()))
    }

    /// Prototype of a raw/BTF tracepoint: `typedef void (*btf_trace_NAME)(void *, args...)`.
    fn tracepoint_proto(&self, name: &str) -> Result<u32, BtfError> {
        self.raw
            .named_kind(&format!("btf_trace_{name}"), KIND_TYPEDEF)
            .filter_map(|id| {
                let ptr = self.raw.get(self.raw.get(id)?.size_type)?;
                (ptr.kind() == KIND_PTR).then_some(ptr.size_type)
            })
            .find(|&p| self.raw.get(p).is_some_and(|r| r.kind() == KIND_FUNC_PROTO))
            .ok_or_else(|| BtfError::NoTracepoint(name.to_string()))
    }

    fn params(&self, proto: u32) -> Vec<Param> {
        let Some(r) = self.raw.get(proto) else { return Vec::new() };
        (0..r.vlen()).map(|i| Param { name_off: r.word(2 * i), ty: r.word(2 * i + 1) }).collect()
    }

    /// Argument types of a function (fentry, fexit, kprobe).
    pub fn function_args(&self, name: &str) -> Result<Vec<TypeId>, BtfError> {
        Ok(self.params(self.func_proto(name)?).iter().map(|p| TypeId(p.ty)).collect())
    }

    /// Return type of a function.
    pub fn function_ret(&self, name: &str) -> Result<TypeId, BtfError> {
        let proto = self.func_proto(name)?;
        Ok(TypeId(self.raw.get(proto).map_or(0, |r| r.size_type)))
    }

    /// Argument types of a tracepoint as a raw_tp / tp_btf program sees them (without the
    /// leading `void *__data`).
    pub fn tracepoint_args(&self, name: &str) -> Result<Vec<TypeId>, BtfError> {
        Ok(self.params(self.tracepoint_proto(name)?).iter().skip(1).map(|p| TypeId(p.ty)).collect())
    }

    /// Parameter names of a tracepoint as a raw_tp / tp_btf program sees them (`vec_nr` for
    /// softirq_entry), empty where the BTF has none.
    pub fn tracepoint_arg_names(&self, name: &str) -> Result<Vec<String>, BtfError> {
        let params = self.params(self.tracepoint_proto(name)?);
        Ok(params.iter().skip(1).map(|p| self.raw.str_at(p.name_off).to_string()).collect())
    }

    /// Parameter names of a function.
    pub fn function_arg_names(&self, name: &str) -> Result<Vec<String>, BtfError> {
        let params = self.params(self.func_proto(name)?);
        Ok(params.iter().map(|p| self.raw.str_at(p.name_off).to_string()).collect())
    }

    /// Skip typedefs and qualifiers.
    fn strip(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.raw.get(id) {
                Some(r)
                    if matches!(
                        r.kind(),
                        KIND_TYPEDEF | KIND_CONST | KIND_VOLATILE | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = r.size_type
                }
                _ => return id,
            }
        }
        id
    }

    /// "struct task_struct", "int", "ptr": the kind, and the name where the type has one.
    fn describe(&self, id: u32) -> String {
        let Some(r) = self.raw.get(id) else { return "void".into() };
        let kind = match r.kind() {
            KIND_INT => "int",
            KIND_PTR => "ptr",
            KIND_ARRAY => "array",
            KIND_STRUCT => "struct",
            KIND_UNION => "union",
            KIND_ENUM => "enum",
            KIND_FWD => "fwd",
            KIND_TYPEDEF => "typedef",
            KIND_VOLATILE => "volatile",
            KIND_CONST => "const",
            KIND_RESTRICT => "restrict",
            KIND_FUNC => "func",
            KIND_FUNC_PROTO => "func-proto",
            KIND_VAR => "var",
            KIND_DATASEC => "datasec",
            KIND_FLOAT => "float",
            KIND_DECL_TAG => "decl-tag",
            KIND_TYPE_TAG => "type-tag",
            _ => "enum64",
        };
        match self.raw.name(&r) {
            "" => kind.to_string(),
            n => format!("{kind} {n}"),
        }
    }

    /// A complete struct or union named `name`.
    fn struct_named(&self, name: &str) -> Result<u32, BtfError> {
        self.raw
            .named(name)
            .find(|&id| self.raw.get(id).is_some_and(|r| matches!(r.kind(), KIND_STRUCT | KIND_UNION) && r.vlen() > 0))
            .ok_or_else(|| BtfError::NoStruct(name.to_string()))
    }

    fn is_aggregate(&self, id: u32) -> bool {
        self.raw.get(id).is_some_and(|r| matches!(r.kind(), KIND_STRUCT | KIND_UNION))
    }

    /// Locate `ptr->path` where `ptr` has type `ptr_type`, or is cast to `struct cast`.
    pub fn member(
        &self,
        what: &str,
        ptr_type: Option<TypeId>,
        cast: Option<&str>,
        path: &[String],
    ) -> Result<MemberLoc, BtfError> {
        let mut st = match cast {
            Some(c) => self.struct_named(c)?,
            None => {
                let t = self.strip(ptr_type.map_or(0, |t| t.0));
                let pointee = self.raw.get(t).filter(|r| r.kind() == KIND_PTR).map(|r| self.strip(r.size_type));
                match pointee {
                    Some(p) if self.is_aggregate(p) => p,
                    _ => return Err(BtfError::NotStructPointer { what: what.to_string(), ty: self.describe(t) }),
                }
            }
        };
        let mut offset_bits = 0u32;
        for (i, member) in path.iter().enumerate() {
            let st_name = || self.raw.get(st).map(|r| self.raw.name(&r).to_string()).unwrap_or_default();
            let (bits, mty, bitfield) = self
                .find_member(st, member, 0)
                .ok_or_else(|| BtfError::NoMember { st: st_name(), member: member.clone() })?;
            if bitfield {
                return Err(BtfError::Bitfield(member.clone()));
            }
            offset_bits += bits;
            let mty = self.strip(mty);
            let r = self.raw.get(mty);
            if i + 1 == path.len() {
                let size = match r.map(|r| r.kind()) {
                    Some(KIND_INT | KIND_ENUM | KIND_ENUM64) => r.map_or(0, |r| r.size_type as usize),
                    Some(KIND_PTR) => 8,
                    _ => return Err(BtfError::BadSize { member: member.clone(), ty: self.describe(mty), size: 0 }),
                };
                if ![1, 2, 4, 8].contains(&size) {
                    return Err(BtfError::BadSize { member: member.clone(), ty: self.describe(mty), size });
                }
                return Ok(MemberLoc { offset: offset_bits / 8, size: size as u8 });
            }
            if !self.is_aggregate(mty) {
                return Err(BtfError::NotStructPointer {
                    what: format!("{what}->{}", path[..=i].join(".")),
                    ty: self.describe(mty),
                });
            }
            st = mty;
        }
        Err(BtfError::NoMember { st: String::new(), member: String::new() })
    }

    /// Find `name` in struct or union `st`, looking into anonymous struct/union members.
    /// Returns (bit offset, type, is bitfield).
    fn find_member(&self, st: u32, name: &str, depth: u32) -> Option<(u32, u32, bool)> {
        if depth > 8 {
            return None;
        }
        let r = self.raw.get(st)?;
        for i in 0..r.vlen() {
            let (name_off, ty, offset) = (r.word(3 * i), r.word(3 * i + 1), r.word(3 * i + 2));
            // With the kind flag, the offset word holds the bitfield size in its top byte.
            let (bit_offset, bitfield) =
                if r.kind_flag() { (offset & 0x00ff_ffff, offset >> 24 != 0) } else { (offset, self.int_bitfield(ty)) };
            let mname = self.raw.str_at(name_off);
            if mname == name {
                return Some((bit_offset, ty, bitfield));
            }
            let inner = self.strip(ty);
            if mname.is_empty()
                && self.is_aggregate(inner)
                && let Some((off, t, bf)) = self.find_member(inner, name, depth + 1)
            {
                return Some((bit_offset + off, t, bf));
            }
        }
        None
    }

    /// Without the kind flag, a bitfield is an int whose encoding has fewer bits than its size,
    /// or a bit offset of its own.
    fn int_bitfield(&self, ty: u32) -> bool {
        match self.raw.get(self.strip(ty)) {
            Some(r) if r.kind() == KIND_INT => {
                let enc = r.word(0);
                let (bits, offset) = (enc & 0xff, (enc >> 16) & 0xff);
                offset != 0 || bits != r.size_type * 8
            }
            _ => false,
        }
    }

    /// A BTF blob for aya's `Btf::parse` with the kernel's type ids, keeping only the records
    /// aya looks up to attach `tracepoints` (tp_btf: their `btf_trace_NAME` typedefs) and
    /// `functions` (fentry, fexit: their `FUNC`s): the first of each name, which is the one
    /// aya's lookup finds. Every other id up to the last kept one holds a nameless pointer to
    /// void, and the blob ends there: aya parses every type it is given into a vector (grown by
    /// doubling), so on this machine's 6.18 kernel, whose tracepoint typedefs sit near id
    /// 11 000 of 126 000, it parses a tenth of the types.
    pub fn attach_blob<'a>(
        &self,
        tracepoints: impl IntoIterator<Item = &'a str>,
        functions: impl IntoIterator<Item = &'a str>,
    ) -> Vec<u8> {
        let mut keep: Vec<u32> = tracepoints
            .into_iter()
            .filter_map(|tp| self.raw.named_kind(&format!("btf_trace_{tp}"), KIND_TYPEDEF).next())
            .chain(functions.into_iter().filter_map(|f| self.raw.named_kind(f, KIND_FUNC).next()))
            .collect();
        keep.sort_unstable();
        keep.dedup();
        let last = keep.last().copied().unwrap_or(0);
        let mut strings = vec![0u8];
        let mut types: Vec<u32> = Vec::with_capacity(3 * last as usize);
        let mut next = keep.iter().peekable();
        for id in 1..=last {
            match (next.peek(), self.raw.get(id)) {
                (Some(&&k), Some(r)) if k == id => {
                    next.next();
                    let name_off = strings.len() as u32;
                    strings.extend_from_slice(self.raw.name(&r).as_bytes());
                    strings.push(0);
                    // The typedef or func keeps its kind and name; what it points to is a
                    // placeholder, which aya never follows for these lookups.
                    types.extend([name_off, r.info, r.size_type]);
                }
                _ => {
                    types.extend([0, KIND_PTR << 24, 0]);
                }
            }
        }
        assemble(&types, &strings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Words after a type's header: a name (its offset is filled in) or a plain value.
    type Extra<'a> = Vec<(Option<&'a str>, u32)>;

    /// A BTF from (name, kind, vlen, kind_flag, size_type, extra words) records, names given as
    /// strings (offsets are filled in).
    fn build(types: &[(&str, u32, u32, bool, u32, Extra<'_>)]) -> Vec<u8> {
        let mut strings = vec![0u8];
        let off = |name: &str, strings: &mut Vec<u8>| -> u32 {
            if name.is_empty() {
                return 0;
            }
            let o = strings.len() as u32;
            strings.extend_from_slice(name.as_bytes());
            strings.push(0);
            o
        };
        let mut words = Vec::new();
        for (name, kind, vlen, flag, size_type, extra) in types {
            words.push(off(name, &mut strings));
            words.push((kind << 24) | vlen | if *flag { 1 << 31 } else { 0 });
            words.push(*size_type);
            for (n, w) in extra {
                words.push(match n {
                    Some(n) => off(n, &mut strings),
                    None => *w,
                });
            }
        }
        assemble(&words, &strings)
    }

    /// 1 int; 2 struct task { int pid; union { int a; int __state; }; int flags:3 (kind flag) };
    /// 3 the anonymous union; 4 ptr → task; 5 proto(void *, struct task *); 6 ptr → 5;
    /// 7 typedef btf_trace_wake → 6; 8 proto(struct task *p) → int; 9 func wake_up → 8;
    /// 10 a second func wake_up (a later duplicate).
    fn sample() -> KernelBtf {
        let n = |s: &'static str| (Some(s), 0);
        let w = |v: u32| (None, v);
        let bytes = build(&[
            ("int", KIND_INT, 0, false, 4, vec![w(32)]),
            (
                "task",
                KIND_STRUCT,
                3,
                true,
                16,
                vec![n("pid"), w(1), w(0), (None, 0), w(3), w(32), n("flags"), w(1), w((3 << 24) | 64)],
            ),
            ("", KIND_UNION, 2, false, 4, vec![n("a"), w(1), w(0), n("__state"), w(1), w(0)]),
            ("", KIND_PTR, 0, false, 2, vec![]),
            ("", KIND_FUNC_PROTO, 2, false, 0, vec![n("__data"), w(0), n("p"), w(4)]),
            ("", KIND_PTR, 0, false, 5, vec![]),
            ("btf_trace_wake", KIND_TYPEDEF, 0, false, 6, vec![]),
            ("", KIND_FUNC_PROTO, 1, false, 1, vec![n("p"), w(4)]),
            ("wake_up", KIND_FUNC, 0, false, 8, vec![]),
            ("wake_up", KIND_FUNC, 0, false, 8, vec![]),
        ]);
        KernelBtf::parse(bytes).expect("valid BTF")
    }

    #[test]
    fn prototypes_arguments_and_names_resolve() {
        let b = sample();
        assert!(b.has_tracepoint("wake") && b.has_function("wake_up"));
        assert!(!b.has_tracepoint("sleep") && !b.has_function("wake"));
        assert_eq!(b.tracepoint_args("wake").unwrap(), [TypeId(4)]);
        assert_eq!(b.tracepoint_arg_names("wake").unwrap(), ["p"]);
        assert_eq!(b.function_args("wake_up").unwrap(), [TypeId(4)]);
        assert_eq!(b.function_ret("wake_up").unwrap(), TypeId(1));
        assert!(matches!(b.function_args("nope"), Err(BtfError::NoFunction(_))));
    }

    #[test]
    fn members_resolve_through_anonymous_unions_and_bitfields_are_refused() {
        let b = sample();
        let path = |p: &str| vec![p.to_string()];
        assert_eq!(b.member("arg0", Some(TypeId(4)), None, &path("pid")).unwrap(), MemberLoc { offset: 0, size: 4 });
        assert_eq!(
            b.member("arg0", Some(TypeId(4)), None, &path("__state")).unwrap(),
            MemberLoc { offset: 4, size: 4 }
        );
        assert!(matches!(b.member("arg0", Some(TypeId(4)), None, &path("flags")), Err(BtfError::Bitfield(_))));
        assert!(matches!(b.member("arg0", Some(TypeId(4)), None, &path("state")), Err(BtfError::NoMember { .. })));
        assert!(matches!(
            b.member("arg0", Some(TypeId(1)), None, &path("pid")),
            Err(BtfError::NotStructPointer { .. })
        ));
        assert_eq!(b.member("arg0", None, Some("task"), &path("pid")).unwrap(), MemberLoc { offset: 0, size: 4 });
        assert!(matches!(b.member("arg0", None, Some("mm"), &path("x")), Err(BtfError::NoStruct(_))));
    }

    #[test]
    fn the_attach_blob_keeps_ids_and_ends_at_the_last_name_aya_looks_up() {
        use aya_obj::btf::BtfKind;
        let b = sample();
        let blob = b.attach_blob(["wake"], std::iter::empty());
        let aya = aya::Btf::parse(&blob, aya::Endianness::default()).expect("aya parses the blob");
        assert_eq!(aya.id_by_type_name_kind("btf_trace_wake", BtfKind::Typedef).unwrap(), 7);
        // Ends at id 7: nothing after the last kept record.
        assert_eq!(blob.len(), HEADER_LEN + 7 * 12 + "\0btf_trace_wake\0".len());
        let blob = b.attach_blob(["wake"], ["wake_up"]);
        let aya = aya::Btf::parse(&blob, aya::Endianness::default()).expect("aya parses the blob");
        assert_eq!(aya.id_by_type_name_kind("wake_up", BtfKind::Func).unwrap(), 9, "the first wake_up");
        assert!(aya.id_by_type_name_kind("task", BtfKind::Struct).is_err(), "everything else is a placeholder");
    }

    #[test]
    fn broken_blobs_are_refused_with_a_reason() {
        assert!(KernelBtf::parse(b"not btf".to_vec()).unwrap_err().contains("header"));
        let mut bytes = build(&[("int", KIND_INT, 0, false, 4, vec![(None, 32)])]);
        bytes.truncate(bytes.len() - 4);
        assert!(KernelBtf::parse(bytes).unwrap_err().contains("past the end"));
        let unknown = build(&[("x", 31, 0, false, 0, vec![])]);
        assert!(KernelBtf::parse(unknown).unwrap_err().contains("unknown kind 31"));
    }
}
