//! [`Exported`]: a link's memory of the values last exported, as a [`CompactMap`] (a third
//! of an [`AttrMap`]'s memory; a cycle holds one per link), plus whether the account was left
//! disabled, which the planner asks of every linked user several times a cycle, plus the
//! planner's [`InputDigest`] of the source data these values were last found to match.

use crate::attrs::codec::{put_varint, Reader};
use crate::attrs::compact::CompactMap;
use crate::attrs::map::{AttrMap, Key};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::fmt;

/// The last exported values of a link, by target path, in path order.
#[derive(Clone, Default)]
pub struct Exported {
    map: CompactMap,
    /// `active` was last exported as `false`.
    disabled: bool,
    /// What the source data looked like when mapping it last gave exactly these values (no
    /// change to send). Held here, not on the link, so that whatever changes the values drops
    /// it: a digest never vouches for values it was not computed against. Held as one byte
    /// string (see [`encode_digest`]), not as an [`InputDigest`]: one allocation a link
    /// instead of two (48 bytes a link of the 100k benchmark's ~750).
    digest: Option<Box<[u8]>>,
}

/// A digest of everything an object's mapping read (its attributes, roles, the mappings and
/// the null policy), taken when the mapped values matched the exported ones: an object whose
/// digest is the same again maps to the same values, so the planner need not map it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InputDigest {
    /// The first 16 bytes of a SHA-256 of the inputs.
    pub(crate) inputs: [u8; 16],
    /// The matching values' duplicate-detection hashes, as the mapping produced them: the
    /// planner needs them for an object it does not map.
    pub(crate) matching: Box<[u64]>,
}

/// The tag of a digest section after the values in a portable record (records before digests
/// end after the values).
const DIGEST_V1: u8 = 1;

// Equality is about the values: the digest is the planner's cache, not what was exported.
impl PartialEq for Exported {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map && self.disabled == other.disabled
    }
}

impl Eq for Exported {}

impl Exported {
    fn of(map: CompactMap) -> Self {
        let disabled = map.get_bool("active") == Some(false);
        Exported {
            map,
            disabled,
            digest: None,
        }
    }

    /// The digest of the inputs these values were last found to match, if any.
    pub(crate) fn digest(&self) -> Option<InputDigest> {
        self.digest.as_deref().and_then(decode_digest)
    }

    /// Whether the inputs these values were last found to match have this digest (the
    /// planner asks a link's [`ExportedRef::digest_is`]).
    #[cfg(test)]
    pub(crate) fn digest_is(&self, inputs: &[u8; 16]) -> bool {
        self.digest
            .as_deref()
            .is_some_and(|d| d.get(..16) == Some(&inputs[..]))
    }

    /// Record that the inputs with this digest map to exactly these values.
    pub(crate) fn set_digest(&mut self, digest: InputDigest) {
        self.digest = Some(encode_digest(&digest));
    }

    /// New values the digest still vouches for: the caller knows the change touches no value
    /// a diff of the object's mapped values reads (phase two's reference paths). The digest
    /// is kept as it is held, not decoded and built again.
    pub(crate) fn replace_keeping_digest(&mut self, map: &AttrMap) {
        let digest = self.digest.take();
        *self = Exported::from_map(map);
        self.digest = digest;
    }

    pub fn from_map(map: &AttrMap) -> Self {
        Exported::of(CompactMap::from_map(map))
    }

    pub fn to_map(&self) -> AttrMap {
        self.map.to_map()
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.map.get(path)
    }

    /// `get(path)` is the string `s`, without building it.
    pub fn get_str_is(&self, path: &str, s: &str) -> bool {
        self.map.get_str(path) == Some(s)
    }

    pub fn contains_key(&self, path: &str) -> bool {
        self.map.contains_key(path)
    }

    pub fn keys(&self) -> Vec<Key> {
        self.map.keys()
    }

    /// Whether `active` was last exported as `false`.
    pub fn disabled(&self) -> bool {
        self.disabled
    }

    /// Every value of `map` is the one last exported (see [`CompactMap::covers`]): the
    /// no-change test of a cycle, with no allocation.
    pub fn covers(&self, map: &AttrMap) -> bool {
        self.map.covers(map)
    }

    pub fn insert(&mut self, path: &str, value: Value) {
        self.map.insert(path, value);
        self.disabled = self.map.get_bool("active") == Some(false);
        // New values: the old digest vouches for the old ones only.
        self.digest = None;
    }

