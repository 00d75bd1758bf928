//! Which Microsoft Graph properties a job reads, and how a Graph object becomes a
//! [`SourceObject`] whose attributes carry the names Entra's provisioning service uses.
//!
//! Entra's attribute mappings name the source attributes of its "Microsoft Entra ID" schema,
//! which keeps a few directory (AD-style) names where Graph has its own: `telephoneNumber`
//! (Graph `businessPhones[0]`), `mobile` (`mobilePhone`), `facsimileTelephoneNumber`
//! (`faxNumber`), `physicalDeliveryOfficeName` (`officeLocation`) and `extensionAttribute1..15`
//! (`onPremisesExtensionAttributes`). Both spellings are exposed, so a mapping copied from the
//! Entra portal and one written against Graph's `user` resource both work.
//!
//! The `$select` of `/users/delta` and `/groups/delta` is the set of properties the job's
//! mappings and scoping filters read, plus what scope needs. Selecting only those is what the
//! delta docs recommend: "If a change occurs to a property that is not selected, the resource
//! for which that property changed does not appear in the delta response"
//! (microsoft-graph-docs `concepts/delta-query-overview.md`, "Optional query parameters").
//! An unknown name would make Graph answer 400 to every delta request, so it is refused when
//! the configuration is loaded instead.

use crate::mapping::{MappingSource, Mappings};
use crate::model::{ObjectType, SourceObject};
use crate::scope::ScopeSettings;
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// Properties of the Graph v1.0 `user` resource that delta can track (microsoft-graph-docs
/// `api-reference/v1.0/resources/user.md`; properties stored outside the directory, such as
/// `skills` or `mailboxSettings`, are not tracked by delta and are left out).
pub(crate) const USER_PROPERTIES: &[&str] = &[
    "accountEnabled",
    "ageGroup",
    "businessPhones",
    "city",
    "companyName",
    "consentProvidedForMinor",
    "country",
    "createdDateTime",
    "creationType",
    "department",
    "displayName",
    "employeeHireDate",
    "employeeId",
    "employeeLeaveDateTime",
    "employeeOrgData",
    "employeeType",
    "externalUserState",
    "faxNumber",
    "givenName",
    "identities",
    "imAddresses",
    "isResourceAccount",
    "jobTitle",
    "legalAgeGroupClassification",
    "mail",
    "mailNickname",
    "mobilePhone",
    "officeLocation",
    "onPremisesDistinguishedName",
    "onPremisesDomainName",
    "onPremisesExtensionAttributes",
    "onPremisesImmutableId",
    "onPremisesLastSyncDateTime",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName",
    "otherMails",
    "passwordPolicies",
    "postalCode",
    "preferredDataLocation",
    "preferredLanguage",
    "proxyAddresses",
    "showInAddressList",
    "state",
    "streetAddress",
    "surname",
    "usageLocation",
    "userPrincipalName",
    "userType",
];

/// Properties of the Graph v1.0 `group` resource that delta can track
/// (`api-reference/v1.0/resources/group.md`).
pub(crate) const GROUP_PROPERTIES: &[&str] = &[
    "classification",
    "createdDateTime",
    "description",
    "displayName",
    "expirationDateTime",
    "groupTypes",
    "isAssignableToRole",
    "mail",
    "mailEnabled",
    "mailNickname",
    "membershipRule",
    "onPremisesDomainName",
    "onPremisesLastSyncDateTime",
    "onPremisesNetBiosName",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "preferredDataLocation",
    "preferredLanguage",
    "proxyAddresses",
    "renewedDateTime",
    "securityEnabled",
    "securityIdentifier",
    "theme",
    "visibility",
];

/// Entra provisioning's names for user attributes Graph spells differently, with the Graph
/// property holding the value.
const USER_ALIASES: &[(&str, &str)] = &[
    ("telephoneNumber", "businessPhones"),
    ("mobile", "mobilePhone"),
    ("facsimileTelephoneNumber", "faxNumber"),
    ("physicalDeliveryOfficeName", "officeLocation"),
];

/// Names a mapping may read that are not Graph properties: provisiond's virtual attributes
/// (`crate::mapping` resolves them) and `deletedDateTime`, which this source sets itself on
/// soft-deleted objects.
const VIRTUAL: &[&str] = &[
    "id",
    "objectId",
    "IsSoftDeleted",
    "appRoleAssignments",
    "deletedDateTime",
    "members",
];

