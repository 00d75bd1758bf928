//! The target: where writes go. The SCIM 2.0 client that the export stage uses to talk to
//! the target application, and the SCIM protocol it speaks ([`scim`]: paths, filters, PATCH
//! in both styles, wire types, resource rendering), which the sandbox server shares.
//!
//! The client speaks the requests the Entra ID provisioning service sends (see
//! `shared/docs/entra-provisioning.md`, section 2): `eq` filter queries for matching,
//! `POST`, `PATCH` (RFC 7644 or Entra's legacy rendering), `DELETE`, and Test Connection.
//! Every request goes through one retry loop that bounds concurrency across clones,
//! honours `Retry-After`, backs off on 5xx and transport failures (see `crate::http`), and
//! never blindly retries a `POST` that may already have been processed.

mod client;
pub(crate) mod config;
mod connection;
mod dry_run;
mod error;
pub(crate) mod scim;

#[cfg(test)]
mod tests;

use async_trait::async_trait;
use serde_json::Value;

use crate::model::ObjectType;

pub(crate) use crate::summary::RequestCounts;
pub use client::ScimClient;
pub use config::{PatchStyle, TargetSettings};
pub(crate) use connection::ConnectionReport;
pub use dry_run::DryRunTarget;
pub(crate) use error::Reach;
pub use error::TargetError;
pub use scim::patch::PatchOp;

/// What the export stage needs from a target application.
#[async_trait]
pub trait Target: Send + Sync {
    /// The resources whose `attr` equals `value` (matching).
    async fn find(
        &self,
        ty: ObjectType,
        attr: &str,
        value: &Value,
    ) -> Result<Vec<Value>, TargetError>;
    /// Creates the resource; returns it as the target stored it, or at least its `id` (the
    /// SCIM client returns only that: the export keeps nothing else of it).
    async fn create(&self, ty: ObjectType, body: Value) -> Result<Value, TargetError>;
    /// Applies PATCH operations to the resource `id`.
    async fn patch(&self, ty: ObjectType, id: &str, ops: &[PatchOp]) -> Result<(), TargetError>;
    /// Deletes the resource `id`.
    async fn delete(&self, ty: ObjectType, id: &str) -> Result<(), TargetError>;
    /// Whether the collection of `ty` provably holds no resource at all right now. `false`
    /// means "not known to be empty" (the default, and whatever a target cannot answer
    /// plainly): the export then searches before every create, as Entra does. `true` lets
    /// an initial export skip searches that could only come back empty. An error is the
    /// request's failure (the caller stops on one that reaches the whole cycle, a 401).
    async fn collection_empty(&self, _ty: ObjectType) -> Result<bool, TargetError> {
        Ok(false)
    }
    /// HTTP requests sent so far, retries included.
    fn request_counts(&self) -> RequestCounts;
    /// The base URL (never with credentials), for the job's binding: links made against one
    /// target mean nothing for another. `None`: no binding is kept or checked.
    fn base_url(&self) -> Option<String> {
        None
    }
    /// The base URL the config says this target had before (`previous_url`): a binding to it
    /// moves here instead of refusing the cycle.
    fn previous_url(&self) -> Option<String> {
        None
    }
}

#[async_trait]
impl Target for ScimClient {
    async fn find(
        &self,
        ty: ObjectType,
        attr: &str,
        value: &Value,
    ) -> Result<Vec<Value>, TargetError> {
        ScimClient::find(self, ty, attr, value).await
    }
    async fn create(&self, ty: ObjectType, body: Value) -> Result<Value, TargetError> {
        let id = ScimClient::create_id(self, ty, body).await?;
        Ok(Value::Object(serde_json::Map::from_iter([(
            "id".to_owned(),
            Value::String(id),
        )])))
    }
    async fn patch(&self, ty: ObjectType, id: &str, ops: &[PatchOp]) -> Result<(), TargetError> {
        ScimClient::patch(self, ty, id, ops).await
    }
    async fn delete(&self, ty: ObjectType, id: &str) -> Result<(), TargetError> {
        ScimClient::delete(self, ty, id).await
    }
    async fn collection_empty(&self, ty: ObjectType) -> Result<bool, TargetError> {
        ScimClient::collection_empty(self, ty).await
    }
    fn request_counts(&self) -> RequestCounts {
        ScimClient::request_counts(self)
    }
    fn base_url(&self) -> Option<String> {
        Some(ScimClient::base_url(self).to_string())
    }
    fn previous_url(&self) -> Option<String> {
        ScimClient::previous_url(self).map(str::to_string)
    }
}
