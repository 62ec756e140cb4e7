//! The seal of a custom document: the publisher's signature and what the top site recorded
//! when it accepted the document, written as the root element's last child.
//!
//! ```text
//! <upd:Update …>…<sitesync:PublisherSignature xmlns:sitesync="urn:sitesync:publishing:1"
//!     Publisher="…" Vendor="…" Product="…" Algorithm="ecdsa-p256-sha256"
//!     Signature="base64" Certificate="base64 DER" AcceptedVersion="N" AcceptedAt="…" /></upd:Update>
//! ```
//!
//! The signature covers [`sealed_message`]: a context string, the vendor, the product and
//! the SHA-256 of the document **without** the seal, byte for byte. So the seal is cut out
//! exactly as it was put in ([`unseal`] finds it right before the root's end tag) and
//! nothing else needs a canonical form. The acceptance (`AcceptedVersion`, `AcceptedAt`) is
//! the top site's, added after the publisher signed; the catalog digest, which the top site
//! signs, covers it. Parsers that do not know the seal skip it as an unknown element.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use quick_xml::events::Event;
use sha2::{Digest as _, Sha256};

use crate::model::Timestamp;

/// The namespace of the seal element.
const SEAL_NAMESPACE: &str = "urn:sitesync:publishing:1";
/// How every seal starts, namespace declaration included.
const SEAL_OPEN: &str =
    r#"<sitesync:PublisherSignature xmlns:sitesync="urn:sitesync:publishing:1" "#;
/// The context the publisher's signature starts with, so it can mean nothing else.
const CONTEXT: &[u8] = b"sitesync custom update v1\0";
/// The one signature algorithm seals use.
pub const SEAL_ALGORITHM: &str = "ecdsa-p256-sha256";
/// The largest seal (a certificate and a signature, base64): bounds the work of finding it.
const MAX_SEAL_BYTES: usize = 16 << 10;

/// When and at which catalog version the top site accepted a custom document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acceptance {
    /// The first catalog version that holds it.
    pub version: u64,
    pub at: Timestamp,
}

/// What a seal says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    /// The publisher's name, as its certificate gives it.
    pub publisher: String,
    pub vendor: String,
    /// The product, empty for the vendor's own category.
    pub product: String,
    /// The signature over [`sealed_message`] (DER).
    pub signature: Vec<u8>,
    /// The publisher's certificate (DER).
    pub certificate: Vec<u8>,
    /// Absent until the top site accepts the document.
    pub accepted: Option<Acceptance>,
}

/// Why a document's seal cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the publisher signature element is malformed: {0}")]
    Malformed(String),
    #[error(
        "the publisher signature element must be the last thing in the document, right before the root's end tag"
    )]
    Misplaced,
    #[error("the document carries more than one publisher signature")]
    Several,
    #[error("the document is not UTF-8")]
    NotUtf8,
}

/// What the publisher signs for a document whose bytes without the seal are `unsealed`.
pub fn sealed_message(vendor: &str, product: &str, unsealed: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(CONTEXT.len() + vendor.len() + product.len() + 34);
    message.extend_from_slice(CONTEXT);
    message.extend_from_slice(vendor.as_bytes());
    message.push(0);
    message.extend_from_slice(product.as_bytes());
    message.push(0);
    message.extend_from_slice(&Sha256::digest(unsealed));
    message
}

/// `unsealed` with `seal` put before the root's end tag. `unsealed` must end with that tag
/// (every well-formed document this crate writes does; a document with trailing
/// whitespace is refused).
pub fn seal(unsealed: &[u8], seal: &Seal) -> Result<Vec<u8>, SealError> {
    let text = std::str::from_utf8(unsealed).map_err(|_| SealError::NotUtf8)?;
    let end = root_end_tag(text).ok_or(SealError::Misplaced)?;
    if text.contains(SEAL_OPEN) {
        return Err(SealError::Several);
    }
    let mut out = String::with_capacity(text.len() + 2048);
    out.push_str(&text[..end]);
    write_seal(&mut out, seal);
    out.push_str(&text[end..]);
    Ok(out.into_bytes())
}

