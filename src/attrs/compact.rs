//! [`CompactMap`]: an attribute map held as one byte string, for the maps a cycle keeps for
//! every object at once: the source objects' attributes and the links' last exported values.
//!
//! As an [`AttrMap`] a user's dozen values cost about 1 KB (48 bytes per entry, plus each
//! string's own allocation): 100 MB for 100k users, twice over (source and links). Here each
//! name is a small number (from a process-wide registry of the names seen) and each value a tag
//! and its bytes, about a third of that. Reads decode on demand; [`CompactMap::covers`]
//! compares against an [`AttrMap`] without allocating, so a no-change cycle decodes nothing.
//!
//! It (de)serialises as the JSON object it stands for: process-local name numbers never leave
//! the process.

use crate::attrs::codec::{put_bytes, put_varint, Reader};
use crate::attrs::map::Fnv;
use crate::attrs::map::{intern, AttrMap, Key};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, PoisonError, RwLock};

/// Names get a number up to this many; the rest are written out in full. Names come from the
/// mappings (SCIM paths), so a real job has a few dozen.
const MAX_NAMES: usize = 1 << 16;

#[derive(Default)]
struct Names {
    keys: Vec<Key>,
    ids: HashMap<Key, u32, BuildHasherDefault<Fnv>>,
    /// Every name, ASCII-lowercased: a lookup ignoring case (as expressions read attributes)
    /// for a name no object has, the usual case, ends here without scanning the object.
    folded: std::collections::HashSet<Box<str>, BuildHasherDefault<Fnv>>,
}

impl Names {
    fn add(&mut self, key: Key, id: u32) {
        self.folded
            .insert(key.to_ascii_lowercase().into_boxed_str());
        self.keys.push(key.clone());
        self.ids.insert(key, id);
    }
}

fn names() -> &'static RwLock<Names> {
    static NAMES: OnceLock<RwLock<Names>> = OnceLock::new();
    NAMES.get_or_init(RwLock::default)
}

/// How many names the shared registry has: lets a thread see without locking that its copy
/// is complete.
static NAMES_LEN: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's copy of the registry. The registry only grows, so a copy is never wrong,
    /// only short. Two planning threads taking the shared lock for every attribute of every
    /// object spent more time on the lock's cache line than on the mapping.
    static LOCAL: RefCell<Names> = RefCell::default();
}

/// Bring `local` up to the shared registry.
fn catch_up(local: &mut Names) {
    if NAMES_LEN.load(Ordering::Acquire) == local.keys.len() {
        return;
    }
    let shared = names().read().unwrap_or_else(PoisonError::into_inner);
    for (i, k) in shared.keys.iter().enumerate().skip(local.keys.len()) {
        local.add(k.clone(), i as u32);
    }
}

