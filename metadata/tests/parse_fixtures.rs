//! The five real update documents in `tests/fixtures/` parse to exactly the values they hold.
//! Expected values were read from the files with an independent XML parser (Python's
//! ElementTree) and are hard-coded here.

use std::path::PathBuf;
use std::str::FromStr;

use sitesync_metadata::{
    CategoryType, DigestAlgorithm, ParseLimits, PublicationState, Relationship, RevisionId,
    Timestamp, UpdateId, UpdateRef, UpdateRevision, UpdateType, parse_update,
};

const COMPANY: &str = "56309036-4c77-4dd9-951a-99ee9c246a94-r101.xml";
const PRODUCT_FAMILY: &str = "6964aab4-c5b5-43bd-a17d-ffb4346a8e1d-r100.xml";
const SECURITY_INTELLIGENCE: &str = "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe-r200.xml";
const FULL_DELTAS: &str = "266f6222-c89d-43f2-9f8a-69340271e677-r200.xml";
const SIG_STUB: &str = "ccb78947-6453-4ecc-9de8-bc0305c98f2d-r200.xml";

/// The 24 languages of both category documents, in document order.
const CATEGORY_LANGUAGES: [&str; 24] = [
    "ar", "cs", "da", "de", "el", "en", "es", "fi", "fr", "he", "hu", "it", "ja", "ko", "nl", "no",
    "pl", "pt", "pt-br", "ru", "sv", "tr", "zh-cn", "zh-tw",
];

