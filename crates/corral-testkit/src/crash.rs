//! The workload of corral's crash-consistency tests, and the check of a disk after a crash.
//!
//! A writer (a Rust test process on `corral-disk`, or the freestanding guest
//! `guests/virtio-blk-crash.c` inside the VMM) runs a deterministic sequence of 4 KiB writes and
//! discards over a disk, flushes after every batch and reports how many operations it had flushed.
//! The test kills it at a random instant and then reads the whole disk: every sector must hold
//! what the last flushed operation on it left, or what a later (possibly unflushed) operation
//! wrote, never anything else. Sector contents name the round and the operation that wrote them,
//! so the check needs no copy of the disk.
//!
//! The generator is a 64-bit LCG that the C guest implements the same way; change both together.

use std::collections::{BTreeMap, HashMap};

/// The unit of the check.
pub const SECTOR: u64 = 512;
/// The size of every operation.
pub const BLOCK: u64 = 4096;
const MAGIC: &[u8; 4] = b"CRSH";

/// One operation of the workload, on a 4 KiB block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Write [`written_sector`] contents into every sector of the block.
    Write(u64),
    /// Discard the block; it reads as zeroes afterwards.
    Discard(u64),
}

/// The 64-bit LCG (Knuth's MMIX constants) of the workload; the tests draw their own random
/// choices (kill delays, seeds) from it too.
#[derive(Clone, Debug)]
pub struct Lcg(pub u64);

impl Lcg {
    /// Advances the generator and returns its new state.
    pub fn step(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0
    }

    /// A number below `below`, from the state's high bits.
    pub fn below(&mut self, below: u64) -> u64 {
        (self.step() >> 33) % below
    }
}

/// The endless operation sequence for `seed` over a disk of `blocks` 4 KiB blocks.
pub fn ops(seed: u64, blocks: u64) -> impl Iterator<Item = Op> {
    let mut lcg = Lcg(seed);
    std::iter::from_fn(move || {
        let state = lcg.step();
        let block = (state >> 33) % blocks;
        // One in sixteen operations discards, which frees clusters in a qcow2 image.
        Some(if (state >> 17) & 15 == 0 {
            Op::Discard(block)
        } else {
            Op::Write(block)
        })
    })
}

/// What operation `index` of round `round` writes into `sector`: a 24-byte header naming the
/// write (magic, round, index, sector) and a fixed filler, `(k ^ 0x5a) & 0xff` at byte `k`. The
/// filler is the same in every write because the guest's code runs emulated on hosts without
/// VT-x, where filling 4 KiB per write would cost milliseconds; a torn or misplaced sector still
/// shows in the header.
pub fn written_sector(round: u32, index: u32, sector: u64) -> [u8; SECTOR as usize] {
    let mut bytes: [u8; SECTOR as usize] = std::array::from_fn(|k| (k as u8) ^ 0x5a);
    bytes[..4].copy_from_slice(MAGIC);
    bytes[4..8].copy_from_slice(&round.to_le_bytes());
    bytes[8..12].copy_from_slice(&index.to_le_bytes());
    bytes[12..16].fill(0);
    bytes[16..24].copy_from_slice(&sector.to_le_bytes());
    bytes
}

/// What the base image holds in `sector` before any round: byte `o` of the disk is
/// `(o / 512 * 7 + o % 512) & 0xff` (the virtio-blk test's host pattern).
pub fn base_sector(sector: u64) -> [u8; SECTOR as usize] {
    std::array::from_fn(|k| (sector * 7 + k as u64) as u8)
}

/// What a sector holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Content {
    /// The base image's pattern.
    Base,
    /// Zeroes (a discard).
    Zero,
    /// What operation `index` of round `round` wrote.
    Written { round: u32, index: u32 },
}

/// Recognises the contents of `sector`, or `None` for anything the workload never writes.
pub fn decode(sector: u64, bytes: &[u8]) -> Option<Content> {
    if bytes.iter().all(|&b| b == 0) {
        return Some(Content::Zero);
    }
    if bytes == base_sector(sector) {
        return Some(Content::Base);
    }
    let word = |range: std::ops::Range<usize>| {
        let mut le = [0u8; 4];
        le.copy_from_slice(&bytes[range]);
        u32::from_le_bytes(le)
    };
    if bytes.len() != SECTOR as usize || &bytes[..4] != MAGIC {
        return None;
    }
    let (round, index) = (word(4..8), word(8..12));
    (bytes == written_sector(round, index, sector)).then_some(Content::Written { round, index })
}

/// What a run of the workload got through before it was killed.
#[derive(Clone, Copy, Debug)]
pub struct RoundReport {
    /// The round number written into the sectors.
    pub round: u32,
    /// The seed of the operation sequence.
    pub seed: u64,
    /// Operations the writer reported flushed: those are durable.
    pub flushed: u32,
    /// An upper bound of the operations it may have issued (flushed ones included).
    pub issued: u32,
}

/// What the disk is known to hold, carried from round to round (sectors not listed hold
/// [`Content::Base`]).
#[derive(Debug, Default)]
pub struct Model {
    known: HashMap<u64, Content>,
}