    /// See [`CompactMap::write_portable`]; then the digest, if any, as a tagged section. It
    /// must be the last field of its record: [`Exported::read_portable`] reads a digest from
    /// whatever follows the values.
    pub fn write_portable(&self, out: &mut Vec<u8>, number: &mut dyn FnMut(&str) -> Option<u32>) {
        self.map.write_portable(out, number);
        if let Some(d) = self.digest() {
            out.push(DIGEST_V1);
            out.extend_from_slice(&d.inputs);
            put_varint(out, d.matching.len() as u64);
            for h in &d.matching {
                out.extend_from_slice(&h.to_le_bytes());
            }
        }
    }

    /// See [`CompactMap::read_portable`]. A record without a digest section (written before
    /// digests existed) reads with none, as does one with a section of a later version: the
    /// planner then simply maps the object.
    pub fn read_portable(
        r: &mut Reader<'_>,
        name: &mut dyn FnMut(u32) -> Option<crate::attrs::compact::LocalName>,
    ) -> Option<Self> {
        let mut out = CompactMap::read_portable(r, name).map(Exported::of)?;
        match r.byte() {
            None => {}
            Some(DIGEST_V1) => {
                let mut inputs = [0u8; 16];
                for b in &mut inputs {
                    *b = r.byte()?;
                }
                let n = r.varint()?;
                let mut matching = Vec::new();
                for _ in 0..n {
                    let mut h = [0u8; 8];
                    for b in &mut h {
                        *b = r.byte()?;
                    }
                    matching.push(u64::from_le_bytes(h));
                }
                out.digest = Some(encode_digest(&InputDigest {
                    inputs,
                    matching: matching.into_boxed_slice(),
                }));
            }
            // A later version's section: ignored (the object is mapped), not damage.
            Some(_) => r.rest = &[],
        }
        Some(out)
    }
}

impl Exported {
    /// The parts a link record (`model::link`) holds: the values' encoding, the digest's
    /// bytes and whether `active` was last exported as `false`.
    pub(crate) fn parts(&self) -> (&[u8], Option<&[u8]>, bool) {
        (self.map.as_bytes(), self.digest.as_deref(), self.disabled)
    }

    /// What [`Exported::parts`] gave, owned again.
    pub(crate) fn from_parts(parts: ExportedRef<'_>) -> Self {
        Exported {
            map: CompactMap::from_bytes(parts.map.into()),
            disabled: parts.disabled,
            digest: parts.digest.map(Box::from),
        }
    }
}

/// A link record's exported values, borrowed from the record: the planner's questions of
/// every linked object ([`ExportedRef::digest_is`], [`ExportedRef::get_str_is`]) are
/// answered from the bytes; the rest decode on demand.
#[derive(Clone, Copy)]
pub(crate) struct ExportedRef<'a> {
    map: &'a [u8],
    digest: Option<&'a [u8]>,
    disabled: bool,
}

impl<'a> ExportedRef<'a> {
    /// The parts [`Exported::parts`] gave.
    pub(crate) fn new(map: &'a [u8], digest: Option<&'a [u8]>, disabled: bool) -> Self {
        ExportedRef {
            map,
            digest,
            disabled,
        }
    }

    fn owned_map(&self) -> CompactMap {
        CompactMap::from_bytes(self.map.into())
    }

    /// See [`Exported::digest`].
    pub(crate) fn digest(&self) -> Option<InputDigest> {
        self.digest.and_then(decode_digest)
    }

    /// Whether the inputs these values were last found to match have this digest: the
    /// planner's question for every linked object, answered without decoding the rest.
    pub(crate) fn digest_is(&self, inputs: &[u8; 16]) -> bool {
        self.digest
            .is_some_and(|d| d.get(..16) == Some(&inputs[..]))
    }

    /// See [`Exported::get_str_is`]; no copy.
    pub(crate) fn get_str_is(&self, path: &str, s: &str) -> bool {
        CompactMap::get_str_in(self.map, path) == Some(s)
    }

    pub(crate) fn get(&self, path: &str) -> Option<Value> {
        self.owned_map().get(path)
    }

    pub(crate) fn contains_key(&self, path: &str) -> bool {
        self.owned_map().contains_key(path)
    }

    pub(crate) fn keys(&self) -> Vec<Key> {
        self.owned_map().keys()
    }

    pub(crate) fn to_map(self) -> AttrMap {
        self.owned_map().to_map()
    }

    /// See [`Exported::covers`].
    pub(crate) fn covers(&self, map: &AttrMap) -> bool {
        self.owned_map().covers(map)
    }

    /// The values, owned.
    pub(crate) fn to_owned(self) -> Exported {
        Exported::from_parts(self)
    }
}