/// The seal of `document` and the document without it; `None` for a document without one.
pub fn unseal(document: &[u8]) -> Result<Option<(Seal, Vec<u8>)>, SealError> {
    let Ok(text) = std::str::from_utf8(document) else {
        // Not UTF-8 cannot carry a seal we wrote; the parser refuses it anyway.
        return Ok(None);
    };
    let Some(start) = text.rfind(SEAL_OPEN) else {
        return Ok(None);
    };
    if text[..start].contains(SEAL_OPEN) {
        return Err(SealError::Several);
    }
    let rest = &text[start..];
    let close = rest
        .get(..MAX_SEAL_BYTES.min(rest.len()))
        .and_then(|window| window.find("/>"))
        .ok_or_else(|| SealError::Malformed("it does not end with `/>` within 16 KiB".into()))?;
    let end = start + close + 2;
    if root_end_tag(text) != Some(end) {
        return Err(SealError::Misplaced);
    }
    let seal = read_seal(&text[start..end])?;
    let mut unsealed = Vec::with_capacity(document.len() - (end - start));
    unsealed.extend_from_slice(&document[..start]);
    unsealed.extend_from_slice(&document[end..]);
    Ok(Some((seal, unsealed)))
}

/// Where the root element's end tag starts, when the text ends with one.
fn root_end_tag(text: &str) -> Option<usize> {
    let start = text.rfind("</")?;
    let tag = &text[start + 2..];
    let name = tag.strip_suffix('>')?;
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-' | b'.'));
    plain.then_some(start)
}

fn write_seal(out: &mut String, seal: &Seal) {
    out.push_str(SEAL_OPEN);
    let _ = write!(
        out,
        r#"Publisher="{}" Vendor="{}" Product="{}" Algorithm="{SEAL_ALGORITHM}" Signature="{}" Certificate="{}""#,
        escape(&seal.publisher),
        escape(&seal.vendor),
        escape(&seal.product),
        BASE64.encode(&seal.signature),
        BASE64.encode(&seal.certificate),
    );
    if let Some(accepted) = seal.accepted {
        let _ = write!(
            out,
            r#" AcceptedVersion="{}" AcceptedAt="{}""#,
            accepted.version, accepted.at
        );
    }
    out.push_str(" />");
}

fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

