//! Chain assembly: the one place where probe hits and segment records become `ChainRecord`s,
//! whatever their source (live ring buffer, raw-hit stream, replayed file, simulator).

pub mod assembler;
pub mod hits;

use std::sync::Arc;

/// How an instance ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Every stage was recorded.
    Completed,
    /// Closed because it was older than the chain's timeout.
    TimedOut,
    /// Replaced by a new stage-0 hit on the same key.
    Replaced,
    /// Closed by an abort point.
    Aborted,
    /// Some of its segment records never arrived (ring buffer full), or it was evicted.
    Incomplete,
}

impl Outcome {
    pub const ALL: [Outcome; 5] =
        [Outcome::Completed, Outcome::TimedOut, Outcome::Replaced, Outcome::Aborted, Outcome::Incomplete];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::TimedOut => "timed_out",
            Outcome::Replaced => "replaced",
            Outcome::Aborted => "aborted",
            Outcome::Incomplete => "incomplete",
        }
    }
}

/// One segment of an instance: stage `index - 1` → stage `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Segment {
    /// The stage that ended the segment (1-based segment number).
    pub index: u8,
    pub start_ns: u64,
    pub end_ns: u64,
    /// CPU the segment ended on.
    pub cpu: u32,
    /// Slot whose hit ended the segment (tells which probe point fired).
    pub slot: u8,
    /// Time charged to each interference source (`clockpath_common::interference`) while the
    /// segment was open on its CPU; `UNKNOWN_INTERFERENCE` when it changed CPU; zeros for
    /// chains that do not charge interference.
    pub interference_ns: [u64; clockpath_common::interference::SOURCES],
}

impl Segment {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// One chain instance, assembled. Times are CLOCK_MONOTONIC nanoseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainRecord {
    /// Chain index (as in the plan and the kernel maps).
    pub chain: u8,
    pub instance_id: u64,
    pub key: u64,
    /// Value captured at stage 0 (e.g. the new clocksource's read function).
    pub capture: u64,
    /// CPU of the first segment.
    pub cpu: u32,
    /// For a chain with causes, the cause of the stage-0 point that opened the instance
    /// (`ChainShape::cause_name`); 0 otherwise.
    pub cause: u8,
    /// Stage-0 time.
    pub start_ns: u64,
    /// Time of the last recorded stage (or of the close).
    pub end_ns: u64,
    pub segments: Vec<Segment>,
    pub outcome: Outcome,
    /// Session the instance belongs to, when a session runner or a replayed file says so.
    pub session: Option<Arc<str>>,
    /// Extra attributes (e.g. `old_clocksource`, `new_clocksource`), for spans and traces.
    pub labels: Vec<(Arc<str>, Arc<str>)>,
}

impl ChainRecord {
    /// First stage → last recorded stage.
    pub fn total_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// Static facts about a chain that assembly needs.
#[derive(Clone, Debug)]
pub struct ChainShape {
    pub name: String,
    pub stages: Vec<String>,
    pub timeout_ns: u64,
    /// Names of the causes stage 0's points open instances with (a record's `cause` indexes
    /// them); empty for a chain without causes.
    pub causes: Vec<String>,
}

impl ChainShape {
    /// Number of segments (stages - 1).
    pub fn segments(&self) -> usize {
        self.stages.len().saturating_sub(1)
    }

    /// Name of cause `index`, for a chain with causes.
    pub fn cause_name(&self, index: u8) -> Option<&str> {
        self.causes.get(index as usize).map(String::as_str)
    }

    /// `a→b` name of segment `index` (1-based).
    pub fn segment_name(&self, index: u8) -> String {
        let i = index as usize;
        match (self.stages.get(i.wrapping_sub(1)), self.stages.get(i)) {
            (Some(a), Some(b)) => format!("{a}->{b}"),
            _ => format!("segment_{index}"),
        }
    }
}
