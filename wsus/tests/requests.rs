//! The requests this crate builds carry the same operation, parameters and values as the
//! recorded ones (compared as XML trees: namespaces, names, text; not bytes), go to the recorded
//! service path with the recorded SOAPAction, and the service URLs resolve as the notes say.

mod common;

use std::str::FromStr;

use common::{Exchange, XmlNode, exchange};
use sitesync_metadata::{RevisionId, UpdateId};
use sitesync_wsus::{
    Anchor, AuthorizationCookie, Cookie, IdAndDelta, LanguageAndDelta, Limits, Operation,
    ProtocolVersion, RevisionFilter, ServerRoot, Service, SoapRequest, UrlError, get_auth_config,
    get_authorization_cookie, get_config_data, get_cookie, get_revision_id_list, get_update_data,
    parse_auth_config, parse_authorization_cookie, parse_cookie,
};

const DEFENDER: &str = "8c3fcc84-7410-4a95-8b89-a166a0190486";
const SECURITY_UPDATES: &str = "0fa1201d-4330-4fa8-8ae9-b877473b6441";
const DEFINITION_UPDATES: &str = "e0789628-ce08-4437-be74-2495b842f43b";
const OLD_ANCHOR: &str = "9438,2026-10-04 16:09:27.371";

fn id(text: &str) -> UpdateId {
    UpdateId::from_str(text).unwrap()
}

/// The cookies of the recorded session, from the recorded answers.
fn auth_cookie() -> AuthorizationCookie {
    parse_authorization_cookie(&exchange(2).response_body, &Limits::default()).unwrap()
}

fn cookie() -> Cookie {
    parse_cookie(&exchange(3).response_body, &Limits::default()).unwrap()
}

/// The recorded upstream, as the capture proxy addressed it.
fn root() -> ServerRoot {
    ServerRoot::parse("http://127.0.0.1:18551").unwrap()
}

/// Asserts that `built` is the recorded request of `recorded` in content, SOAPAction and path.
fn assert_same_request(built: &SoapRequest, recorded: &Exchange) {
    let ours = XmlNode::parse(built.body.as_bytes());
    let theirs = XmlNode::parse(&recorded.request_body);
    assert_eq!(ours, theirs, "exchange {}", recorded.number);
    assert_eq!(ours.operation().name, built.operation.name());
    assert_eq!(
        built.operation.soap_action(),
        recorded.soap_action,
        "exchange {}",
        recorded.number
    );
    assert_eq!(
        built.soap_action_header(),
        format!("\"{}\"", recorded.soap_action)
    );
    let url = match built.operation.service() {
        Service::ServerSync => root().server_sync_url(),
        Service::DssAuth => {
            let config = parse_auth_config(&exchange(1).response_body, &Limits::default()).unwrap();
            let service_url = &config.dss_targeting().unwrap().service_url;
            root().resolve_service_url(service_url).unwrap()
        }
    };
    assert_eq!(
        url,
        format!("http://127.0.0.1:18551{}", recorded.path),
        "exchange {}",
        recorded.number
    );
}

/// The recordings never sent `Get63LanguageOnly`; the default filter does (see below).
fn as_recorded(mut filter: RevisionFilter) -> RevisionFilter {
    filter.get_63_language_only = None;
    filter
}

#[test]
fn the_handshake_requests_match_the_recording() {
    assert_same_request(&get_auth_config(), &exchange(1));
    let guid = uuid::Uuid::parse_str("6f1c2f6e-3f0b-4d3a-9b1e-0d2f6a1c5e12").unwrap();
    assert_same_request(
        &get_authorization_cookie("probe.lab.invalid", guid),
        &exchange(2),
    );
    assert_same_request(
        &get_cookie(&auth_cookie(), None, &ProtocolVersion::default()),
        &exchange(3),
    );
    assert_same_request(
        &get_config_data(
            &cookie(),
            Some(&Anchor::new("9438,2026-10-04 16:09:27.167")),
        ),
        &exchange(4),
    );
    assert_same_request(&get_config_data(&cookie(), None), &exchange(5));
    // The comparison sees values: the anchor makes 000004 differ from 000005.
    assert_ne!(
        XmlNode::parse(get_config_data(&cookie(), None).body.as_bytes()),
        XmlNode::parse(&exchange(4).request_body)
    );
}

