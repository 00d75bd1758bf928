//! LDAP values in our terms: default attribute maps per flavour, GUIDs, generalized time,
//! `userAccountControl`, booleans.

use super::Flavour;
use base64::Engine;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::Value;
use std::collections::BTreeMap;

/// Our attribute name → the LDAP attributes it is read from (the first one present wins).
pub(crate) type AttributeMap = BTreeMap<String, Vec<String>>;

/// Our attributes that hold one value even when the directory has several: mappings to SCIM
/// single-valued attributes (`userName`, `title`, …) need a string, so the first value is taken.
const SINGLE_VALUED: &[&str] = &[
    "userPrincipalName",
    "mail",
    "givenName",
    "surname",
    "displayName",
    "jobTitle",
    "department",
    "employeeId",
    "mailNickname",
    "preferredLanguage",
    "physicalDeliveryOfficeName",
    "streetAddress",
    "city",
    "state",
    "postalCode",
    "country",
    "telephoneNumber",
    "mobile",
    "facsimileTelephoneNumber",
    "description",
    "employeeType",
    "companyName",
];

fn map(pairs: &[(&str, &[&str])]) -> AttributeMap {
    pairs
        .iter()
        .map(|(ours, theirs)| {
            (
                (*ours).to_string(),
                theirs.iter().map(|s| (*s).to_string()).collect(),
            )
        })
        .collect()
}

/// Users: inetOrgPerson (OpenLDAP) or Active Directory's `user`, named as Entra names them.
pub(crate) fn default_user_map(flavour: Flavour) -> AttributeMap {
    match flavour {
        // inetOrgPerson has no UPN: `mail` is the closest login-like name, `uid` the nickname.
        Flavour::OpenLdap => map(&[
            ("userPrincipalName", &["mail"]),
            ("mail", &["mail"]),
            ("mailNickname", &["uid"]),
            ("givenName", &["givenName"]),
            ("surname", &["sn"]),
            ("displayName", &["displayName", "cn"]),
            ("jobTitle", &["title"]),
            ("department", &["departmentNumber", "ou"]),
            ("employeeId", &["employeeNumber"]),
            ("employeeType", &["employeeType"]),
            ("manager", &["manager"]),
            ("preferredLanguage", &["preferredLanguage"]),
            (
                "physicalDeliveryOfficeName",
                &["physicalDeliveryOfficeName"],
            ),
            ("streetAddress", &["street"]),
            ("city", &["l"]),
            ("state", &["st"]),
            ("postalCode", &["postalCode"]),
            ("telephoneNumber", &["telephoneNumber"]),
            ("mobile", &["mobile"]),
            ("facsimileTelephoneNumber", &["facsimileTelephoneNumber"]),
        ]),
        Flavour::Ad => map(&[
            ("userPrincipalName", &["userPrincipalName"]),
            ("mail", &["mail"]),
            ("mailNickname", &["sAMAccountName"]),
            ("givenName", &["givenName"]),
            ("surname", &["sn"]),
            ("displayName", &["displayName", "cn"]),
            ("jobTitle", &["title"]),
            ("department", &["department"]),
            ("companyName", &["company"]),
            ("employeeId", &["employeeID"]),
            ("employeeType", &["employeeType"]),
            ("manager", &["manager"]),
            ("accountEnabled", &["userAccountControl"]),
            ("preferredLanguage", &["preferredLanguage"]),
            (
                "physicalDeliveryOfficeName",
                &["physicalDeliveryOfficeName"],
            ),
            ("streetAddress", &["streetAddress"]),
            ("city", &["l"]),
            ("state", &["st"]),
            ("postalCode", &["postalCode"]),
            ("country", &["c"]),
            ("telephoneNumber", &["telephoneNumber"]),
            ("mobile", &["mobile"]),
            ("facsimileTelephoneNumber", &["facsimileTelephoneNumber"]),
            ("userAccountControl", &["userAccountControl"]),
        ]),
    }
}

/// Groups: groupOfNames / groupOfUniqueNames / posixGroup, or AD's `group`.
pub(crate) fn default_group_map(flavour: Flavour) -> AttributeMap {
    match flavour {
        Flavour::OpenLdap => map(&[
            ("displayName", &["displayName", "cn"]),
            ("description", &["description"]),
            ("mail", &["mail"]),
            ("mailNickname", &["cn"]),
        ]),
        Flavour::Ad => map(&[
            ("displayName", &["displayName", "cn"]),
            ("description", &["description"]),
            ("mail", &["mail"]),
            ("mailNickname", &["sAMAccountName"]),
        ]),
    }
}

