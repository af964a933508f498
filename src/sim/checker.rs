//! The history checker: what clients did and saw, and the properties every run must keep.
//!
//! Place in the flow: the simulator records every client write (its value, the context it
//! carried and how it ended) and every read; the checker judges reads as they come and,
//! once the network has healed and hints have drained, the final reads:
//!
//! 1. an acknowledged write is returned by every final read of its key, as a value or a
//!    sibling, unless a write that may have been applied (acknowledged, or of unknown
//!    outcome) carried a context covering it: a write of unknown outcome may have been
//!    applied, and then it rightly superseded what its context covered;
//! 2. concurrent acknowledged writes (neither's context covers the other) all survive, so
//!    they surface together as siblings; and no read returns a write together with a write
//!    whose context covered it;
//! 3. no read returns a value that no client wrote to that key;
//! 4. no final read returns an acknowledged write that a later acknowledged write's context
//!    covered: in particular a key whose values an acknowledged delete covered stays
//!    deleted (tombstone purges must not bring them back).

use std::collections::BTreeMap;

use crate::causal::{Context, Dot};
use crate::wire::ErrorCode;

/// How a client write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No answer yet.
    Pending,
    /// Acknowledged; the new version's dot.
    Acked(Dot),
    /// Refused before anything was applied.
    Refused(ErrorCode),
    /// May or may not have been applied (indeterminate, a store failure, or no answer).
    Unknown,
}

/// One client write.
#[derive(Debug, Clone)]
pub struct WriteRecord {
    /// The key.
    pub key: Vec<u8>,
    /// The value put, `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// The context the write carried.
    pub context: Context,
    /// How it ended.
    pub outcome: Outcome,
}

impl WriteRecord {
    fn maybe_applied(&self) -> bool {
        !matches!(self.outcome, Outcome::Refused(_))
    }
}

/// Every write of a run, and the judgements on reads.
#[derive(Debug, Default)]
pub struct History {
    writes: Vec<WriteRecord>,
    /// (key, value) -> write index. Values are unique per run.
    by_value: BTreeMap<(Vec<u8>, Vec<u8>), usize>,
    /// Reads judged.
    pub reads: u64,
    /// Final reads in which two or more concurrent acknowledged writes were required
    /// (and so seen) as siblings.
    pub sibling_reads: u64,
    /// Final reads of keys whose every acknowledged value an acknowledged delete covered.
    pub deleted_reads: u64,
}

impl History {
    /// Records a write as it is sent; returns its index.
    pub fn write(&mut self, key: &[u8], value: Option<&[u8]>, context: Context) -> usize {
        let index = self.writes.len();
        if let Some(value) = value {
            self.by_value.insert((key.to_vec(), value.to_vec()), index);
        }
        self.writes.push(WriteRecord {
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
            context,
            outcome: Outcome::Pending,
        });
        index
    }

    /// Records how write `index` ended.
    pub fn outcome(&mut self, index: usize, outcome: Outcome) {
        if let Some(write) = self.writes.get_mut(index) {
            write.outcome = outcome;
        }
    }

    /// Every write, in issue order.
    pub fn writes(&self) -> &[WriteRecord] {
        &self.writes
    }

