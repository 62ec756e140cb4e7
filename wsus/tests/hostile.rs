//! Hostile and malformed answers are refused with specific errors, before they cost more than
//! the limits allow.

mod common;

use common::exchange;
use sitesync_wsus::{
    Limits, ResponseError, parse_auth_config, parse_config_data, parse_cookie,
    parse_revision_id_list, parse_update_data,
};

/// A GetRevisionIdList answer around `inner` (the children of the result).
fn revision_list(inner: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope \
         xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>\
         <GetRevisionIdListResponse xmlns=\"http://www.microsoft.com/SoftwareDistribution\">\
         <GetRevisionIdListResult>{inner}</GetRevisionIdListResult></GetRevisionIdListResponse>\
         </soap:Body></soap:Envelope>"
    )
    .into_bytes()
}

fn identity(id: &str, revision: &str) -> String {
    format!(
        "<UpdateIdentity><UpdateID>{id}</UpdateID><RevisionNumber>{revision}</RevisionNumber>\
         </UpdateIdentity>"
    )
}

const ID: &str = "56309036-4c77-4dd9-951a-99ee9c246a94";

#[test]
fn a_doctype_with_entities_is_refused() {
    let body = b"<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">\
        <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]>\
        <soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>\
        <GetRevisionIdListResponse xmlns=\"http://www.microsoft.com/SoftwareDistribution\">\
        <GetRevisionIdListResult><Anchor>&lol2;</Anchor><NewRevisions/></GetRevisionIdListResult>\
        </GetRevisionIdListResponse></soap:Body></soap:Envelope>";
    let err = parse_revision_id_list(body, &Limits::default()).unwrap_err();
    assert!(
        matches!(err, ResponseError::DoctypeRefused { byte: 21 }),
        "{err}"
    );
    // An external entity, the other DOCTYPE attack.
    let body = b"<!DOCTYPE x [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><x>&xxe;</x>";
    let err = parse_cookie(body, &Limits::default()).unwrap_err();
    assert!(
        matches!(err, ResponseError::DoctypeRefused { byte: 0 }),
        "{err}"
    );
}

#[test]
fn an_undeclared_entity_is_refused() {
    let body = revision_list("<Anchor>&lol;</Anchor><NewRevisions/>");
    let err = parse_revision_id_list(&body, &Limits::default()).unwrap_err();
    assert!(
        matches!(&err, ResponseError::UnknownEntity { entity, .. } if entity == "lol"),
        "{err}"
    );
}

#[test]
fn predefined_entities_and_character_references_are_resolved() {
    let body = revision_list("<Anchor>a&amp;b&#x20;&#99;</Anchor><NewRevisions/>");
    let list = parse_revision_id_list(&body, &Limits::default()).unwrap();
    assert_eq!(list.anchor.as_str(), "a&b c");
}

#[test]
fn an_oversize_answer_is_refused_before_parsing() {
    let body = exchange(6).response_body;
    let limits = Limits {
        max_response_bytes: body.len() - 1,
        ..Limits::default()
    };
    let err = parse_revision_id_list(&body, &limits).unwrap_err();
    assert_eq!(
        err,
        ResponseError::TooLarge {
            size: body.len(),
            limit: body.len() - 1
        }
    );
    // Not even XML: the size is checked first.
    let junk = vec![b'<'; 1000];
    let small = Limits {
        max_response_bytes: 999,
        ..Limits::default()
    };
    assert!(matches!(
        parse_cookie(&junk, &small),
        Err(ResponseError::TooLarge { .. })
    ));
}

#[test]
fn too_many_revisions_are_refused() {
    let body = exchange(6).response_body;
    let limits = Limits {
        max_list_items: 29,
        ..Limits::default()
    };
    let err = parse_revision_id_list(&body, &limits).unwrap_err();
    assert_eq!(
        err,
        ResponseError::TooManyItems {
            limit: 29,
            at: "Envelope/Body/GetRevisionIdListResponse/GetRevisionIdListResult/NewRevisions"
                .to_owned()
        }
    );
    let limits = Limits {
        max_list_items: 30,
        ..Limits::default()
    };
    assert_eq!(
        parse_revision_id_list(&body, &limits)
            .unwrap()
            .revisions
            .len(),
        30
    );
    // Languages are a list too.
    let limits = Limits {
        max_list_items: 38,
        ..Limits::default()
    };
    let err = parse_config_data(&exchange(5).response_body, &limits).unwrap_err();
    assert!(
        matches!(err, ResponseError::TooManyItems { limit: 38, .. }),
        "{err}"
    );
}

#[test]
fn deep_nesting_is_refused() {
    let deep = "<x>".repeat(100) + &"</x>".repeat(100);
    let body = revision_list(&format!("<Anchor>a</Anchor><NewRevisions/>{deep}"));
    let err = parse_revision_id_list(&body, &Limits::default()).unwrap_err();
    assert!(
        matches!(err, ResponseError::TooDeep { limit: 32, .. }),
        "{err}"
    );
    // Within the limit, unknown elements are skipped.
    let shallow = "<x>".repeat(10) + &"</x>".repeat(10);
    let body = revision_list(&format!("<Anchor>a</Anchor><NewRevisions/>{shallow}"));
    assert!(parse_revision_id_list(&body, &Limits::default()).is_ok());
}

