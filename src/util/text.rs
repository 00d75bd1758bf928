//! Text cut to a bound, for reasons and messages that quote what an input holds: an input of
//! any size (a group of a million unknown members, a hostile key) must not make a log line or
//! a stored summary of that size.

/// How many items a reason lists before it says "and N more".
pub(crate) const REASON_LIST_MAX: usize = 10;
/// How many characters of one listed item a reason keeps.
const REASON_ITEM_MAX: usize = 200;

/// `items` joined with ", ", cut after [`REASON_LIST_MAX`] with "and N more", each item cut
/// at a few hundred characters. A reason listing every unknown member of a 1e6-member group
/// was 15.9 MB, logged and stored every cycle.
pub(crate) fn bounded_list<I>(items: I) -> String
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    let mut out = String::new();
    let mut more = 0usize;
    for (i, item) in items.into_iter().enumerate() {
        if i >= REASON_LIST_MAX {
            more += 1;
            continue;
        }
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&bounded_text(item.as_ref(), REASON_ITEM_MAX));
    }
    if more > 0 {
        out.push_str(&format!(" and {more} more"));
    }
    out
}

/// `text` cut at `max` characters, with "…" when cut.
pub(crate) fn bounded_text(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_list_is_cut_with_a_count() {
        let ids: Vec<String> = (0..1_000_000).map(|i| format!("id-{i}")).collect();
        let s = bounded_list(&ids);
        assert!(s.starts_with("id-0, id-1, "), "{s}");
        assert!(s.ends_with("id-9 and 999990 more"), "{s}");
        assert!(s.len() < 200, "{}", s.len());
        assert_eq!(bounded_list(["a", "b"]), "a, b");
        assert_eq!(bounded_list(Vec::<&str>::new()), "");
        let exactly: Vec<String> = (0..REASON_LIST_MAX).map(|i| i.to_string()).collect();
        assert!(!bounded_list(&exactly).contains("more"));
    }

    #[test]
    fn a_long_item_is_cut() {
        let s = bounded_list([&"é".repeat(10_000)]);
        assert_eq!(s.chars().count(), REASON_ITEM_MAX + 1);
        assert!(s.ends_with('…'));
        assert_eq!(bounded_text("short", 10), "short");
    }
}
