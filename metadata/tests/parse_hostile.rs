//! Malformed, truncated and hostile documents are refused with the specific error variant,
//! and with a message that names what is wrong.

use std::path::PathBuf;

use sitesync_metadata::{
    CategoryType, MsrcSeverity, ParseError, ParseLimits, UpdateRevision, parse_update,
};

const FIXTURES: [&str; 5] = [
    "56309036-4c77-4dd9-951a-99ee9c246a94-r101.xml",
    "6964aab4-c5b5-43bd-a17d-ffb4346a8e1d-r100.xml",
    "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe-r200.xml",
    "266f6222-c89d-43f2-9f8a-69340271e677-r200.xml",
    "ccb78947-6453-4ecc-9de8-bc0305c98f2d-r200.xml",
];
const FULL_DELTAS: &str = FIXTURES[3];
const COMPANY: &str = FIXTURES[0];
const SECURITY_INTELLIGENCE: &str = FIXTURES[2];

/// The smallest document this parser accepts; `BODY` marks where tests insert elements.
const MINIMAL: &str = concat!(
    r#"<upd:Update xmlns:upd="http://schemas.microsoft.com/msus/2002/12/Update">"#,
    r#"<upd:UpdateIdentity UpdateID="11111111-2222-3333-4444-555555555555" RevisionNumber="7"/>"#,
    r#"<upd:Properties UpdateType="Software" PublicationState="Published" "#,
    r#"CreationDate="2024-01-11T20:15:45.051Z" DefaultPropertiesLanguage="en"/>"#,
    r#"<upd:LocalizedPropertiesCollection><upd:LocalizedProperties><upd:Language>en</upd:Language>"#,
    r#"<upd:Title>T</upd:Title></upd:LocalizedProperties></upd:LocalizedPropertiesCollection>"#,
    "BODY</upd:Update>"
);

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn parse(document: &str) -> Result<UpdateRevision, ParseError> {
    parse_update(document.as_bytes(), &ParseLimits::default())
}

/// `document` with its single occurrence of `from` replaced: fails loudly if the fixture
/// changed and the edit would silently do nothing.
fn edit(document: &str, from: &str, to: &str) -> String {
    assert_eq!(
        document.matches(from).count(),
        1,
        "`{from}` must occur exactly once"
    );
    document.replacen(from, to, 1)
}

fn with_body(body: &str) -> String {
    edit(MINIMAL, "BODY", body)
}

/// Asserts the error and that its message mentions every one of `words`.
fn refused(result: Result<UpdateRevision, ParseError>, words: &[&str]) -> ParseError {
    let error = match result {
        Ok(revision) => panic!("accepted: {:?}", revision.id),
        Err(error) => error,
    };
    let message = error.to_string();
    for word in words {
        assert!(message.contains(word), "message `{message}` lacks `{word}`");
    }
    error
}

#[test]
fn minimal_document_parses() {
    let revision = parse(&with_body("")).unwrap();
    assert_eq!(revision.id.revision, 7);
    assert_eq!(revision.title(), "T");
}

#[test]
fn empty_input() {
    assert_eq!(
        parse_update(b"", &ParseLimits::default()),
        Err(ParseError::Empty)
    );
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let document = fixture(COMPANY);
    let limits = ParseLimits {
        max_document_bytes: document.len() - 1,
        ..ParseLimits::default()
    };
    assert_eq!(
        parse_update(document.as_bytes(), &limits),
        Err(ParseError::TooLarge {
            size: document.len(),
            limit: document.len() - 1,
        })
    );
    // Garbage is not even looked at when it is too large.
    let huge = vec![0xffu8; ParseLimits::default().max_document_bytes + 1];
    let error = refused(
        parse_update(&huge, &ParseLimits::default()),
        &["limit", "bytes"],
    );
    assert!(matches!(error, ParseError::TooLarge { .. }));
}