#[test]
fn a_long_value_is_refused() {
    let anchor = "9".repeat(70_000);
    let body = revision_list(&format!("<Anchor>{anchor}</Anchor><NewRevisions/>"));
    let err = parse_revision_id_list(&body, &Limits::default()).unwrap_err();
    assert!(
        matches!(err, ResponseError::ValueTooLong { limit: 65_536, .. }),
        "{err}"
    );
    // A long compressed blob has its own, larger limit.
    let limits = Limits {
        max_document_bytes: 1_000,
        ..Limits::default()
    };
    let err = parse_update_data(&exchange(13).response_body, &limits).unwrap_err();
    let ResponseError::ValueTooLong { at, .. } = &err else {
        panic!("{err}");
    };
    assert!(at.ends_with("XmlUpdateBlobCompressed"), "{err}");
    // A plain blob is bounded by the document limit (000015's is 1,432 bytes).
    let err = parse_update_data(&exchange(15).response_body, &limits).unwrap_err();
    let ResponseError::ValueTooLong { limit: 1_000, at } = &err else {
        panic!("{err}");
    };
    assert!(at.ends_with("XmlUpdateBlob"), "{err}");
}

#[test]
fn truncated_answers_are_reported_as_truncated() {
    for number in [3, 6, 13, 15] {
        let body = exchange(number).response_body;
        for cut in [10, body.len() / 3, body.len() / 2, body.len() - 20] {
            let err = match number {
                3 => parse_cookie(&body[..cut], &Limits::default()).unwrap_err(),
                6 => parse_revision_id_list(&body[..cut], &Limits::default()).unwrap_err(),
                _ => parse_update_data(&body[..cut], &Limits::default()).unwrap_err(),
            };
            assert!(
                matches!(err, ResponseError::Truncated { .. }),
                "exchange {number} cut at {cut}: {err}"
            );
        }
    }
    assert_eq!(
        parse_cookie(b"  \n", &Limits::default()).unwrap_err(),
        ResponseError::Empty
    );
}

#[test]
fn the_wrong_operation_is_refused() {
    let err = parse_config_data(&exchange(3).response_body, &Limits::default()).unwrap_err();
    assert!(
        matches!(
            &err,
            ResponseError::UnexpectedAnswer { expected: "GetConfigDataResponse", found }
                if found.contains("GetCookieResponse")
        ),
        "{err}"
    );
}

#[test]
fn the_operation_namespace_matters() {
    // GetAuthorizationCookieResponse is in the DSS auth namespace; in the Server Sync one it is
    // not the answer of GetAuthConfig either.
    let body = String::from_utf8(exchange(1).response_body)
        .unwrap()
        .replace(
            "xmlns=\"http://www.microsoft.com/SoftwareDistribution\"",
            "xmlns=\"http://example.com/other\"",
        );
    let err = parse_auth_config(body.as_bytes(), &Limits::default()).unwrap_err();
    assert!(
        matches!(err, ResponseError::UnexpectedAnswer { .. }),
        "{err}"
    );
}

