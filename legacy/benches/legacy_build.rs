//! The legacy scan catalog's build, size and memory (S13): `cargo bench -p sitesync-legacy
//! --bench legacy_build`.
//!
//! For 100,000 and 300,000 generated revisions (each in a process of its own, so each peak
//! is its own): the build's time against a baseline measured in the same process — the
//! same documents compressed as one LZ4 stream, with nothing cut, hashed or signed — the
//! catalog's size against the raw documents, the peak resident memory (VmHWM), reading
//! every shard back one revision at a time; then a rebuild after 100 changed documents:
//! shards and bytes written against the whole catalog (what a client downloads again).
//! `SITESYNC_BENCH_SIZES=N,M` chooses the sizes.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use sitesync_legacy::build::{IndexMeta, ShardPolicy, build};
use sitesync_legacy::shard::ShardReader;
use sitesync_legacy::verify::verify_dir;
use sitesync_legacy::{SHARDS_DIR, shard_file_name};
use sitesync_metadata::generate::{CatalogSpec, write_catalog};
use sitesync_metadata::{RevisionId, Timestamp};
use sitesync_security::pki::{Authority, DEFAULT_VALIDITY};
use sitesync_security::signing::Signer;
use sitesync_security::{Identity, TlsFiles};

const CHILD: &str = "SITESYNC_LEGACY_BENCH_CHILD";

fn main() {
    if let Ok(size) = std::env::var(CHILD) {
        run(size.parse().expect("a size"));
        return;
    }
    let sizes = std::env::var("SITESYNC_BENCH_SIZES").unwrap_or_else(|_| "100000,300000".into());
    println!("legacy scan catalog: build, size, peak memory, rebuild after 100 changes");
    for size in sizes.split(',') {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .env(CHILD, size.trim())
            .status()
            .expect("the bench runs itself");
        assert!(status.success(), "the run of {size} failed");
    }
}

fn now() -> Timestamp {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    Timestamp(i64::try_from(millis).unwrap())
}

/// The peak resident memory of this process, MiB.
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The catalog's revisions in (update id, revision) order, read one file at a time.
fn sorted_files(dir: &Path) -> Vec<(RevisionId, PathBuf)> {
    let mut files: Vec<(RevisionId, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|path| {
            let name = path.file_stem()?.to_str()?.to_owned();
            let (id, revision) = name.rsplit_once("-r")?;
            Some((
                RevisionId {
                    update_id: id.parse().ok()?,
                    revision: revision.parse().ok()?,
                },
                path,
            ))
        })
        .collect();
    files.sort();
    files
}

fn run(size: usize) {
    let work = tempfile::tempdir().unwrap();
    let catalog = work.path().join("catalog");
    write_catalog(&catalog, &CatalogSpec::new(size, 11), |_| {}).unwrap();
    let files = sorted_files(&catalog);
    let raw: u64 = files
        .iter()
        .map(|(_, p)| std::fs::metadata(p).unwrap().len())
        .sum();

    let pki = work.path().join("pki");
    let authority = Authority::init(&pki, "bench").unwrap();
    let identity = Identity::site("CEN").unwrap();
    authority.issue(&identity, &[], DEFAULT_VALIDITY).unwrap();
    let signer = Signer::load(&TlsFiles::in_pki_dir(&pki, &identity)).unwrap();
    let ca: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.join("ca.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();

    // Baseline: the same bytes through one LZ4 stream to a file.
    let clock = Instant::now();
    let mut baseline = lz4_flex::frame::FrameEncoder::new(std::io::BufWriter::new(
        std::fs::File::create(work.path().join("baseline.lz4")).unwrap(),
    ));
    for (_, path) in &files {
        baseline.write_all(&std::fs::read(path).unwrap()).unwrap();
    }
    baseline.finish().unwrap().flush().unwrap();
    let baseline_secs = clock.elapsed().as_secs_f64();

    let out = work.path().join("legacy");
    let meta = |build_number| IndexMeta {
        top_site_code: "CEN".into(),
        build: build_number,
        catalog_version: build_number,
        built_at: now(),
        expires_at: Timestamp(now().0 + 7 * 24 * 3600 * 1000),
    };
    let clock = Instant::now();
    let first = build(
        &out,
        read(&files, None),
        meta(1),
        &signer,
        ShardPolicy::default(),
    )
    .unwrap();
    let build_secs = clock.elapsed().as_secs_f64();

    // Every shard read back one revision at a time.
    let clock = Instant::now();
    let verified = verify_dir(&out, &ca, |_| false, now(), None).unwrap();
    let mut revisions = 0u64;
    for shard in &verified.index.shards {
        let file =
            std::fs::File::open(out.join(SHARDS_DIR).join(shard_file_name(&shard.sha256))).unwrap();
        for item in ShardReader::new(std::io::BufReader::new(file)) {
            item.unwrap();
            revisions += 1;
        }
    }
    assert_eq!(revisions, files.len() as u64);
    let read_secs = clock.elapsed().as_secs_f64();

    // 100 changed documents, spread over the catalog.
    let step = (files.len() / 100).max(1);
    let changed: std::collections::HashSet<RevisionId> = files
        .iter()
        .step_by(step)
        .take(100)
        .map(|(id, _)| *id)
        .collect();
    let clock = Instant::now();
    let second = build(
        &out,
        read(&files, Some(&changed)),
        meta(2),
        &signer,
        ShardPolicy::default(),
    )
    .unwrap();
    let rebuild_secs = clock.elapsed().as_secs_f64();

    println!(
        "{size:>7} revisions: build {build_secs:.2} s ({:.0} revisions/s), baseline one LZ4 stream {baseline_secs:.2} s, ratio {:.2}; \
         {} shards, {:.1} MiB ({:.1}% of the {:.1} MiB of documents); read back {read_secs:.2} s; peak {:.0} MiB",
        files.len() as f64 / build_secs,
        baseline_secs / build_secs,
        first.index.shards.len(),
        first.total_bytes as f64 / 1048576.0,
        100.0 * first.total_bytes as f64 / raw as f64,
        raw as f64 / 1048576.0,
        peak_mib(),
    );
    println!(
        "{size:>7} revisions: rebuild after 100 changes {rebuild_secs:.2} s: {} of {} shards written, {:.2} MiB of {:.1} MiB ({:.2}% of the catalog a client fetches again)",
        second.written,
        second.index.shards.len(),
        second.bytes_written as f64 / 1048576.0,
        second.total_bytes as f64 / 1048576.0,
        100.0 * second.bytes_written as f64 / second.total_bytes as f64,
    );
}

/// The documents of `files`, read one at a time; those in `changed` with one byte more.
fn read<'a>(
    files: &'a [(RevisionId, PathBuf)],
    changed: Option<&'a std::collections::HashSet<RevisionId>>,
) -> impl Iterator<Item = std::io::Result<(RevisionId, Vec<u8>)>> + 'a {
    files.iter().map(move |(id, path)| {
        let mut document = std::fs::read(path)?;
        if changed.is_some_and(|c| c.contains(id)) {
            document.push(b'\n');
        }
        Ok((*id, document))
    })
}