/// Every proper prefix of a real document is reported as truncated, never as something else
/// and never with a panic. Every prefix of the four smaller documents is tried (between them
/// they hold every construct the parser reads); the 37 KB one repeats the same shapes, so it
/// is cut at every 13th byte and at every byte of its last 256, where the end tags close:
/// cutting it everywhere would cost half a minute of unoptimized test time for no new
/// coverage. One thread per document, because each cut is a full parse.
#[test]
fn every_prefix_of_the_fixtures_is_truncated() {
    std::thread::scope(|scope| {
        for name in FIXTURES {
            scope.spawn(move || {
                let document = fixture(name);
                let bytes = document.as_bytes();
                let cuts: Vec<usize> = if name == SECURITY_INTELLIGENCE {
                    let tail = bytes.len() - 256;
                    (1..tail).step_by(13).chain(tail..bytes.len()).collect()
                } else {
                    (1..bytes.len()).collect()
                };
                for end in cuts {
                    match parse_update(&bytes[..end], &ParseLimits::default()) {
                        Err(ParseError::Truncated { .. }) => {}
                        other => panic!("{name} cut at {end}: expected Truncated, got {other:?}"),
                    }
                }
                assert!(parse_update(bytes, &ParseLimits::default()).is_ok());
            });
        }
    });
}

#[test]
fn truncation_message_names_the_open_element() {
    let document = fixture(FULL_DELTAS);
    let cut = document.find("AM_Delta.exe").unwrap();
    let error = refused(parse(&document[..cut]), &["truncated", "fetch it again"]);
    assert!(matches!(error, ParseError::Truncated { .. }), "{error:?}");

    let cut = document.find("<upd:Title>").unwrap() + "<upd:Title>Full".len();
    refused(
        parse(&document[..cut]),
        &[
            "truncated",
            "`Title`",
            "Update/LocalizedPropertiesCollection/LocalizedProperties/Title",
        ],
    );
}