/// The default anchor and change-timestamp attributes.
pub(crate) fn default_anchor(flavour: Flavour) -> &'static str {
    match flavour {
        Flavour::OpenLdap => "entryUUID",
        Flavour::Ad => "objectGUID",
    }
}

pub(crate) fn timestamp_attribute(flavour: Flavour) -> &'static str {
    match flavour {
        Flavour::OpenLdap => "modifyTimestamp",
        Flavour::Ad => "whenChanged",
    }
}

pub(crate) fn default_user_filter(flavour: Flavour) -> &'static str {
    match flavour {
        Flavour::OpenLdap => "(objectClass=inetOrgPerson)",
        // Computers are users too in AD; `objectCategory=person` leaves them out.
        Flavour::Ad => "(&(objectCategory=person)(objectClass=user))",
    }
}

pub(crate) fn default_group_filter(flavour: Flavour) -> &'static str {
    match flavour {
        Flavour::OpenLdap => {
            "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup))"
        }
        Flavour::Ad => "(objectClass=group)",
    }
}

/// An AD `objectGUID` (16 bytes) as the GUID string Windows shows: the first three fields are
/// little-endian, the last two big-endian.
pub(crate) fn guid_string(b: &[u8]) -> Option<String> {
    let b: &[u8; 16] = b.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

/// The anchor of an entry from its raw value: a GUID string for a binary `objectGUID` (or any
/// 16-byte binary value), the text itself otherwise, hex for other binary values.
pub(crate) fn anchor_value(attribute: &str, raw: &[u8]) -> Option<String> {
    if raw.is_empty() {
        return None;
    }
    if attribute.eq_ignore_ascii_case("objectGUID") {
        if let Some(g) = guid_string(raw) {
            return Some(g);
        }
    }
    match std::str::from_utf8(raw) {
        Ok(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Ok(_) => None,
        Err(_) => {
            guid_string(raw).or_else(|| Some(raw.iter().map(|b| format!("{b:02x}")).collect()))
        }
    }
}

/// Parse an LDAP generalized time (`20260102030405Z`, `20260102030405.0Z`,
/// `202601020304Z`, `20260102030405+0100`).
pub(crate) fn parse_generalized_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    let mut rest = &s[digits.len()..];
    let base = match digits.len() {
        14 => digits.clone(),
        12 => format!("{digits}00"),
        10 => format!("{digits}0000"),
        _ => return None,
    };
    let naive = NaiveDateTime::parse_from_str(&base, "%Y%m%d%H%M%S").ok()?;
    let mut nanos: i64 = 0;
    if let Some(frac) = rest.strip_prefix('.').or_else(|| rest.strip_prefix(',')) {
        let f: String = frac.chars().take_while(char::is_ascii_digit).collect();
        rest = &frac[f.len()..];
        if !f.is_empty() && digits.len() == 14 {
            let padded: String = f.chars().chain(std::iter::repeat('0')).take(9).collect();
            nanos = padded.parse().ok()?;
        }
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        r if (r.starts_with('+') || r.starts_with('-')) && (r.len() == 5 || r.len() == 3) => {
            let sign = if r.starts_with('-') { -1 } else { 1 };
            let h: i64 = r.get(1..3)?.parse().ok()?;
            let m: i64 = if r.len() == 5 {
                r.get(3..5)?.parse().ok()?
            } else {
                0
            };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    let t = Utc.from_utc_datetime(&naive) - chrono::Duration::seconds(offset_secs)
        + chrono::Duration::nanoseconds(nanos);
    Some(t)
}

/// A generalized time in the form the server's own filters expect.
pub(crate) fn format_generalized_time(t: DateTime<Utc>, flavour: Flavour) -> String {
    match flavour {
        Flavour::OpenLdap => t.format("%Y%m%d%H%M%SZ").to_string(),
        Flavour::Ad => t.format("%Y%m%d%H%M%S.0Z").to_string(),
    }
}

/// `accountEnabled` from an LDAP value: AD's `userAccountControl` has ACCOUNTDISABLE (bit 2);
/// any other attribute is read as a boolean (`TRUE`/`FALSE`, `yes`/`no`, `1`/`0`).
pub(crate) fn enabled_value(ldap_attribute: &str, raw: &str) -> Option<bool> {
    let raw = raw.trim();
    if ldap_attribute.eq_ignore_ascii_case("userAccountControl") {
        let uac: i64 = raw.parse().ok()?;
        return Some(uac & 2 == 0);
    }
    match raw.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "enabled" | "active" => Some(true),
        "false" | "no" | "0" | "disabled" | "inactive" => Some(false),
        _ => None,
    }
}

/// One of our attributes from the raw values of the LDAP attribute it maps from.
pub(crate) fn attribute_value(ours: &str, ldap_attribute: &str, raw: &[Vec<u8>]) -> Option<Value> {
    let texts: Vec<String> = raw.iter().map(|v| text(v)).collect();
    if texts.is_empty() {
        return None;
    }
    if ours == "accountEnabled" {
        return texts
            .first()
            .and_then(|t| enabled_value(ldap_attribute, t))
            .map(Value::Bool);
    }
    if ldap_attribute.eq_ignore_ascii_case("userAccountControl") {
        // A number, so scoping filters can test its bits (`userAccountControl & 2`).
        if let Some(n) = texts.first().and_then(|t| t.trim().parse::<i64>().ok()) {
            return Some(Value::from(n));
        }
    }
    if texts.len() == 1 || SINGLE_VALUED.contains(&ours) {
        return texts.into_iter().next().map(Value::String);
    }
    Some(Value::Array(texts.into_iter().map(Value::String).collect()))
}

/// A value as text: UTF-8 as it is, anything else (photos, SIDs) as base64.
pub(crate) fn text(raw: &[u8]) -> String {
    match std::str::from_utf8(raw) {
        Ok(s) => s.to_string(),
        Err(_) => base64::engine::general_purpose::STANDARD.encode(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_is_mixed_endian() {
        // The byte order of objectGUID as AD stores it, and the string Windows prints.
        let bytes = [
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        assert_eq!(
            guid_string(&bytes).unwrap(),
            "00112233-4455-6677-8899-aabbccddeeff"
        );
        assert_eq!(
            anchor_value("objectGUID", &bytes).unwrap(),
            "00112233-4455-6677-8899-aabbccddeeff"
        );
        assert!(guid_string(&bytes[..15]).is_none());
        assert_eq!(anchor_value("entryUUID", b" 1b2c "), Some("1b2c".into()));
        assert_eq!(anchor_value("entryUUID", b""), None);
    }

    #[test]
    fn generalized_times() {
        let t = parse_generalized_time("20260102030405Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-02T03:04:05+00:00");
        assert_eq!(parse_generalized_time("20260102030405.0Z").unwrap(), t);
        assert_eq!(
            parse_generalized_time("20260102040405+0100").unwrap(),
            t,
            "offsets are applied"
        );
        assert!(parse_generalized_time("20260102030405.5Z").unwrap() > t);
        assert!(parse_generalized_time("2026").is_none());
        assert!(parse_generalized_time("20261302030405Z").is_none());
        assert_eq!(
            format_generalized_time(t, Flavour::OpenLdap),
            "20260102030405Z"
        );
        assert_eq!(format_generalized_time(t, Flavour::Ad), "20260102030405.0Z");
    }

    #[test]
    fn user_account_control_and_booleans() {
        assert_eq!(enabled_value("userAccountControl", "512"), Some(true));
        assert_eq!(enabled_value("userAccountControl", "514"), Some(false));
        assert_eq!(enabled_value("userAccountControl", "66050"), Some(false));
        assert_eq!(enabled_value("UserAccountControl", "x"), None);
        assert_eq!(enabled_value("employeeActive", "FALSE"), Some(false));
        assert_eq!(enabled_value("employeeActive", "TRUE"), Some(true));
        assert_eq!(
            attribute_value("accountEnabled", "userAccountControl", &[b"514".to_vec()]),
            Some(Value::Bool(false))
        );
        assert_eq!(
            attribute_value(
                "userAccountControl",
                "userAccountControl",
                &[b"514".to_vec()]
            ),
            Some(Value::from(514))
        );
    }

    #[test]
    fn single_and_multi_valued() {
        let two = vec![b"a@x".to_vec(), b"b@x".to_vec()];
        assert_eq!(
            attribute_value("mail", "mail", &two),
            Some(Value::from("a@x"))
        );
        assert_eq!(
            attribute_value("proxyAddresses", "proxyAddresses", &two),
            Some(serde_json::json!(["a@x", "b@x"]))
        );
        assert_eq!(
            attribute_value("thumbnail", "jpegPhoto", &[vec![0xff, 0xd8]]),
            Some(Value::from("/9g="))
        );
    }
}
