//! The catalog generator: determinism, shape, size distribution, and that every document it
//! writes is one the parser accepts.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

use sitesync_metadata::generate::{
    CatalogChanges, CatalogSpec, CatalogSummary, GeneratedDocument, SplitMix64, write_catalog,
};
use sitesync_metadata::{
    CategoryType, ParseLimits, PublicationState, Relationship, UpdateId, UpdateRevision,
    UpdateType, parse_update,
};

const MICROSOFT: &str = "56309036-4c77-4dd9-951a-99ee9c246a94";
const SECURITY_UPDATES: &str = "0fa1201d-4330-4fa8-8ae9-b877473b6441";

fn generate(updates: usize, seed: u64) -> Vec<GeneratedDocument> {
    CatalogSpec::new(updates, seed).documents().collect()
}

fn parse(document: &GeneratedDocument) -> UpdateRevision {
    parse_update(&document.xml, &ParseLimits::default())
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", document.file_name))
}

fn id(text: &str) -> UpdateId {
    text.parse().unwrap()
}

#[test]
fn the_same_seed_gives_identical_bytes() {
    let a = generate(3_000, 42);
    let b = generate(3_000, 42);
    assert_eq!(a, b);
}

#[test]
fn different_seeds_give_different_catalogs() {
    let a = generate(500, 1);
    let b = generate(500, 2);
    let categories = CatalogSpec::category_documents();
    // The category tree is the same for every seed; everything after it differs.
    assert_eq!(a[..categories], b[..categories]);
    let ids_a: HashSet<_> = a[categories..].iter().map(|d| d.id).collect();
    assert!(b[categories..].iter().all(|d| !ids_a.contains(&d.id)));
}

#[test]
fn a_catalog_has_exactly_the_documents_asked_for() {
    for updates in [0, 1, 10, 51, 52, 53, 200, 1_234] {
        let generator = CatalogSpec::new(updates, 5).documents();
        assert_eq!(generator.len(), updates);
        let documents: Vec<_> = generator.collect();
        assert_eq!(documents.len(), updates, "updates = {updates}");
        let names: HashSet<_> = documents.iter().map(|d| &d.file_name).collect();
        assert_eq!(names.len(), updates, "file names must be unique");
    }
}

#[test]
fn the_size_distribution_is_realistic() {
    let documents = generate(5_000, 7);
    let count = |f: &dyn Fn(usize) -> bool| documents.iter().filter(|d| f(d.xml.len())).count();
    let percent = |n: usize| 100.0 * n as f64 / documents.len() as f64;
    let below_half_kb = percent(count(&|len| len < 512));
    let typical = percent(count(&|len| (512..=5 * 1024).contains(&len)));
    let over_100_kb = percent(count(&|len| len > 100 * 1024));
    eprintln!("< 0.5 KB {below_half_kb:.2}%, 0.5-5 KB {typical:.2}%, > 100 KB {over_100_kb:.2}%");
    assert!(below_half_kb < 1.0, "{below_half_kb}% below 0.5 KB");
    assert!(typical >= 85.0, "only {typical}% of documents are 0.5-5 KB");
    assert!(
        (0.2..=1.5).contains(&over_100_kb),
        "{over_100_kb}% of documents exceed 100 KB; expected about 0.5%"
    );
    let largest = documents.iter().map(|d| d.xml.len()).max().unwrap();
    assert!(largest < ParseLimits::default().max_document_bytes);
}

#[test]
fn every_generated_document_parses_and_matches_what_the_generator_declared() {
    for document in generate(5_000, 11) {
        let revision = parse(&document);
        assert_eq!(revision.id, document.id, "{}", document.file_name);
        assert_eq!(revision.update_type, document.update_type);
        assert_eq!(revision.publication_state, document.publication_state);
        assert_eq!(revision.document, document.xml);
        assert_eq!(
            GeneratedDocument::file_name_for(revision.id),
            document.file_name
        );
        assert!(!revision.title().is_empty(), "{}", document.file_name);
        assert_eq!(
            revision.category_type.is_some(),
            revision.update_type == UpdateType::Category
        );
    }
}

#[test]
fn the_generated_microsoft_company_is_the_real_document() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/56309036-4c77-4dd9-951a-99ee9c246a94-r101.xml");
    let real = fs::read(fixture).unwrap();
    let generated = generate(1, 0).remove(0);
    assert_eq!(
        generated.file_name,
        "56309036-4c77-4dd9-951a-99ee9c246a94-r101.xml"
    );
    assert_eq!(
        String::from_utf8(generated.xml).unwrap(),
        String::from_utf8(real).unwrap()
    );
}