/// The navigation property that tracks a user's manager in `/users/delta`
/// (`concepts/delta-query-overview.md`: "`$select` also supports **manager** and **members**
/// navigation properties for users and groups respectively").
pub(crate) const MANAGER: &str = "manager";
/// The navigation property that tracks group membership in `/groups/delta`
/// (`api-reference/v1.0/api/group-delta.md`: "You can use `$select=members` to get membership
/// changes").
pub(crate) const MEMBERS: &str = "members";

/// The `$select` lists of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Graph user properties, `manager` included when a mapping reads it.
    pub users: Vec<String>,
    /// Graph group properties; `members` is always included (memberships are provisioned).
    pub groups: Vec<String>,
}

impl Default for Selection {
    /// What scope and logs need, with nothing mapped.
    fn default() -> Self {
        Selection {
            users: ["accountEnabled", "displayName", "userPrincipalName"]
                .map(String::from)
                .to_vec(),
            groups: ["displayName", MEMBERS].map(String::from).to_vec(),
        }
    }
}

/// One name a job reads that no Graph property provides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAttribute {
    pub object_type: ObjectType,
    pub name: String,
}

impl std::fmt::Display for UnknownAttribute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = match self.object_type {
            ObjectType::User => "user_attributes",
            ObjectType::Group => "group_attributes",
        };
        write!(
            f,
            "source attribute {:?} is not a Microsoft Graph {} property provisiond knows; if it \
             is one (or a directory extension), add it to the source's {key}",
            self.name, self.object_type
        )
    }
}

impl Selection {
    /// The selection for a job: what its mappings and scoping filters read, plus `extra`
    /// properties named in the configuration (passed to Graph as they are).
    pub fn for_job(
        mappings: &Mappings,
        scope: &ScopeSettings,
        extra_users: &[String],
        extra_groups: &[String],
    ) -> Result<Selection, UnknownAttribute> {
        let mut sel = Selection::default();
        for (ty, extra) in [
            (ObjectType::User, extra_users),
            (ObjectType::Group, extra_groups),
        ] {
            let mut names: Vec<String> = Vec::new();
            for m in mappings.of(ty) {
                match &m.source {
                    MappingSource::Attribute(a) => names.push(a.clone()),
                    MappingSource::Expression(e) => names.extend(e.attributes()),
                    MappingSource::Constant(_) => {}
                }
            }
            let filters = match ty {
                ObjectType::User => &scope.user_filters,
                ObjectType::Group => &scope.group_filters,
            };
            for f in filters {
                names.extend(f.spec.clauses.iter().map(|c| c.attribute.clone()));
            }
            let list = match ty {
                ObjectType::User => &mut sel.users,
                ObjectType::Group => &mut sel.groups,
            };
            for e in extra {
                push_unique(list, e);
            }
            for name in names {
                // Extras are accepted as they are: the admin vouches for them.
                if extra.iter().any(|e| e.eq_ignore_ascii_case(&name)) {
                    continue;
                }
                match graph_property(ty, &name) {
                    Some(Some(p)) => push_unique(list, &p),
                    Some(None) => {}
                    None => {
                        return Err(UnknownAttribute {
                            object_type: ty,
                            name,
                        })
                    }
                }
            }
        }
        Ok(sel)
    }

    pub fn of(&self, ty: ObjectType) -> &[String] {
        match ty {
            ObjectType::User => &self.users,
            ObjectType::Group => &self.groups,
        }
    }
}

fn push_unique(list: &mut Vec<String>, name: &str) {
    if !list.iter().any(|n| n.eq_ignore_ascii_case(name)) {
        list.push(name.to_string());
    }
}