/// `f` over this thread's up-to-date copy of the registry; over the shared one when the
/// copy is unavailable (thread shutting down, or re-entered).
fn with_names<T>(f: impl Fn(&Names) -> T) -> T {
    LOCAL
        .try_with(|local| {
            let Ok(mut local) = local.try_borrow_mut() else {
                return None;
            };
            catch_up(&mut local);
            Some(f(&local))
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| f(&names().read().unwrap_or_else(PoisonError::into_inner)))
}

/// The number of `name` if it has one (no registering: a name never seen is in no map).
pub(crate) fn known_id(name: &str) -> Option<u32> {
    with_names(|n| n.ids.get(name).copied())
}

/// The number of `name`, registering it when new; `None` once the registry is full.
fn name_id(name: &str) -> Option<u32> {
    if let Some(id) = known_id(name) {
        return Some(id);
    }
    let mut w = names().write().unwrap_or_else(PoisonError::into_inner);
    if let Some(id) = w.ids.get(name) {
        return Some(*id);
    }
    if w.keys.len() >= MAX_NAMES {
        return None;
    }
    let id = w.keys.len() as u32;
    w.add(intern(name), id);
    NAMES_LEN.store(w.keys.len(), Ordering::Release);
    Some(id)
}

/// Whether some map may have a name equal to `name` ignoring ASCII case; `false` is certain.
pub(crate) fn may_have_ignoring_case(name: &str) -> bool {
    if NAMES_LEN.load(Ordering::Acquire) >= MAX_NAMES {
        // Names past the registry are written out in the maps themselves: look there.
        return true;
    }
    thread_local! {
        static FOLDED: RefCell<String> = const { RefCell::new(String::new()) };
    }
    FOLDED
        .try_with(|buf| {
            let mut buf = buf.try_borrow_mut().ok()?;
            buf.clear();
            buf.extend(name.chars().map(|c| c.to_ascii_lowercase()));
            Some(with_names(|n| n.folded.contains(buf.as_str())))
        })
        .ok()
        .flatten()
        .unwrap_or(true)
}

fn name_of(id: u32) -> Option<Key> {
    with_names(|n| n.keys.get(id as usize).cloned())
}

// Value tags.
const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const STRING: u8 = 3;
/// Numbers, arrays and objects: their JSON text.
const JSON: u8 = 4;

/// Names to JSON values, in name order, as one byte string.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CompactMap {
    /// Entries: name (varint id + 1, or 0 then the name's length and bytes), tag, payload.
    bytes: Box<[u8]>,
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    match name_id(name) {
        Some(id) => put_varint(out, u64::from(id) + 1),
        None => {
            put_varint(out, 0);
            put_bytes(out, name.as_bytes());
        }
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => put_raw(out, &Raw::Null),
        Value::Bool(b) => put_raw(out, &Raw::Bool(*b)),
        Value::String(s) => put_raw(out, &Raw::Str(s.as_bytes())),
        other => put_raw(out, &Raw::Json(&other.to_string())),
    }
}

/// Write a value read back, unchanged.
fn put_raw(out: &mut Vec<u8>, raw: &Raw<'_>) {
    match raw {
        Raw::Null => out.push(NULL),
        Raw::Bool(false) => out.push(FALSE),
        Raw::Bool(true) => out.push(TRUE),
        Raw::Str(s) => {
            out.push(STRING);
            put_bytes(out, s);
        }
        Raw::Json(j) => {
            out.push(JSON);
            put_bytes(out, j.as_bytes());
        }
    }
}

/// A name as read back: a registered number or the bytes written out.
#[derive(Clone, Copy)]
pub(crate) enum Name<'a> {
    Id(u32),
    Inline(&'a str),
}

/// A value as read back, borrowing the bytes.
#[derive(Clone, Copy)]
pub(crate) enum Raw<'a> {
    Null,
    Bool(bool),
    Str(&'a [u8]),
    Json(&'a str),
}

impl Raw<'_> {
    pub(crate) fn to_value(self) -> Value {
        match self {
            Raw::Null => Value::Null,
            Raw::Bool(b) => Value::Bool(b),
            // Written from a `String`; damaged bytes read as null, as for JSON.
            Raw::Str(s) => std::str::from_utf8(s).map_or(Value::Null, |s| Value::String(s.into())),
            // Written from a `Value`, so it parses; `Null` only if the bytes were damaged.
            Raw::Json(j) => serde_json::from_str(j).unwrap_or(Value::Null),
        }
    }

    /// Equal to `v`, without building a `Value` for strings and booleans.
    fn eq_value(&self, v: &Value) -> bool {
        match (self, v) {
            (Raw::Null, Value::Null) => true,
            (Raw::Bool(a), Value::Bool(b)) => a == b,
            (Raw::Str(a), Value::String(b)) => *a == b.as_bytes(),
            (Raw::Json(_), Value::Number(_) | Value::Array(_) | Value::Object(_)) => {
                &self.to_value() == v
            }
            _ => false,
        }
    }
}

