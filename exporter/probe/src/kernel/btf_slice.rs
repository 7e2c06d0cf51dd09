//! A slice of a kernel's BTF: the types a set of functions, tracepoints and structs need, in a
//! valid BTF blob a few hundred kilobytes smaller than the kernel's (kernel fixtures carry it
//! instead of the 5 MB original).
//!
//! Kept whole: the roots (functions and their prototypes, `btf_trace_*` typedefs, named
//! structs), the structs their parameters point to (so `argN->member` resolves), and every
//! type embedded in a kept struct (so member offsets and anonymous members resolve). A pointer
//! anywhere deeper points to a forward declaration of its struct instead, which is what
//! keeps the slice small. Type ids are renumbered; strings are rebuilt with the names used.
//!
//! Format: `Documentation/bpf/btf.rst` (header, type section, string section).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::btf::{
    KIND_ARRAY, KIND_CONST, KIND_DATASEC, KIND_DECL_TAG, KIND_ENUM, KIND_ENUM64, KIND_FLOAT, KIND_FUNC,
    KIND_FUNC_PROTO, KIND_FWD, KIND_INT, KIND_PTR, KIND_RESTRICT, KIND_STRUCT, KIND_TYPE_TAG, KIND_TYPEDEF, KIND_UNION,
    KIND_VAR, KIND_VOLATILE, RawBtf, assemble,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SliceError {
    #[error("not BTF: {0}")]
    Invalid(String),
    #[error("BTF type {id} refers to type {to}, which does not exist")]
    BadReference { id: u32, to: u32 },
}

/// One type record: the three header words and its kind-specific words.
#[derive(Clone, Debug)]
struct Raw {
    name_off: u32,
    info: u32,
    size_type: u32,
    extra: Vec<u32>,
}

impl Raw {
    fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }

    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }
}

/// What the slice keeps of what.
#[derive(Clone, Debug, Default)]
pub struct Roots {
    /// Functions (`FUNC`), with their prototypes.
    pub functions: BTreeSet<String>,
    /// Tracepoints, as their `btf_trace_NAME` typedefs.
    pub tracepoints: BTreeSet<String>,
    /// Structs (or unions) kept whole, e.g. those named in a `(struct NAME *)` cast.
    pub structs: BTreeSet<String>,
}

struct Btf {
    types: Vec<Raw>,
    strings: Vec<u8>,
}

impl Btf {
    fn parse(bytes: &[u8]) -> Result<Btf, SliceError> {
        let raw = RawBtf::parse(bytes.to_vec()).map_err(SliceError::Invalid)?;
        let types = (1..=raw.len())
            .filter_map(|id| raw.get(id))
            .map(|r| Raw {
                name_off: r.name_off,
                info: r.info,
                size_type: r.size_type,
                extra: (0..r.extra.len() / 4).map(|i| r.word(i)).collect(),
            })
            .collect();
        Ok(Btf { types, strings: raw.string_section().to_vec() })
    }

    fn get(&self, id: u32) -> Option<&Raw> {
        self.types.get((id as usize).checked_sub(1)?)
    }

    fn name(&self, t: &Raw) -> &str {
        let start = t.name_off as usize;
        let end =
            self.strings[start.min(self.strings.len())..].iter().position(|&b| b == 0).map_or(start, |n| start + n);
        std::str::from_utf8(self.strings.get(start..end).unwrap_or_default()).unwrap_or_default()
    }

    /// Ids this type refers to, as (id, reached through a pointer).
    fn refs(t: &Raw) -> Vec<(u32, bool)> {
        match t.kind() {
            KIND_PTR => vec![(t.size_type, true)],
            KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG | KIND_FUNC | KIND_VAR
            | KIND_DECL_TAG => vec![(t.size_type, false)],
            KIND_ARRAY => vec![(t.extra[0], false), (t.extra[1], false)],
            KIND_STRUCT | KIND_UNION => t.extra.chunks(3).map(|m| (m[1], false)).collect(),
            KIND_FUNC_PROTO => {
                std::iter::once((t.size_type, false)).chain(t.extra.chunks(2).map(|p| (p[1], false))).collect()
            }
            KIND_DATASEC => t.extra.chunks(3).map(|v| (v[0], false)).collect(),
            _ => Vec::new(),
        }
    }
}

/// How a kept struct or union is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Keep {
    /// Only reached through pointers from deep inside: a forward declaration.
    Fwd,
    Full,
}

