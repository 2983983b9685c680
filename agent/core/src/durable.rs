//! The durable Raft state of one node, and its on-disk encoding.
//!
//! Everything a node must remember across a crash lives in [`DurableState`]: the hard state
//! (term, vote, commit), the membership, and the log. The core hands out a new `DurableState`
//! whenever any of it changed, and the daemon writes it atomically (temporary file, fsync,
//! rename, fsync of the directory) *before* it sends the messages that depend on it. The
//! encoding carries a magic number, explicit lengths and a SHA-256 checksum, so that a torn,
//! truncated or corrupt file is reported as such and never silently taken for an empty state.

use raft::prelude::{ConfState, Entry, HardState};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"HAAGST01";
const CHECKSUM_LEN: usize = 32;

/// What a node must find again after a crash.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DurableState {
    /// Term, vote and commit index.
    pub hard_state: HardState,
    /// The voters of the group.
    pub conf_state: ConfState,
    /// Index of the last entry folded into a snapshot (0: the log starts at index 1).
    pub snapshot_index: u64,
    /// Term of the entry at `snapshot_index`.
    pub snapshot_term: u64,
    /// The log after `snapshot_index`, contiguous.
    pub entries: Vec<Entry>,
}

/// Why a state file could not be read back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("the file is {0} bytes long, too short to be a state file")]
    TooShort(usize),
    #[error("the file does not start with the ha-agent state magic number (not a state file, or an incompatible version)")]
    BadMagic,
    #[error("checksum mismatch: the file is torn or corrupt")]
    Checksum,
    #[error("the {0} field is truncated")]
    Truncated(&'static str),
    #[error("the {field} field does not decode: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("{0} trailing bytes after the last field")]
    Trailing(usize),
    #[error("inconsistent state: {0}")]
    Inconsistent(String),
}

impl DurableState {
    /// Serialises the state with a checksum.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.entries.len() * 32);
        out.extend_from_slice(MAGIC);
        put_bytes(&mut out, &encode_pb(&self.hard_state));
        put_bytes(&mut out, &encode_pb(&self.conf_state));
        out.extend_from_slice(&self.snapshot_index.to_le_bytes());
        out.extend_from_slice(&self.snapshot_term.to_le_bytes());
        let count = u32::try_from(self.entries.len()).expect("fewer than 2^32 log entries");
        out.extend_from_slice(&count.to_le_bytes());
        for entry in &self.entries {
            put_bytes(&mut out, &encode_pb(entry));
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Parses and checks a state written by [`DurableState::encode`].
    pub fn decode(bytes: &[u8]) -> Result<DurableState, DecodeError> {
        if bytes.len() < MAGIC.len() + CHECKSUM_LEN {
            return Err(DecodeError::TooShort(bytes.len()));
        }
        if &bytes[..MAGIC.len()] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Sha256::digest(body).as_slice() != sum {
            return Err(DecodeError::Checksum);
        }
        let mut reader = Reader {
            rest: &body[MAGIC.len()..],
        };
        let hard_state: HardState = decode_pb("hard state", reader.bytes("hard state")?)?;
        let conf_state: ConfState = decode_pb("conf state", reader.bytes("conf state")?)?;
        let snapshot_index = reader.u64("snapshot index")?;
        let snapshot_term = reader.u64("snapshot term")?;
        let count = reader.u32("entry count")?;
        let mut entries = Vec::with_capacity(count.min(1 << 16) as usize);
        for _ in 0..count {
            entries.push(decode_pb::<Entry>("log entry", reader.bytes("log entry")?)?);
        }
        if !reader.rest.is_empty() {
            return Err(DecodeError::Trailing(reader.rest.len()));
        }
        let state = DurableState {
            hard_state,
            conf_state,
            snapshot_index,
            snapshot_term,
            entries,
        };
        state.check()?;
        Ok(state)
    }

    /// Index of the last entry in the log (or of the snapshot when the log is empty).
    pub fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_index, |e| e.get_index())
    }

    fn check(&self) -> Result<(), DecodeError> {
        for (expected, entry) in (self.snapshot_index + 1..).zip(&self.entries) {
            if entry.get_index() != expected {
                return Err(DecodeError::Inconsistent(format!(
                    "log entry {} found where {} was expected",
                    entry.get_index(),
                    expected
                )));
            }
        }
        if self.hard_state.get_commit() > self.last_index() {
            return Err(DecodeError::Inconsistent(format!(
                "commit index {} is past the last log entry {}",
                self.hard_state.get_commit(),
                self.last_index()
            )));
        }
        if self.conf_state.get_voters().is_empty() {
            return Err(DecodeError::Inconsistent(
                "the membership has no voters".to_string(),
            ));
        }
        Ok(())
    }
}

fn encode_pb(message: &impl protobuf::Message) -> Vec<u8> {
    message
        .write_to_bytes()
        .expect("encoding a raft protobuf into memory cannot fail")
}

fn decode_pb<M: protobuf::Message>(field: &'static str, bytes: &[u8]) -> Result<M, DecodeError> {
    M::parse_from_bytes(bytes).map_err(|e| DecodeError::Field {
        field,
        reason: e.to_string(),
    })
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a protobuf field under 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated(field));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, field)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, field)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(field)? as usize;
        self.take(len, field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DurableState {
        let mut hs = HardState::default();
        hs.set_term(7);
        hs.set_vote(2);
        hs.set_commit(2);
        let mut cs = ConfState::default();
        cs.set_voters(vec![1, 2, 3]);
        let entries = (1..=3)
            .map(|i| {
                let mut e = Entry::default();
                e.set_index(i);
                e.set_term(i + 4);
                e.set_data(vec![i as u8; 3].into());
                e
            })
            .collect();
        DurableState {
            hard_state: hs,
            conf_state: cs,
            snapshot_index: 0,
            snapshot_term: 0,
            entries,
        }
    }

    #[test]
    fn round_trips() {
        let state = sample();
        assert_eq!(DurableState::decode(&state.encode()), Ok(state));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            let err = DurableState::decode(&bytes[..len]).expect_err("a torn file must not decode");
            assert!(
                matches!(err, DecodeError::TooShort(_) | DecodeError::Checksum),
                "length {len}: {err}"
            );
        }
    }

    #[test]
    fn every_flipped_bit_is_an_error() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[i] ^= 0x10;
            assert!(
                DurableState::decode(&corrupt).is_err(),
                "flipping a bit of byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn gaps_in_the_log_are_rejected_even_with_a_valid_checksum() {
        let mut state = sample();
        state.entries.remove(1);
        let err = DurableState::decode(&state.encode()).unwrap_err();
        assert!(matches!(err, DecodeError::Inconsistent(_)), "{err}");
    }
}