/// The Graph property that provides attribute `name`: `Some(Some(p))`, `Some(None)` when no
/// property is needed (virtual attributes), `None` when unknown. Case-insensitive, as mappings
/// resolve attribute names.
fn graph_property(ty: ObjectType, name: &str) -> Option<Option<String>> {
    if VIRTUAL.iter().any(|v| v.eq_ignore_ascii_case(name)) {
        return Some(None);
    }
    // Directory extensions (`extension_<appId>_<name>`) are Graph properties of their own.
    if name.len() > "extension_".len()
        && name
            .get(.."extension_".len())
            .is_some_and(|p| p.eq_ignore_ascii_case("extension_"))
    {
        return Some(Some(name.to_string()));
    }
    let (known, aliases): (&[&str], &[(&str, &str)]) = match ty {
        ObjectType::User => (USER_PROPERTIES, USER_ALIASES),
        ObjectType::Group => (GROUP_PROPERTIES, &[]),
    };
    if let Some(p) = known.iter().find(|p| p.eq_ignore_ascii_case(name)) {
        return Some(Some((*p).to_string()));
    }
    if let Some((_, p)) = aliases.iter().find(|(a, _)| a.eq_ignore_ascii_case(name)) {
        return Some(Some((*p).to_string()));
    }
    if ty == ObjectType::User {
        if name.eq_ignore_ascii_case(MANAGER) {
            return Some(Some(MANAGER.to_string()));
        }
        if extension_attribute_number(name).is_some() {
            return Some(Some("onPremisesExtensionAttributes".to_string()));
        }
    }
    None
}

/// `extensionAttribute7` → 7 (1 to 15, case-insensitive).
fn extension_attribute_number(name: &str) -> Option<u8> {
    let prefix = "extensionAttribute";
    let head = name.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let n: u8 = name.get(prefix.len()..)?.parse().ok()?;
    (1..=15).contains(&n).then_some(n)
}

/// A directory object's type in a member list (`@odata.type`), when it can be provisioned.
/// Devices, contacts and service principals can be group members but are not provisioned.
pub(crate) fn provisionable_member(entry: &Map<String, Value>) -> bool {
    match entry.get("@odata.type").and_then(Value::as_str) {
        // Graph always sends the type; an entry without it is taken at its word.
        None => true,
        Some(t) => {
            let t = t.trim_start_matches('#');
            t.eq_ignore_ascii_case("microsoft.graph.user")
                || t.eq_ignore_ascii_case("microsoft.graph.group")
        }
    }
}

/// A Graph user or group object as the source object of that id: annotations (`@odata.*`,
/// `*@delta`, `@removed`) and nulls dropped, Entra's alias names added. Manager and members
/// are handled by the caller, which knows what the previous round said.
pub(crate) fn to_source_object(
    ty: ObjectType,
    id: &str,
    entry: &Map<String, Value>,
) -> SourceObject {
    let mut attributes = Map::new();
    for (k, v) in entry {
        if k == "id" || k.contains('@') || v.is_null() || k == MANAGER || k == MEMBERS {
            continue;
        }
        attributes.insert(k.clone(), v.clone());
    }
    if ty == ObjectType::User {
        for (alias, property) in USER_ALIASES {
            let value = match (entry.get(*property), *property) {
                // Entra's telephoneNumber is the first business phone.
                (Some(Value::Array(phones)), "businessPhones") => phones.first().cloned(),
                (Some(v), _) => Some(v.clone()),
                (None, _) => None,
            };
            if let Some(v) = value.filter(|v| !v.is_null()) {
                attributes.insert((*alias).to_string(), v);
            }
        }
        if let Some(Value::Object(ext)) = entry.get("onPremisesExtensionAttributes") {
            for (k, v) in ext {
                if extension_attribute_number(k).is_some() && !v.is_null() {
                    attributes.insert(k.clone(), v.clone());
                }
            }
        }
    }
    SourceObject {
        id: id.to_string(),
        object_type: ty,
        attributes: attributes.into(),
        members: Vec::new(),
    }
}

/// What `manager@delta` says: `None` when absent (unchanged), `Some(None)` when the manager was
/// removed, `Some(Some(id))` for the current manager. The annotation is a list; its entry
/// carries `@removed` when the manager was taken away (`concepts/delta-query-overview.md`,
/// "Resource representation in the delta query response").
pub(crate) fn manager_delta(entry: &Map<String, Value>) -> Option<Option<String>> {
    let list = entry.get("manager@delta")?;
    let Value::Array(items) = list else {
        return Some(None);
    };
    let current = items.iter().rev().find_map(|m| {
        let m = m.as_object()?;
        if m.contains_key("@removed") {
            return None;
        }
        m.get("id").and_then(Value::as_str).map(str::to_string)
    });
    Some(current)
}