/// Reads entries back. Stops (yields nothing more) at damaged bytes, which only this module
/// writes, so it never happens in practice and never panics.
struct Entries<'a> {
    r: Reader<'a>,
}

impl<'a> Entries<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Entries {
            r: Reader::new(bytes),
        }
    }

    fn entry(&mut self) -> Option<(Name<'a>, Raw<'a>)> {
        if self.r.is_empty() {
            return None;
        }
        let name = match self.r.varint()? {
            0 => Name::Inline(self.r.str()?),
            n => Name::Id(u32::try_from(n - 1).ok()?),
        };
        let raw = match self.r.byte()? {
            NULL => Raw::Null,
            FALSE => Raw::Bool(false),
            TRUE => Raw::Bool(true),
            // Checked as UTF-8 only when read as a string: skipping past it needs no check.
            STRING => Raw::Str(self.r.bytes()?),
            JSON => Raw::Json(self.r.str()?),
            _ => return None,
        };
        Some((name, raw))
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = (Name<'a>, Raw<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        let e = self.entry();
        if e.is_none() {
            self.r.rest = &[];
        }
        e
    }
}

impl Name<'_> {
    fn key(&self) -> Key {
        match self {
            Name::Id(id) => name_of(*id).unwrap_or_else(|| intern("")),
            Name::Inline(s) => intern(s),
        }
    }
    /// This is `name`, ignoring ASCII case.
    pub(crate) fn is_ignoring_case(&self, name: &str) -> bool {
        match self {
            Name::Id(i) => with_names(|n| {
                n.keys
                    .get(*i as usize)
                    .is_some_and(|k| k.eq_ignore_ascii_case(name))
            }),
            Name::Inline(s) => s.eq_ignore_ascii_case(name),
        }
    }

    /// This is `name`, whose registered number (if any) is `id` (see [`known_id`]).
    pub(crate) fn is(&self, name: &str, id: Option<u32>) -> bool {
        match self {
            Name::Id(n) => Some(*n) == id,
            Name::Inline(s) => *s == name,
        }
    }
}

impl CompactMap {
    pub fn new() -> Self {
        CompactMap::default()
    }

    pub fn from_map(map: &AttrMap) -> Self {
        let mut out = Vec::new();
        for (k, v) in map {
            put_name(&mut out, k);
            put_value(&mut out, v);
        }
        CompactMap {
            bytes: out.into_boxed_slice(),
        }
    }

