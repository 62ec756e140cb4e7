//! The update XML parser under arbitrary bytes.
//!
//! Each input is parsed twice: under [`ParseLimits::default`], as a node parses what it
//! receives, and under [`tight_limits`], small enough that a fuzzer reaches every limit
//! within its input size. Beyond "never panics" (the parser's own promise), it checks:
//! - a revision respects the limits it was parsed under: the document within
//!   `max_document_bytes` and kept byte for byte, every kept value within `max_text_bytes`,
//!   no more kept items than `max_elements`;
//! - limits only refuse: what the tight limits accept, the defaults accept identically;
//! - what the parser accepts, a node can send: the revision survives the wire conversions
//!   (`v1::UpdateRevision` and `v1::UpdateDocument`) unchanged.

use sitesync_metadata::{ParseLimits, Relationship, RevisionId, UpdateRevision, parse_update};
use sitesync_proto::{RevisionDocument, v1};

/// Limits small enough for fuzzer-sized inputs yet above what the smallest real documents
/// (`metadata/tests/fixtures`) need, so mutations of them still parse.
pub fn tight_limits() -> ParseLimits {
    ParseLimits {
        max_document_bytes: 64 << 10,
        max_depth: 16,
        max_elements: 512,
        max_attributes_per_element: 8,
        max_text_bytes: 2 << 10,
    }
}

/// Runs the parser on `document` and checks what it returns.
pub fn check(document: &[u8]) {
    let default = ParseLimits::default();
    let tight = tight_limits();
    let accepted = parse_update(document, &default);
    let accepted_tight = parse_update(document, &tight);

    if let Ok(revision) = &accepted_tight {
        within_limits(revision, document, &tight);
        assert_eq!(
            accepted.as_ref().ok(),
            Some(revision),
            "the tight limits accepted a document that the default limits do not accept as is"
        );
    }
    if let Ok(revision) = accepted {
        within_limits(&revision, document, &default);
        survives_the_wire(revision);
    }
}

fn within_limits(revision: &UpdateRevision, document: &[u8], limits: &ParseLimits) {
    assert!(document.len() <= limits.max_document_bytes);
    assert_eq!(
        revision.document, document,
        "the document is not kept byte for byte"
    );

    let mut values: Vec<&str> = vec![&revision.default_language];
    values.extend(revision.kb_article.as_deref());
    values.extend(revision.security_bulletin.as_deref());
    for localized in &revision.localized {
        values.extend([&*localized.language, &*localized.title]);
        values.extend(localized.description.as_deref());
    }
    // `download_url` is derived (digest and extension), not a value of the document.
    values.extend(revision.files.iter().map(|file| &*file.name));
    for value in values {
        assert!(
            value.len() <= limits.max_text_bytes,
            "a kept value is {} bytes, over max_text_bytes = {}",
            value.len(),
            limits.max_text_bytes
        );
    }

    let relationship_refs = |relationships: &[Relationship]| -> usize {
        relationships
            .iter()
            .map(|r| match r {
                Relationship::One(_) => 1,
                Relationship::AtLeastOne { members, .. } => members.len(),
            })
            .sum()
    };
    let kept_items = revision.localized.len()
        + revision.superseded.len()
        + revision.files.len()
        + relationship_refs(&revision.prerequisites)
        + relationship_refs(&revision.bundled);
    assert!(
        kept_items <= limits.max_elements,
        "{kept_items} items kept, over max_elements = {}",
        limits.max_elements
    );
}

fn survives_the_wire(revision: UpdateRevision) {
    let id: RevisionId = revision.id;

    let wire = v1::UpdateRevision::from(&revision);
    match UpdateRevision::try_from(wire) {
        Ok(received) => assert_eq!(
            received, revision,
            "v1::UpdateRevision changed the revision"
        ),
        Err(error) => panic!("a parsed revision does not convert back from the wire: {error}"),
    }

    let wire = v1::UpdateDocument::from(revision);
    match RevisionDocument::try_from(wire) {
        Ok(received) => {
            assert_eq!(received.id, id);
            received
                .check_identity(id)
                .expect("a document's own identity is refused");
        }
        Err(error) => panic!("a parsed document does not convert back from the wire: {error}"),
    }
}
