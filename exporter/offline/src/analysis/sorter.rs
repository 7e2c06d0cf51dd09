//! An external sort of fixed-size records under a memory budget: records are collected in
//! memory; past the budget each batch is sorted and written to an unnamed temporary file (a
//! "run"), and at the end the runs are merged (k-way, one record of each in memory). Input
//! that fits in the budget never touches the disk.
//!
//! Bounds: memory ≤ the budget plus one read buffer per run (at most [`MAX_RUNS`]: when a
//! spill would exceed it, the runs on disk are first merged into one); temporary disk ≈ twice
//! the encoded size of the records (`Record::SIZE` bytes each) during such a merge.

use std::{
    cmp::{Ordering, Reverse},
    collections::BinaryHeap,
    fs::File,
    io::{self, BufReader, BufWriter, Read as _, Seek as _, SeekFrom, Write as _},
};

/// A record the sorter can spill: totally ordered, with a fixed-size encoding.
pub trait Record: Ord + Sized {
    /// Bytes of the encoding.
    const SIZE: usize;
    fn encode(&self, out: &mut [u8]);
    fn decode(b: &[u8]) -> Self;
}

/// Read buffer per run while merging.
const READ_BUFFER: usize = 64 << 10;

/// Runs on disk at most (open files, read buffers); more are merged into one first.
pub const MAX_RUNS: usize = 64;

pub struct Sorter<R: Record> {
    /// Records held in memory before a spill.
    max_records: usize,
    buf: Vec<R>,
    runs: Vec<File>,
    /// Records spilled so far.
    pub spilled: u64,
}

impl<R: Record> Sorter<R> {
    /// A sorter holding at most `budget_bytes` of records in memory (at least one).
    pub fn new(budget_bytes: usize) -> Sorter<R> {
        let max_records = (budget_bytes / std::mem::size_of::<R>().max(1)).max(1);
        Sorter { max_records, buf: Vec::new(), runs: Vec::new(), spilled: 0 }
    }

    pub fn push(&mut self, r: R) -> io::Result<()> {
        self.buf.push(r);
        if self.buf.len() >= self.max_records {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> io::Result<()> {
        if self.runs.len() >= MAX_RUNS {
            let merged: Sorted<R> = merge(std::mem::take(&mut self.runs))?;
            self.runs.push(write_run(merged)?);
        }
        self.buf.sort_unstable();
        let n = self.buf.len() as u64;
        let batch = std::mem::take(&mut self.buf);
        self.runs.push(write_run(batch.into_iter().map(Ok))?);
        self.spilled += n;
        Ok(())
    }

    /// Runs written to disk so far.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Every record pushed, in order.
    pub fn finish(mut self) -> io::Result<Sorted<R>> {
        if self.runs.is_empty() {
            self.buf.sort_unstable();
            return Ok(Sorted::Memory(self.buf.into_iter()));
        }
        if !self.buf.is_empty() {
            self.spill()?;
        }
        merge(self.runs)
    }
}

/// Write sorted records to a new run, rewound for reading.
fn write_run<R: Record>(records: impl Iterator<Item = io::Result<R>>) -> io::Result<File> {
    let mut w = BufWriter::with_capacity(1 << 20, tempfile::tempfile()?);
    let mut bytes = vec![0u8; R::SIZE];
    for r in records {
        r?.encode(&mut bytes);
        w.write_all(&bytes)?;
    }
    let mut f = w.into_inner().map_err(|e| e.into_error())?;
    f.seek(SeekFrom::Start(0))?;
    Ok(f)
}

/// The k-way merge of sorted runs.
fn merge<R: Record>(runs: Vec<File>) -> io::Result<Sorted<R>> {
    let mut readers: Vec<BufReader<File>> =
        runs.into_iter().map(|f| BufReader::with_capacity(READ_BUFFER, f)).collect();
    let mut heap = BinaryHeap::with_capacity(readers.len());
    let mut bytes = vec![0u8; R::SIZE];
    for (i, r) in readers.iter_mut().enumerate() {
        if let Some(rec) = next(r, &mut bytes)? {
            heap.push(Reverse(Head(rec, i)));
        }
    }
    Ok(Sorted::Merge { readers, heap, bytes })
}

fn next<R: Record>(r: &mut BufReader<File>, bytes: &mut [u8]) -> io::Result<Option<R>> {
    match r.read_exact(bytes) {
        Ok(()) => Ok(Some(R::decode(bytes))),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// A run's next record and the run's index; ordered by the record, then the run (stable).
pub struct Head<R>(R, usize);

impl<R: Ord> PartialEq for Head<R> {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl<R: Ord> Eq for Head<R> {}
impl<R: Ord> PartialOrd for Head<R> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<R: Ord> Ord for Head<R> {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.cmp(&o.0).then(self.1.cmp(&o.1))
    }
}

/// The sorted records.
pub enum Sorted<R: Record> {
    Memory(std::vec::IntoIter<R>),
    Merge { readers: Vec<BufReader<File>>, heap: BinaryHeap<Reverse<Head<R>>>, bytes: Vec<u8> },
}

impl<R: Record> Iterator for Sorted<R> {
    type Item = io::Result<R>;

    fn next(&mut self) -> Option<io::Result<R>> {
        match self {
            Sorted::Memory(it) => it.next().map(Ok),
            Sorted::Merge { readers, heap, bytes } => {
                let Reverse(Head(rec, i)) = heap.pop()?;
                match next(&mut readers[i], bytes) {
                    Ok(Some(n)) => heap.push(Reverse(Head(n, i))),
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
                Some(Ok(rec))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Record for (u32, u64) {
        const SIZE: usize = 12;
        fn encode(&self, out: &mut [u8]) {
            out[..4].copy_from_slice(&self.0.to_le_bytes());
            out[4..].copy_from_slice(&self.1.to_le_bytes());
        }
        fn decode(b: &[u8]) -> Self {
            (u32::from_le_bytes(b[..4].try_into().unwrap()), u64::from_le_bytes(b[4..12].try_into().unwrap()))
        }
    }

    fn shuffled(n: u64) -> Vec<(u32, u64)> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x % 7) as u32, i ^ (x & 0xff))
            })
            .collect()
    }

    #[test]
    fn spilled_and_in_memory_sorts_agree() {
        let input = shuffled(50_000);
        let mut want = input.clone();
        want.sort();
        for budget in [16 << 20, 4096, 200] {
            let mut s = Sorter::new(budget);
            for r in &input {
                s.push(*r).unwrap();
            }
            let spilled = s.runs() > 0;
            let got: Vec<(u32, u64)> = s.finish().unwrap().map(Result::unwrap).collect();
            assert_eq!(got, want, "budget {budget}");
            assert_eq!(spilled, budget < 1 << 20, "budget {budget}");
        }
    }
}
