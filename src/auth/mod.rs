//! Who may do what on the one port (README, "Trust"). Three kinds of caller:
//!
//! - an *uploader*, known by the `x-rh-identity` header the proxy in front set;
//! - a *validator*, known by a credential: a bearer token (`authorization: Bearer ...`)
//!   or, with TLS, a client certificate; each credential names the services it acts
//!   for (`*`: all, an operator);
//! - a *status reader*: the uploader whose org owns the payload, or a validator.
//!
//! This module checks credentials ([`Credentials`]) and says what a [`Caller`] may do;
//! the pipeline asks it before each verb. It knows nothing of HTTP or gRPC: the
//! adapters hand it the header values they received.

use std::sync::RwLock;

use sha2::{Digest, Sha256};

use crate::domain::Identity;
use crate::error::{Error, Result};

pub mod source;
mod table;

pub use source::write_private;
pub use table::{make_token, token_hash, Table};

/// The largest `authorization` value looked at; longer is refused at once.
const MAX_AUTHORIZATION: usize = 4096;

/// The services a credential may act for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Services {
    /// Every service: an operator's credential.
    All,
    Only(Vec<String>),
}

impl Services {
    pub fn allows(&self, service: &str) -> bool {
        match self {
            Services::All => true,
            Services::Only(list) => list.iter().any(|s| s == service),
        }
    }
}

impl std::fmt::Display for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Services::All => f.write_str("*"),
            Services::Only(list) => f.write_str(&list.join(",")),
        }
    }
}

/// A checked validator credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validator {
    /// The credential's name in the credentials file (for logs and answers).
    pub name: String,
    pub services: Services,
}

/// The DNS names (subjectAltName, else subject CN) of a TLS client certificate the
/// server verified against `TLS_CLIENT_CA_FILE`; the server puts them on every
/// request of the connection.
#[derive(Debug, Clone, Default)]
pub struct PeerNames(pub Vec<String>);

/// Who is calling, as far as the gateway can tell.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The uploader's identity, from the `x-rh-identity` header.
    pub identity: Option<Identity>,
    /// A validator's credential, checked.
    pub validator: Option<Validator>,
}

impl Caller {
    /// The validator credential, or the error that says one is needed.
    pub fn validator(&self) -> Result<&Validator> {
        self.validator.as_ref().ok_or_else(|| {
            Error::Unauthenticated(
                "this call needs a validator credential: send `authorization: Bearer <token>` \
                 (or a client certificate the gateway trusts)"
                    .into(),
            )
        })
    }

    /// Checks that the caller is a validator that may act for `service`.
    pub fn may_validate(&self, service: &str) -> Result<&Validator> {
        let v = self.validator()?;
        if v.services.allows(service) {
            Ok(v)
        } else {
            Err(Error::Forbidden(format!(
                "the credential {:?} may act for {}, not for {service:?}",
                v.name, v.services
            )))
        }
    }

    /// Whether the caller may read the status of a payload owned by `owner` (its
    /// org_id, else its account): the owner itself, any validator or operator, or
    /// anyone when the payload was uploaded without an identity.
    pub fn may_read(&self, owner: Option<&str>) -> bool {
        if self.validator.is_some() {
            return true;
        }
        let Some(owner) = owner else { return true };
        self.identity.as_ref().is_some_and(|i| {
            i.org_id.as_deref() == Some(owner) || (i.org_id.is_none() && i.account_number.as_deref() == Some(owner))
        })
    }
}

/// The credentials the gateway accepts, reloadable while it runs.
pub struct Credentials {
    table: RwLock<Table>,
}

impl Credentials {
    pub fn new(table: Table) -> Self {
        Credentials { table: RwLock::new(table) }
    }

    /// Replaces what is accepted (a reloaded file).
    pub fn replace(&self, table: Table) {
        *self.table.write().unwrap() = table;
    }

    /// The validator behind a request's credentials: its `authorization` value and
    /// the names of its verified client certificate. No credential: `None`. A
    /// credential that is malformed or unknown is refused (401), whatever the verb.
    pub fn validator(&self, authorization: Option<&str>, cert_names: &[String]) -> Result<Option<Validator>> {
        let table = self.table.read().unwrap();
        if let Some(value) = authorization {
            if value.len() > MAX_AUTHORIZATION {
                return Err(Error::Unauthenticated(format!(
                    "the authorization value is {} bytes; a bearer token is far shorter",
                    value.len()
                )));
            }
            let token = bearer(value)?;
            let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            return table
                .by_token(&hash)
                .map(Some)
                .ok_or_else(|| Error::Unauthenticated("the bearer token is not one this gateway accepts".into()));
        }
        Ok(table.by_cert(cert_names))
    }
}

/// The token of an `authorization: Bearer <token>` value.
fn bearer(value: &str) -> Result<&str> {
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Error::Unauthenticated(
            "authorization must be `Bearer <token>`".into(),
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> (Credentials, String) {
        let token = make_token();
        let table = Table::parse(&format!(
            "# name  credential  services\nadv sha256:{} advisor\ncertified cert:adv.example advisor,compliance\n",
            token_hash(&token)
        ))
        .unwrap();
        (Credentials::new(table), token)
    }

    #[test]
    fn tokens_are_checked_by_their_hash() {
        let (c, token) = creds();
        let v = c.validator(Some(&format!("Bearer {token}")), &[]).unwrap().unwrap();
        assert_eq!((v.name.as_str(), v.services.allows("advisor"), v.services.allows("qpc")), ("adv", true, false));
        assert!(c.validator(Some(&format!("bearer  {token} ")), &[]).unwrap().is_some(), "the scheme is case-insensitive");
        for bad in ["Bearer nope", "Basic abc", "Bearer", &token, &"x".repeat(5000)] {
            assert!(matches!(c.validator(Some(bad), &[]), Err(Error::Unauthenticated(_))), "{bad:.20}");
        }
        assert_eq!(c.validator(None, &[]).unwrap(), None);
    }

    #[test]
    fn certificates_map_to_services_by_name() {
        let (c, _) = creds();
        let v = c.validator(None, &["other.example".into(), "adv.example".into()]).unwrap().unwrap();
        assert_eq!(v.name, "certified");
        assert!(v.services.allows("compliance"));
        assert_eq!(c.validator(None, &["stranger.example".into()]).unwrap(), None);
    }

    #[test]
    fn what_each_caller_may_do() {
        let org = |o: &str| Identity { org_id: Some(o.into()), ..Default::default() };
        let adv = Validator { name: "a".into(), services: Services::Only(vec!["advisor".into()]) };
        let uploader = Caller { identity: Some(org("A")), validator: None };
        assert!(uploader.may_read(Some("A")));
        assert!(!uploader.may_read(Some("B")));
        assert!(uploader.may_read(None), "anonymous uploads stay open");
        assert!(matches!(uploader.may_validate("advisor"), Err(Error::Unauthenticated(_))));
        let validator = Caller { identity: None, validator: Some(adv) };
        assert!(validator.may_read(Some("B")));
        assert!(validator.may_validate("advisor").is_ok());
        assert!(matches!(validator.may_validate("compliance"), Err(Error::Forbidden(_))));
        assert!(!Caller::default().may_read(Some("A")));
    }
}
