//! The attribute encoding, in one place: [`AttrMap`] for values being worked on,
//! [`CompactMap`] for the maps a cycle holds for every object at once, the byte-level
//! [`codec`] both compact forms share, and [`Exported`], a link's memory of its last exported
//! values. They are one concern (names interned once, values in one byte layout), so they
//! change together.

pub mod codec;
pub mod compact;
pub mod exported;
pub mod map;

pub use compact::CompactMap;
pub use exported::Exported;
pub use map::AttrMap;
