//! SCIM 2.0 protocol pieces shared by the provisioning client and the sandbox server:
//! attribute paths, PATCH building (both styles) and semantics, list filters, wire types and
//! resource rendering. Pure: no I/O here.

pub(crate) mod filter;
pub(crate) mod patch;
pub(crate) mod path;
pub(crate) mod resource;
pub(crate) mod wire;

/// Core User schema (RFC 7643 §4.1).
pub(crate) const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// Core Group schema (RFC 7643 §4.2).
pub(crate) const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// Enterprise User extension (RFC 7643 §4.3).
pub(crate) const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// ListResponse message (RFC 7644 §3.4.2).
pub(crate) const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// PatchOp message (RFC 7644 §3.5.2).
pub(crate) const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Error message (RFC 7644 §3.12).
pub(crate) const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// ServiceProviderConfig resource schema (RFC 7643 §5).
pub(crate) const SERVICE_PROVIDER_CONFIG_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
/// ResourceType resource schema (RFC 7643 §6).
pub(crate) const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
/// Schema resource schema (RFC 7643 §7).
pub(crate) const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// Whether `urn` names a core resource schema, whose attributes live at the top level of a
/// resource rather than inside an extension object.
pub(crate) fn is_core_schema(urn: &str) -> bool {
    urn.eq_ignore_ascii_case(USER_SCHEMA) || urn.eq_ignore_ascii_case(GROUP_SCHEMA)
}

/// Attributes whose string values compare case-sensitively (`caseExact: true` in RFC 7643).
pub(crate) fn is_case_exact(attr: &str) -> bool {
    ["id", "externalId", "meta.version", "version"]
        .iter()
        .any(|a| a.eq_ignore_ascii_case(attr))
}

/// Looks up `name` in a JSON object, exactly first, then ignoring ASCII case (RFC 7643 §2.1:
/// attribute names are case-insensitive).
pub(crate) fn get_attr<'a>(
    value: &'a serde_json::Value,
    name: &str,
) -> Option<&'a serde_json::Value> {
    let map = value.as_object()?;
    if let Some(v) = map.get(name) {
        return Some(v);
    }
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// The key under which `name` is stored in `map` (ignoring case), or `name` itself when absent,
/// so that writes keep the casing already present instead of adding a duplicate key.
pub(crate) fn resolve_key(map: &serde_json::Map<String, serde_json::Value>, name: &str) -> String {
    if map.contains_key(name) {
        return name.to_string();
    }
    map.keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
        .unwrap_or_else(|| name.to_string())
}
