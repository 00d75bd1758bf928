//! SCIM 2.0 message bodies (RFC 7644 §3.4.2, §3.5.2, §3.12), tolerant of what real servers
//! send: a missing `Resources` on empty lists, lowercase `resources`, numeric `status`.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::{ERROR_SCHEMA, LIST_RESPONSE_SCHEMA};

/// A query response (RFC 7644 §3.4.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawListResponse")]
pub(crate) struct ListResponse {
    /// Always `[LIST_RESPONSE_SCHEMA]` when built here.
    pub schemas: Vec<String>,
    /// Matching resources in total, across all pages.
    #[serde(rename = "totalResults")]
    pub total_results: u64,
    /// 1-based index of the first resource of this page.
    #[serde(rename = "startIndex")]
    pub start_index: u64,
    /// Number of resources on this page.
    #[serde(rename = "itemsPerPage")]
    pub items_per_page: u64,
    /// The resources of this page.
    #[serde(rename = "Resources")]
    pub resources: Vec<Value>,
}

impl ListResponse {
    /// A page of `resources` starting at `start_index` out of `total_results`.
    pub(crate) fn new(resources: Vec<Value>, total_results: u64, start_index: u64) -> ListResponse {
        ListResponse {
            schemas: vec![LIST_RESPONSE_SCHEMA.to_string()],
            total_results,
            start_index,
            items_per_page: resources.len() as u64,
            resources,
        }
    }
}

#[derive(Deserialize)]
struct RawListResponse {
    #[serde(default)]
    schemas: Vec<String>,
    #[serde(rename = "totalResults")]
    total_results: u64,
    #[serde(rename = "startIndex", default)]
    start_index: Option<u64>,
    #[serde(rename = "itemsPerPage", default)]
    items_per_page: Option<u64>,
    #[serde(rename = "Resources", alias = "resources", default)]
    resources: Option<Vec<Value>>,
}

/// A ListResponse claiming results but carrying none would make a client read "no match".
#[derive(Debug, thiserror::Error)]
#[error("ListResponse has totalResults {0} and itemsPerPage > 0 but no Resources")]
pub(crate) struct MissingResources(u64);

impl TryFrom<RawListResponse> for ListResponse {
    type Error = MissingResources;
    fn try_from(raw: RawListResponse) -> Result<Self, Self::Error> {
        let resources = match raw.resources {
            Some(r) => r,
            // Some servers omit Resources for an empty page (count=0 or nothing found).
            None if raw.total_results == 0 || raw.items_per_page == Some(0) => Vec::new(),
            None => return Err(MissingResources(raw.total_results)),
        };
        Ok(ListResponse {
            schemas: raw.schemas,
            total_results: raw.total_results,
            start_index: raw.start_index.unwrap_or(1),
            items_per_page: raw.items_per_page.unwrap_or(resources.len() as u64),
            resources,
        })
    }
}

/// A SCIM error response body (RFC 7644 §3.12).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ScimErrorBody {
    /// Normally `[ERROR_SCHEMA]`.
    #[serde(default)]
    pub schemas: Vec<String>,
    /// The HTTP status as a string, as the RFC says; numbers are accepted on input.
    #[serde(deserialize_with = "string_or_number", default)]
    pub status: String,
    /// The SCIM detail error keyword, e.g. `uniqueness`, `invalidFilter`.
    #[serde(rename = "scimType", default, skip_serializing_if = "Option::is_none")]
    pub scim_type: Option<String>,
    /// Human-readable explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ScimErrorBody {
    /// An error body for `status`, with an optional `scimType`.
    pub(crate) fn new(
        status: u16,
        scim_type: Option<&str>,
        detail: impl Into<String>,
    ) -> ScimErrorBody {
        ScimErrorBody {
            schemas: vec![ERROR_SCHEMA.to_string()],
            status: status.to_string(),
            scim_type: scim_type.map(str::to_string),
            detail: Some(detail.into()),
        }
    }

    /// The status as a number, if it is one.
    #[cfg(test)]
    pub(crate) fn status_code(&self) -> Option<u16> {
        self.status.trim().parse().ok()
    }
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Null => Ok(String::new()),
        other => Err(serde::de::Error::custom(format!(
            "status must be a string or number, got {other}"
        ))),
    }
}

/// A PATCH request body (RFC 7644 §3.5.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PatchRequest {
    /// Normally `[PATCH_OP_SCHEMA]`.
    #[serde(default)]
    pub schemas: Vec<String>,
    /// The operations, applied in order.
    #[serde(rename = "Operations", alias = "operations")]
    pub operations: Vec<PatchOperation>,
}

/// One PATCH operation. `op` is kept as sent: Entra's legacy form capitalises it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PatchOperation {
    /// `add`, `replace` or `remove` (any case).
    pub op: String,
    /// Attribute path; absent means the whole resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The value; absent for most removes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

impl PatchOperation {
    /// An operation with the given op, path and value.
    #[cfg(test)]
    pub(crate) fn new(op: impl Into<String>, path: Option<String>, value: Option<Value>) -> Self {
        PatchOperation {
            op: op.into(),
            path,
            value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::scim::PATCH_OP_SCHEMA;
    use serde_json::json;

    #[test]
    fn list_response_variants() {
        let empty: ListResponse = serde_json::from_value(json!({"totalResults": 0})).unwrap();
        assert!(empty.resources.is_empty());
        assert_eq!(empty.start_index, 1);
        let lower: ListResponse =
            serde_json::from_value(json!({"totalResults": 1, "resources": [{"id": "a"}]})).unwrap();
        assert_eq!(lower.resources, vec![json!({"id": "a"})]);
        assert_eq!(lower.items_per_page, 1);
        assert!(serde_json::from_value::<ListResponse>(json!({"totalResults": 2})).is_err());
        let out = serde_json::to_value(ListResponse::new(vec![json!({"id": "x"})], 5, 3)).unwrap();
        assert_eq!(
            out,
            json!({"schemas": [LIST_RESPONSE_SCHEMA], "totalResults": 5, "startIndex": 3,
                   "itemsPerPage": 1, "Resources": [{"id": "x"}]})
        );
    }

    #[test]
    fn error_body_status_string_or_number() {
        let a: ScimErrorBody =
            serde_json::from_value(json!({"status": 409, "scimType": "uniqueness"})).unwrap();
        assert_eq!(a.status_code(), Some(409));
        let b: ScimErrorBody = serde_json::from_value(json!({"status": "404"})).unwrap();
        assert_eq!(b.status_code(), Some(404));
        let out =
            serde_json::to_value(ScimErrorBody::new(400, Some("invalidFilter"), "bad")).unwrap();
        assert_eq!(
            out,
            json!({"schemas": [ERROR_SCHEMA], "status": "400", "scimType": "invalidFilter", "detail": "bad"})
        );
    }

    #[test]
    fn patch_request_round_trip() {
        let body = json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [
            {"op": "Replace", "path": "active", "value": "False"},
            {"op": "remove", "path": "members[value eq \"x\"]"}]});
        let req: PatchRequest = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(req.operations[1].value, None);
        assert_eq!(serde_json::to_value(&req).unwrap(), body);
        let lower: PatchRequest =
            serde_json::from_value(json!({"operations": [{"op": "add", "value": {}}]})).unwrap();
        assert_eq!(lower.operations.len(), 1);
    }
}
