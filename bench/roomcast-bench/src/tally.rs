//! Per-connection sequence bookkeeping: counts unique deliveries and tells a
//! duplicate from a late (reordered) one without remembering every sequence
//! number — only the gaps seen so far, which stay empty on a healthy run.
//!
//! Each room's publisher numbers its messages 1, 2, 3, … and every receiver
//! joined before the first one, so a receiver of room R should see exactly
//! `1..=last[R]`; whatever is not unique by the end is lost.

/// Most gaps remembered per connection; beyond that, late arrivals of the
/// forgotten gaps count as duplicates (a run that bad is lossy anyway).
const MAX_GAPS: usize = 64;

/// What one delivery was, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next expected sequence number, or a jump ahead (a gap opens).
    InOrder,
    /// A sequence number that was missing until now.
    Reordered,
    /// Seen before.
    Duplicate,
}

#[derive(Debug, Default)]
pub struct SeqTally {
    next: u64,
    /// Missing sequence numbers as inclusive ranges, oldest first.
    gaps: Vec<(u64, u64)>,
    pub unique: u64,
}

impl SeqTally {
    pub fn new() -> Self {
        SeqTally {
            next: 1,
            gaps: Vec::new(),
            unique: 0,
        }
    }

    /// Every sequence number below the highest seen has arrived.
    pub fn gapless(&self) -> bool {
        self.gaps.is_empty()
    }

    pub fn observe(&mut self, seq: u64) -> Arrival {
        if seq >= self.next {
            if seq > self.next {
                if self.gaps.len() == MAX_GAPS {
                    self.gaps.remove(0);
                }
                self.gaps.push((self.next, seq - 1));
            }
            self.next = seq + 1;
            self.unique += 1;
            return Arrival::InOrder;
        }
        let Some(index) = self.gaps.iter().position(|&(a, b)| a <= seq && seq <= b) else {
            return Arrival::Duplicate;
        };
        let (a, b) = self.gaps[index];
        match (seq == a, seq == b) {
            (true, true) => {
                self.gaps.remove(index);
            }
            (true, false) => self.gaps[index].0 = seq + 1,
            (false, true) => self.gaps[index].1 = seq - 1,
            (false, false) => {
                self.gaps[index].1 = seq - 1;
                self.gaps.insert(index + 1, (seq + 1, b));
            }
        }
        self.unique += 1;
        Arrival::Reordered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_order_reorder_and_duplicates_apart() {
        let mut t = SeqTally::new();
        assert_eq!(t.observe(1), Arrival::InOrder);
        assert_eq!(t.observe(4), Arrival::InOrder); // 2..=3 missing
        assert_eq!(t.observe(3), Arrival::Reordered);
        assert_eq!(t.observe(3), Arrival::Duplicate);
        assert_eq!(t.observe(1), Arrival::Duplicate);
        assert_eq!(t.observe(8), Arrival::InOrder); // 5..=7 missing
        assert_eq!(t.observe(6), Arrival::Reordered); // splits 5..=7
        assert_eq!(t.observe(5), Arrival::Reordered);
        assert_eq!(t.observe(7), Arrival::Reordered);
        assert_eq!(t.observe(2), Arrival::Reordered);
        assert_eq!(t.unique, 8);
        assert!(t.gaps.is_empty());
    }
}
