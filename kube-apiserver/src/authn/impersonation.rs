//! User impersonation (`kubectl --as`, `--as-group`, `--as-uid`): a request that carries
//! `Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid` or `Impersonate-Extra-*` headers
//! acts as that user, when its own user may `impersonate` each of them — as Kubernetes'
//! impersonation filter does it. `users` (or `serviceaccounts` in their namespace for
//! `system:serviceaccount:NS:NAME`), `groups`, and in `authentication.k8s.io` `uids` and
//! `userextras/KEY`.

use axum::http::HeaderMap;
use kube_core::store::{Store, StoreError};

use super::UserInfo;
use crate::authz::{Attributes, authorize};

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";

/// Why a request may not impersonate what it asks for.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The headers do not make a request (groups without a user, a header that is not text).
    BadRequest(String),
    /// The requester may not impersonate this (the attributes it was refused).
    Forbidden(Box<Attributes>),
    /// The authorizer could not read its policy.
    Store(StoreError),
}

/// The user a request acts as: `None` when it impersonates nobody, else the impersonated user
/// (their groups plus `system:authenticated`, or `system:unauthenticated` for
/// `system:anonymous`; a ServiceAccount's groups when none are given).
pub(crate) async fn impersonated(
    store: &dyn Store,
    requester: &UserInfo,
    headers: &HeaderMap,
) -> Result<Option<UserInfo>, Refusal> {
    let text = |name: &str| -> Result<Vec<String>, Refusal> {
        headers
            .get_all(name)
            .iter()
            .map(|v| {
                v.to_str().map(str::to_string).map_err(|_| {
                    Refusal::BadRequest(format!("the {name} header is not valid text"))
                })
            })
            .collect()
    };
    let users = text(USER)?;
    let groups = text(GROUP)?;
    let uids = text(UID)?;
    let mut extras = Vec::new();
    for name in headers.keys() {
        if let Some(key) = name.as_str().strip_prefix(EXTRA_PREFIX) {
            for value in text(name.as_str())? {
                extras.push((key.to_string(), value));
            }
        }
    }
    let Some(user) = users.first() else {
        if groups.is_empty() && uids.is_empty() && extras.is_empty() {
            return Ok(None);
        }
        return Err(Refusal::BadRequest(
            "impersonating groups, a uid or extra fields requires impersonating a user \
             (Impersonate-User)"
                .into(),
        ));
    };
    if users.len() > 1 || uids.len() > 1 {
        return Err(Refusal::BadRequest(
            "Impersonate-User and Impersonate-Uid may each be given once".into(),
        ));
    }

    let service_account = service_account(user);
    let mut asked = vec![match &service_account {
        Some((namespace, name)) => Attributes {
            namespace: Some(namespace.to_string()),
            ..impersonate("", "serviceaccounts", name)
        },
        None => impersonate("", "users", user),
    }];
    asked.extend(groups.iter().map(|g| impersonate("", "groups", g)));
    asked.extend(
        uids.iter()
            .map(|u| impersonate("authentication.k8s.io", "uids", u)),
    );
    asked.extend(extras.iter().map(|(key, value)| Attributes {
        subresource: Some(key.clone()),
        ..impersonate("authentication.k8s.io", "userextras", value)
    }));
    for attributes in asked {
        if !authorize(store, requester, &attributes)
            .await
            .map_err(Refusal::Store)?
        {
            return Err(Refusal::Forbidden(Box::new(attributes)));
        }
    }

    let groups = match (&service_account, groups.is_empty()) {
        (Some((namespace, _)), true) => vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{namespace}"),
        ],
        _ => groups,
    };
    if user == "system:anonymous" {
        // As Kubernetes: the anonymous user is not authenticated.
        let mut groups = groups;
        groups.push("system:unauthenticated".into());
        return Ok(Some(UserInfo {
            name: user.clone(),
            groups,
        }));
    }
    Ok(Some(UserInfo::new(user.clone(), groups)))
}

/// `system:serviceaccount:NS:NAME` → (NS, NAME).
fn service_account(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

fn impersonate(api_group: &str, resource: &str, name: &str) -> Attributes {
    Attributes {
        verb: "impersonate".into(),
        api_group: api_group.into(),
        resource: resource.into(),
        name: Some(name.into()),
        resource_request: true,
        ..Attributes::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_names_split_into_namespace_and_name() {
        assert_eq!(
            service_account("system:serviceaccount:ci:robot"),
            Some(("ci", "robot"))
        );
        assert_eq!(service_account("system:serviceaccount:ci"), None);
        assert_eq!(service_account("system:serviceaccount::robot"), None);
        assert_eq!(service_account("jane"), None);
    }
}
