//! Routing by content type: which service and category a payload belongs to.

use crate::error::Error;

/// Where a payload goes: `application/vnd.redhat.advisor.collection+tgz` is
/// service `advisor`, category `collection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub service: String,
    pub category: String,
}

/// The legacy content types the old clients send; they mean advisor / upload.
const LEGACY: [&str; 3] = [
    "application/x-gzip; charset=binary",
    "application/gzip",
    "application/gzip; charset=binary",
];

/// Applies contract §2's rule `^application/vnd\.redhat\.([a-z0-9-]+)\.([a-z0-9-]+).*`.
/// Lower-case only, as the original service.
pub fn route(content_type: &str) -> Result<Route, Error> {
    if LEGACY.contains(&content_type) {
        return Ok(Route {
            service: "advisor".into(),
            category: "upload".into(),
        });
    }
    let rest = content_type
        .strip_prefix("application/vnd.redhat.")
        .ok_or(Error::UnsupportedMediaType)?;
    let (service, rest) = take_name(rest).ok_or(Error::UnsupportedMediaType)?;
    let rest = rest.strip_prefix('.').ok_or(Error::UnsupportedMediaType)?;
    let (category, _) = take_name(rest).ok_or(Error::UnsupportedMediaType)?;
    Ok(Route {
        service: service.into(),
        category: category.into(),
    })
}

/// The longest non-empty run of `[a-z0-9-]` at the start of `s`, and what follows.
fn take_name(s: &str) -> Option<(&str, &str)> {
    let end = s
        .bytes()
        .position(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        .unwrap_or(s.len());
    (end > 0).then(|| s.split_at(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ct: &str) -> (String, String) {
        let r = route(ct).unwrap();
        (r.service, r.category)
    }

    #[test]
    fn vendor_types_give_service_and_category() {
        assert_eq!(ok("application/vnd.redhat.advisor.collection+tgz"), ("advisor".into(), "collection".into()));
        assert_eq!(ok("application/vnd.redhat.testareno.something+tgz"), ("testareno".into(), "something".into()));
        assert_eq!(ok("application/vnd.redhat.hccm.tar"), ("hccm".into(), "tar".into()));
        assert_eq!(ok("application/vnd.redhat.qpc.x; charset=binary"), ("qpc".into(), "x".into()));
    }

    #[test]
    fn legacy_types_are_advisor_upload() {
        for ct in LEGACY {
            assert_eq!(ok(ct), ("advisor".into(), "upload".into()));
        }
    }

    #[test]
    fn everything_else_is_unsupported() {
        for ct in [
            "",
            "text/plain",
            "application/vnd.redhat.",
            "application/vnd.redhat.advisor",
            "application/vnd.redhat.advisor.",
            "application/vnd.redhat.Advisor.collection",
            "APPLICATION/VND.REDHAT.advisor.collection",
            "application/x-gzip",
            "application/vnd.redhat..x",
        ] {
            assert!(matches!(route(ct), Err(Error::UnsupportedMediaType)), "{ct}");
        }
    }
}
