//! The byte ranges of an upload that the sender actually wrote: a set of
//! half-open intervals, merged as they touch, with a bound on how many disjoint
//! pieces it may hold (so a hostile client writing every other byte cannot make
//! it grow without limit). An upload lands only if its ranges cover `0..len`:
//! a byte nobody sent is never delivered.

use std::collections::BTreeMap;

/// Most disjoint pieces one upload may have at once (pipelined out-of-order
/// writes leave a few; OpenSSH has at most 64 requests in flight).
pub const MAX_PIECES: usize = 4096;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ranges {
    /// start → end (exclusive); disjoint and not touching.
    map: BTreeMap<u64, u64>,
}

/// Too many disjoint pieces.
#[derive(Debug, PartialEq)]
pub struct TooFragmented;

impl Ranges {
    pub fn new() -> Ranges {
        Ranges::default()
    }

    pub fn pieces(&self) -> usize {
        self.map.len()
    }

    /// Mark `start..end` written.
    pub fn insert(&mut self, start: u64, end: u64) -> Result<(), TooFragmented> {
        if start >= end {
            return Ok(());
        }
        let (mut s, mut e) = (start, end);
        // a piece starting at or before `s` that reaches `s` merges
        if let Some((&ps, &pe)) = self.map.range(..=s).next_back() {
            if pe >= s {
                s = ps;
                e = e.max(pe);
            }
        }
        // every piece starting within s..=e merges
        let inside: Vec<(u64, u64)> = self.map.range(s..=e).map(|(&a, &b)| (a, b)).collect();
        for (a, b) in inside {
            self.map.remove(&a);
            e = e.max(b);
        }
        if self.map.len() >= MAX_PIECES {
            return Err(TooFragmented);
        }
        self.map.insert(s, e);
        Ok(())
    }

    /// Forget everything at or beyond `len` (the file was truncated).
    pub fn truncate(&mut self, len: u64) {
        let beyond: Vec<u64> = self.map.range(len..).map(|(&a, _)| a).collect();
        for a in beyond {
            self.map.remove(&a);
        }
        if let Some((&a, b)) = self.map.range_mut(..len).next_back() {
            if *b > len {
                *b = len;
            }
            debug_assert!(a < *b);
        }
    }

    /// The first range within `0..len` that was never written, if any.
    pub fn first_hole(&self, len: u64) -> Option<(u64, u64)> {
        let mut at = 0u64;
        for (&a, &b) in &self.map {
            if at >= len {
                break;
            }
            if a > at {
                return Some((at, a.min(len)));
            }
            at = at.max(b);
        }
        (at < len).then_some((at, len))
    }

    /// Bytes marked written.
    pub fn covered(&self) -> u64 {
        self.map.iter().map(|(a, b)| b - a).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_holes() {
        let mut r = Ranges::new();
        assert_eq!(r.first_hole(0), None);
        assert_eq!(r.first_hole(5), Some((0, 5)));
        r.insert(10, 20).unwrap();
        r.insert(30, 40).unwrap();
        assert_eq!(r.pieces(), 2);
        assert_eq!(r.first_hole(40), Some((0, 10)));
        r.insert(0, 10).unwrap();
        assert_eq!(r.pieces(), 2, "touching pieces merge");
        assert_eq!(r.first_hole(40), Some((20, 30)));
        r.insert(15, 35).unwrap();
        assert_eq!(r.pieces(), 1);
        assert_eq!(r.first_hole(40), None);
        assert_eq!(r.first_hole(41), Some((40, 41)));
        r.insert(5, 6).unwrap();
        assert_eq!(r.pieces(), 1);
        assert_eq!(r.covered(), 40);
        r.insert(7, 7).unwrap();
        assert_eq!(r.pieces(), 1);
    }

    #[test]
    fn truncate_and_grow() {
        let mut r = Ranges::new();
        r.insert(0, 100).unwrap();
        r.insert(200, 300).unwrap();
        r.truncate(250);
        assert_eq!(r.first_hole(250), Some((100, 200)));
        r.truncate(50);
        assert_eq!(r.pieces(), 1);
        assert_eq!(r.first_hole(50), None);
        // a size set beyond the written end is a hole
        assert_eq!(r.first_hole(60), Some((50, 60)));
        r.truncate(0);
        assert_eq!(r.pieces(), 0);
    }

    #[test]
    fn bounded() {
        let mut r = Ranges::new();
        for i in 0..MAX_PIECES as u64 {
            r.insert(i * 2, i * 2 + 1).unwrap();
        }
        assert_eq!(r.insert(1_000_000, 1_000_001), Err(TooFragmented));
        // filling a gap still works (it merges)
        r.insert(1, 2).unwrap();
        assert_eq!(r.pieces(), MAX_PIECES - 1);
    }

    #[test]
    fn random_against_a_bitmap() {
        let mut seed = 12345u64;
        for _ in 0..200 {
            let mut r = Ranges::new();
            let mut bits = vec![false; 256];
            for _ in 0..30 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let a = (seed >> 33) % 256;
                let b = (a + (seed >> 20) % 40).min(256);
                if (seed >> 10).is_multiple_of(7) {
                    r.truncate(a);
                    bits[a as usize..].iter_mut().for_each(|x| *x = false);
                } else {
                    r.insert(a, b).unwrap();
                    bits[a as usize..b as usize]
                        .iter_mut()
                        .for_each(|x| *x = true);
                }
                for len in [0u64, 1, 17, 100, 255, 256] {
                    let want = bits[..len as usize].iter().position(|x| !x).map(|s| {
                        let e = bits[s..len as usize]
                            .iter()
                            .position(|x| *x)
                            .map_or(len as usize, |k| s + k);
                        (s as u64, e as u64)
                    });
                    assert_eq!(r.first_hole(len), want);
                }
                assert_eq!(r.covered(), bits.iter().filter(|x| **x).count() as u64);
            }
        }
    }
}
