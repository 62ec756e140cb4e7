//! Property tests: the parser never panics on any input, is deterministic, and round-trips
//! the fields of generated documents whatever characters they hold.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::OnceLock;

use proptest::prelude::*;
use sitesync_metadata::{ParseError, ParseLimits, UpdateId, UpdateRevision, parse_update};

const FIXTURES: [&str; 5] = [
    "56309036-4c77-4dd9-951a-99ee9c246a94-r101.xml",
    "6964aab4-c5b5-43bd-a17d-ffb4346a8e1d-r100.xml",
    "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe-r200.xml",
    "266f6222-c89d-43f2-9f8a-69340271e677-r200.xml",
    "ccb78947-6453-4ecc-9de8-bc0305c98f2d-r200.xml",
];

fn fixtures() -> &'static [Vec<u8>] {
    static LOADED: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    LOADED.get_or_init(|| {
        FIXTURES
            .iter()
            .map(|name| {
                let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures")
                    .join(name);
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            })
            .collect()
    })
}

fn parse(document: &[u8]) -> Result<UpdateRevision, ParseError> {
    parse_update(document, &ParseLimits::default())
}

/// One edit of a document; positions are taken modulo its length so any value applies.
#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Truncate {
        at: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        len: usize,
    },
    /// Copies a slice of the document elsewhere: duplicates whole elements and tags, which
    /// byte noise alone rarely does.
    Splice {
        from: usize,
        len: usize,
        to: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that matter to XML are over-represented so that mutations hit the syntax.
    let interesting = prop_oneof![
        any::<u8>(),
        prop::sample::select(b"<>/&;\"'=:!?[]-# \n\xc3\xa9\xff".to_vec()),
    ];
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), prop::collection::vec(interesting, 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1..64usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 1..256usize, any::<usize>())
            .prop_map(|(from, len, to)| Mutation::Splice { from, len, to }),
    ]
}

fn apply(document: &mut Vec<u8>, mutation: &Mutation) {
    if document.is_empty() {
        return;
    }
    let len = document.len();
    match mutation {
        Mutation::Flip { at, mask } => document[at % len] ^= mask,
        Mutation::Truncate { at } => document.truncate(at % len),
        Mutation::Insert { at, bytes } => {
            let at = at % (len + 1);
            document.splice(at..at, bytes.iter().copied());
        }
        Mutation::Delete { at, len: count } => {
            let at = at % len;
            let end = (at + count).min(len);
            document.drain(at..end);
        }
        Mutation::Splice {
            from,
            len: count,
            to,
        } => {
            let from = from % len;
            let end = (from + count).min(len);
            let copied = document[from..end].to_vec();
            let to = to % (len + 1);
            document.splice(to..to, copied);
        }
    }
}

