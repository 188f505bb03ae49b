//! Request ids: the storage key and the name that follows a payload everywhere.

use crate::error::Error;

/// A checked request id: 1-64 of `[A-Za-z0-9._-]`, starting with a letter or digit,
/// so it is always a safe storage key and file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(String);

impl RequestId {
    /// A new id: a uuid4 as 32 lower-case hex characters.
    pub fn generate() -> Self {
        RequestId(uuid::Uuid::new_v4().simple().to_string())
    }

    pub fn parse(s: &str) -> Result<Self, Error> {
        if is_valid(s) {
            Ok(RequestId(s.to_string()))
        } else {
            Err(Error::bad_request(format!(
                "request id {:?} is invalid: use 1-64 characters of [A-Za-z0-9._-], starting with a letter or digit",
                s.chars().take(80).collect::<String>()
            )))
        }
    }

    /// The supplied id when there is one (checked), else a new one.
    pub fn supplied_or_new(supplied: Option<&str>) -> Result<Self, Error> {
        match supplied {
            Some(s) if !s.is_empty() => Self::parse(s),
            _ => Ok(Self::generate()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub fn is_valid(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_32_hex() {
        let id = RequestId::generate();
        assert_eq!(id.as_str().len(), 32);
        assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn path_tricks_are_refused() {
        for bad in ["", "../x", "..", ".hidden", "a/b", "a\0b", "%2e%2e", "a b", &"a".repeat(65), "é"] {
            assert!(RequestId::parse(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "0", "abc-DEF_1.2", &"z".repeat(64)] {
            assert!(RequestId::parse(good).is_ok(), "{good:?}");
        }
    }
}