/// The distinct names of `list`, as a `$select` value.
pub(crate) fn select_param(list: &[String]) -> String {
    let mut seen = BTreeSet::new();
    list.iter()
        .filter(|n| seen.insert(n.to_ascii_lowercase()))
        .cloned()
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_default_mappings_select_graph_properties() {
        let m = Mappings::generic_scim().unwrap();
        let sel = Selection::for_job(&m, &ScopeSettings::default(), &[], &[]).unwrap();
        for p in [
            "userPrincipalName",
            "mail",
            "givenName",
            "surname",
            "displayName",
            "accountEnabled",
            "jobTitle",
            "department",
            "employeeId",
            "mailNickname",
            "preferredLanguage",
            "city",
            "country",
            "businessPhones",
            "mobilePhone",
            "faxNumber",
            "officeLocation",
            "manager",
        ] {
            assert!(sel.users.iter().any(|s| s == p), "{p} in {:?}", sel.users);
        }
        assert!(!sel
            .users
            .iter()
            .any(|s| s == "telephoneNumber" || s == "IsSoftDeleted"));
        assert_eq!(sel.groups, vec!["displayName", "members"]);
    }

    #[test]
    fn unknown_attributes_are_refused_unless_named_as_extras() {
        let preset: crate::mapping::PresetFile = toml::from_str(
            r#"[[users]]
target = "userName"
source = "userPrincipalName"
[[users]]
target = "title"
expression = 'Join(" ", [costCentre], [extensionAttribute3], [extension_0a1b_badge])'
"#,
        )
        .unwrap();
        let m = Mappings::build(&preset, &[], &[]).unwrap();
        let e = Selection::for_job(&m, &ScopeSettings::default(), &[], &[]).unwrap_err();
        assert_eq!(e.name, "costCentre");
        assert!(e.to_string().contains("user_attributes"), "{e}");
        let sel =
            Selection::for_job(&m, &ScopeSettings::default(), &["costCentre".into()], &[]).unwrap();
        assert!(sel.users.contains(&"costCentre".to_string()));
        assert!(sel
            .users
            .contains(&"onPremisesExtensionAttributes".to_string()));
        assert!(sel.users.contains(&"extension_0a1b_badge".to_string()));
    }

    #[test]
    fn a_graph_user_gets_entra_names() {
        let u = to_source_object(
            ObjectType::User,
            "u1",
            &obj(json!({
                "id": "u1", "@odata.type": "#microsoft.graph.user",
                "businessPhones": ["+1 1", "+1 2"], "mobilePhone": "+1 3", "faxNumber": null,
                "officeLocation": "B1", "jobTitle": null, "displayName": "U",
                "onPremisesExtensionAttributes": {"extensionAttribute1": "x", "extensionAttribute2": null},
                "manager@delta": [{"id": "m"}],
            })),
        );
        assert_eq!(u.attr("telephoneNumber"), Some(json!("+1 1")));
        assert_eq!(u.attr("mobile"), Some(json!("+1 3")));
        assert_eq!(u.attr("physicalDeliveryOfficeName"), Some(json!("B1")));
        assert_eq!(u.attr("extensionAttribute1"), Some(json!("x")));
        assert!(u.attr("extensionAttribute2").is_none());
        assert!(u.attr("facsimileTelephoneNumber").is_none());
        assert!(!u.attributes.contains_key("jobTitle"));
        assert!(!u
            .attributes
            .keys()
            .iter()
            .any(|k| k.contains('@') || &**k == "id"));
    }

    #[test]
    fn manager_delta_reads_additions_and_removals() {
        assert_eq!(manager_delta(&obj(json!({"id": "a"}))), None);
        assert_eq!(
            manager_delta(&obj(json!({"manager@delta": [{"id": "m"}]}))),
            Some(Some("m".into()))
        );
        assert_eq!(
            manager_delta(&obj(
                json!({"manager@delta": [{"id": "m", "@removed": {"reason": "deleted"}}]})
            )),
            Some(None)
        );
    }

    #[test]
    fn member_types() {
        assert!(provisionable_member(&obj(
            json!({"@odata.type": "#microsoft.graph.user", "id": "a"})
        )));
        assert!(provisionable_member(&obj(
            json!({"@odata.type": "#microsoft.graph.group", "id": "a"})
        )));
        assert!(!provisionable_member(&obj(
            json!({"@odata.type": "#microsoft.graph.device", "id": "a"})
        )));
    }
}
