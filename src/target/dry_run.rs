//! The dry-run wrapper that lets a cycle run for real up to the wire: reads go to the
//! application, writes are only pretended.

use super::{PatchOp, RequestCounts, Target, TargetError};
use crate::model::ObjectType;
use async_trait::async_trait;
use serde_json::Value;

/// Sends the reads (matching queries) and pretends the writes, so `sync --dry-run` shows what
/// a real cycle would do — including whether an object would be matched or created — while
/// sending no writing request.
pub struct DryRunTarget<T> {
    inner: T,
}

impl<T> DryRunTarget<T> {
    pub fn new(inner: T) -> Self {
        DryRunTarget { inner }
    }
}

#[async_trait]
impl<T: Target> Target for DryRunTarget<T> {
    async fn find(
        &self,
        ty: ObjectType,
        attr: &str,
        value: &Value,
    ) -> Result<Vec<Value>, TargetError> {
        self.inner.find(ty, attr, value).await
    }
    async fn create(&self, _ty: ObjectType, mut body: Value) -> Result<Value, TargetError> {
        if let Some(m) = body.as_object_mut() {
            m.insert(
                "id".into(),
                Value::String(format!("(new {})", uuid::Uuid::new_v4())),
            );
        }
        Ok(body)
    }
    async fn patch(&self, _ty: ObjectType, _id: &str, _ops: &[PatchOp]) -> Result<(), TargetError> {
        Ok(())
    }
    async fn delete(&self, _ty: ObjectType, _id: &str) -> Result<(), TargetError> {
        Ok(())
    }
    fn request_counts(&self) -> RequestCounts {
        self.inner.request_counts()
    }
    fn base_url(&self) -> Option<String> {
        self.inner.base_url()
    }
    fn previous_url(&self) -> Option<String> {
        self.inner.previous_url()
    }
}
