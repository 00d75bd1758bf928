//! The attribute encoding, in one place: [`AttrMap`] for values being worked on,
//! [`CompactMap`] for the maps a cycle holds for every object at once, the byte-level
//! [`codec`] both compact forms share, and [`Exported`], a link's memory of its last exported
//! values. They are one concern (names interned once, values in one byte layout), so they
//! change together.

pub(crate) mod codec;
pub(crate) mod compact;
pub(crate) mod exported;
pub(crate) mod map;

pub(crate) use exported::{Exported, InputDigest};