    fn entries(&self) -> Entries<'_> {
        Entries::new(&self.bytes)
    }

    /// The value of `name`: its number is looked up once, then entries compare numbers.
    fn find(&self, name: &str) -> Option<Raw<'_>> {
        let id = known_id(name);
        self.entries().find(|(n, _)| n.is(name, id)).map(|(_, v)| v)
    }

    /// The values, decoded.
    pub fn to_map(&self) -> AttrMap {
        self.entries()
            .map(|(n, v)| (n.key(), v.to_value()))
            .collect()
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.find(path).map(|v| v.to_value())
    }

    pub fn contains_key(&self, path: &str) -> bool {
        self.find(path).is_some()
    }

    pub fn keys(&self) -> Vec<Key> {
        self.entries().map(|(n, _)| n.key()).collect()
    }

    /// The string value of `name`, borrowed.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        match self.find(name)? {
            Raw::Str(s) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }

    /// The entries undecoded, in order: for a reader that looks up several names and decodes
    /// only the values it uses (the mapping of one object).
    pub(crate) fn raw_entries(&self) -> Vec<(Name<'_>, Raw<'_>)> {
        self.entries().collect()
    }

    /// The string value of `name`, or else of the first name equal to it ignoring ASCII case
    /// (how expressions read attributes); `None` when that value is not a string.
    pub fn get_str_any_case(&self, name: &str) -> Option<&str> {
        let raw = self.find(name).or_else(|| {
            if !may_have_ignoring_case(name) {
                return None;
            }
            self.entries()
                .find(|(n, _)| n.is_ignoring_case(name))
                .map(|(_, v)| v)
        })?;
        match raw {
            Raw::Str(s) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }

    /// `name` is present and not null.
    pub fn is_set(&self, name: &str) -> bool {
        self.find(name).is_some_and(|v| !matches!(v, Raw::Null))
    }

    /// The boolean value of `name`.
    pub fn get_bool(&self, name: &str) -> Option<bool> {
        match self.find(name)? {
            Raw::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// Entries in name order, decoded.
    pub fn iter(&self) -> impl Iterator<Item = (Key, Value)> + '_ {
        self.entries().map(|(n, v)| (n.key(), v.to_value()))
    }

    /// Every entry of `map` is here with the same value; entries only here don't matter.
    /// One merge of the two name-ordered lists, without allocating.
    pub fn covers(&self, map: &AttrMap) -> bool {
        with_names(|registry| {
            let mut mine = self.entries();
            'wanted: for (k, v) in map {
                for (name, raw) in mine.by_ref() {
                    let here: &str = match name {
                        Name::Id(id) => match registry.keys.get(id as usize) {
                            Some(n) => n,
                            None => return false,
                        },
                        Name::Inline(s) => s,
                    };
                    match here.cmp(k) {
                        std::cmp::Ordering::Less => continue,
                        std::cmp::Ordering::Equal if raw.eq_value(v) => continue 'wanted,
                        _ => return false,
                    }
                }
                return false;
            }
            true
        })
    }

    /// Set one value (decodes and re-encodes: used once per exported change, not per object).
    pub fn insert(&mut self, path: &str, value: Value) {
        let mut m = self.to_map();
        m.insert(path, value);
        *self = CompactMap::from_map(&m);
    }

    /// Append the values with names numbered by `number` (a state store's own dictionary:
    /// this process's numbers mean nothing to the next one); `None` writes a name out.
    pub fn write_portable(&self, out: &mut Vec<u8>, number: &mut dyn FnMut(&str) -> Option<u32>) {
        let mut body = Vec::with_capacity(self.bytes.len());
        for (name, raw) in self.entries() {
            let key;
            let text: &str = match name {
                Name::Id(id) => {
                    key = name_of(id).unwrap_or_else(|| intern(""));
                    &key
                }
                Name::Inline(s) => s,
            };
            match number(text) {
                Some(n) => put_varint(&mut body, u64::from(n) + 1),
                None => {
                    put_varint(&mut body, 0);
                    put_bytes(&mut body, text.as_bytes());
                }
            }
            put_raw(&mut body, &raw);
        }
        put_bytes(out, &body);
    }

    /// Read what [`CompactMap::write_portable`] wrote, from `r`; `name` says what a
    /// dictionary number is here (see [`local_name`]: worked out once per dictionary entry,
    /// not once per value). `None` for damaged bytes or an unknown number.
    pub fn read_portable(
        r: &mut Reader<'_>,
        name: &mut dyn FnMut(u32) -> Option<LocalName>,
    ) -> Option<Self> {
        let mut entries = Entries::new(r.bytes()?);
        let mut out = Vec::new();
        while !entries.r.is_empty() {
            let (n, raw) = entries.entry()?;
            match n {
                Name::Id(id) => match name(id)? {
                    LocalName::Number(n) => put_varint(&mut out, u64::from(n) + 1),
                    LocalName::Text(k) => {
                        put_varint(&mut out, 0);
                        put_bytes(&mut out, k.as_bytes());
                    }
                },
                Name::Inline(s) => put_name(&mut out, s),
            }
            put_raw(&mut out, &raw);
        }
        Some(CompactMap {
            bytes: out.into_boxed_slice(),
        })
    }
}

/// The attributes [`visit_object`] hands back as values, in the order read.
pub(crate) type Taken = Vec<(Key, Value)>;