#[test]
fn the_catalog_has_the_shape_of_a_real_one() {
    let documents = generate(5_000, 3);
    let parsed: Vec<_> = documents.iter().map(parse).collect();
    let categories = CatalogSpec::category_documents();

    // Category updates come first, each after the category it belongs to.
    let mut known = HashSet::new();
    for revision in &parsed[..categories] {
        assert_eq!(revision.update_type, UpdateType::Category);
        for parent in revision.categories() {
            assert!(known.contains(&parent), "{} before its parent", revision.id);
        }
        known.insert(revision.id.update_id);
    }
    let of_type = |t| {
        parsed[..categories]
            .iter()
            .filter(|r| r.category_type == Some(t))
            .count()
    };
    // Microsoft and Contoso; `Local publisher` is built into every node, not upstream.
    assert_eq!(of_type(CategoryType::Company), 2);
    assert!(of_type(CategoryType::ProductFamily) >= 5);
    assert!(of_type(CategoryType::Product) >= 20);
    assert_eq!(of_type(CategoryType::UpdateClassification), 9);
    assert!(known.contains(&id(MICROSOFT)));
    assert!(known.contains(&id(SECURITY_UPDATES)));
    assert!(
        parsed[categories..]
            .iter()
            .all(|r| r.update_type != UpdateType::Category)
    );

    let products: HashSet<_> = parsed[..categories]
        .iter()
        .filter(|r| r.category_type == Some(CategoryType::Product))
        .map(|r| r.id.update_id)
        .collect();
    let classifications: HashSet<_> = parsed[..categories]
        .iter()
        .filter(|r| r.category_type == Some(CategoryType::UpdateClassification))
        .map(|r| r.id.update_id)
        .collect();

    let mut summary = CatalogSummary::default();
    documents.iter().for_each(|d| summary.record(d));
    assert!(summary.drivers > 0 && summary.detectoids > 0 && summary.expired > 0);

    let all_ids: HashSet<_> = parsed.iter().map(|r| r.id.update_id).collect();
    let all_revisions: HashSet<_> = parsed.iter().map(|r| r.id).collect();
    let mut revisions_per_update: HashMap<UpdateId, Vec<u32>> = HashMap::new();
    let (mut security, mut with_bulletin, mut multilingual, mut bundles) = (0, 0, 0, 0);
    let (mut superseding, mut categorized) = (0, 0);
    for revision in &parsed[categories..] {
        revisions_per_update
            .entry(revision.id.update_id)
            .or_default()
            .push(revision.id.revision);
        let groups: Vec<_> = revision
            .prerequisites
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    Relationship::AtLeastOne {
                        is_category: true,
                        ..
                    }
                )
            })
            .collect();
        if matches!(
            revision.update_type,
            UpdateType::Software | UpdateType::Driver
        ) && !groups.is_empty()
        {
            // One product and one classification, each in its own group.
            categorized += 1;
            assert_eq!(groups.len(), 2, "{}", revision.id);
            let members: Vec<_> = revision.categories().collect();
            assert!(products.contains(&members[0]), "{}", revision.id);
            assert!(classifications.contains(&members[1]), "{}", revision.id);
        }
        if revision.categories().any(|c| c == id(SECURITY_UPDATES)) {
            security += 1;
            assert!(revision.msrc_severity.is_some(), "{}", revision.id);
            with_bulletin += usize::from(revision.security_bulletin.is_some());
        }
        multilingual += usize::from(revision.localized.len() > 1);
        if !revision.bundled.is_empty() {
            bundles += 1;
            for child in revision.bundled.iter().flat_map(Relationship::members) {
                let revision_number = child.revision.expect("bundles name a revision");
                let child_id = sitesync_metadata::RevisionId {
                    update_id: child.update_id,
                    revision: revision_number,
                };
                assert!(
                    all_revisions.contains(&child_id),
                    "{} bundles a missing child",
                    revision.id
                );
            }
        }
        if !revision.superseded.is_empty() {
            superseding += 1;
            for old in &revision.superseded {
                assert!(
                    all_ids.contains(&old.update_id),
                    "{} supersedes an unknown update",
                    revision.id
                );
            }
        }
        for file in &revision.files {
            assert_eq!(
                file.digests.len(),
                2,
                "SHA-1 and SHA-256 for {}",
                revision.id
            );
            assert!(file.size > 0);
        }
    }
    assert!(categorized > 3_000, "{categorized} categorized updates");
    assert!(
        security > 500 && with_bulletin > 100,
        "{security} security updates, {with_bulletin} with bulletins"
    );
    assert!(multilingual > 200, "{multilingual} multilingual updates");
    assert!(bundles > 100, "{bundles} bundles");
    assert!(superseding > 500, "{superseding} superseding updates");

    // Several revisions of some updates, numbered upwards; an expired one is the last.
    let revised = revisions_per_update
        .values()
        .filter(|r| r.len() > 1)
        .count();
    assert!(revised > 100, "{revised} updates with several revisions");
    for revisions in revisions_per_update.values() {
        assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    }
    for revision in &parsed {
        if revision.publication_state == PublicationState::Expired {
            let latest = revisions_per_update[&revision.id.update_id].last().copied();
            assert_eq!(latest, Some(revision.id.revision));
        }
    }
}