fn read_seal(element: &str) -> Result<Seal, SealError> {
    let malformed = |what: String| SealError::Malformed(what);
    let mut reader = quick_xml::Reader::from_str(element);
    let start = match reader.read_event() {
        Ok(Event::Empty(start)) => start,
        Ok(other) => return Err(malformed(format!("unexpected {other:?}"))),
        Err(e) => return Err(malformed(e.to_string())),
    };
    if start.name().as_ref() != b"sitesync:PublisherSignature" {
        return Err(malformed("not a PublisherSignature element".into()));
    }
    let mut fields: Vec<(String, String)> = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| malformed(e.to_string()))?;
        let key = String::from_utf8_lossy(attribute.key.as_ref()).into_owned();
        let value = attribute
            .unescape_value()
            .map_err(|e| malformed(format!("attribute {key}: {e}")))?
            .into_owned();
        if fields.iter().any(|(k, _)| *k == key) {
            return Err(malformed(format!("attribute {key} appears twice")));
        }
        fields.push((key, value));
    }
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let required =
        |key: &str| get(key).ok_or_else(|| malformed(format!("attribute {key} is missing")));
    if get("xmlns:sitesync") != Some(SEAL_NAMESPACE) {
        return Err(malformed(
            "the namespace is not urn:sitesync:publishing:1".into(),
        ));
    }
    let algorithm = required("Algorithm")?;
    if algorithm != SEAL_ALGORITHM {
        return Err(malformed(format!(
            "algorithm `{algorithm}` is not {SEAL_ALGORITHM}"
        )));
    }
    let base64 = |key: &str| {
        BASE64
            .decode(required(key)?)
            .map_err(|e| malformed(format!("attribute {key} is not base64: {e}")))
    };
    let accepted = match (get("AcceptedVersion"), get("AcceptedAt")) {
        (None, None) => None,
        (Some(version), Some(at)) => Some(Acceptance {
            version: version
                .parse()
                .map_err(|_| malformed(format!("AcceptedVersion `{version}` is not a number")))?,
            at: Timestamp::parse_iso8601(at)
                .ok_or_else(|| malformed(format!("AcceptedAt `{at}` is not a date")))?,
        }),
        _ => {
            return Err(malformed(
                "AcceptedVersion and AcceptedAt come together".into(),
            ));
        }
    };
    Ok(Seal {
        publisher: required("Publisher")?.to_owned(),
        vendor: required("Vendor")?.to_owned(),
        product: required("Product")?.to_owned(),
        signature: base64("Signature")?,
        certificate: base64("Certificate")?,
        accepted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_seal() -> Seal {
        Seal {
            publisher: "lob-team".into(),
            vendor: "Contoso & Sons <EU>".into(),
            product: "Line \"Suite\"".into(),
            signature: vec![1, 2, 3],
            certificate: vec![4, 5, 6, 7],
            accepted: Some(Acceptance {
                version: 42,
                at: Timestamp(1_700_000_000_000),
            }),
        }
    }

    const DOC: &[u8] = br#"<upd:Update xmlns:upd="http://schemas.microsoft.com/msus/2002/12/Update"><upd:UpdateIdentity UpdateID="x" RevisionNumber="1" /></upd:Update>"#;

    #[test]
    fn a_seal_comes_out_exactly_as_it_went_in() {
        let sealed = seal(DOC, &sample_seal()).unwrap();
        let (read, unsealed) = unseal(&sealed).unwrap().unwrap();
        assert_eq!(read, sample_seal());
        assert_eq!(unsealed, DOC);
        let without_acceptance = Seal {
            accepted: None,
            ..sample_seal()
        };
        let sealed = seal(DOC, &without_acceptance).unwrap();
        assert_eq!(unseal(&sealed).unwrap().unwrap().0, without_acceptance);
    }

    #[test]
    fn an_unsealed_document_has_no_seal() {
        assert_eq!(unseal(DOC).unwrap(), None);
    }

    #[test]
    fn a_seal_elsewhere_or_twice_is_refused() {
        let sealed = seal(DOC, &sample_seal()).unwrap();
        let mut trailing = sealed.clone();
        trailing.extend_from_slice(b"\n");
        assert_eq!(unseal(&trailing), Err(SealError::Misplaced));
        assert_eq!(seal(&sealed, &sample_seal()), Err(SealError::Several));
        let text = String::from_utf8(sealed).unwrap();
        let end = text.rfind("</").unwrap();
        let seal_text = &text[text.find(SEAL_OPEN).unwrap()..end];
        let twice = format!("{}{seal_text}{}", &text[..end], &text[end..]);
        assert_eq!(unseal(twice.as_bytes()), Err(SealError::Several));
    }

    #[test]
    fn a_broken_seal_is_refused() {
        let sealed = String::from_utf8(seal(DOC, &sample_seal()).unwrap()).unwrap();
        for (from, to) in [
            ("Signature=\"AQID\"", "Signature=\"!!\""),
            (r#"Algorithm="ecdsa-p256-sha256""#, r#"Algorithm="rsa""#),
            (r#" AcceptedAt="#, r#" Accepted="#),
            ("Publisher=", "Publisher=\"a\" Publisher="),
        ] {
            let broken = sealed.replace(from, to);
            assert!(
                matches!(unseal(broken.as_bytes()), Err(SealError::Malformed(_))),
                "{from} -> {to}: {:?}",
                unseal(broken.as_bytes())
            );
        }
    }

    #[test]
    fn the_message_binds_vendor_product_and_content() {
        let base = sealed_message("V", "P", DOC);
        assert_ne!(base, sealed_message("V", "P2", DOC));
        assert_ne!(base, sealed_message("VP", "", DOC));
        assert_ne!(base, sealed_message("V", "P", b"<a></a>"));
    }
}