#[test]
fn wrong_namespace() {
    let document = fixture(COMPANY).replace(
        "xmlns:upd=\"http://schemas.microsoft.com/msus/2002/12/Update\"",
        "xmlns:upd=\"http://example.com/not-the-update-namespace\"",
    );
    let error = refused(
        parse(&document),
        &[
            "upd:Update",
            "http://example.com/not-the-update-namespace",
            "expected `Update`",
        ],
    );
    assert!(matches!(error, ParseError::NotAnUpdateDocument { .. }));

    // No namespace at all.
    let error = refused(
        parse(r#"<Update><UpdateIdentity UpdateID="x"/></Update>"#),
        &["no namespace"],
    );
    assert!(matches!(error, ParseError::NotAnUpdateDocument { .. }));

    // Right namespace, wrong element.
    let error = refused(
        parse(r#"<upd:Updates xmlns:upd="http://schemas.microsoft.com/msus/2002/12/Update"/>"#),
        &["upd:Updates"],
    );
    assert!(matches!(error, ParseError::NotAnUpdateDocument { .. }));
}

#[test]
fn missing_identity() {
    let document = fixture(COMPANY);
    let without = edit(
        &document,
        r#"<upd:UpdateIdentity UpdateID="56309036-4C77-4DD9-951A-99EE9C246A94" RevisionNumber="101" />"#,
        "",
    );
    let error = refused(parse(&without), &["UpdateIdentity", "`Update`"]);
    assert!(matches!(
        error,
        ParseError::MissingElement {
            element: "UpdateIdentity",
            ..
        }
    ));

    let no_id = edit(
        &document,
        r#"UpdateID="56309036-4C77-4DD9-951A-99EE9C246A94" "#,
        "",
    );
    let error = refused(parse(&no_id), &["UpdateID", "Update/UpdateIdentity"]);
    assert!(matches!(
        error,
        ParseError::MissingAttribute {
            attribute: "UpdateID",
            ..
        }
    ));

    let no_revision = edit(&document, r#" RevisionNumber="101""#, "");
    let error = refused(parse(&no_revision), &["RevisionNumber"]);
    assert!(matches!(
        error,
        ParseError::MissingAttribute {
            attribute: "RevisionNumber",
            ..
        }
    ));

    let twice = with_body(
        r#"<upd:UpdateIdentity UpdateID="11111111-2222-3333-4444-555555555555" RevisionNumber="8"/>"#,
    );
    let error = refused(parse(&twice), &["UpdateIdentity", "more than once"]);
    assert!(matches!(error, ParseError::DuplicateElement { .. }));
}

#[test]
fn missing_properties() {
    let document = edit(
        MINIMAL,
        r#"<upd:Properties UpdateType="Software" PublicationState="Published" CreationDate="2024-01-11T20:15:45.051Z" DefaultPropertiesLanguage="en"/>"#,
        "",
    );
    let error = refused(parse(&document), &["Properties"]);
    assert!(matches!(
        error,
        ParseError::MissingElement {
            element: "Properties",
            ..
        }
    ));
}

#[test]
fn invalid_guid() {
    for bad in [
        "not-a-guid",
        "56309036-4c77-4dd9-951a-99ee9c246a9",
        "56309036-4c77-4dd9-951a-99ee9c246a94x",
        "",
    ] {
        let document = edit(
            &fixture(COMPANY),
            "56309036-4C77-4DD9-951A-99EE9C246A94",
            bad,
        );
        let error = refused(parse(&document), &["UpdateID", "not a GUID"]);
        assert!(
            matches!(&error, ParseError::InvalidGuid { attribute: "UpdateID", value, .. } if value == bad),
            "{error:?}"
        );
    }
    // In a relationship too, with the path to it.
    let document = with_body(
        r#"<upd:Relationships><upd:Prerequisites><upd:UpdateIdentity UpdateID="zz"/></upd:Prerequisites></upd:Relationships>"#,
    );
    let error = refused(
        parse(&document),
        &["Update/Relationships/Prerequisites/UpdateIdentity", "`zz`"],
    );
    assert!(matches!(error, ParseError::InvalidGuid { .. }));
}

#[test]
fn invalid_numbers() {
    for bad in ["abc", "-1", "+7", "4294967296", " 7", ""] {
        let document = edit(
            MINIMAL,
            r#"RevisionNumber="7""#,
            &format!(r#"RevisionNumber="{bad}""#),
        );
        let error = refused(parse(&document), &["RevisionNumber"]);
        assert!(
            matches!(
                error,
                ParseError::InvalidNumber {
                    attribute: "RevisionNumber",
                    ..
                }
            ),
            "{bad}: {error:?}"
        );
    }
    let document = edit(
        &fixture(FULL_DELTAS),
        r#" Size="11606440""#,
        r#" Size="11e6""#,
    );
    let error = refused(parse(&document), &["Size", "Update/Files/File", "11e6"]);
    assert!(matches!(
        error,
        ParseError::InvalidNumber {
            attribute: "Size",
            ..
        }
    ));
}

#[test]
fn unknown_enumerations() {
    let document = edit(
        MINIMAL,
        r#"UpdateType="Software""#,
        r#"UpdateType="Firmware""#,
    );
    let error = refused(parse(&document), &["UpdateType", "Firmware", "Detectoid"]);
    assert!(matches!(
        error,
        ParseError::InvalidValue {
            attribute: "UpdateType",
            ..
        }
    ));

    let document = edit(
        MINIMAL,
        r#"PublicationState="Published""#,
        r#"PublicationState="Deleted""#,
    );
    let error = refused(
        parse(&document),
        &["PublicationState", "Deleted", "Expired"],
    );
    assert!(matches!(
        error,
        ParseError::InvalidValue {
            attribute: "PublicationState",
            ..
        }
    ));

    let document = edit(MINIMAL, r#"UpdateType="Software""#, "");
    let error = refused(parse(&document), &["UpdateType", "Update/Properties"]);
    assert!(matches!(
        error,
        ParseError::MissingAttribute {
            attribute: "UpdateType",
            ..
        }
    ));
}

#[test]
fn creation_date() {
    let document = edit(MINIMAL, r#"CreationDate="2024-01-11T20:15:45.051Z" "#, "");
    let error = refused(parse(&document), &["CreationDate"]);
    assert!(matches!(
        error,
        ParseError::MissingAttribute {
            attribute: "CreationDate",
            ..
        }
    ));

    for bad in ["yesterday", "2024-13-01T00:00:00Z", "2024-01-11", ""] {
        let document = edit(MINIMAL, "2024-01-11T20:15:45.051Z", bad);
        let error = refused(parse(&document), &["CreationDate", "ISO 8601"]);
        assert!(
            matches!(
                error,
                ParseError::InvalidDate {
                    attribute: "CreationDate",
                    ..
                }
            ),
            "{bad}"
        );
    }
    // Without the zone it is taken as UTC, as the model documents.
    let document = edit(
        MINIMAL,
        "2024-01-11T20:15:45.051Z",
        "2024-01-11T20:15:45.051",
    );
    assert!(parse(&document).is_ok());
}

#[test]
fn titles() {
    let document = edit(
        MINIMAL,
        "<upd:LocalizedPropertiesCollection><upd:LocalizedProperties><upd:Language>en</upd:Language><upd:Title>T</upd:Title></upd:LocalizedProperties></upd:LocalizedPropertiesCollection>",
        "",
    );
    assert_eq!(parse(&document), Err(ParseError::NoLocalizedTitle));

    let document = edit(MINIMAL, "<upd:Title>T</upd:Title>", "");
    let error = refused(parse(&document), &["Title", "LocalizedProperties"]);
    assert!(matches!(
        error,
        ParseError::MissingElement {
            element: "Title",
            ..
        }
    ));

    let document = edit(
        MINIMAL,
        "<upd:Title>T</upd:Title>",
        "<upd:Title>  </upd:Title>",
    );
    assert!(matches!(
        parse(&document),
        Err(ParseError::MissingElement {
            element: "Title",
            ..
        })
    ));

    let document = edit(MINIMAL, "<upd:Language>en</upd:Language>", "");
    assert!(matches!(
        parse(&document),
        Err(ParseError::MissingElement {
            element: "Language",
            ..
        })
    ));

    let document = edit(
        MINIMAL,
        "<upd:Title>T</upd:Title>",
        "<upd:Title>T<upd:b/></upd:Title>",
    );
    let error = refused(parse(&document), &["only text", "Title"]);
    assert!(matches!(error, ParseError::MixedContent { .. }));
}

#[test]
fn category_type_is_required_for_category_updates_only() {
    let document = fixture(COMPANY);
    let error = refused(
        parse(&edit(&document, r#"CategoryType="Company" "#, "")),
        &["CategoryType", "category"],
    );
    assert!(matches!(error, ParseError::MissingCategoryType { .. }));

    let error = refused(
        parse(&edit(
            &document,
            r#"CategoryType="Company""#,
            r#"CategoryType="Vendor""#,
        )),
        &["CategoryType", "Vendor", "UpdateClassification"],
    );
    assert!(matches!(
        error,
        ParseError::InvalidValue {
            attribute: "CategoryType",
            ..
        }
    ));

    // Category data on a software update is not this parser's to judge.
    let document = with_body(
        r#"<upd:HandlerSpecificData><cat:CategoryInformation xmlns:cat="http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/Category" CategoryType="Nonsense"/></upd:HandlerSpecificData>"#,
    );
    assert_eq!(parse(&document).unwrap().category_type, None);

    // The category namespace is matched by URI, whatever its prefix.
    let document = edit(
        &fixture(COMPANY),
        r#"xmlns:cat="http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/Category""#,
        r#"xmlns:c2="http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/Category""#,
    )
    .replace("cat:CategoryInformation", "c2:CategoryInformation")
    .replace("xsi:type=\"cat:Category\"", "xsi:type=\"c2:Category\"");
    assert_eq!(
        parse(&document).unwrap().category_type,
        Some(CategoryType::Company)
    );
}

#[test]
fn deep_nesting() {
    let depth = 10_000;
    let body = format!("{}{}", "<x>".repeat(depth), "</x>".repeat(depth));
    let error = refused(
        parse(&with_body(&body)),
        &["deeper than the limit of 64", "Update/x/x"],
    );
    assert!(matches!(error, ParseError::TooDeep { limit: 64, .. }));

    // Unclosed nesting is refused for depth, not read to the end.
    let body = "<x>".repeat(depth);
    assert!(matches!(
        parse(&with_body(&body)),
        Err(ParseError::TooDeep { .. })
    ));

    // Depth counts skipped (unknown) elements too, and the limit is exact.
    let limits = ParseLimits {
        max_depth: 4,
        ..ParseLimits::default()
    };
    let ok = with_body("<a><b><c/></b></a>");
    assert!(parse_update(ok.as_bytes(), &limits).is_ok());
    let deep = with_body("<a><b><c><d/></c></b></a>");
    assert!(matches!(
        parse_update(deep.as_bytes(), &limits),
        Err(ParseError::TooDeep { limit: 4, .. })
    ));
}

#[test]
fn billion_laughs_doctype_is_refused() {
    let document = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<upd:Update xmlns:upd="http://schemas.microsoft.com/msus/2002/12/Update"><upd:Title>&lol9;</upd:Title></upd:Update>"#;
    let error = refused(parse(document), &["DOCTYPE"]);
    assert!(
        matches!(error, ParseError::DoctypeRefused { byte: 22 }),
        "{error:?}"
    );
}

#[test]
fn external_entity_doctype_is_refused() {
    let document = edit(
        MINIMAL,
        "<upd:Title>T</upd:Title>",
        "<upd:Title>&xxe;</upd:Title>",
    );
    let with_doctype =
        format!("<!DOCTYPE upd:Update [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>{document}");
    assert!(matches!(
        parse(&with_doctype),
        Err(ParseError::DoctypeRefused { byte: 0 })
    ));
    // Without the DOCTYPE the reference is simply unknown.
    let error = refused(parse(&document), &["&xxe;"]);
    assert!(matches!(error, ParseError::UnknownEntity { ref entity, .. } if entity == "xxe"));
}

#[test]
fn unknown_entity_in_attribute() {
    let document = edit(
        MINIMAL,
        r#"RevisionNumber="7""#,
        r#"RevisionNumber="&seven;""#,
    );
    let error = refused(parse(&document), &["&seven;"]);
    assert!(
        matches!(error, ParseError::UnknownEntity { .. }),
        "{error:?}"
    );
    // Also in parts the parser skips: no entity goes unchecked.
    let document =
        with_body(r#"<upd:ApplicabilityRules><x y="&z;">&w;</x></upd:ApplicabilityRules>"#);
    assert!(matches!(
        parse(&document),
        Err(ParseError::UnknownEntity { .. })
    ));
}

#[test]
fn predefined_entities_character_references_and_cdata_are_text() {
    let document = edit(
        MINIMAL,
        "<upd:Title>T</upd:Title>",
        "<upd:Title>A &amp; B &lt;C&gt; &quot;&apos; &#65;&#x42; <![CDATA[<raw & text>]]></upd:Title>\
         <upd:Description>line 1\r\nline 2</upd:Description>",
    );
    let revision = parse(&document).unwrap();
    assert_eq!(revision.title(), "A & B <C> \"' AB <raw & text>");
    // Line ends are normalized as XML requires.
    assert_eq!(revision.description(), Some("line 1\nline 2"));

    let bad_reference = edit(
        MINIMAL,
        "<upd:Title>T</upd:Title>",
        "<upd:Title>&#0;</upd:Title>",
    );
    assert!(matches!(
        parse(&bad_reference),
        Err(ParseError::Malformed { .. })
    ));
}

#[test]
fn not_utf8() {
    let garbage: Vec<u8> = (0..=255u8).rev().cycle().take(4096).collect();
    let error = refused(parse_update(&garbage, &ParseLimits::default()), &["UTF-8"]);
    assert_eq!(error, ParseError::NotUtf8 { byte: 0 });

    // A real document in UTF-16 is refused for its encoding.
    let utf16: Vec<u8> = std::iter::once(0xfeffu16)
        .chain(fixture(COMPANY).encode_utf16())
        .flat_map(u16::to_le_bytes)
        .collect();
    assert!(matches!(
        parse_update(&utf16, &ParseLimits::default()),
        Err(ParseError::NotUtf8 { .. })
    ));

    // A Latin-1 byte inside a title.
    let mut bytes = with_body("").into_bytes();
    let title = bytes.windows(3).position(|w| w == b">T<").unwrap() + 1;
    bytes[title] = 0xe9;
    assert_eq!(
        parse_update(&bytes, &ParseLimits::default()),
        Err(ParseError::NotUtf8 { byte: title as u64 })
    );
}

#[test]
fn declared_encoding_must_be_utf8() {
    let latin1 = format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1"?>{}"#,
        with_body("")
    );
    let error = refused(parse(&latin1), &["ISO-8859-1", "UTF-8"]);
    assert!(matches!(error, ParseError::UnsupportedEncoding { .. }));

    let utf8 = format!(r#"<?xml version="1.0" encoding="utf-8"?>{}"#, with_body(""));
    assert!(parse(&utf8).is_ok());
    let bom = format!("\u{feff}{utf8}");
    assert!(parse(&bom).is_ok());
}

#[test]
fn not_well_formed() {
    let cases = [
        // Mismatched end tag.
        with_body("<upd:Files></upd:File>"),
        // Duplicate attribute.
        edit(
            MINIMAL,
            r#"RevisionNumber="7""#,
            r#"RevisionNumber="7" RevisionNumber="8""#,
        ),
        // Undeclared prefix, on an element and on an attribute.
        with_body("<nope:Thing/>"),
        with_body(r#"<x nope:y="1"/>"#),
        // A second root, text after the root, text before the root.
        format!("{}<upd:Update/>", with_body("")),
        format!("{}trailing", with_body("")),
        format!("leading{}", with_body("")),
        // An XML declaration that is not first.
        format!(r#"{}<?xml version="1.0"?>"#, with_body("")),
        // Bad markup.
        with_body("<!bogus>"),
        // A lone ampersand.
        edit(
            MINIMAL,
            "<upd:Title>T</upd:Title>",
            "<upd:Title>A & B</upd:Title>",
        ),
    ];
    for document in cases {
        match parse(&document) {
            Err(ParseError::Malformed { .. }) => {}
            other => panic!("{document}: expected Malformed, got {other:?}"),
        }
    }
}

#[test]
fn too_many_elements() {
    let body = "<x/>".repeat(300_000);
    let error = refused(parse(&with_body(&body)), &["250000 elements"]);
    assert!(matches!(
        error,
        ParseError::TooManyElements { limit: 250_000, .. }
    ));

    let limits = ParseLimits {
        max_elements: 8,
        ..ParseLimits::default()
    };
    // The minimal document has exactly 7 elements.
    assert!(parse_update(with_body("<x/>").as_bytes(), &limits).is_ok());
    assert!(matches!(
        parse_update(with_body("<x/><x/>").as_bytes(), &limits),
        Err(ParseError::TooManyElements { limit: 8, .. })
    ));
}

#[test]
fn too_many_attributes() {
    let attributes: String = (0..65).map(|i| format!(r#" a{i}="{i}""#)).collect();
    let error = refused(
        parse(&with_body(&format!("<x{attributes}/>"))),
        &["`Update/x`", "64 attributes"],
    );
    assert!(matches!(
        error,
        ParseError::TooManyAttributes { limit: 64, .. }
    ));
    let attributes: String = (0..64).map(|i| format!(r#" a{i}="{i}""#)).collect();
    assert!(parse(&with_body(&format!("<x{attributes}/>"))).is_ok());
}

#[test]
fn oversized_values() {
    let limit = ParseLimits::default().max_text_bytes;
    let long = "x".repeat(limit + 1);
    let document = edit(
        MINIMAL,
        "<upd:Title>T</upd:Title>",
        &format!("<upd:Title>{long}</upd:Title>"),
    );
    let error = refused(
        parse(&document),
        &["LocalizedProperties/Title", "262144 bytes"],
    );
    assert!(matches!(error, ParseError::ValueTooLong { .. }));

    // Split by references, the text is still measured as a whole.
    let half = "y".repeat(limit / 2);
    let document = edit(
        MINIMAL,
        "<upd:Title>T</upd:Title>",
        &format!("<upd:Title>{half}&amp;{half}</upd:Title>"),
    );
    assert!(matches!(
        parse(&document),
        Err(ParseError::ValueTooLong { .. })
    ));

    let document = with_body(&format!(r#"<x y="{long}"/>"#));
    assert!(matches!(
        parse(&document),
        Err(ParseError::ValueTooLong { .. })
    ));

    let exactly = "z".repeat(limit);
    let document = edit(
        MINIMAL,
        "<upd:Title>T</upd:Title>",
        &format!("<upd:Title>{exactly}</upd:Title>"),
    );
    assert_eq!(parse(&document).unwrap().title().len(), limit);
}

#[test]
fn digests() {
    let document = fixture(FULL_DELTAS);
    let bad_base64 = edit(&document, "h/W9BGlYUAaqXTp30cZi/SiV3c0=", "h/W9BGlY!!!!");
    let error = refused(
        parse(&bad_base64),
        &["SHA1", "not base64", "Update/Files/File"],
    );
    assert!(matches!(
        error,
        ParseError::InvalidDigest {
            algorithm: "SHA1",
            ..
        }
    ));

    let short = edit(&document, "h/W9BGlYUAaqXTp30cZi/SiV3c0=", "AAAA");
    let error = refused(parse(&short), &["3 bytes, expected 20"]);
    assert!(matches!(error, ParseError::InvalidDigest { .. }));

    let bad_additional = edit(
        &document,
        "Amt0qymy5KsROiwIXm4QIIV75Ju4r+Cl28Pg8gaLXUA=",
        "h/W9BGlYUAaqXTp30cZi/SiV3c0=",
    );
    let error = refused(
        parse(&bad_additional),
        &["SHA256", "20 bytes, expected 32", "AdditionalDigest"],
    );
    assert!(matches!(
        error,
        ParseError::InvalidDigest {
            algorithm: "SHA256",
            ..
        }
    ));

    let unknown_algorithm = edit(
        &document,
        r#"DigestAlgorithm="SHA1""#,
        r#"DigestAlgorithm="MD5""#,
    );
    let error = refused(parse(&unknown_algorithm), &["DigestAlgorithm", "MD5"]);
    assert!(matches!(
        error,
        ParseError::InvalidValue {
            attribute: "DigestAlgorithm",
            ..
        }
    ));

    // An additional digest of an algorithm we do not know is ignored, not refused.
    let future = edit(
        &document,
        r#"Algorithm="SHA256""#,
        r#"Algorithm="SHA3-512""#,
    );
    let revision = parse(&future).unwrap();
    assert_eq!(revision.files[0].digests.len(), 1);

    // Without SHA-1, content is addressed by SHA-256.
    let sha256_only = edit(
        &edit(
            &document,
            r#"DigestAlgorithm="SHA1""#,
            r#"DigestAlgorithm="SHA256""#,
        ),
        r#"Digest="h/W9BGlYUAaqXTp30cZi/SiV3c0=""#,
        r#"Digest="Amt0qymy5KsROiwIXm4QIIV75Ju4r+Cl28Pg8gaLXUA=""#,
    );
    let sha256_only = edit(
        &sha256_only,
        r#"<upd:AdditionalDigest Algorithm="SHA256">"#,
        r#"<upd:AdditionalDigest Algorithm="SHA3-512">"#,
    );
    let revision = parse(&sha256_only).unwrap();
    assert_eq!(
        revision.files[0].download_url,
        "Content/40/026B74AB29B2E4AB113A2C085E6E1020857BE49BB8AFE0A5DBC3E0F2068B5D40.exe"
    );
}

#[test]
fn file_names() {
    let document = fixture(FULL_DELTAS);
    for bad in [
        "..\\..\\evil.exe",
        "dir/AM_Delta.exe",
        "..",
        "",
        "a&#10;b.exe",
    ] {
        let edited = edit(
            &document,
            r#"FileName="AM_Delta.exe""#,
            &format!(r#"FileName="{bad}""#),
        );
        let error = refused(parse(&edited), &["FileName"]);
        assert!(
            matches!(
                error,
                ParseError::InvalidValue {
                    attribute: "FileName",
                    ..
                }
            ),
            "{bad}: {error:?}"
        );
    }
    // Odd extensions stay out of the URL; the digest alone identifies the content.
    for (name, suffix) in [
        ("archive.tar.gz", ".gz"),
        ("noext", ""),
        ("odd.e x e", ""),
        ("trailing.", ""),
    ] {
        let edited = edit(
            &document,
            r#"FileName="AM_Delta.exe""#,
            &format!(r#"FileName="{name}""#),
        );
        let revision = parse(&edited).unwrap();
        assert_eq!(
            revision.files[0].download_url,
            format!("Content/CD/87F5BD0469585006AA5D3A77D1C662FD2895DDCD{suffix}")
        );
        assert_eq!(revision.files[0].name, name);
    }
    let missing = edit(&document, r#" Size="11606440""#, "");
    assert!(matches!(
        parse(&missing),
        Err(ParseError::MissingAttribute {
            attribute: "Size",
            ..
        })
    ));
}

#[test]
fn relationships() {
    let document = with_body(
        r#"<upd:Relationships><upd:Prerequisites><upd:AtLeastOne IsCategory="true"></upd:AtLeastOne></upd:Prerequisites></upd:Relationships>"#,
    );
    let error = refused(parse(&document), &["UpdateIdentity", "AtLeastOne"]);
    assert!(matches!(
        error,
        ParseError::MissingElement {
            element: "UpdateIdentity",
            ..
        }
    ));

    let document = with_body(
        r#"<upd:Relationships><upd:Prerequisites><upd:AtLeastOne IsCategory="yes"><upd:UpdateIdentity UpdateID="11111111-2222-3333-4444-555555555555"/></upd:AtLeastOne></upd:Prerequisites></upd:Relationships>"#,
    );
    let error = refused(parse(&document), &["IsCategory", "yes"]);
    assert!(matches!(
        error,
        ParseError::InvalidValue {
            attribute: "IsCategory",
            ..
        }
    ));

    let document = with_body(
        r#"<upd:Relationships><upd:BundledUpdates><upd:UpdateIdentity UpdateID="11111111-2222-3333-4444-555555555555" RevisionNumber="x"/></upd:BundledUpdates></upd:Relationships>"#,
    );
    assert!(matches!(
        parse(&document),
        Err(ParseError::InvalidNumber {
            attribute: "RevisionNumber",
            ..
        })
    ));
}

/// MSRC severity is an attribute of `Properties` and the bulletin a child element, as real
/// WSUS security updates write them.
#[test]
fn security_properties() {
    let document = edit(
        MINIMAL,
        r#"DefaultPropertiesLanguage="en"/>"#,
        r#"DefaultPropertiesLanguage="en" MsrcSeverity="Critical"><upd:SupportUrl>https://support.microsoft.com</upd:SupportUrl><upd:SecurityBulletinID>MS08-067</upd:SecurityBulletinID><upd:KBArticleID>958644</upd:KBArticleID></upd:Properties>"#,
    );
    let revision = parse(&document).unwrap();
    assert_eq!(revision.msrc_severity, Some(MsrcSeverity::Critical));
    assert_eq!(revision.security_bulletin.as_deref(), Some("MS08-067"));
    assert_eq!(revision.kb_article.as_deref(), Some("958644"));

    for (value, expected) in [
        ("Important", Some(MsrcSeverity::Important)),
        ("Moderate", Some(MsrcSeverity::Moderate)),
        ("Low", Some(MsrcSeverity::Low)),
        ("Unspecified", None),
        ("", None),
    ] {
        let document = edit(
            MINIMAL,
            r#"DefaultPropertiesLanguage="en""#,
            &format!(r#"DefaultPropertiesLanguage="en" MsrcSeverity="{value}""#),
        );
        assert_eq!(parse(&document).unwrap().msrc_severity, expected, "{value}");
    }
    let document = edit(
        MINIMAL,
        r#"DefaultPropertiesLanguage="en""#,
        r#"DefaultPropertiesLanguage="en" MsrcSeverity="Catastrophic""#,
    );
    let error = refused(parse(&document), &["MsrcSeverity", "Catastrophic"]);
    assert!(matches!(
        error,
        ParseError::InvalidValue {
            attribute: "MsrcSeverity",
            ..
        }
    ));
}

#[test]
fn comments_processing_instructions_and_unknown_elements_are_skipped() {
    let document = format!(
        "<?xml version=\"1.0\"?><!-- before -->{}<!-- after --><?pi after?>\n",
        with_body(
            "<!-- c --><?pi x?><upd:Future Attr=\"1\"><deep><deeper/></deep></upd:Future>\
             <upd:Relationships><upd:Unknown/><upd:SupersededUpdates><upd:Other/>\
             <upd:UpdateIdentity UpdateID=\"11111111-2222-3333-4444-555555555555\"/>\
             </upd:SupersededUpdates></upd:Relationships>"
        )
    );
    let revision = parse(&document).unwrap();
    assert_eq!(revision.superseded.len(), 1);
}

#[test]
fn error_values_are_shortened() {
    let long_guid = "g".repeat(10_000);
    let document = edit(MINIMAL, "11111111-2222-3333-4444-555555555555", &long_guid);
    let message = parse(&document).unwrap_err().to_string();
    assert!(message.len() < 400, "{} bytes: {message}", message.len());
}