/// A digest held in memory: the 16 input bytes, then each matching hash little-endian.
fn encode_digest(d: &InputDigest) -> Box<[u8]> {
    let mut out = Vec::with_capacity(16 + 8 * d.matching.len());
    out.extend_from_slice(&d.inputs);
    for h in &d.matching {
        out.extend_from_slice(&h.to_le_bytes());
    }
    out.into_boxed_slice()
}

/// What [`encode_digest`] wrote; `None` for bytes it cannot have written.
fn decode_digest(b: &[u8]) -> Option<InputDigest> {
    let (inputs, hashes) = b.split_first_chunk::<16>()?;
    let chunks = hashes.chunks_exact(8);
    if !chunks.remainder().is_empty() {
        return None;
    }
    let matching = chunks
        .map(|c| <[u8; 8]>::try_from(c).map(u64::from_le_bytes))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    Some(InputDigest {
        inputs: *inputs,
        matching: matching.into_boxed_slice(),
    })
}

impl From<AttrMap> for Exported {
    fn from(m: AttrMap) -> Self {
        Exported::from_map(&m)
    }
}

impl From<&AttrMap> for Exported {
    fn from(m: &AttrMap) -> Self {
        Exported::from_map(m)
    }
}

impl<K: AsRef<str>> FromIterator<(K, Value)> for Exported {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        Exported::from_map(&iter.into_iter().collect())
    }
}

impl fmt::Debug for Exported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.map, f)
    }
}

impl Serialize for Exported {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Exported {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        CompactMap::deserialize(d).map(Exported::of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn disabled_follows_active() {
        let mut e: Exported = [("active", json!(true)), ("title", json!("A"))]
            .into_iter()
            .collect();
        assert!(!e.disabled());
        e.insert("active", json!(false));
        assert!(e.disabled());
        let back: Exported = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert!(back.disabled() && back == e);
        e.insert("active", json!(true));
        assert!(!e.disabled());
        assert!(e.get_str_is("title", "A") && !e.get_str_is("title", "B"));
    }

    proptest::proptest! {
        #[test]
        fn a_digest_held_reads_back_the_same(
            inputs in proptest::array::uniform16(proptest::num::u8::ANY),
            matching in proptest::collection::vec(proptest::num::u64::ANY, 0..5),
        ) {
            let d = InputDigest { inputs, matching: matching.into_boxed_slice() };
            let mut e = Exported::default();
            e.set_digest(d.clone());
            proptest::prop_assert_eq!(e.digest(), Some(d));
            proptest::prop_assert!(e.digest_is(&inputs));
            let mut other = inputs;
            other[15] ^= 1;
            proptest::prop_assert!(!e.digest_is(&other));
        }
    }

    #[test]
    fn bytes_a_digest_cannot_have_written_are_none() {
        assert!(decode_digest(&[0; 15]).is_none());
        assert!(decode_digest(&[0; 20]).is_none());
        assert_eq!(decode_digest(&[0; 16]).map(|d| d.matching.len()), Some(0));
    }

    fn portable(e: &Exported) -> Vec<u8> {
        let mut out = Vec::new();
        e.write_portable(&mut out, &mut |_| None);
        out
    }

    fn read(bytes: &[u8]) -> Option<Exported> {
        let mut r = Reader::new(bytes);
        let e = Exported::read_portable(&mut r, &mut |_| None)?;
        r.is_empty().then_some(e)
    }

    #[test]
    fn the_digest_round_trips_and_goes_with_new_values() {
        let mut e: Exported = [("title", json!("A"))].into_iter().collect();
        let old = portable(&e);
        let digest = InputDigest {
            inputs: [7; 16],
            matching: vec![1, u64::MAX].into_boxed_slice(),
        };
        e.set_digest(digest.clone());
        let bytes = portable(&e);
        assert!(bytes.starts_with(&old) && bytes.len() > old.len());
        let back = read(&bytes).unwrap();
        assert_eq!(back.digest(), Some(digest.clone()));
        assert!(back.digest_is(&[7; 16]) && !back.digest_is(&[8; 16]));
        // A record written before digests: no digest, same values.
        let back = read(&old).unwrap();
        assert!(back.digest().is_none() && back == e);
        // A later version's section is skipped, not damage.
        let mut later = old.clone();
        later.extend_from_slice(&[9, 1, 2, 3]);
        assert!(read(&later).unwrap().digest().is_none());
        // A cut-off section is damage.
        assert!(read(&bytes[..bytes.len() - 1]).is_none());
        e.insert("title", json!("B"));
        assert!(e.digest().is_none(), "new values drop the digest");
    }
}