#[test]
fn write_catalog_writes_one_file_per_document_and_reports_progress() {
    let dir = tempfile::tempdir().unwrap();
    let spec = CatalogSpec::new(300, 9);
    let mut calls = 0;
    let summary = write_catalog(dir.path(), &spec, |progress| {
        calls += 1;
        assert_eq!(progress.total, 300);
        assert_eq!(progress.written, calls);
    })
    .unwrap();
    assert_eq!(calls, 300);
    assert_eq!(summary.documents, 300);
    assert_eq!(summary.categories, CatalogSpec::category_documents());
    let mut on_disk = 0u64;
    for document in spec.documents() {
        let bytes = fs::read(dir.path().join(&document.file_name)).unwrap();
        assert_eq!(bytes, document.xml);
        on_disk += bytes.len() as u64;
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 300);
    assert_eq!(summary.bytes, on_disk);
}

#[test]
fn catalog_changes_are_deterministic_distinct_and_apply_to_a_directory() {
    let base = CatalogSpec::new(2_000, 4);
    let changes = CatalogChanges::derive(&base, 5, 1);
    assert_eq!(changes, CatalogChanges::derive(&base, 5, 1));
    assert_ne!(changes, CatalogChanges::derive(&base, 5, 2));
    assert_eq!(changes.new_updates.len(), 5);
    assert_eq!(changes.new_revisions.len(), 5);
    assert_eq!(changes.expired.len(), 5);
    assert_eq!(changes.deleted.len(), 5);

    let catalog: Vec<_> = base.documents().map(|d| parse(&d)).collect();
    let mut latest: HashMap<UpdateId, u32> = HashMap::new();
    for revision in &catalog {
        let entry = latest.entry(revision.id.update_id).or_default();
        *entry = (*entry).max(revision.id.revision);
    }
    for document in &changes.new_updates {
        let revision = parse(document);
        assert!(!latest.contains_key(&revision.id.update_id));
        assert_eq!(revision.publication_state, PublicationState::Published);
        assert_eq!(revision.categories().count(), 2);
    }
    for document in &changes.new_revisions {
        let revision = parse(document);
        assert!(revision.id.revision > latest[&revision.id.update_id]);
        assert_eq!(revision.publication_state, PublicationState::Published);
    }
    for document in &changes.expired {
        let revision = parse(document);
        assert!(revision.id.revision > latest[&revision.id.update_id]);
        assert_eq!(revision.publication_state, PublicationState::Expired);
    }
    let mut touched: Vec<UpdateId> = changes
        .new_revisions
        .iter()
        .chain(&changes.expired)
        .map(|d| d.id.update_id)
        .chain(changes.deleted.iter().copied())
        .collect();
    assert!(changes.deleted.iter().all(|id| latest.contains_key(id)));
    touched.sort();
    touched.dedup();
    assert_eq!(touched.len(), 15, "each update changes in one way only");

    let dir = tempfile::tempdir().unwrap();
    let summary = write_catalog(dir.path(), &base, |_| {}).unwrap();
    changes.apply_to_dir(dir.path()).unwrap();
    let names: HashSet<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for document in changes.documents() {
        assert!(names.contains(&document.file_name));
    }
    for deleted in &changes.deleted {
        assert!(!names.iter().any(|n| n.starts_with(&deleted.to_string())));
    }
    let removed = catalog
        .iter()
        .filter(|r| changes.deleted.contains(&r.id.update_id))
        .count();
    assert_eq!(names.len(), summary.documents + 15 - removed);
}

#[test]
fn splitmix_guids_are_version_4() {
    let mut rng = SplitMix64::new(99);
    for _ in 0..1_000 {
        let text = rng.guid().to_string();
        assert_eq!(text.as_bytes()[14], b'4', "{text}");
        assert!(b"89ab".contains(&text.as_bytes()[19]), "{text}");
    }
}