#[test]
fn the_revision_list_requests_match_the_recording() {
    let product = |delta| IdAndDelta {
        id: id(DEFENDER),
        delta,
    };
    let classification = |text, delta| IdAndDelta {
        id: id(text),
        delta,
    };
    let old = || Some(Anchor::new(OLD_ANCHOR));
    let cases = [
        (6, RevisionFilter::categories(None)),
        (7, RevisionFilter::updates(None, [product(false)], [])),
        (
            8,
            RevisionFilter::updates(
                None,
                [product(false)],
                [classification(SECURITY_UPDATES, false)],
            ),
        ),
        (
            9,
            RevisionFilter::updates(
                None,
                [product(false)],
                [classification(DEFINITION_UPDATES, false)],
            ),
        ),
        (
            10,
            RevisionFilter::updates(
                old(),
                [product(false)],
                [classification(DEFINITION_UPDATES, false)],
            ),
        ),
        (
            11,
            RevisionFilter::updates(
                old(),
                [product(true)],
                [classification(DEFINITION_UPDATES, true)],
            ),
        ),
        (12, RevisionFilter::updates(old(), [], [])),
        (
            18,
            RevisionFilter::updates(Some(Anchor::new("garbage")), [], []),
        ),
    ];
    for (number, filter) in cases {
        let built = get_revision_id_list(&cookie(), &as_recorded(filter));
        assert_same_request(&built, &exchange(number));
    }
}

#[test]
fn the_update_data_requests_match_the_recording() {
    let cases = [
        (13, "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe", 200),
        (14, "266f6222-c89d-43f2-9f8a-69340271e677", 200),
        (15, "ccb78947-6453-4ecc-9de8-bc0305c98f2d", 200),
        (16, "56309036-4c77-4dd9-951a-99ee9c246a94", 101),
        (17, "00000000-0000-0000-0000-000000000001", 1),
    ];
    for (number, update, revision) in cases {
        let revisions = [RevisionId {
            update_id: id(update),
            revision,
        }];
        assert_same_request(&get_update_data(&cookie(), &revisions), &exchange(number));
    }
    // 000019 is GetRevisionIdList without a cookie, which the builders cannot make on purpose.
}

#[test]
fn the_default_filter_sends_get63languageonly_false_after_getconfig() {
    let built = get_revision_id_list(&cookie(), &RevisionFilter::categories(None));
    let tree = XmlNode::parse(built.body.as_bytes());
    let filter = tree.operation().child("filter").unwrap();
    let names: Vec<_> = filter.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["GetConfig", "Get63LanguageOnly"]);
    assert_eq!(filter.children[1].text, "false");
    // Apart from it, the recorded request.
    assert_eq!(
        tree.without("Get63LanguageOnly"),
        XmlNode::parse(&exchange(6).request_body)
    );
}

#[test]
fn the_filter_is_written_in_schema_order() {
    let mut filter = RevisionFilter::updates(
        Some(Anchor::new("a")),
        [IdAndDelta {
            id: id(DEFENDER),
            delta: true,
        }],
        [IdAndDelta {
            id: id(DEFINITION_UPDATES),
            delta: true,
        }],
    );
    filter.languages = vec![LanguageAndDelta {
        id: 1033,
        delta: true,
    }];
    let built = get_revision_id_list(&cookie(), &filter);
    let tree = XmlNode::parse(built.body.as_bytes());
    let filter = tree.operation().child("filter").unwrap();
    let names: Vec<_> = filter.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Anchor",
            "GetConfig",
            "Get63LanguageOnly",
            "Categories",
            "Classifications",
            "Languages"
        ]
    );
    let language = &filter.child("Languages").unwrap().children[0];
    assert_eq!(language.name, "LanguageAndDelta");
    assert_eq!(language.child("Id").unwrap().text, "1033");
    assert_eq!(language.child("Delta").unwrap().text, "true");
}

#[test]
fn without_an_anchor_delta_is_sent_false() {
    let filter = RevisionFilter::updates(
        None,
        [IdAndDelta {
            id: id(DEFENDER),
            delta: true,
        }],
        [IdAndDelta {
            id: id(DEFINITION_UPDATES),
            delta: true,
        }],
    );
    let built = get_revision_id_list(&cookie(), &as_recorded(filter));
    assert_eq!(
        XmlNode::parse(built.body.as_bytes()),
        XmlNode::parse(&exchange(9).request_body)
    );
}

