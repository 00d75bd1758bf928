//! The byte-level pieces of the compact encodings ([`crate::attrs::compact::CompactMap`] in
//! memory, link records in the store): LEB128 varints and length-prefixed byte strings. The
//! reader never panics: damaged input reads as `None`.

pub(crate) fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// An optional time to the second, as a varint: Unix seconds + 1, 0 for none (a time before
/// 1970 is written as 1970: nothing we persist is older).
pub(crate) fn put_time(out: &mut Vec<u8>, t: Option<chrono::DateTime<chrono::Utc>>) {
    put_varint(
        out,
        t.map_or(0, |t| u64::try_from(t.timestamp()).unwrap_or(0) + 1),
    );
}

/// Reads what the `put_*` functions wrote.
#[derive(Clone)]
pub struct Reader<'a> {
    pub rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn byte(&mut self) -> Option<u8> {
        let (&b, tail) = self.rest.split_first()?;
        self.rest = tail;
        Some(b)
    }

    pub fn varint(&mut self) -> Option<u64> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        if len > self.rest.len() {
            return None;
        }
        let (b, tail) = self.rest.split_at(len);
        self.rest = tail;
        Some(b)
    }

    pub fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    /// What [`put_time`] wrote: `Some(None)` for no time, `None` when damaged.
    pub fn time(&mut self) -> Option<Option<chrono::DateTime<chrono::Utc>>> {
        match self.varint()? {
            0 => Some(None),
            n => Some(Some(chrono::DateTime::from_timestamp(
                i64::try_from(n - 1).ok()?,
                0,
            )?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn times_round_trip_to_the_second() {
        let t = chrono::DateTime::from_timestamp(1_800_000_000, 0);
        for t in [None, t, chrono::DateTime::from_timestamp(0, 0)] {
            let mut out = Vec::new();
            put_time(&mut out, t);
            assert_eq!(Reader::new(&out).time(), Some(t));
        }
        // A varint past any representable time is damage, not a panic.
        let mut out = Vec::new();
        put_varint(&mut out, u64::MAX);
        assert_eq!(Reader::new(&out).time(), None);
    }

    proptest! {
        #[test]
        fn varints_and_strings_round_trip(n in any::<u64>(), s in ".{0,40}") {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            put_bytes(&mut out, s.as_bytes());
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.varint(), Some(n));
            prop_assert_eq!(r.str(), Some(s.as_str()));
            prop_assert!(r.is_empty());
            // Every truncation fails cleanly.
            for cut in 0..out.len() {
                let mut r = Reader::new(&out[..cut]);
                let whole = r.varint().is_some() && r.str().is_some();
                prop_assert!(!whole || cut == out.len());
            }
        }
    }
}
