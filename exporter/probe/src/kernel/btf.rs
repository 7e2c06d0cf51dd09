//! The running kernel's BTF: function and tracepoint prototypes, and struct member offsets for
//! `argN->member` keys (Rust BPF code has no CO-RE relocations, so offsets are resolved here
//! and written into the slot config).

use std::path::Path;

use btf_rs::{Btf, Type};

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read BTF from {path}")]
    Load {
        path: String,
        #[source]
        source: btf_rs::Error,
    },
    #[error("`{0}` is not a function in the kernel's BTF")]
    NoFunction(String),
    #[error("no tracepoint `{0}` in the kernel's BTF (no btf_trace_{0} typedef)")]
    NoTracepoint(String),
    #[error("`{what}` has {count} argument(s); arg{index} does not exist")]
    NoArg { what: String, count: usize, index: u8 },
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
    #[error("BTF: {0}")]
    Other(#[from] btf_rs::Error),
}

/// Where a dereferenced value sits: `offset` bytes into the pointee, `size` bytes wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberLoc {
    pub offset: u32,
    pub size: u8,
}

/// The kernel's BTF.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn load(path: &Path) -> Result<KernelBtf, BtfError> {
        let btf = Btf::from_file(path).map_err(|source| BtfError::Load { path: path.display().to_string(), source })?;
        Ok(KernelBtf { btf })
    }

    pub fn has_function(&self, name: &str) -> bool {
        self.func_proto(name).is_ok()
    }

    pub fn has_tracepoint(&self, name: &str) -> bool {
        self.tracepoint_proto(name).is_ok()
    }

    fn func_proto(&self, name: &str) -> Result<btf_rs::FuncProto, BtfError> {
        let types = self.btf.resolve_types_by_name(name).unwrap_or_default();
        for t in types {
            if let Type::Func(f) = t
                && let Ok(Type::FuncProto(p)) = self.btf.resolve_chained_type(&f)
            {
                return Ok(p);
            }
        }
        Err(BtfError::NoFunction(name.to_string()))
    }

    /// Prototype of a raw/BTF tracepoint: `typedef void (*btf_trace_NAME)(void *, args...)`.
    fn tracepoint_proto(&self, name: &str) -> Result<btf_rs::FuncProto, BtfError> {
        let types = self.btf.resolve_types_by_name(&format!("btf_trace_{name}")).unwrap_or_default();
        for t in types {
            if let Type::Typedef(td) = t
                && let Ok(Type::Ptr(p)) = self.btf.resolve_chained_type(&td)
                && let Ok(Type::FuncProto(proto)) = self.btf.resolve_chained_type(&p)
            {
                return Ok(proto);
            }
        }
        Err(BtfError::NoTracepoint(name.to_string()))
    }

    /// Argument types of a function (fentry, fexit, kprobe).
    pub fn function_args(&self, name: &str) -> Result<Vec<Type>, BtfError> {
        let proto = self.func_proto(name)?;
        proto.parameters.iter().map(|p| self.btf.resolve_chained_type(p).map_err(BtfError::from)).collect()
    }

    /// Return type of a function.
    pub fn function_ret(&self, name: &str) -> Result<Type, BtfError> {
        let proto = self.func_proto(name)?;
        Ok(self.btf.resolve_type_by_id(proto.return_type_id())?)
    }

    /// Argument types of a tracepoint as a raw_tp / tp_btf program sees them (without the
    /// leading `void *__data`).
    pub fn tracepoint_args(&self, name: &str) -> Result<Vec<Type>, BtfError> {
        let proto = self.tracepoint_proto(name)?;
        proto.parameters.iter().skip(1).map(|p| self.btf.resolve_chained_type(p).map_err(BtfError::from)).collect()
    }

    /// Parameter names of a tracepoint as a raw_tp / tp_btf program sees them (`vec_nr` for
    /// softirq_entry), empty where the BTF has none.
    pub fn tracepoint_arg_names(&self, name: &str) -> Result<Vec<String>, BtfError> {
        let proto = self.tracepoint_proto(name)?;
        Ok(proto.parameters.iter().skip(1).map(|p| self.btf.resolve_name(p).unwrap_or_default()).collect())
    }

    /// Parameter names of a function.
    pub fn function_arg_names(&self, name: &str) -> Result<Vec<String>, BtfError> {
        let proto = self.func_proto(name)?;
        Ok(proto.parameters.iter().map(|p| self.btf.resolve_name(p).unwrap_or_default()).collect())
    }

    /// Skip typedefs and qualifiers.
    fn strip(&self, mut t: Type) -> Type {
        for _ in 0..32 {
            match &t {
                Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::Restrict(_) | Type::TypeTag(_) => {
                    match t.as_btf_type().map(|b| self.btf.resolve_chained_type(b)) {
                        Some(Ok(next)) => t = next,
                        _ => return t,
                    }
                }
                _ => return t,
            }
        }
        t
    }

    fn describe(&self, t: &Type) -> String {
        let name = t.as_btf_type().and_then(|b| self.btf.resolve_name(b).ok()).filter(|n| !n.is_empty());
        match name {
            Some(n) => format!("{} {n}", t.name()),
            None => t.name().to_string(),
        }
    }

    fn struct_named(&self, name: &str) -> Result<btf_rs::Struct, BtfError> {
        for t in self.btf.resolve_types_by_name(name).unwrap_or_default() {
            if let Type::Struct(s) = t
                && !s.members.is_empty()
            {
                return Ok(s);
            }
        }
        Err(BtfError::NoStruct(name.to_string()))
    }

    /// Locate `ptr->path` where `ptr` has type `ptr_type`, or is cast to `struct cast`.
    pub fn member(
        &self,
        what: &str,
        ptr_type: Option<Type>,
        cast: Option<&str>,
        path: &[String],
    ) -> Result<MemberLoc, BtfError> {
        let (mut st, mut st_name) = match cast {
            Some(c) => (self.struct_named(c)?, c.to_string()),
            None => {
                let t = ptr_type.map(|t| self.strip(t)).unwrap_or(Type::Void);
                let pointee = match &t {
                    Type::Ptr(p) => self.btf.resolve_chained_type(p).ok().map(|t| self.strip(t)),
                    _ => None,
                };
                match pointee {
                    Some(Type::Struct(s)) | Some(Type::Union(s)) => {
                        let n = self.btf.resolve_name(&s).unwrap_or_default();
                        (s, n)
                    }
                    _ => {
                        return Err(BtfError::NotStructPointer { what: what.to_string(), ty: self.describe(&t) });
                    }
                }
            }
        };
        let mut offset_bits = 0u32;
        for (i, member) in path.iter().enumerate() {
            let (bits, mty, bitfield) = self
                .find_member(&st, member, 0)
                .ok_or_else(|| BtfError::NoMember { st: st_name.clone(), member: member.clone() })?;
            if bitfield {
                return Err(BtfError::Bitfield(member.clone()));
            }
            offset_bits += bits;
            let mty = self.strip(mty);
            if i + 1 == path.len() {
                let size = match &mty {
                    Type::Int(int) => int.size(),
                    Type::Enum(e) => e.size(),
                    Type::Enum64(e) => e.size(),
                    Type::Ptr(_) => 8,
                    other => {
                        return Err(BtfError::BadSize { member: member.clone(), ty: self.describe(other), size: 0 });
                    }
                };
                if ![1, 2, 4, 8].contains(&size) {
                    return Err(BtfError::BadSize { member: member.clone(), ty: self.describe(&mty), size });
                }
                return Ok(MemberLoc { offset: offset_bits / 8, size: size as u8 });
            }
            match mty {
                Type::Struct(s) | Type::Union(s) => {
                    st_name = self.btf.resolve_name(&s).unwrap_or_default();
                    st = s;
                }
                other => {
                    return Err(BtfError::NotStructPointer {
                        what: format!("{what}->{}", path[..=i].join(".")),
                        ty: self.describe(&other),
                    });
                }
            }
        }
        Err(BtfError::NoMember { st: st_name, member: String::new() })
    }

    /// Find `name` in `st`, looking into anonymous struct/union members. Returns
    /// (bit offset, type, is bitfield).
    fn find_member(&self, st: &btf_rs::Struct, name: &str, depth: u32) -> Option<(u32, Type, bool)> {
        if depth > 8 {
            return None;
        }
        for m in &st.members {
            let mname = self.btf.resolve_name(m).unwrap_or_default();
            let mty = self.btf.resolve_chained_type(m).ok()?;
            if mname == name {
                return Some((m.bit_offset(), mty, m.bitfield_size().is_some_and(|b| b > 0)));
            }
            if mname.is_empty()
                && let Type::Struct(inner) | Type::Union(inner) = self.strip(mty)
                && let Some((off, t, bf)) = self.find_member(&inner, name, depth + 1)
            {
                return Some((m.bit_offset() + off, t, bf));
            }
        }
        None
    }
}