/// Reads a JSON object straight into a [`CompactMap`], without a [`Value`] per attribute in
/// between (what a source parsing 100k objects would otherwise allocate and free), except the
/// attributes named in `take`, handed back as values. Nulls are left out, as absent; of
/// repeated names the last wins.
pub(crate) fn visit_object<'de, A: serde::de::MapAccess<'de>>(
    mut access: A,
    take: &[&str],
) -> Result<(CompactMap, Taken), A::Error> {
    let mut taken = Vec::new();
    // Each value's encoding goes to `buf`; `entries` says whose it is and where.
    let mut buf: Vec<u8> = Vec::new();
    let mut entries: Vec<(Key, usize, usize)> = Vec::new();
    let mut position = 0;
    while let Some(k) = access.next_key_seed(crate::attrs::map::KeySeed(position))? {
        position += 1;
        if take.contains(&&*k) {
            taken.push((k, access.next_value::<Value>()?));
            continue;
        }
        let start = buf.len();
        access.next_value_seed(ValueSeed(&mut buf))?;
        if buf.get(start) == Some(&NULL) {
            buf.truncate(start);
            // A null after a value of the same name still clears it.
            entries.retain(|(e, _, _)| *e != k);
            continue;
        }
        entries.push((k, start, buf.len()));
    }
    let mut out = Vec::with_capacity(buf.len() + 2 * entries.len());
    let mut write = |layout: &Layout| {
        for (i, name) in &layout.order {
            if let Some((_, start, end)) = entries.get(*i) {
                out.extend_from_slice(name);
                out.extend_from_slice(buf.get(*start..*end).unwrap_or_default());
            }
        }
    };
    // Objects of one kind list their attributes in the same order, so the layout of the last
    // object (sort order, duplicates, encoded names) usually fits the next one as it is.
    let reused = LAST_LAYOUT
        .try_with(|last| {
            let last = last.try_borrow().ok()?;
            let same = last.keys.len() == entries.len()
                && last
                    .keys
                    .iter()
                    .zip(&entries)
                    .all(|(a, (b, _, _))| std::sync::Arc::ptr_eq(a, b));
            same.then(|| write(&last))
        })
        .ok()
        .flatten()
        .is_some();
    if !reused {
        let layout = Layout::of(&entries);
        write(&layout);
        let _ = LAST_LAYOUT.try_with(|last| {
            if let Ok(mut last) = last.try_borrow_mut() {
                *last = layout;
            }
        });
    }
    Ok((
        CompactMap {
            bytes: out.into_boxed_slice(),
        },
        taken,
    ))
}

/// How the entries of an object read in a given name order are written: which entry goes
/// where, and each name's encoding.
#[derive(Default)]
struct Layout {
    /// The names in the order read (the shared keys, compared by pointer).
    keys: Vec<Key>,
    /// Entry index and encoded name, in name order; of repeated names only the last.
    order: Vec<(usize, Vec<u8>)>,
}

impl Layout {
    fn of(entries: &[(Key, usize, usize)]) -> Layout {
        let mut idx: Vec<usize> = (0..entries.len()).collect();
        // Stable: of equal names the last one stays.
        idx.sort_by(|a, b| entries[*a].0.cmp(&entries[*b].0));
        let mut order = Vec::with_capacity(idx.len());
        for (n, i) in idx.iter().enumerate() {
            if idx
                .get(n + 1)
                .is_some_and(|next| entries[*next].0 == entries[*i].0)
            {
                continue;
            }
            let mut name = Vec::new();
            put_name(&mut name, &entries[*i].0);
            order.push((*i, name));
        }
        Layout {
            keys: entries.iter().map(|(k, _, _)| k.clone()).collect(),
            order,
        }
    }
}

thread_local! {
    static LAST_LAYOUT: RefCell<Layout> = RefCell::default();
}

/// Encodes one JSON value (tag and payload) as it is parsed.
struct ValueSeed<'b>(&'b mut Vec<u8>);

