//! Objects without a sidecar: what the services the gateway replaces left in the
//! buckets. Both stored a payload under its request id with a plain PutObject; the
//! Python upload service with user metadata `account` and `user-agent`, its Go
//! successor with `requestid`, `account` and `org`. The gateway's own objects carry
//! `service`, `category`, `account`, `org-id` and `received-at` besides their sidecar.
//! Whatever of these an object has becomes its [`ObjectMeta`]; the rest is left to
//! the verdict (see [`ObjectMeta::without_sidecar`]).

use std::collections::HashMap;

use aws_sdk_s3::primitives::DateTime;

use crate::storage::ObjectMeta;

/// What HeadObject or GetObject said about an object.
pub(super) struct Facts<'a> {
    pub size: Option<i64>,
    pub content_type: Option<&'a str>,
    pub last_modified: Option<&'a DateTime>,
    pub metadata: Option<&'a HashMap<String, String>>,
}

pub(super) fn meta(key: &str, f: Facts<'_>) -> ObjectMeta {
    let user = |names: &[&str]| {
        names.iter().find_map(|n| {
            f.metadata?
                .iter()
                .find(|(k, v)| k.eq_ignore_ascii_case(n) && !v.is_empty())
                .map(|(_, v)| v.clone())
        })
    };
    let modified = f
        .last_modified
        .and_then(|t| std::time::SystemTime::try_from(*t).ok())
        .map(chrono::DateTime::<chrono::Utc>::from)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let received_at = user(&["received-at"]).unwrap_or(modified);
    let mut m = ObjectMeta::without_sidecar(key, f.size.unwrap_or(0).max(0) as u64, received_at);
    m.content_type = f.content_type.unwrap_or_default().to_string();
    m.account = user(&["account"]);
    m.org_id = user(&["org-id", "org"]);
    m.service = user(&["service"]).unwrap_or_default();
    m.category = user(&["category"]).unwrap_or_default();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_go_services_metadata_gives_account_and_org() {
        let md: HashMap<String, String> =
            [("requestid", "abc"), ("account", "acct"), ("org", "o1")].map(|(k, v)| (k.to_string(), v.to_string())).into();
        let f = Facts { size: Some(5), content_type: Some("application/gzip"), last_modified: None, metadata: Some(&md) };
        let m = meta("abc", f);
        assert_eq!((m.account.as_deref(), m.org_id.as_deref(), m.size), (Some("acct"), Some("o1"), 5));
        assert_eq!((m.service.as_str(), m.sha256.as_str()), ("", ""));
        assert!(m.derived);
    }

    #[test]
    fn an_empty_account_is_none() {
        let md: HashMap<String, String> =
            [("account", ""), ("user-agent", "insights-client")].map(|(k, v)| (k.to_string(), v.to_string())).into();
        let f = Facts { size: None, content_type: None, last_modified: None, metadata: Some(&md) };
        assert_eq!(meta("k", f).account, None);
    }
}