    /// Judges a read of `key` that returned `values` (any time during the run): property 3,
    /// and that no returned write is covered by another returned one.
    pub fn read(&mut self, key: &[u8], values: &[Vec<u8>]) -> Result<(), String> {
        self.reads += 1;
        let mut indexes = Vec::new();
        for value in values {
            let Some(&index) = self.by_value.get(&(key.to_vec(), value.clone())) else {
                return Err(format!(
                    "read of {} returned {}, which was never written to it",
                    show(key),
                    show(value)
                ));
            };
            indexes.push(index);
        }
        for &a in &indexes {
            for &b in &indexes {
                let (Some(wa), Some(wb)) = (self.writes.get(a), self.writes.get(b)) else {
                    continue;
                };
                if let Outcome::Acked(dot) = wa.outcome {
                    if a != b && wb.context.covers(dot) {
                        return Err(format!(
                            "read of {} returned {} together with {}, whose context covered it",
                            show(key),
                            show(wa.value.as_deref().unwrap_or_default()),
                            show(wb.value.as_deref().unwrap_or_default()),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Judges a read made after the network healed and hints drained: properties 1, 2
    /// and 4.
    pub fn final_read(&mut self, key: &[u8], values: &[Vec<u8>]) -> Result<(), String> {
        self.read(key, values)?;
        // Only a write issued after another can cover it (its context came from a read
        // that saw it). Purged tombstones restart a key's dot counters, so an older
        // context may name a newer write's dot: that is not a supersession.
        let acked_covering = |index: usize, dot| {
            self.writes.iter().skip(index + 1).find(|other| {
                other.key == key
                    && matches!(other.outcome, Outcome::Acked(_))
                    && other.context.covers(dot)
            })
        };
        for value in values {
            let Some((index, write)) = self
                .by_value
                .get(&(key.to_vec(), value.clone()))
                .and_then(|&i| Some((i, self.writes.get(i)?)))
            else {
                continue;
            };
            let Outcome::Acked(dot) = write.outcome else {
                continue;
            };
            if let Some(later) = acked_covering(index, dot) {
                let what = match &later.value {
                    None => "an acknowledged delete".to_owned(),
                    Some(v) => format!("the acknowledged write {}", show(v)),
                };
                return Err(format!(
                    "a final read of {} returned {}, which {what} had superseded",
                    show(key),
                    show(value)
                ));
            }
        }
        let acked_values: Vec<Dot> = self
            .writes
            .iter()
            .filter(|w| w.key == key && w.value.is_some())
            .filter_map(|w| match w.outcome {
                Outcome::Acked(dot) => Some(dot),
                _ => None,
            })
            .collect();
        let deleted = !acked_values.is_empty()
            && acked_values.iter().all(|&dot| {
                self.writes.iter().any(|w| {
                    w.key == key
                        && w.value.is_none()
                        && matches!(w.outcome, Outcome::Acked(_))
                        && w.context.covers(dot)
                })
            });
        if deleted {
            self.deleted_reads += 1;
        }
        let mut required = 0;
        for write in self.writes.iter().filter(|write| write.key == key) {
            let (Outcome::Acked(dot), Some(value)) = (write.outcome, &write.value) else {
                continue;
            };
            let covered = self.writes.iter().any(|other| {
                other.key == key && other.maybe_applied() && other.context.covers(dot)
            });
            if covered {
                continue;
            }
            required += 1;
            if !values.contains(value) {
                return Err(format!(
                    "acknowledged write {} = {} (dot {:?}) is missing from a final read, \
                     which returned {:?}",
                    show(key),
                    show(value),
                    dot,
                    values.iter().map(|v| show(v)).collect::<Vec<_>>()
                ));
            }
        }
        if required >= 2 {
            self.sibling_reads += 1;
        }
        Ok(())
    }
}

/// Keys and values are short ASCII in the simulator.
pub(super) fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::{Actor, CausalState, Value};

    #[test]
    fn a_lost_acknowledged_write_and_a_phantom_value_are_caught() {
        let mut state = CausalState::new();
        let mut history = History::default();
        let first = history.write(b"k", Some(b"v1"), Context::empty());
        let dot = state
            .update(&Context::empty(), Value::Bytes(b"v1".to_vec()), Actor(1))
            .map(|updated| updated.dot)
            .expect("update");
        history.outcome(first, Outcome::Acked(dot));
        assert!(history.final_read(b"k", &[]).is_err());
        assert!(history.final_read(b"k", &[b"v1".to_vec()]).is_ok());
        assert!(history.read(b"k", &[b"v9".to_vec()]).is_err());

        // A later write whose context covered v1 excuses its absence, even if that
        // write's outcome is unknown; a refused one does not.
        let second = history.write(b"k", Some(b"v2"), state.context());
        history.outcome(second, Outcome::Refused(ErrorCode::Unavailable));
        assert!(history.final_read(b"k", &[]).is_err());
        history.outcome(second, Outcome::Unknown);
        assert!(history.final_read(b"k", &[]).is_ok());
        assert!(history
            .read(b"k", &[b"v1".to_vec(), b"v2".to_vec()])
            .is_err());
    }
}
