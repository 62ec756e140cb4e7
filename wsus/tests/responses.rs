//! Every recorded answer (exchanges 000001–000016) parses to the values it carries.

mod common;

use std::str::FromStr;

use common::exchange;
use sitesync_metadata::{RevisionId, Timestamp, UpdateId};
use sitesync_wsus::{
    Anchor, Limits, UpdateBlob, parse_auth_config, parse_authorization_cookie, parse_config_data,
    parse_cookie, parse_revision_id_list, parse_update_data,
};

fn rev(id: &str, revision: u32) -> RevisionId {
    RevisionId {
        update_id: UpdateId::from_str(id).unwrap(),
        revision,
    }
}

#[test]
fn get_auth_config_names_the_dss_plug_in_and_its_relative_url() {
    let config = parse_auth_config(&exchange(1).response_body, &Limits::default()).unwrap();
    assert_eq!(
        config.last_change.as_deref(),
        Some("2026-10-04T13:16:35.433Z")
    );
    assert_eq!(config.plug_ins.len(), 1);
    let plug_in = config.dss_targeting().unwrap();
    assert_eq!(plug_in.plug_in_id, "DssTargeting");
    assert_eq!(
        plug_in.service_url,
        "DssAuthWebService/DssAuthWebService.asmx"
    );
    // `<Parameter />`: present and empty.
    assert_eq!(plug_in.parameter, None);
}

#[test]
fn get_authorization_cookie_gives_the_plug_in_cookie() {
    let cookie =
        parse_authorization_cookie(&exchange(2).response_body, &Limits::default()).unwrap();
    assert_eq!(cookie.plug_in_id, "DssTargeting");
    // Sanitised upstream to a run of `A` of the original length.
    assert_eq!(cookie.cookie_data.len(), 576);
    assert!(cookie.cookie_data.bytes().all(|b| b == b'A'));
}

#[test]
fn get_cookie_gives_a_cookie_that_expires_240_minutes_later() {
    let cookie = parse_cookie(&exchange(3).response_body, &Limits::default()).unwrap();
    assert_eq!(cookie.expiration, "2026-10-04T20:33:26.65455Z");
    // 2026-10-04T20:33:26.654Z (the fraction to the millisecond).
    assert_eq!(
        cookie.expires_at,
        Timestamp::from_unix_millis(1_791_146_006_654)
    );
    // The answer's `Date` header says 16:33:26 GMT: WSUS cookies last 240 minutes.
    let issued = Timestamp::parse_iso8601("2026-10-04T16:33:26Z").unwrap();
    let lifetime_ms = cookie.expires_at.unix_millis() - issued.unix_millis();
    assert_eq!(lifetime_ms / 60_000, 240);
    assert_eq!(cookie.encrypted_data.len(), 280);
    assert!(cookie.encrypted_data.starts_with("AAAA"));
    assert!(cookie.encrypted_data.ends_with("=="));
}

#[test]
fn get_config_data_with_an_anchor_gives_no_languages() {
    let config = parse_config_data(&exchange(4).response_body, &Limits::default()).unwrap();
    assert_eq!(config.max_updates_per_request, 100);
    assert_eq!(
        config.new_config_anchor,
        Some(Anchor::new("9438,2026-10-04 16:33:26.668"))
    );
    assert!(config.lazy_sync);
    assert!(!config.catalog_only_sync);
    assert!(!config.server_hosts_psf_files);
    assert_eq!(config.protocol_version.as_deref(), Some("1.20"));
    assert!(config.languages.is_empty());
}

#[test]
fn get_config_data_without_an_anchor_lists_39_languages() {
    let config = parse_config_data(&exchange(5).response_body, &Limits::default()).unwrap();
    assert_eq!(config.max_updates_per_request, 100);
    assert_eq!(
        config.new_config_anchor,
        Some(Anchor::new("9438,2026-10-04 16:33:26.670"))
    );
    assert!(config.lazy_sync);
    assert_eq!(config.languages.len(), 39);
    let all = &config.languages[0];
    assert_eq!(
        (all.id, all.short_name.as_str(), all.enabled),
        (0, "all", false)
    );
    let enabled: Vec<_> = config.languages.iter().filter(|l| l.enabled).collect();
    assert_eq!(enabled.len(), 1);
    assert_eq!(enabled[0].id, 1033);
    assert_eq!(enabled[0].short_name, "en");
    assert_eq!(enabled[0].long_name, "English");
    let last = config.languages.last().unwrap();
    assert_eq!((last.id, last.short_name.as_str()), (66577, "ja-nec"));
}

