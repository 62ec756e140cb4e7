//! Who is at the other end of a connection (a site's node or an operator), or who signed a
//! custom update (a publisher), read from the certificate's subject alternative name.
//!
//! The hierarchy's certificate authority writes exactly one URI name of the form
//! `urn:sitesync:site:CEN`, `urn:sitesync:operator:alice` or `urn:sitesync:publisher:contoso`
//! into each certificate it issues (see [`crate::pki`]); that name is the identity every
//! authorization rule looks at. A publisher's certificate is for signing only: it cannot
//! open a connection (see [`crate::publisher`]).

use std::fmt;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

const SITE_PREFIX: &str = "urn:sitesync:site:";
const OPERATOR_PREFIX: &str = "urn:sitesync:operator:";
const PUBLISHER_PREFIX: &str = "urn:sitesync:publisher:";

/// The identity a certificate carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    /// A node: a site (`CEN`, `PR1`) or an internet-facing node, by its site code.
    Site(String),
    /// A person or a script administering the hierarchy, by name.
    Operator(String),
    /// A publisher of custom updates, by name: signs updates for one vendor.
    Publisher(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate cannot be read: {0}")]
    Unreadable(String),
    #[error(
        "the certificate carries no sitesync identity (a subject alternative name `urn:sitesync:site:CODE` or `urn:sitesync:operator:NAME`): issue it with `sitesyncctl pki issue`"
    )]
    Missing,
    #[error("the certificate carries more than one sitesync identity: {0} and {1}")]
    Ambiguous(Identity, Identity),
    #[error("{0}")]
    Invalid(String),
}

impl Identity {
    /// A site identity, with the code checked: three letters or digits, kept upper case.
    pub fn site(code: &str) -> Result<Self, IdentityError> {
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(Self::Site(code.to_ascii_uppercase()))
        } else {
            Err(IdentityError::Invalid(format!(
                "`{code}` is not a site code: use three letters or digits, such as CEN or PR1"
            )))
        }
    }

    /// An operator identity, with the name checked: 1 to 64 letters, digits, `.`, `_`, `-`.
    pub fn operator(name: &str) -> Result<Self, IdentityError> {
        check_name(name, "an operator").map(|()| Self::Operator(name.to_owned()))
    }

    /// A publisher identity, with the name checked as an operator's.
    pub fn publisher(name: &str) -> Result<Self, IdentityError> {
        check_name(name, "a publisher").map(|()| Self::Publisher(name.to_owned()))
    }

    /// The subject alternative name that carries this identity.
    pub fn uri(&self) -> String {
        match self {
            Self::Site(code) => format!("{SITE_PREFIX}{code}"),
            Self::Operator(name) => format!("{OPERATOR_PREFIX}{name}"),
            Self::Publisher(name) => format!("{PUBLISHER_PREFIX}{name}"),
        }
    }

    /// Reads an identity URI; `None` for URIs that are not sitesync identities.
    pub fn from_uri(uri: &str) -> Option<Result<Self, IdentityError>> {
        if let Some(code) = uri.strip_prefix(SITE_PREFIX) {
            Some(Self::site(code))
        } else if let Some(name) = uri.strip_prefix(PUBLISHER_PREFIX) {
            Some(Self::publisher(name))
        } else {
            uri.strip_prefix(OPERATOR_PREFIX).map(Self::operator)
        }
    }

    /// The identity in a DER certificate: exactly one sitesync URI name.
    pub fn from_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, certificate) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::Unreadable(e.to_string()))?;
        Self::from_parsed(&certificate)
    }

    /// [`Identity::from_certificate`] of a certificate already parsed.
    pub(crate) fn from_parsed(certificate: &X509Certificate<'_>) -> Result<Self, IdentityError> {
        single_uri_name(
            certificate,
            Self::from_uri,
            IdentityError::Unreadable,
            IdentityError::Ambiguous,
        )?
        .ok_or(IdentityError::Missing)
    }

    /// The site code, for a site identity.
    pub fn site_code(&self) -> Option<&str> {
        match self {
            Self::Site(code) => Some(code),
            Self::Operator(_) | Self::Publisher(_) => None,
        }
    }

    pub fn is_operator(&self) -> bool {
        matches!(self, Self::Operator(_))
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Site(code) => write!(f, "site {code}"),
            Self::Operator(name) => write!(f, "operator {name}"),
            Self::Publisher(name) => write!(f, "publisher {name}"),
        }
    }
}

/// The one value among a certificate's URI names that `parse` recognizes (`None` if there
/// is none): the same value named twice is one, two different values are `several`.
pub(crate) fn single_uri_name<T: PartialEq, E>(
    certificate: &X509Certificate<'_>,
    parse: impl Fn(&str) -> Option<Result<T, E>>,
    unreadable: impl Fn(String) -> E,
    several: impl Fn(T, T) -> E,
) -> Result<Option<T>, E> {
    let names = certificate
        .subject_alternative_name()
        .map_err(|e| unreadable(e.to_string()))?;
    let mut found: Option<T> = None;
    for name in names.iter().flat_map(|ext| ext.value.general_names.iter()) {
        let GeneralName::URI(uri) = name else {
            continue;
        };
        let Some(value) = parse(uri) else {
            continue;
        };
        let value = value?;
        match found.take() {
            Some(previous) if previous != value => return Err(several(previous, value)),
            _ => found = Some(value),
        }
    }
    Ok(found)
}

/// Operator and publisher names: 1 to 64 letters, digits, `.`, `_`, `-`.
fn check_name(name: &str, what: &str) -> Result<(), IdentityError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(IdentityError::Invalid(format!(
            "`{name}` is not {what} name: use 1 to 64 letters, digits, `.`, `_` or `-`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_their_uri() {
        for identity in [
            Identity::site("pr1").unwrap(),
            Identity::operator("alice.admin").unwrap(),
            Identity::publisher("contoso").unwrap(),
        ] {
            assert_eq!(
                Identity::from_uri(&identity.uri()).unwrap().unwrap(),
                identity
            );
        }
        assert_eq!(
            Identity::site("pr1").unwrap().uri(),
            "urn:sitesync:site:PR1"
        );
        assert!(Identity::from_uri("https://example.com").is_none());
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(Identity::site("TOOLONG").is_err());
        assert!(Identity::site("A-B").is_err());
        assert!(Identity::operator("").is_err());
        assert!(Identity::operator("a b").is_err());
        assert!(Identity::operator(&"x".repeat(65)).is_err());
        assert!(Identity::publisher("con toso").is_err());
        assert!(
            Identity::from_uri("urn:sitesync:site:../")
                .unwrap()
                .is_err()
        );
    }
}