/// Slice `btf` (raw BTF bytes) down to what `roots` need.
pub fn slice(btf: &[u8], roots: &Roots) -> Result<Vec<u8>, SliceError> {
    let b = Btf::parse(btf)?;
    let mut by_name: HashMap<&str, Vec<u32>> = HashMap::new();
    for (i, t) in b.types.iter().enumerate() {
        by_name.entry(b.name(t)).or_default().push(i as u32 + 1);
    }
    let named = |name: &str, kinds: &[u32]| -> Vec<u32> {
        by_name
            .get(name)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&id| b.get(id).is_some_and(|t| kinds.contains(&t.kind())))
            .collect()
    };
    // (id, whole: pointers from it lead to whole structs) — roots' parameters point to
    // structs that must be whole for argN->member.
    let mut todo: Vec<(u32, bool)> = Vec::new();
    for f in &roots.functions {
        todo.extend(named(f, &[KIND_FUNC]).into_iter().map(|id| (id, true)));
    }
    for tp in &roots.tracepoints {
        todo.extend(named(&format!("btf_trace_{tp}"), &[KIND_TYPEDEF]).into_iter().map(|id| (id, true)));
    }
    for s in &roots.structs {
        // Only complete definitions (a name can also be a forward declaration).
        let full =
            named(s, &[KIND_STRUCT, KIND_UNION]).into_iter().filter(|&id| b.get(id).is_some_and(|t| t.vlen() > 0));
        todo.extend(full.map(|id| (id, false)));
    }
    let mut kept: BTreeMap<u32, Keep> = BTreeMap::new();
    while let Some((id, roots_pointee)) = todo.pop() {
        if id == 0 {
            continue;
        }
        let t = b.get(id).ok_or(SliceError::BadReference { id, to: id })?;
        let is_aggregate = matches!(t.kind(), KIND_STRUCT | KIND_UNION);
        if kept.get(&id) == Some(&Keep::Full) {
            continue;
        }
        kept.insert(id, Keep::Full);
        for (to, through_ptr) in Btf::refs(t) {
            if to == 0 {
                continue;
            }
            let target = b.get(to).ok_or(SliceError::BadReference { id, to })?;
            if through_ptr && !roots_pointee {
                // Deep pointer: keep the modifier chain, forward-declare the struct at its end.
                follow_to_fwd(&b, to, &mut kept);
                continue;
            }
            // A root's prototype and the pointers it holds keep their pointees whole; deeper
            // than the root's own parameters, pointers are cut.
            let next_roots =
                roots_pointee && !is_aggregate && target.kind() != KIND_STRUCT && target.kind() != KIND_UNION;
            todo.push((to, next_roots));
        }
    }
    Ok(write(&b, &kept))
}

/// Keep the typedef/const/volatile chain from `id`, ending in a forward declaration of the
/// struct or union it names (or the type itself when it is not an aggregate).
fn follow_to_fwd(b: &Btf, mut id: u32, kept: &mut BTreeMap<u32, Keep>) {
    for _ in 0..32 {
        let Some(t) = b.get(id) else { return };
        match t.kind() {
            KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                kept.entry(id).or_insert(Keep::Full);
                id = t.size_type;
                if id == 0 {
                    return;
                }
            }
            KIND_STRUCT | KIND_UNION if !b.name(t).is_empty() => {
                kept.entry(id).or_insert(Keep::Fwd);
                return;
            }
            // Anything else behind a pointer (an int, a function prototype, an anonymous
            // struct): a void pointer is enough for what resolves keys.
            _ => return,
        }
    }
}

