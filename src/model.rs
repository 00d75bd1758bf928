//! Types shared by the pipeline stages.

/// The kind of SCIM resource an object is provisioned as.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ObjectType {
    /// A SCIM `User` resource.
    User,
    /// A SCIM `Group` resource.
    Group,
}

impl ObjectType {
    /// The SCIM resource endpoint name, relative to the service base URL.
    pub fn endpoint(self) -> &'static str {
        match self {
            ObjectType::User => "Users",
            ObjectType::Group => "Groups",
        }
    }
}
