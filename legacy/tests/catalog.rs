//! A legacy scan catalog built from a generated catalog, read back one revision at a time,
//! rebuilt after changes (only the shards they fall in are written again), and refused
//! with a specific error for each kind of damage.

use std::collections::BTreeMap;
use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use sitesync_legacy::build::{BuildReport, IndexMeta, ShardPolicy, build};
use sitesync_legacy::shard::ShardReader;
use sitesync_legacy::verify::{CatalogError, verify_dir};
use sitesync_legacy::{SHARDS_DIR, shard_file_name};
use sitesync_metadata::generate::CatalogSpec;
use sitesync_metadata::{RevisionId, Timestamp};
use sitesync_security::pki::{Authority, DEFAULT_VALIDITY};
use sitesync_security::signing::Signer;
use sitesync_security::{Identity, TlsFiles};

const DAY: i64 = 24 * 3600 * 1000;

struct Top {
    _pki: tempfile::TempDir,
    signer: Signer,
    ca: Vec<CertificateDer<'static>>,
}

fn top(site: &str) -> Top {
    let pki = tempfile::tempdir().unwrap();
    let authority = Authority::init(pki.path(), "test").unwrap();
    let identity = Identity::site(site).unwrap();
    authority.issue(&identity, &[], DEFAULT_VALIDITY).unwrap();
    let signer = Signer::load(&TlsFiles::in_pki_dir(pki.path(), &identity)).unwrap();
    let ca = CertificateDer::pem_file_iter(pki.path().join("ca.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    Top {
        _pki: pki,
        signer,
        ca,
    }
}

fn now() -> Timestamp {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    Timestamp(i64::try_from(millis).unwrap())
}

fn catalog(documents: usize) -> BTreeMap<RevisionId, Vec<u8>> {
    CatalogSpec::new(documents, 3)
        .documents()
        .map(|d| (d.id, d.xml))
        .collect()
}

fn write(
    dir: &Path,
    top: &Top,
    catalog: &BTreeMap<RevisionId, Vec<u8>>,
    build_number: u64,
) -> BuildReport {
    let meta = IndexMeta {
        top_site_code: "CEN".into(),
        build: build_number,
        catalog_version: 10 + build_number,
        built_at: now(),
        expires_at: Timestamp(now().0 + 14 * DAY),
    };
    build(
        dir,
        catalog
            .iter()
            .map(|(id, d)| Ok::<_, std::io::Error>((*id, d.clone()))),
        meta,
        &top.signer,
        ShardPolicy::default(),
    )
    .unwrap()
}

#[test]
fn a_catalog_reads_back_and_a_rebuild_writes_only_the_changed_shards() {
    let top = top("CEN");
    let dir = tempfile::tempdir().unwrap();
    let mut catalog = catalog(5_000);
    let first = write(dir.path(), &top, &catalog, 1);
    assert_eq!(first.index.revision_count, catalog.len() as u64);
    assert!(
        first.index.shards.len() > 20,
        "{} shards",
        first.index.shards.len()
    );
    assert_eq!(first.written, first.index.shards.len());
    let verified = verify_dir(dir.path(), &top.ca, |_| false, now(), None).unwrap();
    assert_eq!(verified.index.build, 1);

    // Every revision comes back, in order, one at a time.
    let mut read = Vec::new();
    for shard in &verified.index.shards {
        let file = std::fs::File::open(
            dir.path()
                .join(SHARDS_DIR)
                .join(shard_file_name(&shard.sha256)),
        )
        .unwrap();
        for item in ShardReader::new(file) {
            read.push(item.unwrap());
        }
    }
    assert_eq!(read.len(), catalog.len());
    assert!(
        read.iter()
            .zip(catalog.iter())
            .all(|((a, da), (b, db))| a == b && da == db)
    );

    // 20 changed documents: only the shards they fall in are written again.
    let changed: Vec<RevisionId> = catalog
        .keys()
        .step_by(catalog.len() / 20)
        .copied()
        .take(20)
        .collect();
    for id in &changed {
        catalog.get_mut(id).unwrap().push(b'\n');
    }
    let second = write(dir.path(), &top, &catalog, 2);
    let touched: std::collections::BTreeSet<usize> = changed
        .iter()
        .map(|id| {
            second
                .index
                .shards
                .iter()
                .position(|s| {
                    let first = RevisionId::try_from(s.first.clone().unwrap()).unwrap();
                    let last = RevisionId::try_from(s.last.clone().unwrap()).unwrap();
                    first <= *id && *id <= last
                })
                .unwrap()
        })
        .collect();
    assert_eq!(second.written, touched.len());
    assert_eq!(second.reused, second.index.shards.len() - touched.len());
    assert_eq!(second.index.shards.len(), first.index.shards.len());
    assert!(second.reused > 0, "no shard was reused");
    verify_dir(dir.path(), &top.ca, |_| false, now(), Some(1)).unwrap();
}

#[test]
fn each_kind_of_damage_is_refused_with_its_own_error() {
    let top = top("CEN");
    let catalog = catalog(1_000);
    let fresh = || {
        let dir = tempfile::tempdir().unwrap();
        let report = write(dir.path(), &top, &catalog, 3);
        let shard = dir
            .path()
            .join(SHARDS_DIR)
            .join(shard_file_name(&report.index.shards[0].sha256));
        (dir, shard)
    };
    let check = |dir: &Path, held| verify_dir(dir, &top.ca, |_| false, now(), held);

    let (dir, shard) = fresh();
    let mut bytes = std::fs::read(&shard).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&shard, bytes).unwrap();
    assert!(matches!(
        check(dir.path(), None),
        Err(CatalogError::ShardDigest { .. })
    ));

    let (dir, shard) = fresh();
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 10]).unwrap();
    assert!(matches!(
        check(dir.path(), None),
        Err(CatalogError::ShardLength { .. })
    ));

    let (dir, shard) = fresh();
    std::fs::remove_file(&shard).unwrap();
    assert!(matches!(
        check(dir.path(), None),
        Err(CatalogError::ShardMissing { .. })
    ));

    let (dir, _) = fresh();
    assert!(matches!(
        check(dir.path(), Some(4)),
        Err(CatalogError::Older {
            offered: 3,
            held: 4
        })
    ));
    let later = Timestamp(now().0 + 15 * DAY);
    assert!(matches!(
        verify_dir(dir.path(), &top.ca, |_| false, later, None),
        Err(CatalogError::Expired { build: 3, .. })
    ));
    let other = top_other();
    assert!(matches!(
        verify_dir(dir.path(), &other, |_| false, now(), None),
        Err(CatalogError::Signature(_))
    ));
    let index = dir.path().join(sitesync_legacy::INDEX_FILE);
    let mut bytes = std::fs::read(&index).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 1;
    std::fs::write(&index, bytes).unwrap();
    assert!(check(dir.path(), None).is_err());
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        check(empty.path(), None),
        Err(CatalogError::NoIndex { .. })
    ));
}

/// Another hierarchy's CA.
fn top_other() -> Vec<CertificateDer<'static>> {
    top("XYZ").ca
}

#[test]
fn revisions_out_of_order_are_refused() {
    let top = top("CEN");
    let dir = tempfile::tempdir().unwrap();
    let catalog = catalog(50);
    let mut reversed: Vec<_> = catalog.into_iter().collect();
    reversed.reverse();
    let meta = IndexMeta {
        top_site_code: "CEN".into(),
        build: 1,
        catalog_version: 1,
        built_at: now(),
        expires_at: Timestamp(now().0 + DAY),
    };
    let result = build(
        dir.path(),
        reversed.into_iter().map(Ok::<_, std::io::Error>),
        meta,
        &top.signer,
        ShardPolicy::default(),
    );
    assert!(matches!(
        result,
        Err(sitesync_legacy::build::BuildError::Order { .. })
    ));
}