/// Text for a title: XML specials, non-ASCII and whitespace, so escaping is exercised.
fn title_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 <>&\"'éü中文\u{1F600}.,:;()\\[\\]-]{1,60}"
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "(<|>|/|&|;|=|\"|upd:|Update|xmlns|[a-z]| |\n){0,400}") {
        let _ = parse(text.as_bytes());
    }

    #[test]
    fn mutated_fixtures_never_panic_and_parse_deterministically(
        which in 0..FIXTURES.len(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut document = fixtures()[which].clone();
        for m in &mutations {
            apply(&mut document, m);
        }
        let first = parse(&document);
        let second = parse(&document);
        prop_assert_eq!(&first, &second);
        if let Ok(revision) = first {
            prop_assert_eq!(revision.document, document);
        }
    }

    #[test]
    fn tight_limits_never_panic(
        which in 0..FIXTURES.len(),
        max_depth in 0..12usize,
        max_elements in 0..400usize,
        max_attributes_per_element in 0..10usize,
        max_text_bytes in 0..300usize,
    ) {
        let limits = ParseLimits {
            max_depth,
            max_elements,
            max_attributes_per_element,
            max_text_bytes,
            ..ParseLimits::default()
        };
        let document = &fixtures()[which];
        let first = parse_update(document, &limits);
        prop_assert_eq!(&first, &parse_update(document, &limits));
        // Limits only ever refuse: what passes them is what the default limits give.
        if let Ok(revision) = first {
            prop_assert_eq!(Ok(revision), parse(document));
        }
    }

    #[test]
    fn generated_documents_round_trip(
        id in any::<[u8; 16]>(),
        upper_case in any::<bool>(),
        revision in any::<u32>(),
        title in title_text(),
        description in proptest::option::of(title_text()),
        kb in proptest::option::of("[0-9]{1,8}"),
        superseded in prop::collection::vec(any::<[u8; 16]>(), 0..20),
    ) {
        let update_id = UpdateId::from_bytes(id);
        let id_text = if upper_case {
            update_id.to_string().to_uppercase()
        } else {
            update_id.to_string()
        };
        let superseded_xml: String = superseded
            .iter()
            .map(|s| format!(r#"<upd:UpdateIdentity UpdateID="{}"/>"#, UpdateId::from_bytes(*s)))
            .collect();
        let document = format!(
            concat!(
                r#"<upd:Update xmlns:upd="http://schemas.microsoft.com/msus/2002/12/Update">"#,
                r#"<upd:UpdateIdentity UpdateID="{id}" RevisionNumber="{revision}"/>"#,
                r#"<upd:Properties UpdateType="Software" PublicationState="Expired" "#,
                r#"CreationDate="2024-01-11T20:15:45.051Z" DefaultPropertiesLanguage="en">{kb}"#,
                r#"</upd:Properties><upd:LocalizedPropertiesCollection><upd:LocalizedProperties>"#,
                r#"<upd:Language>en</upd:Language><upd:Title>{title}</upd:Title>{description}"#,
                r#"</upd:LocalizedProperties></upd:LocalizedPropertiesCollection>"#,
                r#"<upd:Relationships><upd:SupersededUpdates>{superseded}</upd:SupersededUpdates>"#,
                r#"</upd:Relationships></upd:Update>"#,
            ),
            id = id_text,
            revision = revision,
            kb = kb
                .as_ref()
                .map(|kb| format!("<upd:KBArticleID>{kb}</upd:KBArticleID>"))
                .unwrap_or_default(),
            title = escape(&title),
            description = description
                .as_ref()
                .map(|d| format!("<upd:Description>{}</upd:Description>", escape(d)))
                .unwrap_or_default(),
            superseded = superseded_xml,
        );
        let xml_space: &[char] = &[' ', '\t', '\r', '\n'];
        let result = parse(document.as_bytes());
        if title.trim_matches(xml_space).is_empty() {
            // A title of only whitespace is no title.
            prop_assert!(
                matches!(result, Err(ParseError::MissingElement { element: "Title", .. })),
                "{:?}",
                result
            );
            return Ok(());
        }
        let parsed = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed.id.update_id, UpdateId::from_str(&id_text).unwrap());
        prop_assert_eq!(parsed.id.revision, revision);
        // Surrounding whitespace is formatting; the rest comes back exactly.
        prop_assert_eq!(parsed.title(), title.trim_matches(xml_space));
        let description = description
            .as_deref()
            .map(|d| d.trim_matches(xml_space))
            .filter(|d| !d.is_empty());
        prop_assert_eq!(parsed.description(), description);
        prop_assert_eq!(parsed.kb_article, kb);
        let superseded_ids: Vec<UpdateId> = parsed.superseded.iter().map(|s| s.update_id).collect();
        let expected: Vec<UpdateId> = superseded.iter().map(|s| UpdateId::from_bytes(*s)).collect();
        prop_assert_eq!(superseded_ids, expected);
        prop_assert_eq!(parsed.document, document.into_bytes());
    }
}