fn write(b: &Btf, kept: &BTreeMap<u32, Keep>) -> Vec<u8> {
    let new_id: HashMap<u32, u32> = kept.keys().enumerate().map(|(i, &id)| (id, i as u32 + 1)).collect();
    // A pointee that was not kept (see follow_to_fwd) becomes void.
    let map = |id: u32| new_id.get(&id).copied().unwrap_or(0);
    let mut strings = vec![0u8];
    let mut offsets: HashMap<u32, u32> = HashMap::from([(0, 0)]);
    let mut string = |off: u32| -> u32 {
        if let Some(o) = offsets.get(&off) {
            return *o;
        }
        let start = off as usize;
        let end = b.strings[start..].iter().position(|&c| c == 0).map_or(b.strings.len(), |n| start + n);
        let o = strings.len() as u32;
        strings.extend_from_slice(&b.strings[start..end]);
        strings.push(0);
        offsets.insert(off, o);
        o
    };
    let mut types: Vec<u32> = Vec::new();
    for (&id, &keep) in kept {
        let Some(t) = b.get(id) else { continue };
        if keep == Keep::Fwd {
            let union_flag = if t.kind() == KIND_UNION { 1 << 31 } else { 0 };
            types.extend([string(t.name_off), (KIND_FWD << 24) | union_flag, 0]);
            continue;
        }
        let size_type = match t.kind() {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT | KIND_DATASEC | KIND_FWD => {
                t.size_type
            }
            _ => map(t.size_type),
        };
        types.extend([string(t.name_off), t.info, size_type]);
        match t.kind() {
            KIND_ARRAY => types.extend([map(t.extra[0]), map(t.extra[1]), t.extra[2]]),
            KIND_STRUCT | KIND_UNION => {
                for m in t.extra.chunks(3) {
                    types.extend([string(m[0]), map(m[1]), m[2]]);
                }
            }
            KIND_ENUM => {
                for e in t.extra.chunks(2) {
                    types.extend([string(e[0]), e[1]]);
                }
            }
            KIND_ENUM64 => {
                for e in t.extra.chunks(3) {
                    types.extend([string(e[0]), e[1], e[2]]);
                }
            }
            KIND_FUNC_PROTO => {
                for p in t.extra.chunks(2) {
                    types.extend([string(p[0]), map(p[1])]);
                }
            }
            KIND_DATASEC => {
                for v in t.extra.chunks(3) {
                    types.extend([map(v[0]), v[1], v[2]]);
                }
            }
            _ => types.extend(&t.extra),
        }
    }
    assemble(&types, &strings)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF: int, struct task { int pid; struct task *parent; struct mm *mm; }, struct
    /// mm { int x; }, ptr to task, func_proto(void, struct task *), func wake.
    fn tiny() -> Vec<u8> {
        let strings = b"\0int\0task\0pid\0parent\0mm\0x\0p\0wake\0".to_vec();
        let s = |name: &str| {
            let needle: Vec<u8> = [name.as_bytes(), b"\0"].concat();
            strings.windows(needle.len()).position(|w| w == needle.as_slice()).map_or(0, |p| p as u32)
        };
        let t = |k: u32, vlen: u32| (k << 24) | vlen;
        let types: Vec<u32> = vec![
            // 1 int
            s("int"),
            t(KIND_INT, 0),
            4,
            32,
            // 2 struct task
            s("task"),
            t(KIND_STRUCT, 3),
            24,
            s("pid"),
            1,
            0,
            s("parent"),
            3,
            64,
            s("mm"),
            5,
            128,
            // 3 ptr → task
            0,
            t(KIND_PTR, 0),
            2,
            // 4 struct mm
            s("mm"),
            t(KIND_STRUCT, 1),
            4,
            s("x"),
            1,
            0,
            // 5 ptr → mm
            0,
            t(KIND_PTR, 0),
            4,
            // 6 proto (struct task *p)
            0,
            t(KIND_FUNC_PROTO, 1),
            0,
            s("p"),
            3,
            // 7 func wake
            s("wake"),
            t(KIND_FUNC, 0),
            6,
        ];
        assemble(&types, &strings)
    }

    #[test]
    fn a_function_keeps_its_pointee_whole_and_cuts_deeper_pointers() {
        let roots = Roots { functions: ["wake".to_string()].into(), ..Default::default() };
        let sliced = Btf::parse(&slice(&tiny(), &roots).unwrap()).unwrap();
        let kinds: Vec<(String, u32)> = sliced.types.iter().map(|t| (sliced.name(t).to_string(), t.kind())).collect();
        assert!(kinds.contains(&("task".into(), KIND_STRUCT)), "{kinds:?}");
        assert!(kinds.contains(&("mm".into(), KIND_FWD)), "task->mm is cut to a forward declaration: {kinds:?}");
        assert!(kinds.contains(&("wake".into(), KIND_FUNC)));
        // Every reference points inside the slice.
        for (i, t) in sliced.types.iter().enumerate() {
            for (to, _) in Btf::refs(t) {
                assert!(to as usize <= sliced.types.len(), "type {} refers to {to}", i + 1);
            }
        }
    }

    #[test]
    fn nothing_asked_nothing_kept_and_garbage_is_refused() {
        let sliced = Btf::parse(&slice(&tiny(), &Roots::default()).unwrap()).unwrap();
        assert!(sliced.types.is_empty());
        assert!(matches!(slice(b"not btf at all, no", &Roots::default()), Err(SliceError::Invalid(_))));
    }
}
