//! String helpers: diacritics, proper case, culture-aware case mapping.

/// Combining marks (U+0300–U+036F and the extended blocks): the table's multi-code-point
/// entries are a base letter followed by these, so they're dropped after mapping the base.
fn is_combining_mark(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}'
        | '\u{1AB0}'..='\u{1AFF}'
        | '\u{1DC0}'..='\u{1DFF}'
        | '\u{20D0}'..='\u{20FF}'
        | '\u{FE20}'..='\u{FE2F}')
}

/// The replacement for one precomposed character, from the documented table.
fn diacritic_replacement(c: char) -> Option<&'static str> {
    Some(match c {
        'ä' | 'à' | 'â' | 'ã' | 'å' | 'á' | 'ą' | 'ă' | 'ā' | 'ǟ' | 'ǡ' => "a",
        'Ä' | 'À' | 'Â' | 'Ã' | 'Å' | 'Á' | 'Ą' | 'Ă' | 'Ā' | 'Ǟ' | 'Ǡ' => "A",
        'æ' | 'ǣ' => "ae",
        'Æ' | 'Ǣ' => "AE",
        'ç' | 'č' | 'ć' => "c",
        'Ç' | 'Č' | 'Ć' => "C",
        'ď' | 'ḏ' => "d",
        'Ď' | 'Ḏ' => "D",
        'ë' | 'è' | 'é' | 'ê' | 'ę' | 'ě' | 'ė' | 'ē' | 'ḗ' | 'ḕ' => "e",
        'Ë' | 'È' | 'É' | 'Ê' | 'Ę' | 'Ě' | 'Ė' | 'Ē' | 'Ḗ' | 'Ḕ' => "E",
        'ğ' | 'ḡ' => "g",
        'Ğ' | 'Ḡ' => "G",
        'ï' | 'î' | 'ì' | 'í' | 'ı' | 'ī' => "i",
        'Ï' | 'Î' | 'Ì' | 'Í' | 'İ' | 'Ī' => "I",
        'ľ' | 'ł' | 'ḹ' | 'ḻ' => "l",
        'Ł' | 'Ľ' | 'Ḹ' | 'Ḻ' => "L",
        'ñ' | 'ń' | 'ň' | 'ṉ' => "n",
        'Ñ' | 'Ń' | 'Ň' | 'Ṉ' => "N",
        'ö' | 'ò' | 'ő' | 'õ' | 'ô' | 'ó' | 'ō' | 'ṓ' | 'ṑ' | 'ȫ' | 'ǭ' | 'ȭ' | 'ȱ' => {
            "o"
        }
        'Ö' | 'Ò' | 'Ő' | 'Õ' | 'Ô' | 'Ó' | 'Ō' | 'Ṓ' | 'Ṑ' | 'Ȫ' | 'Ǭ' | 'Ȭ' | 'Ȱ' => {
            "O"
        }
        // The table lists ø and œ̄ (œ + macron) as "oe"; œ itself follows.
        'ø' | 'œ' => "oe",
        'Ø' | 'Œ' => "OE",
        'ř' | 'ṟ' | 'ṝ' => "r",
        'Ř' | 'Ṟ' | 'Ṝ' => "R",
        'ß' => "ss",
        'š' | 'ś' | 'ș' | 'ş' => "s",
        'Š' | 'Ś' | 'Ș' | 'Ş' => "S",
        'ť' | 'ț' | 'ṯ' => "t",
        'Ť' | 'Ț' | 'Ṯ' => "T",
        'ü' | 'ù' | 'û' | 'ú' | 'ů' | 'ű' | 'ū' | 'ǖ' | 'ṻ' | 'ṳ' => "u",
        'Ü' | 'Ù' | 'Û' | 'Ú' | 'Ů' | 'Ű' | 'Ū' | 'Ǖ' | 'Ṻ' | 'Ṳ' => "U",
        'ÿ' | 'ý' | 'ȳ' => "y",
        'Ÿ' | 'Ý' | 'Ȳ' => "Y",
        'ź' | 'ž' | 'ż' | 'ẕ' => "z",
        'Ź' | 'Ž' | 'Ż' | 'Ẕ' => "Z",
        _ => return None,
    })
}