impl<'de> serde::de::DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ValueSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        put_value(self.0, &Value::Null);
        Ok(())
    }
    fn visit_bool<E>(self, b: bool) -> Result<(), E> {
        put_value(self.0, &Value::Bool(b));
        Ok(())
    }
    fn visit_i64<E>(self, n: i64) -> Result<(), E> {
        put_value(self.0, &Value::from(n));
        Ok(())
    }
    fn visit_u64<E>(self, n: u64) -> Result<(), E> {
        put_value(self.0, &Value::from(n));
        Ok(())
    }
    fn visit_f64<E>(self, n: f64) -> Result<(), E> {
        put_value(self.0, &Value::from(n));
        Ok(())
    }
    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        put_raw(self.0, &Raw::Str(s.as_bytes()));
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let v = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        put_value(self.0, &v);
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let v = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        put_value(self.0, &v);
        Ok(())
    }
}

/// A name as this process writes it in a [`CompactMap`]: its registered number, or (once the
/// registry is full) its text.
#[derive(Debug, Clone)]
pub enum LocalName {
    Number(u32),
    Text(Key),
}

/// How `name` is written here, registering it if new.
pub(crate) fn local_name(name: &str) -> LocalName {
    match name_id(name) {
        Some(n) => LocalName::Number(n),
        None => LocalName::Text(intern(name)),
    }
}

impl From<AttrMap> for CompactMap {
    fn from(m: AttrMap) -> Self {
        CompactMap::from_map(&m)
    }
}

impl From<serde_json::Map<String, Value>> for CompactMap {
    fn from(m: serde_json::Map<String, Value>) -> Self {
        CompactMap::from_map(&m.into())
    }
}

impl From<std::collections::BTreeMap<String, Value>> for CompactMap {
    fn from(m: std::collections::BTreeMap<String, Value>) -> Self {
        CompactMap::from_map(&m.into())
    }
}

impl From<&AttrMap> for CompactMap {
    fn from(m: &AttrMap) -> Self {
        CompactMap::from_map(m)
    }
}

impl<K: AsRef<str>> FromIterator<(K, Value)> for CompactMap {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        CompactMap::from_map(&iter.into_iter().collect())
    }
}

impl fmt::Debug for CompactMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_map(), f)
    }
}

impl Serialize for CompactMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(
            self.entries()
                .map(|(n, v)| (n.key().to_string(), v.to_value())),
        )
    }
}

impl<'de> Deserialize<'de> for CompactMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(CompactMap::from_map(&AttrMap::deserialize(d)?))
    }
}

/// A link holds its exported values' encoding inside its own record (`model::link`): these
/// let it hand the bytes over and read them back, and answer the planner's per-object
/// question without copying them.
impl CompactMap {
    /// The encoded entries, as [`CompactMap::from_bytes`] takes them back.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// A map of bytes [`CompactMap::as_bytes`] gave (in this process): damaged bytes read as
    /// fewer entries, never a panic.
    pub(crate) fn from_bytes(bytes: Box<[u8]>) -> Self {
        CompactMap { bytes }
    }