#[test]
fn get_cookie_renews_with_the_old_cookie_and_the_chosen_version() {
    let version = ProtocolVersion::parse("1.7").unwrap();
    let built = get_cookie(&auth_cookie(), Some(&cookie()), &version);
    let tree = XmlNode::parse(built.body.as_bytes());
    let op = tree.operation();
    let names: Vec<_> = op.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["authCookies", "oldCookie", "protocolVersion"]);
    let old = op.child("oldCookie").unwrap();
    assert_eq!(
        old.child("Expiration").unwrap().text,
        "2026-10-04T20:33:26.65455Z"
    );
    assert_eq!(op.child("protocolVersion").unwrap().text, "1.7");
}

#[test]
fn text_is_escaped() {
    let anchor = Anchor::new("a<b&c>\"d'");
    let built = get_config_data(&cookie(), Some(&anchor));
    let tree = XmlNode::parse(built.body.as_bytes());
    assert_eq!(
        tree.operation().child("configAnchor").unwrap().text,
        "a<b&c>\"d'"
    );
}

#[test]
fn protocol_versions_must_be_major_1() {
    assert_eq!(ProtocolVersion::default().as_str(), "1.20");
    for good in ["1.20", "1.7", "1.3"] {
        assert_eq!(ProtocolVersion::parse(good).unwrap().as_str(), good);
    }
    for bad in ["2.0", "1", "1.", ".1", "1.x", " 1.20", "1.20.1", ""] {
        assert!(ProtocolVersion::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn every_operation_names_its_namespace_and_action() {
    for operation in Operation::ALL {
        assert_eq!(
            operation.soap_action(),
            format!("{}/{}", operation.service().namespace(), operation.name())
        );
    }
}

#[test]
fn service_urls_resolve_against_the_server_root() {
    let wsus = ServerRoot::parse("http://wsus.example:8530/").unwrap();
    assert_eq!(
        wsus.server_sync_url(),
        "http://wsus.example:8530/ServerSyncWebService/ServerSyncWebService.asmx"
    );
    // Not `/ServerSyncWebService/DssAuthWebService/…`, as RFC 3986 resolution would give.
    assert_eq!(
        wsus.resolve_service_url("DssAuthWebService/DssAuthWebService.asmx")
            .unwrap(),
        "http://wsus.example:8530/DssAuthWebService/DssAuthWebService.asmx"
    );
    assert_eq!(
        wsus.resolve_service_url("/DssAuthWebService/DssAuthWebService.asmx")
            .unwrap(),
        wsus.default_dss_auth_url()
    );
    // The same server, absolute.
    assert_eq!(
        wsus.resolve_service_url("HTTP://WSUS.example:8530/DssAuthWebService/x.asmx")
            .unwrap(),
        "HTTP://WSUS.example:8530/DssAuthWebService/x.asmx"
    );
    // A root with a path prefix keeps it.
    let proxied = ServerRoot::parse("https://proxy.example/upstream").unwrap();
    assert_eq!(
        proxied
            .resolve_service_url("DssAuthWebService/DssAuthWebService.asmx")
            .unwrap(),
        "https://proxy.example/upstream/DssAuthWebService/DssAuthWebService.asmx"
    );
    assert_eq!(
        ServerRoot::microsoft_update().server_sync_url(),
        "https://sws.update.microsoft.com/ServerSyncWebService/ServerSyncWebService.asmx"
    );
}

#[test]
fn unusable_service_urls_are_refused() {
    let wsus = ServerRoot::parse("http://wsus.example:8530").unwrap();
    assert_eq!(
        wsus.resolve_service_url("  "),
        Err(UrlError::EmptyServiceUrl)
    );
    for bad in [
        "../DssAuthWebService.asmx",
        "a/../../b",
        "//evil.example/x",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "Dss Auth.asmx",
        "x.asmx?a=b",
    ] {
        assert!(
            matches!(
                wsus.resolve_service_url(bad),
                Err(UrlError::InvalidServiceUrl(_))
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        wsus.resolve_service_url("https://wsus.example:8530/DssAuthWebService/x.asmx"),
        Err(UrlError::OtherServer { .. })
    ));
    assert!(matches!(
        wsus.resolve_service_url("http://evil.example/DssAuthWebService/x.asmx"),
        Err(UrlError::OtherServer { .. })
    ));
    for bad in [
        "wsus:8530",
        "ftp://wsus",
        "http://",
        "http://a b",
        "http://h/?q",
        "http://u@h",
    ] {
        assert!(ServerRoot::parse(bad).is_err(), "{bad}");
    }
}