#[test]
fn the_category_list_repeats_ids_with_several_revisions() {
    let list = parse_revision_id_list(&exchange(6).response_body, &Limits::default()).unwrap();
    assert_eq!(list.anchor, Anchor::new("9438,2026-10-04 16:33:26.671"));
    // Trimmed upstream to the first 30 of 4,275.
    assert_eq!(list.revisions.len(), 30);
    assert_eq!(
        list.revisions[0],
        rev("e6cf1350-c01b-414d-a61f-263d14d133b4", 100)
    );
    assert_eq!(
        list.revisions[1],
        rev("e6cf1350-c01b-414d-a61f-263d14d133b4", 1)
    );
    assert_eq!(
        list.revisions[29],
        rev("7c40e8c2-01ae-47f5-9af2-6e75a0582518", 2)
    );
    // The category served in 000016.
    assert!(
        list.revisions
            .contains(&rev("56309036-4c77-4dd9-951a-99ee9c246a94", 101))
    );

    let latest = list.latest_revisions();
    assert_eq!(latest.len(), 16);
    assert_eq!(latest[0], rev("e6cf1350-c01b-414d-a61f-263d14d133b4", 100));
    assert!(latest.contains(&rev("56309036-4c77-4dd9-951a-99ee9c246a94", 101)));
    assert!(!latest.contains(&rev("56309036-4c77-4dd9-951a-99ee9c246a94", 1)));
}

#[test]
fn filtered_lists_have_the_recorded_counts_and_anchors() {
    let cases = [
        (7, "9438,2026-10-04 16:33:26.734", 0),
        (8, "9438,2026-10-04 16:33:26.742", 0),
        // Trimmed upstream to the first 30 of 24,509.
        (9, "9438,2026-10-04 16:33:26.750", 30),
        (10, "9438,2026-10-04 16:33:26.799", 30),
        (11, "9438,2026-10-04 16:33:26.848", 0),
        (12, "9438,2026-10-04 16:33:26.850", 0),
    ];
    for (number, anchor, count) in cases {
        let list =
            parse_revision_id_list(&exchange(number).response_body, &Limits::default()).unwrap();
        assert_eq!(list.anchor, Anchor::new(anchor), "exchange {number}");
        assert_eq!(list.revisions.len(), count, "exchange {number}");
    }
    let list = parse_revision_id_list(&exchange(9).response_body, &Limits::default()).unwrap();
    assert_eq!(
        list.revisions[0],
        rev("8c55755c-2b9d-48cc-be8b-aedbf20911ec", 201)
    );
    assert_eq!(
        list.revisions[29],
        rev("a88bc768-7f57-42ba-b9b2-086f5c7c0b8b", 200)
    );
    assert_eq!(list.latest_revisions(), list.revisions);
    // `Delta` false with an anchor lists everything again.
    let again = parse_revision_id_list(&exchange(10).response_body, &Limits::default()).unwrap();
    assert_eq!(again.revisions, list.revisions);
}

#[test]
fn get_update_data_answers_carry_the_id_and_one_blob_each() {
    let cases = [
        (13, "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe", 200, true),
        (14, "266f6222-c89d-43f2-9f8a-69340271e677", 200, true),
        (15, "ccb78947-6453-4ecc-9de8-bc0305c98f2d", 200, false),
        (16, "56309036-4c77-4dd9-951a-99ee9c246a94", 101, true),
    ];
    for (number, id, revision, compressed) in cases {
        let batch = parse_update_data(&exchange(number).response_body, &Limits::default()).unwrap();
        assert_eq!(batch.updates.len(), 1, "exchange {number}");
        let update = &batch.updates[0];
        assert_eq!(update.id, rev(id, revision), "exchange {number}");
        assert_eq!(
            matches!(update.blob, UpdateBlob::Compressed(_)),
            compressed,
            "exchange {number}"
        );
        if number != 14 {
            assert!(update.file_digests.is_empty(), "exchange {number}");
            assert!(batch.file_urls.is_empty(), "exchange {number}");
        }
    }
}

#[test]
fn a_leaf_with_a_file_has_its_digest_and_download_url() {
    let batch = parse_update_data(&exchange(14).response_body, &Limits::default()).unwrap();
    let digest = [
        0x87, 0xf5, 0xbd, 0x04, 0x69, 0x58, 0x50, 0x06, 0xaa, 0x5d, 0x3a, 0x77, 0xd1, 0xc6, 0x62,
        0xfd, 0x28, 0x95, 0xdd, 0xcd,
    ];
    assert_eq!(batch.updates[0].file_digests, vec![digest.to_vec()]);
    assert_eq!(batch.file_urls.len(), 1);
    let url = &batch.file_urls[0];
    assert_eq!(url.file_digest, digest);
    assert_eq!(
        url.mu_url.as_deref(),
        Some(
            "http://download.windowsupdate.com/c/msdownload/update/software/defu/2026/10/\
             am_delta_87f5bd0469585006aa5d3a77d1c662fd2895ddcd.exe"
        )
    );
    // WSUS sends `<UssUrl />`.
    assert_eq!(url.uss_url, None);
}

#[test]
fn a_plain_blob_is_the_unescaped_document() {
    let batch = parse_update_data(&exchange(15).response_body, &Limits::default()).unwrap();
    let UpdateBlob::Plain(text) = &batch.updates[0].blob else {
        panic!("000015 carries an XmlUpdateBlob");
    };
    assert!(text.starts_with("<upd:Update xmlns:pub="));
    assert!(text.ends_with("</upd:Update>"));
}

#[test]
fn every_recorded_answer_is_200_but_the_three_faults() {
    for number in 1..=19 {
        let exchange = exchange(number);
        let expected = if number >= 17 { 500 } else { 200 };
        assert_eq!(exchange.status, expected, "exchange {number}");
    }
}
