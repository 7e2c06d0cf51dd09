//! A larger kernel BTF for memory measurements: the running kernel's, followed by a copy of
//! every type with its references moved past the original ones. The original ids are kept (so
//! tp_btf and fentry attach ids stay valid on this kernel) and every lookup by name finds twice
//! the candidates: what the exporter's start-up would see on a kernel with twice the BTF.

const HEADER_LEN: usize = 24;

fn word(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Words after a type record's header, and which of them (and the header's third word) are
/// type ids: (extra words, header word 2 is a type id, the positions of ids in the extra words).
fn layout(kind: u32, vlen: usize) -> (usize, bool, Vec<usize>) {
    match kind {
        1 => (1, false, vec![]),                                            // int
        2 | 8 | 9 | 10 | 11 | 12 | 18 => (0, true, vec![]),                 // ptr, typedef, qualifiers, func, type tag
        3 => (3, false, vec![0, 1]),                                        // array
        4 | 5 => (3 * vlen, false, (0..vlen).map(|i| 3 * i + 1).collect()), // struct, union
        6 => (2 * vlen, false, vec![]),                                     // enum
        7 | 16 => (0, false, vec![]),                                       // fwd, float
        13 => (2 * vlen, true, (0..vlen).map(|i| 2 * i + 1).collect()),     // func proto
        14 | 17 => (1, true, vec![]),                                       // var, decl tag
        15 => (3 * vlen, false, (0..vlen).map(|i| 3 * i).collect()),        // datasec
        19 => (3 * vlen, false, vec![]),                                    // enum64
        other => panic!("BTF kind {other} unknown to this copy"),
    }
}

/// `btf` followed by a copy of all its types (references shifted by the type count).
pub fn doubled(btf: &[u8]) -> Vec<u8> {
    assert!(btf.len() >= HEADER_LEN && btf[0] == 0x9f && btf[1] == 0xeb, "not BTF");
    let hdr_len = word(btf, 4) as usize;
    let (type_off, type_len, str_off, str_len) = (word(btf, 8), word(btf, 12), word(btf, 16), word(btf, 20));
    let types = &btf[hdr_len + type_off as usize..hdr_len + (type_off + type_len) as usize];
    let strings = &btf[hdr_len + str_off as usize..hdr_len + (str_off + str_len) as usize];
    // Count the types first: references shift by that many.
    let mut records = Vec::new();
    let mut off = 0;
    while off < types.len() {
        let info = word(types, off + 4);
        let (extra, _, _) = layout((info >> 24) & 0x1f, (info & 0xffff) as usize);
        records.push(off);
        off += 12 + 4 * extra;
    }
    let n = records.len() as u32;
    let shift = |id: u32| if id == 0 { 0 } else { id + n };
    let mut copy: Vec<u8> = Vec::with_capacity(types.len());
    for &off in &records {
        let info = word(types, off + 4);
        let (extra, third_is_id, ids) = layout((info >> 24) & 0x1f, (info & 0xffff) as usize);
        copy.extend_from_slice(&types[off..off + 8]);
        let third = word(types, off + 8);
        copy.extend_from_slice(&(if third_is_id { shift(third) } else { third }).to_le_bytes());
        for i in 0..extra {
            let w = word(types, off + 12 + 4 * i);
            copy.extend_from_slice(&(if ids.contains(&i) { shift(w) } else { w }).to_le_bytes());
        }
    }
    let new_type_len = types.len() + copy.len();
    let mut out = Vec::with_capacity(HEADER_LEN + new_type_len + strings.len());
    out.extend_from_slice(&btf[..4]);
    for w in [HEADER_LEN as u32, 0, new_type_len as u32, new_type_len as u32, str_len] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(types);
    out.extend_from_slice(&copy);
    out.extend_from_slice(strings);
    out
}