/// NormalizeDiacritics: the documented table, plus dropping combining marks (which covers
/// the table's decomposed entries such as "ā́" and "a̱").
pub(crate) fn normalize_diacritics(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_combining_mark(c) {
            continue;
        }
        match diacritic_replacement(c) {
            Some(r) => out.push_str(r),
            None => out.push(c),
        }
    }
    out
}

/// The default PCase word separators: the Unicode categories the doc lists (separators,
/// controls, format, punctuation and symbols), i.e. anything that is neither a letter, a
/// digit nor a combining mark.
fn is_default_separator(c: char) -> bool {
    !(c.is_alphanumeric() || is_combining_mark(c))
}

/// PCase: the first letter of each word upper case, everything else lower case.
pub(crate) fn pcase(s: &str, separators: Option<&str>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at_word_start = true;
    for c in s.chars() {
        let sep = match separators {
            Some(seps) => seps.contains(c),
            None => is_default_separator(c),
        };
        if sep {
            out.push(c);
            at_word_start = true;
        } else if at_word_start {
            out.push(upper_char(c, false));
            at_word_start = false;
        } else {
            out.push(lower_char(c, false));
        }
    }
    out
}

/// Whether a culture name selects Turkish/Azeri casing (dotted and dotless i).
fn is_turkic(culture: Option<&str>) -> bool {
    culture.is_some_and(|c| {
        let lang = c
            .split(['-', '_'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        lang == "tr" || lang == "az"
    })
}

/// Validates an RFC 4646-style culture name ("en-US", "tr", "ja-JP", "zh-Hant-TW").
pub(crate) fn valid_culture(c: &str) -> bool {
    !c.is_empty()
        && c.split(['-', '_']).all(|part| {
            (1..=8).contains(&part.len()) && part.chars().all(|x| x.is_ascii_alphanumeric())
        })
}

// Simple (one-to-one) case mapping, as .NET's ToUpper/ToLower do: "ß" stays "ß".
fn upper_char(c: char, turkic: bool) -> char {
    if turkic {
        match c {
            'i' => return 'İ',
            'ı' => return 'I',
            _ => {}
        }
    }
    let mut it = c.to_uppercase();
    match (it.next(), it.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

fn lower_char(c: char, turkic: bool) -> char {
    if turkic {
        match c {
            'I' => return 'ı',
            'İ' => return 'i',
            _ => {}
        }
    }
    let mut it = c.to_lowercase();
    match (it.next(), it.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

/// ToUpper with an optional culture (invariant when absent).
pub(crate) fn to_upper(s: &str, culture: Option<&str>) -> String {
    let turkic = is_turkic(culture);
    s.chars().map(|c| upper_char(c, turkic)).collect()
}

/// ToLower with an optional culture (invariant when absent).
pub(crate) fn to_lower(s: &str, culture: Option<&str>) -> String {
    let turkic = is_turkic(culture);
    s.chars().map(|c| lower_char(c, turkic)).collect()
}

/// InStr: 1-based position of `needle` in `haystack` from `start` (1-based), 0 if absent.
pub(crate) fn instr(haystack: &str, needle: &str, start: usize, ignore_case: bool) -> usize {
    let norm = |c: char| if ignore_case { lower_char(c, false) } else { c };
    let h: Vec<char> = haystack.chars().map(norm).collect();
    let n: Vec<char> = needle.chars().map(norm).collect();
    let from = start.saturating_sub(1);
    if from > h.len() {
        return 0;
    }
    if n.is_empty() {
        return start;
    }
    (from..h.len())
        .find(|&i| h.get(i..i + n.len()).is_some_and(|w| w == n.as_slice()))
        .map_or(0, |i| i + 1)
}
