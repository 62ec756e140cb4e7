//! Publishers of custom updates (S6): a certificate from the hierarchy's authority that names
//! a publisher and the one vendor it may publish for, valid until a given time.
//!
//! The certificate carries the publisher's identity (`urn:sitesync:publisher:NAME`) and its
//! vendor namespace as a second URI name, `urn:sitesync:vendor:` followed by the vendor's
//! name percent-encoded (UTF-8). Its only extended key usage is code signing: it signs update
//! documents and can open no connection (TLS needs server or client authentication).
//!
//! Microsoft's own names can never be delegated: a vendor named `Microsoft`, `Microsoft
//! Corporation` or anything starting with `Microsoft ` is refused here, whatever the case,
//! and so is `Local publisher`, the product custom updates sit under.

use std::fmt;

use crate::identity::{Identity, IdentityError, single_uri_name};

const VENDOR_PREFIX: &str = "urn:sitesync:vendor:";
/// The longest vendor name, in bytes of UTF-8.
pub const MAX_VENDOR_BYTES: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublisherError {
    #[error("{0}")]
    Vendor(String),
    #[error("the certificate cannot be read: {0}")]
    Unreadable(String),
    #[error("the certificate is not a publisher's: it carries {0}")]
    NotAPublisher(Identity),
    #[error("{0}")]
    Identity(#[from] IdentityError),
    #[error(
        "the publisher certificate names no vendor (a subject alternative name `urn:sitesync:vendor:NAME`): issue it with `sitesyncctl pki issue publisher NAME --vendor VENDOR`"
    )]
    NoVendor,
    #[error("the publisher certificate names more than one vendor: {0} and {1}")]
    SeveralVendors(Vendor, Vendor),
}

/// A vendor a publisher may publish for, as update documents name it (`CompanyName`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vendor(String);

impl Vendor {
    /// A vendor name, checked: 1 to [`MAX_VENDOR_BYTES`] bytes, no control characters, no
    /// space at either end, and not one of Microsoft's names.
    pub fn new(name: &str) -> Result<Self, PublisherError> {
        let refuse = |why: &str| Err(PublisherError::Vendor(format!("vendor `{name}` {why}")));
        if name.is_empty() {
            return Err(PublisherError::Vendor("the vendor name is empty".into()));
        }
        if name.len() > MAX_VENDOR_BYTES {
            return refuse(&format!("is longer than {MAX_VENDOR_BYTES} bytes"));
        }
        if name.chars().any(char::is_control) {
            return refuse("holds a control character");
        }
        if name.trim() != name {
            return refuse("starts or ends with a space");
        }
        let folded = name.to_lowercase();
        if folded == "microsoft" || folded.starts_with("microsoft ") {
            return refuse(
                "is one of Microsoft's names, which only the upstream catalog may use; custom updates are published under the publisher's own company name",
            );
        }
        if folded == "local publisher" {
            return refuse("is the product custom updates are published under, not a vendor");
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The subject alternative name that carries this vendor.
    pub fn uri(&self) -> String {
        let mut uri = String::from(VENDOR_PREFIX);
        for byte in self.0.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                uri.push(char::from(byte));
            } else {
                uri.push_str(&format!("%{byte:02X}"));
            }
        }
        uri
    }

    /// Reads a vendor URI; `None` for URIs that are not sitesync vendors.
    pub fn from_uri(uri: &str) -> Option<Result<Self, PublisherError>> {
        let encoded = uri.strip_prefix(VENDOR_PREFIX)?;
        Some(percent_decode(encoded).and_then(|name| Self::new(&name)))
    }
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn percent_decode(encoded: &str) -> Result<String, PublisherError> {
    let bad = || PublisherError::Vendor(format!("`{encoded}` is not a percent-encoded vendor"));
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// What a publisher certificate says: who, for which vendor, until when, with which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherCertificate {
    pub name: String,
    pub vendor: Vendor,
    /// The end of its validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// The serial number, hex.
    pub serial: String,
    /// The subject public key info, DER: what a delegation names.
    pub public_key: Vec<u8>,
}

impl PublisherCertificate {
    /// Reads a DER certificate; the authority's signature on it is not checked here.
    pub fn from_der(der: &[u8]) -> Result<Self, PublisherError> {
        let (_, certificate) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| PublisherError::Unreadable(e.to_string()))?;
        let name = match Identity::from_parsed(&certificate)? {
            Identity::Publisher(name) => name,
            other => return Err(PublisherError::NotAPublisher(other)),
        };
        let vendor = single_uri_name(
            &certificate,
            Vendor::from_uri,
            PublisherError::Unreadable,
            PublisherError::SeveralVendors,
        )?;
        Ok(Self {
            name,
            vendor: vendor.ok_or(PublisherError::NoVendor)?,
            not_after: certificate.validity().not_after.timestamp(),
            serial: certificate
                .raw_serial()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            public_key: certificate.public_key().raw.to_vec(),
        })
    }

    /// Reads the first certificate of a PEM file's contents.
    pub fn from_pem(pem: &[u8]) -> Result<Self, PublisherError> {
        let der = crate::pki::first_certificate(pem)
            .ok_or_else(|| PublisherError::Unreadable("no PEM certificate in it".into()))?;
        Self::from_der(&der)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendors_round_trip_through_their_uri() {
        for name in [
            "Contoso Ltd",
            "Fabrikam, Inc.",
            "Müller & Söhne GmbH",
            "a%b",
        ] {
            let vendor = Vendor::new(name).unwrap();
            let uri = vendor.uri();
            assert!(uri.is_ascii() && !uri.contains(' '), "{uri}");
            assert_eq!(Vendor::from_uri(&uri).unwrap().unwrap(), vendor);
        }
        assert!(Vendor::from_uri("urn:sitesync:site:CEN").is_none());
        assert!(
            Vendor::from_uri("urn:sitesync:vendor:%ZZ")
                .unwrap()
                .is_err()
        );
        assert!(
            Vendor::from_uri("urn:sitesync:vendor:%FF")
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn microsofts_names_and_bad_names_are_refused() {
        for name in [
            "Microsoft",
            "microsoft corporation",
            "Microsoft Corporation",
            "MICROSOFT Update",
            "Local Publisher",
            "",
            " Contoso",
            "Contoso\n",
        ] {
            let err = Vendor::new(name).unwrap_err();
            assert!(!err.to_string().is_empty(), "{name:?}");
        }
        assert!(Vendor::new(&"x".repeat(MAX_VENDOR_BYTES + 1)).is_err());
        assert!(Vendor::new("Microsoftish Tools").is_ok());
    }
}