#[test]
fn prefixes_do_not_matter() {
    let body = String::from_utf8(exchange(3).response_body)
        .unwrap()
        .replace("soap:", "s:")
        .replace("xmlns:soap", "xmlns:s");
    let cookie = parse_cookie(body.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(cookie.expiration, "2026-10-04T20:33:26.65455Z");
    // The operation's children under an explicit prefix instead of a default namespace.
    let body = String::from_utf8(exchange(7).response_body)
        .unwrap()
        .replace(
            "<GetRevisionIdListResponse xmlns=",
            "<m:GetRevisionIdListResponse xmlns:m=",
        )
        .replace("<GetRevisionIdListResult>", "<m:GetRevisionIdListResult>")
        .replace("</GetRevisionIdListResult>", "</m:GetRevisionIdListResult>")
        .replace(
            "</GetRevisionIdListResponse>",
            "</m:GetRevisionIdListResponse>",
        )
        .replace("<Anchor>", "<m:Anchor>")
        .replace("</Anchor>", "</m:Anchor>");
    let list = parse_revision_id_list(body.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(list.anchor.as_str(), "9438,2026-10-04 16:33:26.734");
}

#[test]
fn a_soap_1_2_envelope_or_another_root_is_refused() {
    let body = String::from_utf8(exchange(3).response_body)
        .unwrap()
        .replace(
            "http://schemas.xmlsoap.org/soap/envelope/",
            "http://www.w3.org/2003/05/soap-envelope",
        );
    let err = parse_cookie(body.as_bytes(), &Limits::default()).unwrap_err();
    assert!(matches!(err, ResponseError::NotSoap { .. }), "{err}");
    let err = parse_cookie(
        b"<html><body>502 Bad Gateway</body></html>",
        &Limits::default(),
    );
    assert!(matches!(err, Err(ResponseError::NotSoap { .. })));
}

#[test]
fn encodings_other_than_utf8_are_refused() {
    let body = b"<?xml version=\"1.0\" encoding=\"utf-16\"?><a/>";
    assert!(matches!(
        parse_cookie(body, &Limits::default()),
        Err(ResponseError::UnsupportedEncoding { .. })
    ));
    let mut body = exchange(3).response_body;
    body[200] = 0xFF;
    assert!(matches!(
        parse_cookie(&body, &Limits::default()),
        Err(ResponseError::NotUtf8 { byte: 200 })
    ));
}

#[test]
fn bad_values_are_refused_with_the_element_named() {
    let body = revision_list(&format!(
        "<Anchor>a</Anchor><NewRevisions>{}</NewRevisions>",
        identity("not-a-guid", "1")
    ));
    let err = parse_revision_id_list(&body, &Limits::default()).unwrap_err();
    let ResponseError::InvalidValue {
        at,
        expected: "a GUID",
        ..
    } = &err
    else {
        panic!("{err}");
    };
    assert!(at.ends_with("UpdateIdentity/UpdateID"), "{err}");
    let body = revision_list(&format!(
        "<Anchor>a</Anchor><NewRevisions>{}</NewRevisions>",
        identity(ID, "-1")
    ));
    let err = parse_revision_id_list(&body, &Limits::default()).unwrap_err();
    assert!(matches!(err, ResponseError::InvalidValue { .. }), "{err}");
    let body = revision_list(&format!(
        "<Anchor>a</Anchor><NewRevisions>{}</NewRevisions>",
        identity(ID, "4294967296")
    ));
    let err = parse_revision_id_list(&body, &Limits::default()).unwrap_err();
    assert!(matches!(err, ResponseError::InvalidValue { .. }), "{err}");
}

#[test]
fn missing_and_duplicate_elements_are_refused() {
    let err = parse_revision_id_list(&revision_list("<NewRevisions/>"), &Limits::default());
    assert!(matches!(
        err,
        Err(ResponseError::MissingElement {
            element: "Anchor",
            ..
        })
    ));
    let err = parse_revision_id_list(&revision_list("<Anchor>a</Anchor>"), &Limits::default());
    assert!(matches!(
        err,
        Err(ResponseError::MissingElement {
            element: "NewRevisions",
            ..
        })
    ));
    let err = parse_revision_id_list(
        &revision_list("<Anchor>a</Anchor><Anchor>b</Anchor><NewRevisions/>"),
        &Limits::default(),
    );
    assert!(matches!(err, Err(ResponseError::DuplicateElement { .. })));
    // Whitespace between elements and around values is fine; unknown elements are skipped.
    let body = revision_list(&format!(
        "\n <Anchor> a </Anchor>\n <Extra><x/></Extra><NewRevisions>\n{}\n</NewRevisions>",
        identity(&format!(" {} ", ID.to_uppercase()), " 101 ")
    ));
    let list = parse_revision_id_list(&body, &Limits::default()).unwrap();
    assert_eq!(list.anchor.as_str(), "a");
    assert_eq!(list.revisions[0].update_id.to_string(), ID);
    assert_eq!(list.revisions[0].revision, 101);
}

#[test]
fn an_update_needs_exactly_one_blob() {
    let body = String::from_utf8(exchange(15).response_body).unwrap();
    let neither = body.replace(
        &body[body.find("<XmlUpdateBlob>").unwrap()..body.find("</ServerSyncUpdateData>").unwrap()],
        "",
    );
    let err = parse_update_data(neither.as_bytes(), &Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            ResponseError::BlobCount {
                found: "neither",
                ..
            }
        ),
        "{err}"
    );
    let both = body.replace(
        "</ServerSyncUpdateData>",
        "<XmlUpdateBlobCompressed>TVND</XmlUpdateBlobCompressed></ServerSyncUpdateData>",
    );
    let err = parse_update_data(both.as_bytes(), &Limits::default()).unwrap_err();
    assert!(
        matches!(err, ResponseError::BlobCount { found: "both", .. }),
        "{err}"
    );
}

#[test]
fn a_zero_batch_size_is_refused() {
    let body = String::from_utf8(exchange(4).response_body)
        .unwrap()
        .replace(
            "<MaxNumberOfUpdatesPerRequest>100<",
            "<MaxNumberOfUpdatesPerRequest>0<",
        );
    let err = parse_config_data(body.as_bytes(), &Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            ResponseError::InvalidValue {
                expected: "a positive integer",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn trailing_content_after_the_envelope_is_refused() {
    let mut body = exchange(7).response_body;
    body.extend_from_slice(b"<another/>");
    let err = parse_revision_id_list(&body, &Limits::default()).unwrap_err();
    assert!(matches!(err, ResponseError::Malformed { .. }), "{err}");
}
