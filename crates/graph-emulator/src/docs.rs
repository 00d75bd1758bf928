//! Constants from Microsoft's docs that the emulator needs. They are copies of the lists
//! provisiond's Graph source holds (from the same docs pages), kept here so that the emulator
//! depends on nothing in provisiond: it is written from Microsoft's docs, not from our client.

/// `client_assertion_type` of a token request with a certificate credential (entra-docs
/// `identity-platform/certificate-credentials.md`).
pub(crate) const CLIENT_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

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
