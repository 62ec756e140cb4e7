//! SOAP faults: the three recorded ones (000017–000019) and the other error codes of the
//! specification, as any operation's parser and as `parse_fault` see them.

mod common;

use common::exchange;
use sitesync_wsus::{
    FaultKind, Limits, ResponseError, parse_fault, parse_revision_id_list, parse_update_data,
};

#[test]
fn an_unknown_id_in_get_update_data_is_an_internal_server_error() {
    let body = exchange(17).response_body;
    let fault = parse_fault(&body, &Limits::default()).unwrap();
    assert_eq!(fault.kind, FaultKind::InternalServerError);
    assert_eq!(fault.fault_code, "soap:Server");
    assert_eq!(fault.fault_string, "Fault occurred");
    assert_eq!(
        fault.id.as_deref(),
        Some("b6114a8d-9939-41e0-ad7f-0d9a72260804")
    );
    assert_eq!(
        fault.method.as_deref(),
        Some("\"http://www.microsoft.com/SoftwareDistribution/GetUpdateData\"")
    );
    // The operation's own parser reports the fault, typed.
    match parse_update_data(&body, &Limits::default()) {
        Err(ResponseError::Fault(f)) => assert_eq!(*f, fault),
        other => panic!("expected a fault, got {other:?}"),
    }
    assert_eq!(
        fault.to_string(),
        "InternalServerError in http://www.microsoft.com/SoftwareDistribution/GetUpdateData \
         (server log id b6114a8d-9939-41e0-ad7f-0d9a72260804)"
    );
}

#[test]
fn a_garbage_anchor_is_invalid_parameters_naming_the_filter() {
    let body = exchange(18).response_body;
    let fault = parse_fault(&body, &Limits::default()).unwrap();
    assert_eq!(
        fault.kind,
        FaultKind::InvalidParameters {
            message: "filter".to_owned()
        }
    );
    assert_eq!(fault.fault_code, "soap:Client");
    match parse_revision_id_list(&body, &Limits::default()) {
        Err(ResponseError::Fault(f)) => assert_eq!(f.kind, fault.kind),
        other => panic!("expected a fault, got {other:?}"),
    }
    assert!(
        fault
            .to_string()
            .starts_with("InvalidParameters (parameter `filter`)")
    );
}

#[test]
fn a_missing_cookie_is_invalid_cookie() {
    let body = exchange(19).response_body;
    let fault = parse_fault(&body, &Limits::default()).unwrap();
    assert_eq!(fault.kind, FaultKind::InvalidCookie);
    assert_eq!(fault.fault_code, "soap:Client");
    match parse_revision_id_list(&body, &Limits::default()) {
        Err(ResponseError::Fault(f)) => assert_eq!(f.kind, FaultKind::InvalidCookie),
        other => panic!("expected a fault, got {other:?}"),
    }
}

/// A fault as WSUS writes one, with another prefix for the envelope (`s:` as other .NET
/// services write it) to show that prefixes do not matter.
fn fault_body(error_code: Option<&str>, message: &str) -> Vec<u8> {
    let code = error_code
        .map(|c| format!("<ErrorCode>{c}</ErrorCode>"))
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><s:Envelope \
         xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><s:Fault>\
         <faultcode>s:Server</faultcode><faultstring>Fault occurred</faultstring>\
         <detail>{code}<Message>{message}</Message><ID>1</ID><Method>\"x\"</Method></detail>\
         </s:Fault></s:Body></s:Envelope>"
    )
    .into_bytes()
}

#[test]
fn every_error_code_of_the_specification_is_classified() {
    let cases = [
        ("InvalidCookie", FaultKind::InvalidCookie),
        (
            "InvalidAuthorizationCookie",
            FaultKind::InvalidAuthorizationCookie,
        ),
        ("ServerChanged", FaultKind::ServerChanged),
        ("ServerBusy", FaultKind::ServerBusy),
        (
            "InvalidParameters",
            FaultKind::InvalidParameters {
                message: "updateIds".to_owned(),
            },
        ),
        ("InternalServerError", FaultKind::InternalServerError),
        (
            "IncompatibleProtocolVersion",
            FaultKind::IncompatibleProtocolVersion,
        ),
        (
            "FileDigestsMissing",
            FaultKind::Other {
                code: "FileDigestsMissing".to_owned(),
                text: "updateIds".to_owned(),
            },
        ),
    ];
    for (code, kind) in cases {
        let fault = parse_fault(&fault_body(Some(code), "updateIds"), &Limits::default()).unwrap();
        assert_eq!(fault.kind, kind, "{code}");
    }
}

#[test]
fn a_fault_without_an_error_code_is_other_with_the_soap_fault_code() {
    let fault = parse_fault(&fault_body(None, ""), &Limits::default()).unwrap();
    assert_eq!(
        fault.kind,
        FaultKind::Other {
            code: "s:Server".to_owned(),
            text: "Fault occurred".to_owned(),
        }
    );
}

#[test]
fn parse_fault_refuses_an_answer_that_is_not_a_fault() {
    let err = parse_fault(&exchange(3).response_body, &Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            ResponseError::UnexpectedAnswer {
                expected: "Fault",
                ..
            }
        ),
        "{err}"
    );
}