fn bytes(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn parse(name: &str) -> UpdateRevision {
    let document = bytes(name);
    let revision = parse_update(&document, &ParseLimits::default())
        .unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
    assert_eq!(
        revision.document, document,
        "{name}: document must be kept byte for byte"
    );
    revision
}

fn id(text: &str) -> UpdateId {
    UpdateId::from_str(text).unwrap()
}

fn any_revision(text: &str) -> UpdateRef {
    UpdateRef {
        update_id: id(text),
        revision: None,
    }
}

fn at_revision(text: &str, revision: u32) -> UpdateRef {
    UpdateRef {
        update_id: id(text),
        revision: Some(revision),
    }
}

fn date(text: &str) -> Timestamp {
    Timestamp::parse_iso8601(text).unwrap()
}

fn languages(revision: &UpdateRevision) -> Vec<&str> {
    revision
        .localized
        .iter()
        .map(|l| l.language.as_str())
        .collect()
}

fn localized<'r>(
    revision: &'r UpdateRevision,
    language: &str,
) -> &'r sitesync_metadata::LocalizedProperties {
    revision
        .localized
        .iter()
        .find(|l| l.language == language)
        .unwrap_or_else(|| panic!("no {language} entry"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[test]
fn company_category_microsoft() {
    let r = parse(COMPANY);
    // The document writes its own id in upper case.
    assert_eq!(
        r.id,
        RevisionId {
            update_id: id("56309036-4c77-4dd9-951a-99ee9c246a94"),
            revision: 101,
        }
    );
    assert_eq!(r.update_type, UpdateType::Category);
    assert_eq!(r.category_type, Some(CategoryType::Company));
    assert_eq!(r.publication_state, PublicationState::Published);
    assert_eq!(r.creation_date, date("2005-09-22T00:05:11.471Z"));
    assert_eq!(r.creation_date.unix_millis(), 1_127_347_511_471);
    assert_eq!(r.default_language, "en");
    assert_eq!(languages(&r), CATEGORY_LANGUAGES);
    for entry in &r.localized {
        assert_eq!(entry.title, "Microsoft", "{}", entry.language);
        assert_eq!(
            entry.description.as_deref(),
            Some("Microsoft"),
            "{}",
            entry.language
        );
    }
    assert_eq!(r.title(), "Microsoft");
    assert_eq!(r.kb_article, None);
    assert_eq!(r.security_bulletin, None);
    assert_eq!(r.msrc_severity, None);
    assert!(r.prerequisites.is_empty());
    assert!(r.bundled.is_empty());
    assert!(r.superseded.is_empty());
    assert!(r.files.is_empty());
}

#[test]
fn product_family_category_windows() {
    let r = parse(PRODUCT_FAMILY);
    assert_eq!(r.id.update_id, id("6964aab4-c5b5-43bd-a17d-ffb4346a8e1d"));
    assert_eq!(r.id.revision, 100);
    assert_eq!(r.update_type, UpdateType::Category);
    assert_eq!(r.category_type, Some(CategoryType::ProductFamily));
    assert_eq!(r.publication_state, PublicationState::Published);
    assert_eq!(r.creation_date, date("2004-05-15T05:50:01.611Z"));
    assert_eq!(r.default_language, "en");
    assert_eq!(languages(&r), CATEGORY_LANGUAGES);
    assert!(r.localized.iter().all(|l| l.title == "Windows"));
    assert_eq!(localized(&r, "ja").description.as_deref(), Some("Windows"));
    // The product family's parent in the category tree is the company.
    assert_eq!(
        r.prerequisites,
        vec![Relationship::AtLeastOne {
            is_category: true,
            members: vec![any_revision("56309036-4c77-4dd9-951a-99ee9c246a94")],
        }]
    );
    assert_eq!(
        r.categories().collect::<Vec<_>>(),
        vec![id("56309036-4c77-4dd9-951a-99ee9c246a94")]
    );
    assert!(r.bundled.is_empty() && r.superseded.is_empty() && r.files.is_empty());
}

#[test]
fn security_intelligence_update_kb2267602() {
    let r = parse(SECURITY_INTELLIGENCE);
    assert_eq!(r.id.update_id, id("a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe"));
    assert_eq!(r.id.revision, 200);
    assert_eq!(r.update_type, UpdateType::Software);
    assert_eq!(r.category_type, None);
    assert_eq!(r.publication_state, PublicationState::Published);
    assert_eq!(r.creation_date, date("2026-10-04T12:00:58.381Z"));
    assert_eq!(r.default_language, "en");
    assert_eq!(r.kb_article.as_deref(), Some("2267602"));
    assert_eq!(r.security_bulletin, None);
    assert_eq!(r.msrc_severity, None);

    assert_eq!(r.localized.len(), 35);
    assert_eq!(
        languages(&r),
        [
            "en", "ar", "bg", "cs", "da", "de", "el", "es", "et", "fi", "fr", "he", "hr", "hu",
            "it", "ja", "ko", "lt", "lv", "nl", "no", "pl", "pt", "pt-br", "ro", "ru", "sk", "sl",
            "sr", "sv", "th", "tr", "uk", "zh-cn", "zh-tw",
        ]
    );
    assert!(r.localized.iter().all(|l| l.description.is_some()));
    assert_eq!(
        r.title(),
        "Security Intelligence Update for Microsoft Defender Antivirus - KB2267602 \
         (Version 1.459.547.0) - Current Channel (Broad)"
    );
    assert_eq!(
        r.description(),
        Some(
            "Install this update to revise the files that are used to detect viruses, spyware, \
             and other potentially unwanted software. Once you have installed this item, it \
             cannot be removed."
        )
    );
    assert_eq!(
        localized(&r, "ja").title,
        "Microsoft Defender Antivirus のセキュリティ インテリジェンス更新プログラム - KB2267602 \
         (バージョン 1.459.547.0) - 現在のチャネル (広範)"
    );
    assert_eq!(
        localized(&r, "fr").title,
        "Mise à jour de la sélection disjointe pour Microsoft Defender Antivirus – 2267602 Ko \
         (version 1.459.547.0) – Canal actuel (large)"
    );

    assert_eq!(
        r.superseded,
        [
            "ce84983e-b20e-44d7-a412-1fd91fc7bda8",
            "74e87997-e3b3-45d2-a527-a8877a5162ec",
            "1594b429-a8c5-4b0d-ac86-79b0a826a847",
            "b2a92e00-dfa3-4fd0-b285-8d961303b0ca",
            "22281ef5-bbea-4576-af48-6aa6bafbb5b3",
            "cb326352-0184-4dfb-96eb-8817727cbe7f",
            "42e65fc7-a953-4d7f-9277-54e3a265200e",
            "cf3a401d-e198-47ba-97a4-debb550f5b39",
            "391d3487-e6f5-4bd0-a607-7e29f9fbd88e",
            "bb663b81-45db-43cb-8bfa-33411e0d8a1f",
        ]
        .map(any_revision)
    );

    assert_eq!(
        r.prerequisites,
        vec![
            Relationship::One(any_revision("be4048db-157c-4532-9582-7f05099590c9")),
            Relationship::One(any_revision("0aac58ee-82a0-4452-a7fa-19f68398f1fa")),
            Relationship::AtLeastOne {
                is_category: true,
                members: vec![any_revision("e0789628-ce08-4437-be74-2495b842f43b")],
            },
            Relationship::AtLeastOne {
                is_category: true,
                members: vec![any_revision("8c3fcc84-7410-4a95-8b89-a166a0190486")],
            },
        ]
    );
    assert_eq!(
        r.categories().collect::<Vec<_>>(),
        vec![
            id("e0789628-ce08-4437-be74-2495b842f43b"),
            id("8c3fcc84-7410-4a95-8b89-a166a0190486"),
        ]
    );

    // Four groups of 7, 7, 7 and 103 bundled updates, every one at revision 200.
    let sizes: Vec<usize> = r.bundled.iter().map(|g| g.members().len()).collect();
    assert_eq!(sizes, [7, 7, 7, 103]);
    assert_eq!(sizes.iter().sum::<usize>(), 124);
    for group in &r.bundled {
        assert!(matches!(
            group,
            Relationship::AtLeastOne {
                is_category: false,
                ..
            }
        ));
        assert!(group.members().iter().all(|m| m.revision == Some(200)));
    }
    let firsts_and_lasts: Vec<(UpdateRef, UpdateRef)> = r
        .bundled
        .iter()
        .map(|g| (g.members()[0], *g.members().last().unwrap()))
        .collect();
    assert_eq!(
        firsts_and_lasts,
        [
            (
                "90f961a9-1756-4493-aade-644c37589961",
                "7a20e8ab-8dfa-4320-8929-4e212309394c"
            ),
            (
                "940d319c-760b-429c-9bc8-e059163457fb",
                "5edaee7f-24ef-45bd-a1d3-2c71bbd5dd87"
            ),
            (
                "538f3373-6e39-4c48-b27b-a120f6caccef",
                "964cb58b-470a-4153-a6d0-e3101faf3ede"
            ),
            (
                "1c835ddf-0c98-431b-93e2-50a3a872a30a",
                "3baa1bb8-21ec-4c3a-8bc7-f613ff818fd2"
            ),
        ]
        .map(|(first, last)| (at_revision(first, 200), at_revision(last, 200)))
    );
    assert_eq!(
        r.bundled[3].members()[1],
        at_revision("580849d2-021b-4b50-aad8-683e0325ad6f", 200)
    );
    assert!(r.files.is_empty());
}

#[test]
fn full_deltas_file_with_two_digests() {
    let r = parse(FULL_DELTAS);
    assert_eq!(r.id.update_id, id("266f6222-c89d-43f2-9f8a-69340271e677"));
    assert_eq!(r.id.revision, 200);
    assert_eq!(r.update_type, UpdateType::Software);
    assert_eq!(r.creation_date, date("2026-10-04T12:00:58.287Z"));
    assert_eq!(r.localized.len(), 1);
    assert_eq!(
        r.title(),
        "Full Deltas 1.459.547.0 for Defender amd64fre [Ring0, Ring1, Ring2, Ring3, Ring4, Broad, Delayed]"
    );
    assert_eq!(r.description(), None);
    assert_eq!(r.kb_article, None);

    assert_eq!(
        r.prerequisites,
        vec![
            Relationship::One(any_revision("be4048db-157c-4532-9582-7f05099590c9")),
            Relationship::One(any_revision("59653007-e2e9-4f71-8525-2ff588527978")),
            Relationship::One(any_revision("0aac58ee-82a0-4452-a7fa-19f68398f1fa")),
            Relationship::AtLeastOne {
                is_category: false,
                members: vec![any_revision("8c3fcc84-7410-4a95-8b89-a166a0190486")],
            },
        ]
    );
    // A group without IsCategory is a plain prerequisite, not a category.
    assert_eq!(r.categories().count(), 0);
    assert!(r.bundled.is_empty() && r.superseded.is_empty());

    assert_eq!(r.files.len(), 1);
    let file = &r.files[0];
    assert_eq!(file.name, "AM_Delta.exe");
    assert_eq!(file.size, 11_606_440);
    assert_eq!(file.modified, Some(date("2026-10-04T09:39:26Z")));
    assert_eq!(file.digests.len(), 2);
    // Digest="h/W9BGlYUAaqXTp30cZi/SiV3c0=" and the SHA256 AdditionalDigest, decoded by hand.
    assert_eq!(file.digests[0].algorithm, DigestAlgorithm::Sha1);
    assert_eq!(
        hex(&file.digests[0].value),
        "87F5BD0469585006AA5D3A77D1C662FD2895DDCD"
    );
    assert_eq!(file.digests[1].algorithm, DigestAlgorithm::Sha256);
    assert_eq!(
        hex(&file.digests[1].value),
        "026B74AB29B2E4AB113A2C085E6E1020857BE49BB8AFE0A5DBC3E0F2068B5D40"
    );
    assert_eq!(
        file.download_url,
        "Content/CD/87F5BD0469585006AA5D3A77D1C662FD2895DDCD.exe"
    );
}

#[test]
fn sig_stub_bundles_four_updates() {
    let r = parse(SIG_STUB);
    assert_eq!(r.id.update_id, id("ccb78947-6453-4ecc-9de8-bc0305c98f2d"));
    assert_eq!(r.id.revision, 200);
    assert_eq!(r.update_type, UpdateType::Software);
    assert_eq!(r.publication_state, PublicationState::Published);
    assert_eq!(r.creation_date, date("2024-01-11T20:15:45.051Z"));
    assert_eq!(r.default_language, "en");
    assert_eq!(languages(&r), ["en"]);
    assert_eq!(
        r.title(),
        "HIDDEN: Defender MpSigStub 1.1.24010.2001 for EngineBroad (Installer 1.1.24010.2001-Q)"
    );
    assert_eq!(
        r.prerequisites,
        vec![
            Relationship::AtLeastOne {
                is_category: false,
                members: vec![any_revision("e0789628-ce08-4437-be74-2495b842f43b")],
            },
            Relationship::AtLeastOne {
                is_category: false,
                members: vec![any_revision("8c3fcc84-7410-4a95-8b89-a166a0190486")],
            },
        ]
    );
    assert_eq!(
        r.bundled,
        vec![Relationship::AtLeastOne {
            is_category: false,
            members: [
                "b6f443c9-ad38-4347-bab3-f1dc0b03d533",
                "0daf8592-9e3f-4a8a-9141-d83fafebd09f",
                "4c0a0a90-4bd5-4fe5-b306-8dbd6fde30a0",
                "e052d9bd-e49c-4d6e-876e-005b49b89812",
            ]
            .map(|u| at_revision(u, 200))
            .to_vec(),
        }]
    );
    assert!(r.superseded.is_empty() && r.files.is_empty());
}

/// Namespaces are matched by URI: the same document with another prefix, or with the Update
/// namespace as the default namespace, parses to the same revision.
#[test]
fn prefixes_do_not_matter() {
    for name in [
        COMPANY,
        PRODUCT_FAMILY,
        SECURITY_INTELLIGENCE,
        FULL_DELTAS,
        SIG_STUB,
    ] {
        let original = parse(name);
        let text = String::from_utf8(bytes(name)).unwrap();
        let renamed = text
            .replace("upd:", "wsus:")
            .replace("xmlns:upd=", "xmlns:wsus=");
        let default_ns = text.replace("upd:", "").replace("xmlns:upd=", "xmlns=");
        for variant in [renamed, default_ns] {
            let mut reparsed = parse_update(variant.as_bytes(), &ParseLimits::default())
                .unwrap_or_else(|e| panic!("{name} with other prefixes: {e}"));
            assert_eq!(reparsed.document, variant.as_bytes());
            reparsed.document.clone_from(&original.document);
            assert_eq!(reparsed, original, "{name}");
        }
    }
}

#[test]
fn parsing_is_deterministic_and_content_hash_covers_the_document() {
    for name in [
        COMPANY,
        PRODUCT_FAMILY,
        SECURITY_INTELLIGENCE,
        FULL_DELTAS,
        SIG_STUB,
    ] {
        let first = parse(name);
        let second = parse(name);
        assert_eq!(first, second);
        assert_eq!(first.content_hash(), second.content_hash());
    }
    assert_ne!(
        parse(COMPANY).content_hash(),
        parse(PRODUCT_FAMILY).content_hash()
    );
}
