//! Which offset of each partition may be committed: the lowest message fetched but
//! not yet acked, or one past the last fetched when everything is acked. Nothing
//! past an unacked message is ever committed, whatever order acks come in.
//!
//! Each assignment of a partition is an epoch: when a partition is revoked, what was
//! fetched in its epoch no longer counts (its acks are ignored; the next owner reads
//! again from the committed offset).

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
pub struct Offsets {
    parts: HashMap<i32, Part>,
    next_epoch: u64,
}

#[derive(Debug)]
struct Part {
    epoch: u64,
    /// Fetched, not yet acked.
    outstanding: BTreeSet<i64>,
    /// One past the highest offset fetched in this epoch.
    next: Option<i64>,
    /// The last commit point handed out by [`Offsets::moved_points`].
    stored: Option<i64>,
}

impl Offsets {
    /// A partition was assigned: a fresh epoch, nothing fetched yet.
    pub fn assign(&mut self, partition: i32) -> u64 {
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        self.parts.insert(
            partition,
            Part {
                epoch,
                outstanding: BTreeSet::new(),
                next: None,
                stored: None,
            },
        );
        epoch
    }

    /// A partition was revoked: what was fetched in its epoch no longer counts.
    pub fn revoke(&mut self, partition: i32) {
        self.parts.remove(&partition);
    }

    /// The epoch a partition is in, if assigned.
    pub fn epoch(&self, partition: i32) -> Option<u64> {
        self.parts.get(&partition).map(|p| p.epoch)
    }

    /// A message was fetched; returns the epoch its ack must name. A message of a
    /// partition not (or no longer) assigned starts an epoch: tracking it is always
    /// safe, the worst case is that it is read twice.
    pub fn fetched(&mut self, partition: i32, offset: i64) -> u64 {
        let epoch = match self.parts.get(&partition) {
            Some(p) => p.epoch,
            None => self.assign(partition),
        };
        let p = self.parts.get_mut(&partition).expect("just assigned");
        p.outstanding.insert(offset);
        p.next = Some(p.next.map_or(offset + 1, |n| n.max(offset + 1)));
        epoch
    }

    /// A message was handled. Acks of an older epoch are ignored.
    pub fn acked(&mut self, partition: i32, offset: i64, epoch: u64) {
        if let Some(p) = self.parts.get_mut(&partition).filter(|p| p.epoch == epoch) {
            p.outstanding.remove(&offset);
        }
    }

    /// Whether a message still belongs to its partition's current epoch.
    pub fn current(&self, partition: i32, epoch: u64) -> bool {
        self.epoch(partition) == Some(epoch)
    }

    /// The offset that may be committed for a partition (the next one to read).
    pub fn commit_point(&self, partition: i32) -> Option<i64> {
        let p = self.parts.get(&partition)?;
        p.outstanding.first().copied().or(p.next)
    }

    /// Commit points that moved since the last call, to store and commit.
    pub fn moved_points(&mut self) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        let partitions: Vec<i32> = self.parts.keys().copied().collect();
        for partition in partitions {
            let Some(point) = self.commit_point(partition) else {
                continue;
            };
            let p = self.parts.get_mut(&partition).expect("listed");
            if p.stored.is_none_or(|s| point > s) {
                p.stored = Some(point);
                out.push((partition, point));
            }
        }
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_past_an_unacked_message() {
        let mut o = Offsets::default();
        let e = o.assign(0);
        for off in 10..15 {
            assert_eq!(o.fetched(0, off), e);
        }
        o.acked(0, 11, e);
        o.acked(0, 12, e);
        assert_eq!(o.moved_points(), vec![(0, 10)]); // 10 is still out
        o.acked(0, 10, e);
        assert_eq!(o.moved_points(), vec![(0, 13)]);
        assert_eq!(o.moved_points(), vec![]); // nothing moved
        o.acked(0, 14, e);
        o.acked(0, 13, e);
        assert_eq!(o.moved_points(), vec![(0, 15)]);
    }

    #[test]
    fn acks_of_a_revoked_epoch_are_ignored() {
        let mut o = Offsets::default();
        let old = o.assign(1);
        o.fetched(1, 5);
        o.revoke(1);
        let new = o.assign(1);
        assert_ne!(old, new);
        o.fetched(1, 3); // read again from the committed offset
        o.acked(1, 5, old);
        assert!(!o.current(1, old));
        assert_eq!(o.moved_points(), vec![(1, 3)]);
        o.acked(1, 3, new);
        assert_eq!(o.moved_points(), vec![(1, 4)]);
    }

    #[test]
    fn partitions_are_independent_and_unknown_ones_start_an_epoch() {
        let mut o = Offsets::default();
        let a = o.fetched(0, 0);
        let b = o.fetched(2, 7);
        o.acked(2, 7, b);
        assert_eq!(o.moved_points(), vec![(0, 0), (2, 8)]);
        o.acked(0, 0, a);
        assert_eq!(o.moved_points(), vec![(0, 1)]);
    }
}