    /// [`CompactMap::get_str`] over the bytes [`CompactMap::as_bytes`] gave, borrowed.
    pub(crate) fn get_str_in<'a>(bytes: &'a [u8], name: &str) -> Option<&'a str> {
        let id = known_id(name);
        match Entries::new(bytes).find(|(n, _)| n.is(name, id))? {
            (_, Raw::Str(s)) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn map(v: Value) -> AttrMap {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn round_trips_every_kind_of_value() {
        let m = map(json!({
            "userName": "alice@x", "active": false, "n": 12.5, "big": 123456789012345u64,
            "empty": "", "nul": null, "arr": ["a", 1], "obj": {"k": [true]},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "R&D ✓",
        }));
        let e = CompactMap::from_map(&m);
        assert_eq!(e.to_map(), m);
        assert_eq!(e.get_bool("active"), Some(false));
        assert_eq!(e.get_str("userName"), Some("alice@x"));
        assert_eq!(e.get_str("n"), None);
        assert_eq!(e.iter().collect::<AttrMap>(), m);
        let raw = e.raw_entries();
        assert_eq!(raw.len(), m.len());
        assert!(raw.iter().any(|(n, _)| n.is_ignoring_case("USERNAME")));
        let id = known_id("userName");
        let (_, v) = raw.iter().find(|(n, _)| n.is("userName", id)).unwrap();
        assert_eq!(v.to_value(), json!("alice@x"));
        assert!(e.covers(&m));
        assert_eq!(e.get("n"), Some(json!(12.5)));
        assert_eq!(e.get("missing"), None);
        assert_eq!(e.keys().len(), m.len());
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            serde_json::to_string(&m).unwrap()
        );
        let back: CompactMap = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn covers_sees_every_difference_in_a_wanted_value() {
        let base = map(json!({"a": "x", "b": true, "c": 1}));
        let e = CompactMap::from_map(&base);
        for other in [
            json!({"a": "x", "b": true, "c": 1, "d": null}),
            json!({"a": "y", "b": true, "c": 1}),
            json!({"a": "x", "b": false, "c": 1}),
            json!({"a": "x", "b": "true", "c": 1}),
            json!({"a": "x", "b": true, "c": 1.0}),
            json!({"a": "x", "b": true, "C": 1}),
        ] {
            assert!(!e.covers(&map(other.clone())), "{other}");
        }
        assert!(CompactMap::new().covers(&AttrMap::new()));
    }

    #[test]
    fn covers_ignores_entries_only_here() {
        let e = CompactMap::from_map(&map(json!({"a": "x", "b": true, "m": "mgr", "z": 1})));
        assert!(e.covers(&map(json!({"a": "x", "z": 1}))));
        assert!(e.covers(&map(json!({}))));
        assert!(e.covers(&map(json!({"a": "x", "b": true, "m": "mgr", "z": 1}))));
        assert!(!e.covers(&map(json!({"a": "x", "c": 1}))));
        assert!(!e.covers(&map(json!({"a": "y"}))));
        assert!(!e.covers(&map(json!({"zz": 1}))));
        assert!(!CompactMap::new().covers(&map(json!({"a": "x"}))));
    }

    #[test]
    fn objects_parse_straight_into_the_same_encoding() {
        struct Parsed(CompactMap, Vec<(Key, Value)>);
        impl<'de> Deserialize<'de> for Parsed {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = Parsed;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        a: A,
                    ) -> Result<Parsed, A::Error> {
                        visit_object(a, &["id"]).map(|(m, t)| Parsed(m, t))
                    }
                }
                d.deserialize_map(V)
            }
        }
        let text = r#"{"z": 1, "id": "x1", "a": "é\n", "n": null, "b": [1, {"c": null}],
                       "f": 1.5, "t": true, "neg": -3, "a": "last", "gone": "v", "gone": null}"#;
        let Parsed(m, taken) = serde_json::from_str(text).unwrap();
        assert_eq!(taken, vec![(intern("id"), json!("x1"))]);
        let mut expected: AttrMap = serde_json::from_str(text).unwrap();
        expected.retain(|k, v| k != "id" && !v.is_null());
        assert_eq!(m, CompactMap::from_map(&expected));
        assert_eq!(m.get("a"), Some(json!("last")));
        assert!(!m.contains_key("gone") && !m.contains_key("n"));
        // Objects in a row, with the same names in the same order (the layout is reused),
        // then in another order, then with fewer: each as if converted on its own.
        for text in [
            r#"{"b": 1, "a": "x", "c": true}"#,
            r#"{"b": 2, "a": "y", "c": false}"#,
            r#"{"c": 3, "b": "z", "a": null}"#,
            r#"{"b": 4, "a": "w", "c": null}"#,
            r#"{"b": 5, "a": "v", "c": 6}"#,
            r#"{"b": 5, "a": "v", "a": "u"}"#,
        ] {
            let Parsed(m, _) = serde_json::from_str(text).unwrap();
            let mut expected: AttrMap = serde_json::from_str(text).unwrap();
            expected.retain(|_, v| !v.is_null());
            assert_eq!(m, CompactMap::from_map(&expected), "{text}");
        }
    }

    #[test]
    fn names_no_map_has_are_known_absent_ignoring_case() {
        assert!(!may_have_ignoring_case("never-Seen-name-7f3a"));
        let m = CompactMap::from_map(&map(json!({"Seen-Name-7f3a": "v"})));
        assert!(may_have_ignoring_case("seen-name-7F3A"));
        assert_eq!(m.get_str_any_case("SEEN-NAME-7f3a"), Some("v"));
        assert_eq!(m.get_str_any_case("never-Seen-name-7f3a"), None);
    }

    #[test]
    fn insert_sets_one_value() {
        let mut e = CompactMap::from_map(&map(json!({"active": true, "title": "A"})));
        e.insert("active", json!(false));
        assert_eq!(e.get_bool("active"), Some(false));
        e.insert("zz", json!("new"));
        assert_eq!(
            e.to_map(),
            map(json!({"active": false, "title": "A", "zz": "new"}))
        );
    }

    #[test]
    fn damaged_bytes_read_as_fewer_entries_never_panic() {
        let e = CompactMap::from_map(&map(json!({"a": "xyz", "b": [1, 2]})));
        for cut in 0..e.bytes.len() {
            let d = CompactMap {
                bytes: e.bytes[..cut].into(),
            };
            assert!(d.to_map().len() <= 2);
        }
        let junk = CompactMap {
            bytes: vec![0xff; 12].into(),
        };
        assert!(junk.to_map().is_empty());
    }

    #[test]
    fn portable_form_renumbers_names_and_reads_back() {
        let m = map(json!({"active": false, "title": "T", "n": [1], "zz": null}));
        let e = CompactMap::from_map(&m);
        // A store dictionary: names numbered in its own order; "zz" left out (written inline).
        let dict = ["title", "active", "n"];
        let mut out = Vec::new();
        e.write_portable(&mut out, &mut |n| {
            dict.iter().position(|d| *d == n).map(|i| i as u32)
        });
        let mut r = Reader::new(&out);
        let back =
            CompactMap::read_portable(&mut r, &mut |i| dict.get(i as usize).map(|d| local_name(d)))
                .unwrap();
        assert!(r.is_empty());
        assert_eq!(back, e);
        // An unknown number, or any truncation, is refused, never misread.
        assert!(CompactMap::read_portable(&mut Reader::new(&out), &mut |_| None).is_none());
        for cut in 0..out.len() {
            let mut r = Reader::new(&out[..cut]);
            assert!(CompactMap::read_portable(&mut r, &mut |i| {
                dict.get(i as usize).map(|d| local_name(d))
            })
            .is_none());
        }
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,12}".prop_map(Value::String),
            prop::collection::vec(".{0,4}", 0..3).prop_map(|v| json!(v)),
        ]
    }

    proptest! {
        #[test]
        fn encoding_is_lossless_and_covers_agrees_with_the_values(
            a in prop::collection::btree_map("[a-e]{1,3}", value(), 0..6),
            b in prop::collection::btree_map("[a-e]{1,3}", value(), 0..6),
        ) {
            let (ma, mb): (AttrMap, AttrMap) = (a.into(), b.into());
            let ea = CompactMap::from_map(&ma);
            prop_assert_eq!(ea.to_map(), ma.clone());
            prop_assert_eq!(ea.covers(&mb), mb.iter().all(|(k, v)| ma.get(k) == Some(v)));
            prop_assert_eq!(ea == CompactMap::from_map(&mb), ma == mb);
        }
    }
}