impl Model {
    /// Checks every sector of a disk of `blocks` 4 KiB blocks after `report`'s round, reading it
    /// with `read(offset, buffer)`, and records what it found for the next round.
    pub fn check_round(
        &mut self,
        report: RoundReport,
        blocks: u64,
        mut read: impl FnMut(u64, &mut [u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        let sectors_per_block = BLOCK / SECTOR;
        // The operations of this round on each sector, in order.
        let mut touched: BTreeMap<u64, Vec<(u32, Content)>> = BTreeMap::new();
        for (index, op) in (0..report.issued).zip(ops(report.seed, blocks)) {
            let (block, content) = match op {
                Op::Write(block) => (
                    block,
                    Content::Written {
                        round: report.round,
                        index,
                    },
                ),
                Op::Discard(block) => (block, Content::Zero),
            };
            for sector in block * sectors_per_block..(block + 1) * sectors_per_block {
                touched.entry(sector).or_default().push((index, content));
            }
        }
        const CHUNK: u64 = 64 << 10;
        let mut buffer = vec![0u8; CHUNK as usize];
        let size = blocks * BLOCK;
        for offset in (0..size).step_by(CHUNK as usize) {
            let chunk = &mut buffer[..(size - offset).min(CHUNK) as usize];
            read(offset, chunk)?;
            for (i, bytes) in chunk.chunks(SECTOR as usize).enumerate() {
                let sector = offset / SECTOR + i as u64;
                let before = self.known.get(&sector).copied().unwrap_or(Content::Base);
                let allowed = allowed(before, touched.get(&sector), report.flushed);
                let found = decode(sector, bytes);
                match found {
                    Some(content) if allowed.contains(&content) => {
                        if content == Content::Base {
                            self.known.remove(&sector);
                        } else {
                            self.known.insert(sector, content);
                        }
                    }
                    _ => {
                        return Err(format!(
                            "round {}: sector {sector} holds {found:?}; after {} flushed \
                             operations it may only hold one of {allowed:?}",
                            report.round, report.flushed
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

/// The contents a sector may hold: what its last flushed operation left (or what it held before
/// the round, when no flushed operation touched it), or what any later operation wrote.
fn allowed(before: Content, ops: Option<&Vec<(u32, Content)>>, flushed: u32) -> Vec<Content> {
    let ops = ops.map(Vec::as_slice).unwrap_or_default();
    let durable = ops.iter().rposition(|&(index, _)| index < flushed);
    let mut allowed = match durable {
        Some(position) => vec![ops[position].1],
        None => vec![before],
    };
    let later = durable.map_or(0, |position| position + 1);
    allowed.extend(ops[later..].iter().map(|&(_, content)| content));
    allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_decode_to_what_wrote_them() {
        assert_eq!(decode(9, &base_sector(9)), Some(Content::Base));
        assert_eq!(decode(9, &[0; 512]), Some(Content::Zero));
        assert_eq!(
            decode(9, &written_sector(3, 77, 9)),
            Some(Content::Written {
                round: 3,
                index: 77
            })
        );
        // The right header in the wrong sector is foreign data.
        assert_eq!(decode(10, &written_sector(3, 77, 9)), None);
        assert_eq!(decode(9, &base_sector(10)), None);
    }

    #[test]
    fn a_lost_flushed_write_is_caught_and_unflushed_ones_may_be_lost() {
        let blocks = 8;
        let disk = std::cell::RefCell::new(
            (0..blocks * BLOCK / SECTOR)
                .flat_map(base_sector)
                .collect::<Vec<u8>>(),
        );
        let apply = |round: u32, seed: u64, count: u32| {
            for (index, op) in (0..count).zip(ops(seed, blocks)) {
                let (block, discard) = match op {
                    Op::Write(block) => (block, false),
                    Op::Discard(block) => (block, true),
                };
                for sector in block * 8..block * 8 + 8 {
                    let at = (sector * SECTOR) as usize;
                    let bytes = if discard {
                        [0; 512]
                    } else {
                        written_sector(round, index, sector)
                    };
                    disk.borrow_mut()[at..at + 512].copy_from_slice(&bytes);
                }
            }
        };
        let mut read = |offset: u64, buf: &mut [u8]| {
            let at = offset as usize;
            buf.copy_from_slice(&disk.borrow()[at..at + buf.len()]);
            Ok(())
        };
        let mut model = Model::default();
        // Round 0 flushed 10 operations and got through 12 before the kill.
        apply(0, 5, 12);
        let report = RoundReport {
            round: 0,
            seed: 5,
            flushed: 10,
            issued: 20,
        };
        model.check_round(report, blocks, &mut read).unwrap();
        // Round 1 claims 30 flushed operations but only 3 reached the disk.
        apply(1, 6, 3);
        let report = RoundReport {
            round: 1,
            seed: 6,
            flushed: 30,
            issued: 40,
        };
        let err = model.check_round(report, blocks, &mut read).unwrap_err();
        assert!(err.contains("may only hold"), "{err}");
    }
}
