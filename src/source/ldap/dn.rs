//! Distinguished names compared the way a directory compares them.
//!
//! A group's `member` value and the member's own DN are written independently (by an admin, a
//! tool, AD itself), so `uid=Alice, ou=People,dc=example,dc=org` and
//! `uid=alice,ou=people,dc=example,dc=org` must be the same key. [`normalize`] gives a canonical
//! form: attribute types and values lowercased (the naming attributes of users and groups match
//! case-insensitively), spaces around separators dropped, escapes decoded and re-encoded one
//! way, multi-valued RDNs sorted.

/// The canonical form of `dn`, for use as a lookup key. Never fails: a malformed DN is
/// normalised as far as it goes and simply matches nothing.
pub(crate) fn normalize(dn: &str) -> String {
    let mut rdns: Vec<String> = Vec::new();
    for rdn in split_unescaped(dn, &[',', ';']) {
        let mut avas: Vec<String> = split_unescaped(&rdn, &['+'])
            .into_iter()
            .map(|ava| normalize_ava(&ava))
            .collect();
        avas.sort();
        let joined = avas.join("+");
        if !joined.is_empty() {
            rdns.push(joined);
        }
    }
    rdns.join(",")
}

/// Whether `dn` is `base` or lies under it.
#[cfg(test)]
pub(crate) fn is_under(dn_normalized: &str, base_normalized: &str) -> bool {
    base_normalized.is_empty()
        || dn_normalized == base_normalized
        || dn_normalized
            .strip_suffix(base_normalized)
            .is_some_and(|head| head.ends_with(','))
}

/// Split on separators that are not escaped with a backslash.
fn split_unescaped(s: &str, seps: &[char]) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if seps.contains(&c) => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    parts
}

fn normalize_ava(ava: &str) -> String {
    let Some((ty, value)) = ava.split_once('=') else {
        // Not an attribute=value pair: malformed, but still normalised one way.
        return escape_value(&unescape_value(ava.trim_start()).to_lowercase());
    };
    let ty = ty.trim().to_ascii_lowercase();
    let value = value.trim_start();
    // A `#`-prefixed value is hex BER: compare it as written.
    if value.starts_with('#') {
        return format!("{ty}={}", value.trim_end().to_ascii_lowercase());
    }
    let unescaped = unescape_value(value);
    format!("{ty}={}", escape_value(&unescaped.to_lowercase()))
}

/// Decode `\XX` hex pairs (UTF-8 bytes) and `\c` escapes; drop unescaped trailing spaces.
fn unescape_value(v: &str) -> String {
    let mut v = v.trim_end_matches(' ').to_string();
    // The trim took an escaped space too ("\ "): put it back.
    if v.ends_with('\\') {
        let escapes = v.chars().rev().take_while(|c| *c == '\\').count();
        if escapes % 2 == 1 {
            v.push(' ');
        }
    }
    let bytes = v.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' && i + 1 < bytes.len() {
            // Two hex digits exactly: `from_str_radix` would also take a sign ("\+0").
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(x) => {
                    out.push(x);
                    i += 3;
                }
                None => {
                    out.push(bytes[i + 1]);
                    i += 2;
                }
            }
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One escaping for every value (RFC 4514 section 2.4).
fn escape_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let n = v.chars().count();
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == n && c == ' ');
        if c.is_control() {
            // Hex-escaped, so a later trim can't eat it: normalising stays idempotent.
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\{b:02X}"));
            }
            continue;
        }
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equivalent_dns_normalize_alike() {
        let a = normalize("uid=Alice, ou=People,DC=Example,dc=org");
        assert_eq!(a, "uid=alice,ou=people,dc=example,dc=org");
        assert_eq!(normalize("UID = alice ,ou=people,dc=example,dc=org"), a);
        assert_eq!(
            normalize(r"cn=Smith\2C John,dc=x"),
            normalize(r"CN=smith\, john,DC=x")
        );
        assert_eq!(normalize("cn=a+sn=b,dc=x"), normalize("sn=B+cn=A,dc=x"));
        assert_eq!(
            normalize("cn=Zoë Ünal,dc=x"),
            normalize(r"cn=zo\C3\AB \C3\BCnal,dc=x")
        );
        assert_ne!(normalize("cn=a,dc=x"), normalize("cn=b,dc=x"));
    }

    #[test]
    fn under_a_base() {
        let base = normalize("ou=People,dc=x");
        assert!(is_under(&normalize("uid=a,ou=people,dc=x"), &base));
        assert!(is_under(&base, &base));
        assert!(!is_under(&normalize("uid=a,ou=xpeople,dc=x"), &base));
    }

    proptest::proptest! {
        #[test]
        fn normalizing_is_idempotent(s in "[a-zA-Z=,+ \\\\#\"0-9ëÜ;<>]{0,30}") {
            let once = normalize(&s);
            proptest::prop_assert_eq!(normalize(&once), once);
        }
    }
}
